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
 */
import { EventEmitter } from "node:events";
import { request as httpRequest } from "node:http";
import { request as httpsRequest, type RequestOptions } from "node:https";
import {
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { Counter, Gauge, Registry } from "prom-client";
import { silentLogger } from "../../../relay-pod/src/index.js";
import { counterIn, gaugeIn } from "./metrics.js";

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

/** Counters for tests and health reporting; the same numbers go to Prometheus when a registry is given. */
export interface InformerStats {
  /** Successful lists, the first one included. */
  lists: number;
  /** Lists after the first: after a 410, an error, or the watchdog. */
  relists: number;
  /** Watch requests started. */
  watches: number;
  /** Watches that ended abnormally and were replaced (error, 410, watchdog). */
  restarts: number;
  /** Watches abandoned because they stayed silent for watchdogMs. */
  watchdogRestarts: number;
  /** 410 Gone answers (HTTP or an in-stream ERROR event). */
  expired: number;
  /** Failed lists and watches. */
  errors: number;
  /** Watch events received, bookmarks included. */
  events: number;
}

function zeroStats(): InformerStats {
  return {
    lists: 0,
    relists: 0,
    watches: 0,
    restarts: 0,
    watchdogRestarts: 0,
    expired: 0,
    errors: 0,
    events: 0,
  };
}

export interface SupervisedInformerEvents<T> {
  add: [obj: T];
  update: [obj: T, old: T];
  delete: [obj: T];
  resync: [obj: T];
  /** Informational: the informer has already scheduled its own recovery. */
  error: [err: Error];
}

/** What a controller needs from an informer or a group of them. */
export interface InformerCache<T extends KubernetesObject> {
  get(namespace: string, name: string): T | undefined;
  list(namespace?: string): T[];
  readonly synced: boolean;
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
const LIST_PAGE_SIZE = 500;
const MAX_LIST_PAGES = 10_000;
/** A watch that ends sooner than this without any event counts as a failure for backoff purposes. */
const MIN_HEALTHY_WATCH_MS = 1_000;

interface InformerMetrics {
  lists: Counter<"informer">;
  restarts: Counter<"informer" | "reason">;
  expired: Counter<"informer">;
  errors: Counter<"informer">;
  events: Counter<"informer" | "type">;
  synced: Gauge<"informer">;
  objects: Gauge<"informer">;
}

function informerMetrics(registry: Registry): InformerMetrics {
  return {
    lists: counterIn(registry, "operator_informer_lists_total", "Successful lists (initial and relists)", [
      "informer",
    ]),
    restarts: counterIn(
      registry,
      "operator_informer_watch_restarts_total",
      "Watches replaced after an error, a 410 Gone, or a silent-watch watchdog",
      ["informer", "reason"],
    ),
    expired: counterIn(
      registry,
      "operator_informer_gone_total",
      "410 Gone answers (resourceVersion expired)",
      ["informer"],
    ),
    errors: counterIn(registry, "operator_informer_errors_total", "Failed lists and watches", ["informer"]),
    events: counterIn(registry, "operator_informer_events_total", "Watch events received", [
      "informer",
      "type",
    ]),
    synced: gaugeIn(registry, "operator_informer_synced", "1 once the informer's first list is cached", [
      "informer",
    ]),
    objects: gaugeIn(registry, "operator_informer_objects", "Objects in the informer's cache", ["informer"]),
  };
}

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
  /** namespace ("" for cluster-scoped) → name → object */
  private readonly cache = new Map<string, Map<string, T>>();
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
    return this.cache.get(namespace)?.get(name);
  }

  list(namespace?: string): T[] {
    if (namespace !== undefined) return [...(this.cache.get(namespace)?.values() ?? [])];
    return [...this.cache.values()].flatMap((objects) => [...objects.values()]);
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
    const fresh = new Map<string, Map<string, T>>();
    for (const item of list.items ?? []) {
      // List items carry no kind/apiVersion; watch events do. Make them alike.
      if (listKind && !item.kind) Object.assign(item, { apiVersion: list.apiVersion, kind: listKind });
      const namespace = item.metadata?.namespace ?? "";
      let objects = fresh.get(namespace);
      if (!objects) fresh.set(namespace, (objects = new Map()));
      objects.set(item.metadata?.name ?? "", item);
    }
    if (this.stopping) return;
    const first = this.stats.lists === 0;
    this.stats.lists++;
    if (!first) this.stats.relists++;
    this.metrics?.lists.inc({ informer: this.name });
    // Deletions first, so a listener never sees an object twice under one name.
    for (const [namespace, objects] of this.cache) {
      for (const [name, old] of objects) {
        if (!fresh.get(namespace)?.has(name)) {
          objects.delete(name);
          this.notify("delete", old);
        }
      }
      if (objects.size === 0) this.cache.delete(namespace);
    }
    for (const objects of fresh.values()) for (const obj of objects.values()) this.upsert(obj);
    this.resourceVersion = list.metadata?.resourceVersion ?? "";
    this.log.debug({ objects: this.count(), resourceVersion: this.resourceVersion, first }, "listed");
    if (!this.hasSynced) {
      this.hasSynced = true;
      this.log.info({ objects: this.count() }, "informer synced");
    }
    this.metrics?.synced.set({ informer: this.name }, 1);
    this.metrics?.objects.set({ informer: this.name }, this.count());
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  private listWithTimeout(): Promise<KubernetesListObject<T>> {
    const timeoutMs = this.options.listTimeoutMs ?? DEFAULT_LIST_TIMEOUT_MS;
    const signal = AbortSignal.any([AbortSignal.timeout(Math.ceil(timeoutMs)), this.stopController.signal]);
    if (!this.options.list) return this.listRaw(signal);
    // A caller's list cannot be cancelled, only abandoned.
    const listing = this.options.list();
    return new Promise((resolve, reject) => {
      const abandon = () => reject(new Error(`list abandoned: ${String(signal.reason)}`));
      signal.addEventListener("abort", abandon, { once: true });
      listing.then(resolve, reject).finally(() => signal.removeEventListener("abort", abandon));
    });
  }

  private async listRaw(signal: AbortSignal): Promise<KubernetesListObject<T>> {
    const server = this.options.kubeConfig.getCurrentCluster()?.server;
    if (!server) throw new Error("kubeconfig has no current cluster");
    const items: T[] = [];
    let continueToken: string | undefined;
    for (let page = 0; page < MAX_LIST_PAGES; page++) {
      const url = new URL(server + this.options.path);
      if (this.options.labelSelector) url.searchParams.set("labelSelector", this.options.labelSelector);
      if (this.options.fieldSelector) url.searchParams.set("fieldSelector", this.options.fieldSelector);
      url.searchParams.set("limit", String(LIST_PAGE_SIZE));
      if (continueToken) url.searchParams.set("continue", continueToken);
      const body = (await getJson(this.options.kubeConfig, url, signal)) as KubernetesListObject<T>;
      items.push(...(body.items ?? []));
      // Plain JSON, so the wire name `continue` (client-node's typed V1ListMeta calls it `_continue`).
      continueToken = (body.metadata as { continue?: string } | undefined)?.continue;
      if (!continueToken) return { ...body, items };
    }
    throw new Error(`list of ${this.options.path} has more than ${MAX_LIST_PAGES} pages`);
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
      this.upsert(obj);
    } else if (type === "DELETED") {
      const namespace = obj.metadata?.namespace ?? "";
      const objects = this.cache.get(namespace);
      if (objects?.delete(obj.metadata?.name ?? "")) {
        if (objects.size === 0) this.cache.delete(namespace);
        this.notify("delete", obj);
      }
    }
    // BOOKMARK: only the resourceVersion moves on.
    if (resourceVersion) this.resourceVersion = resourceVersion;
    this.metrics?.objects.set({ informer: this.name }, this.count());
  }

  private upsert(obj: T): void {
    const namespace = obj.metadata?.namespace ?? "";
    const name = obj.metadata?.name ?? "";
    let objects = this.cache.get(namespace);
    if (!objects) this.cache.set(namespace, (objects = new Map()));
    const old = objects.get(name);
    objects.set(name, obj);
    if (!old) this.notify("add", obj);
    else if (old.metadata?.resourceVersion !== obj.metadata?.resourceVersion) this.notify("update", obj, old);
  }

  private resync(): void {
    if (!this.synced) return;
    for (const obj of this.list()) this.notify("resync", obj);
  }

  private count(): number {
    let total = 0;
    for (const objects of this.cache.values()) total += objects.size;
    return total;
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

/** One informer per namespace (or one for all namespaces), read and started as one. */
export class InformerGroup<T extends KubernetesObject>
  extends EventEmitter<SupervisedInformerEvents<T>>
  implements InformerCache<T>
{
  readonly informers: ReadonlyMap<string | undefined, SupervisedInformer<T>>;

  /** `informers`: namespace → its informer; the key `undefined` for an all-namespaces informer. */
  constructor(informers: Map<string | undefined, SupervisedInformer<T>>) {
    super();
    this.informers = informers;
    for (const informer of informers.values()) {
      informer.on("add", (obj) => this.emit("add", obj));
      informer.on("update", (obj, old) => this.emit("update", obj, old));
      informer.on("delete", (obj) => this.emit("delete", obj));
      informer.on("resync", (obj) => this.emit("resync", obj));
      informer.on("error", (err) => {
        if (this.listenerCount("error") > 0) this.emit("error", err);
      });
    }
  }

  get synced(): boolean {
    return [...this.informers.values()].every((informer) => informer.synced);
  }

  async start(): Promise<void> {
    await Promise.all([...this.informers.values()].map((informer) => informer.start()));
  }

  async stop(): Promise<void> {
    await Promise.all([...this.informers.values()].map((informer) => informer.stop()));
  }

  get(namespace: string, name: string): T | undefined {
    const informer = this.informers.get(namespace) ?? this.informers.get(undefined);
    return informer?.get(namespace, name);
  }

  list(namespace?: string): T[] {
    if (namespace !== undefined) {
      const informer = this.informers.get(namespace) ?? this.informers.get(undefined);
      return informer?.list(namespace) ?? [];
    }
    return [...this.informers.values()].flatMap((informer) => informer.list());
  }

  /** Summed counters of all members. */
  get stats(): InformerStats {
    const total = zeroStats();
    for (const informer of this.informers.values()) {
      for (const key of Object.keys(total) as Array<keyof InformerStats>) total[key] += informer.stats[key];
    }
    return total;
  }
}

/**
 * Watches `namespaces` (none or empty = all namespaces) with one informer each. `options(namespace)`
 * gives each member's options; `namespace` is undefined for the all-namespaces informer. Example:
 *
 *   createNamespacedInformers(flags.namespace, (ns) => ({
 *     kubeConfig, name: `pods/${ns ?? "*"}`, labelSelector: "app.kubernetes.io/managed-by=trickle-relay-operator",
 *     path: ns ? `/api/v1/namespaces/${ns}/pods` : "/api/v1/pods",
 *   }));
 */
export function createNamespacedInformers<T extends KubernetesObject>(
  namespaces: readonly string[] | undefined,
  options: (namespace: string | undefined) => SupervisedInformerOptions<T>,
): InformerGroup<T> {
  const unique = [...new Set(namespaces ?? [])];
  const keys: Array<string | undefined> = unique.length > 0 ? unique : [undefined];
  return new InformerGroup(new Map(keys.map((ns) => [ns, new SupervisedInformer<T>(options(ns))])));
}

/** GET a URL with the kubeconfig's credentials; rejects with `statusCode` set on a non-200 answer. */
async function getJson(kubeConfig: KubeConfig, url: URL, signal: AbortSignal): Promise<unknown> {
  const options: RequestOptions = { method: "GET" };
  await kubeConfig.applyToHTTPSOptions(options);
  options.headers = { ...options.headers, Accept: "application/json" };
  options.signal = signal;
  const request = url.protocol === "http:" ? httpRequest : httpsRequest;
  return new Promise((resolve, reject) => {
    const req = request(url, options, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        if (res.statusCode === 200) {
          try {
            resolve(JSON.parse(text));
          } catch (err) {
            reject(new Error(`GET ${url.pathname}: invalid JSON`, { cause: err }));
          }
          return;
        }
        let message = text.slice(0, 300);
        try {
          message = (JSON.parse(text) as { message?: string }).message ?? message;
        } catch {
          // not a Status object; keep the raw text
        }
        reject(
          Object.assign(new Error(`GET ${url.pathname}: HTTP ${res.statusCode} ${message}`), {
            statusCode: res.statusCode,
          }),
        );
      });
    });
    req.on("error", reject);
    req.end();
  });
}
