/**
 * A supervised informer: an in-memory cache of one resource collection kept current by list + watch,
 * that restarts itself on every kind of failure instead of dying.
 *
 * Built on client-node's `Watch` rather than its `ListWatch`/`makeInformer`, because ListWatch:
 * stops for good on any error other than 410/timeout (and reports our own `stop()` as an error),
 * gives `update` listeners no old object, has no resync, no bookmarks, no server-side watch timeout
 * and no way to notice a watch that stays open but delivers nothing. Supervising ListWatch from the
 * outside would still leave those gaps, so this class owns the list/watch loop:
 *
 *   list → replace the cache (emitting the difference) → watch from the list's resourceVersion →
 *   on a clean end re-watch from the last seen resourceVersion; on 410 Gone relist; on an error back
 *   off exponentially and relist; when neither an event nor the end of the watch arrives within
 *   `watchdogMs`, abandon the watch and relist.
 *
 * Each watch asks the server to end it after `timeoutSeconds` (< `watchdogMs`), so a healthy watch
 * of a quiet collection ends cleanly before the watchdog fires; only a dead one trips it.
 *
 * This file is the loop. The store and its change events (informer-cache.ts), the paged list
 * (paged-list.ts), the counters and metrics (informer-metrics.ts) and the per-namespace group
 * (informer-group.ts, with createNamespacedInformers) live next to it; the store's and the counters'
 * public names are re-exported here.
 */
import { EventEmitter } from "node:events";
import {
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { silentLogger } from "../../../relay-pod/src/index.js";
import { InformerStore, type InformerCache } from "./informer-cache.js";
import { informerMetrics, zeroStats, type InformerMetrics, type InformerStats } from "./informer-metrics.js";
import { listPaged } from "./paged-list.js";

export type { InformerCache } from "./informer-cache.js";
export type { InformerStats } from "./informer-metrics.js";

export interface InformerBackoff {
  /** First delay after a failure (default 1 s). */
  initialMs?: number;
  /** Upper bound of the doubling delay (default 30 s). */
  maxMs?: number;
}

export interface SupervisedInformerOptions<T extends KubernetesObject> {
  kubeConfig: KubeConfig;
  /** Collection path to list and watch, e.g. `/api/v1/namespaces/ns/pods`. */
  path: string;
  /** Names the informer in logs and metrics (default: the path). */
  name?: string;
  /**
   * Lists the collection, applying the same selectors. Default: a GET of `path` (paged, 500 a page)
   * that returns plain JSON like the watch does. A typed client-node list turns timestamps into `Date`
   * objects while watch events carry strings, so the default keeps the cache's objects uniform.
   */
  list?: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  fieldSelector?: string;
  /** Emit 'resync' for every cached object this often (default 5 min; 0 turns it off). */
  resyncMs?: number;
  /** A watch that delivers nothing (not even its end) for this long is abandoned and relisted (default 5 min). */
  watchdogMs?: number;
  /** Server-side watch timeout (default: a random 50–90 % of watchdogMs, so reconnects spread out). */
  watchTimeoutSeconds?: number;
  /** Upper bound for one list (default 60 s). */
  listTimeoutMs?: number;
  backoff?: InformerBackoff;
  logger?: Logger;
  /** Registers `operator_informer_*` metrics labelled `informer=<name>`. */
  metrics?: Registry;
}

export interface SupervisedInformerEvents<T> {
  add: [obj: T];
  update: [obj: T, old: T];
  delete: [obj: T];
  resync: [obj: T];
  /** Informational: the informer has already scheduled its own recovery. */
  error: [err: Error];
}

type WatchOutcome =
  | { kind: "stopped" }
  | { kind: "closed"; sawEvents: boolean; durationMs: number }
  | { kind: "expired" }
  | { kind: "watchdog" }
  | { kind: "error"; error: Error };

const DEFAULT_RESYNC_MS = 5 * 60_000;
const DEFAULT_WATCHDOG_MS = 5 * 60_000;
const DEFAULT_LIST_TIMEOUT_MS = 60_000;
const DEFAULT_BACKOFF = { initialMs: 1_000, maxMs: 30_000 };
/** A watch that ends sooner than this without any event counts as a failure for backoff purposes. */
const MIN_HEALTHY_WATCH_MS = 1_000;

export class SupervisedInformer<T extends KubernetesObject>
  extends EventEmitter<SupervisedInformerEvents<T>>
  implements InformerCache<T>
{
  readonly name: string;
  readonly stats: InformerStats = zeroStats();

  private readonly options: SupervisedInformerOptions<T>;
  private readonly log: Logger;
  private readonly watchdogMs: number;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly metrics: InformerMetrics | undefined;
  /** Reports each change through notify(), so a throwing listener cannot break a relist. */
  private readonly cache = new InformerStore<T>((event, ...args) =>
    // The same tuples under the same names; TypeScript cannot relate them through a generic key.
    this.notify(event, ...(args as SupervisedInformerEvents<T>[typeof event])),
  );
  private resourceVersion = "";
  private hasSynced = false;
  private running = false;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private backoffMs = 0;
  private resyncTimer: NodeJS.Timeout | undefined;
  /** Ends whatever the loop is waiting for (watch or backoff sleep) when stop() is called. */
  private interrupt: (() => void) | undefined;
  /** Aborts an in-flight list when stop() is called. */
  private stopController = new AbortController();
  private syncWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];

  constructor(options: SupervisedInformerOptions<T>) {
    super();
    this.options = options;
    this.name = options.name ?? options.path;
    this.log = (options.logger ?? silentLogger).child({ informer: this.name });
    this.watchdogMs = options.watchdogMs ?? DEFAULT_WATCHDOG_MS;
    this.backoffInitialMs = options.backoff?.initialMs ?? DEFAULT_BACKOFF.initialMs;
    this.backoffMaxMs = options.backoff?.maxMs ?? DEFAULT_BACKOFF.maxMs;
    this.metrics = options.metrics ? informerMetrics(options.metrics) : undefined;
  }

  /** True once the first list is in the cache (until stop()). */
  get synced(): boolean {
    return this.hasSynced && this.running;
  }

  get(namespace: string, name: string): T | undefined {
    return this.cache.get(namespace, name);
  }

  list(namespace?: string): T[] {
    return this.cache.list(namespace);
  }

  /**
   * Starts listing and watching; resolves once the first list is cached. Failures before that are
   * retried with backoff (and emitted as 'error'), so a caller that needs a bound races this with a
   * timeout. Rejects only when stop() comes first.
   */
  start(): Promise<void> {
    const synced = new Promise<void>((resolve, reject) => {
      if (this.synced) resolve();
      else this.syncWaiters.push({ resolve, reject });
    });
    if (!this.running) {
      this.running = true;
      this.stopping = false;
      this.stopController = new AbortController();
      this.backoffMs = 0;
      this.resourceVersion = "";
      this.loop = this.supervise().catch((err: unknown) => {
        // supervise() handles its own failures; reaching here is a bug worth shouting about.
        this.log.error({ err }, "informer loop crashed");
      });
      const resyncMs = this.options.resyncMs ?? DEFAULT_RESYNC_MS;
      if (resyncMs > 0) {
        this.resyncTimer = setInterval(() => this.resync(), resyncMs);
        this.resyncTimer.unref();
      }
    }
    return synced;
  }

  /** Stops watching; the cache keeps its last contents. Quiet: no 'error' and no warnings. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.stopping = true;
    clearInterval(this.resyncTimer);
    this.resyncTimer = undefined;
    this.interrupt?.();
    this.stopController.abort();
    await this.loop;
    this.running = false;
    this.hasSynced = false; // a later start() waits for a fresh list again
    this.metrics?.synced.set({ informer: this.name }, 0);
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    for (const waiter of waiters) waiter.reject(new Error(`informer ${this.name} stopped before it synced`));
    this.log.debug("informer stopped");
  }

  private async supervise(): Promise<void> {
    let needList = true;
    while (!this.stopping) {
      if (needList) {
        try {
          await this.relist();
          needList = false;
        } catch (err) {
          if (this.stopping) return;
          this.recordError(err, "list failed");
          await this.sleepBackoff();
          continue;
        }
      }
      const outcome = await this.watchOnce();
      switch (outcome.kind) {
        case "stopped":
          return;
        case "closed":
          // The server ended the watch (timeoutSeconds) or client-node's inactivity timer did:
          // carry on from the last resourceVersion. Back off only if it ended suspiciously fast.
          if (!outcome.sawEvents && outcome.durationMs < MIN_HEALTHY_WATCH_MS) await this.sleepBackoff();
          break;
        case "expired":
          this.stats.expired++;
          this.metrics?.expired.inc({ informer: this.name });
          this.countRestart("expired");
          this.log.info({ resourceVersion: this.resourceVersion }, "watch expired (410 Gone); relisting");
          needList = true;
          break;
        case "watchdog":
          this.stats.watchdogRestarts++;
          this.countRestart("watchdog");
          this.log.warn({ watchdogMs: this.watchdogMs }, "watch silent too long; restarting with a relist");
          needList = true;
          break;
        case "error":
          this.countRestart("error");
          this.recordError(outcome.error, "watch failed");
          await this.sleepBackoff();
          needList = true;
          break;
      }
    }
  }

  private countRestart(reason: "error" | "expired" | "watchdog"): void {
    this.stats.restarts++;
    this.metrics?.restarts.inc({ informer: this.name, reason });
  }

  private recordError(err: unknown, message: string): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.stats.errors++;
    this.metrics?.errors.inc({ informer: this.name });
    this.log.warn({ err: error, retryInMs: this.nextBackoffMs() }, message);
    if (this.listenerCount("error") > 0) this.notify("error", error);
  }

  private nextBackoffMs(): number {
    return this.backoffMs === 0 ? this.backoffInitialMs : Math.min(this.backoffMs * 2, this.backoffMaxMs);
  }

  private sleepBackoff(): Promise<void> {
    this.backoffMs = this.nextBackoffMs();
    const delayMs = this.backoffMs;
    return new Promise((resolve) => {
      const timer = setTimeout(done, delayMs);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.interrupt = done;
    });
  }

  private async relist(): Promise<void> {
    const list = await this.listWithTimeout();
    const listKind = list.kind?.endsWith("List") ? list.kind.slice(0, -"List".length) : undefined;
    const items = list.items ?? [];
    for (const item of items) {
      // List items carry no kind/apiVersion; watch events do. Make them alike.
      if (listKind && !item.kind) Object.assign(item, { apiVersion: list.apiVersion, kind: listKind });
    }
    if (this.stopping) return;
    const first = this.stats.lists === 0;
    this.stats.lists++;
    if (!first) this.stats.relists++;
    this.metrics?.lists.inc({ informer: this.name });
    this.cache.replace(items);
    this.resourceVersion = list.metadata?.resourceVersion ?? "";
    this.log.debug({ objects: this.cache.size, resourceVersion: this.resourceVersion, first }, "listed");
    if (!this.hasSynced) {
      this.hasSynced = true;
      this.log.info({ objects: this.cache.size }, "informer synced");
    }
    this.metrics?.synced.set({ informer: this.name }, 1);
    this.metrics?.objects.set({ informer: this.name }, this.cache.size);
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  private listWithTimeout(): Promise<KubernetesListObject<T>> {
    const timeoutMs = this.options.listTimeoutMs ?? DEFAULT_LIST_TIMEOUT_MS;
    const signal = AbortSignal.any([AbortSignal.timeout(Math.ceil(timeoutMs)), this.stopController.signal]);
    if (!this.options.list) return listPaged<T>(this.options, signal);
    // A caller's list cannot be cancelled, only abandoned.
    const listing = this.options.list();
    return new Promise((resolve, reject) => {
      const abandon = () => reject(new Error(`list abandoned: ${String(signal.reason)}`));
      signal.addEventListener("abort", abandon, { once: true });
      listing.then(resolve, reject).finally(() => signal.removeEventListener("abort", abandon));
    });
  }

  private watchOnce(): Promise<WatchOutcome> {
    const watch = new Watch(this.options.kubeConfig);
    // client-node 2.0.1 aborts a watch after 30 s without data. Our watchdog does that job (and
    // relists); leave the library's timer only as a backstop behind it, for a connect that hangs.
    if ("requestTimeoutMs" in watch) {
      Object.assign(watch, { requestTimeoutMs: this.watchdogMs + 5_000 });
    }
    const timeoutSeconds =
      this.options.watchTimeoutSeconds ??
      Math.max(1, Math.round((this.watchdogMs / 1000) * (0.5 + 0.4 * Math.random())));
    const query: Record<string, string | number | boolean> = {
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds,
    };
    if (this.options.labelSelector) query.labelSelector = this.options.labelSelector;
    if (this.options.fieldSelector) query.fieldSelector = this.options.fieldSelector;
    this.stats.watches++;
    const startedAt = Date.now();

    return new Promise<WatchOutcome>((resolve) => {
      let settled = false;
      let sawEvents = false;
      let expired = false;
      let errorStatus: { code?: number; reason?: string; message?: string } | undefined;
      let controller: AbortController | undefined;
      let watchdog: NodeJS.Timeout | undefined;

      const finish = (outcome: WatchOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(watchdog);
        // Aborting makes client-node call done(AbortError); `settled` keeps that out of the loop.
        controller?.abort();
        resolve(outcome);
      };
      const armWatchdog = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => finish({ kind: "watchdog" }), this.watchdogMs);
      };
      this.interrupt = () => finish({ kind: "stopped" });
      armWatchdog();

      const onEvent = (type: string, obj: unknown) => {
        if (settled) return; // an abandoned watch
        armWatchdog();
        sawEvents = true;
        this.stats.events++;
        this.metrics?.events.inc({ informer: this.name, type });
        if (type === "ERROR") {
          const status = (obj ?? {}) as { code?: number; reason?: string; message?: string };
          if (status.code === 410) expired = true;
          else errorStatus = status;
          return; // the server closes the stream next
        }
        // Any event proves the connection healthy, so the next failure starts backing off afresh.
        this.backoffMs = 0;
        this.apply(type, obj as T);
      };
      const onDone = (err: unknown) => {
        if (settled) return;
        if (this.stopping) return finish({ kind: "stopped" });
        const code = (err as { statusCode?: number; code?: number } | null)?.statusCode;
        if (expired || code === 410) return finish({ kind: "expired" });
        if (errorStatus) {
          const { code: statusCode, reason, message } = errorStatus;
          return finish({
            kind: "error",
            error: new Error(`watch ERROR ${statusCode ?? "?"} ${reason ?? ""}: ${message ?? ""}`),
          });
        }
        if (!err || (err as Error).name === "TimeoutError") {
          return finish({ kind: "closed", sawEvents, durationMs: Date.now() - startedAt });
        }
        finish({ kind: "error", error: err instanceof Error ? err : new Error(String(err)) });
      };

      watch.watch(this.options.path, query, onEvent, onDone).then(
        (abortController) => {
          controller = abortController;
          if (settled) abortController.abort(); // the watchdog or stop() came first
        },
        (err: unknown) =>
          finish({ kind: "error", error: err instanceof Error ? err : new Error(String(err)) }),
      );
    });
  }

  private apply(type: string, obj: T): void {
    const resourceVersion = obj?.metadata?.resourceVersion;
    if (type === "ADDED" || type === "MODIFIED") {
      this.cache.upsert(obj);
    } else if (type === "DELETED") {
      this.cache.remove(obj);
    }
    // BOOKMARK: only the resourceVersion moves on.
    if (resourceVersion) this.resourceVersion = resourceVersion;
    this.metrics?.objects.set({ informer: this.name }, this.cache.size);
  }

  private resync(): void {
    if (!this.synced) return;
    for (const obj of this.list()) this.notify("resync", obj);
  }

  /** Calls listeners one by one so that a throwing listener neither breaks the others nor the loop. */
  private notify<K extends keyof SupervisedInformerEvents<T>>(
    event: K,
    ...args: SupervisedInformerEvents<T>[K]
  ): void {
    for (const listener of this.listeners(event)) {
      try {
        (listener as (...a: SupervisedInformerEvents<T>[K]) => void)(...args);
      } catch (err) {
        this.log.error({ err, event }, "informer listener threw");
      }
    }
  }
}
