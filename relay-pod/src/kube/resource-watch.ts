// Follows the pod's own RelaySession: a watch with fieldSelector metadata.name=NAME, which RBAC
// authorizes against resourceNames: [NAME] (a plain list/watch of the collection would be refused).
// A watch ends (server timeout, 30 s without a byte: api-client.ts), so this reconnects: from the last
// resourceVersion after a clean close or the inactivity timeout, with backoff after errors, and after 410 Gone (the
// resourceVersion is older than the apiserver's watch window, e.g. after an apiserver restart) from a
// fresh list of the one object, whose list resourceVersion is current.

import type { KubeAccess, WatchHandle } from "./api-client.js";
import { silentLogger, type Logger } from "../common/log.js";
import type { RelaySession } from "../../../crds/src/index.js";
import { listOwnRelaySession, relaySessionsPath, type SessionRef } from "./session-resource.js";

export interface ResourceWatchOptions {
  /** Every version of the object seen (watch ADDED/MODIFIED, or a re-list after 410). */
  onObject: (object: RelaySession) => void;
  /** The object is gone (watch DELETED, or missing from a re-list). The watch stops. */
  onDeleted: () => void;
  logger?: Logger;
  /** Delay before re-watching after an error: min, max (ms), doubling per consecutive error. */
  backoffMs?: [number, number];
  /** Server-side watch timeout; the server then closes the watch and it is resumed. */
  timeoutSeconds?: number;
}

interface WatchEventObject {
  metadata?: { resourceVersion?: string };
  code?: number;
  reason?: string;
  message?: string;
}

export class RelaySessionWatch {
  private readonly log: Logger;
  private resourceVersion: string | undefined;
  private abort: WatchHandle | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private consecutiveErrors = 0;
  private stopped = false;
  /** Counters for logs and tests. */
  readonly stats = { watches: 0, reconnects: 0, relists: 0, errors: 0 };

  constructor(
    private readonly kubeConfig: KubeAccess,
    private readonly ref: SessionRef,
    private readonly options: ResourceWatchOptions,
  ) {
    this.log = (options.logger ?? silentLogger).child({ component: "resource-watch" });
  }

  /** Starts watching from `resourceVersion` (that of the object the caller has already read). */
  start(resourceVersion: string | undefined): void {
    this.resourceVersion = resourceVersion;
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.abort?.abort();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.stats.watches++;
    let gone = false;
    let sawEvent = false;
    const startedAt = Date.now();
    const onEvent = (type: string, object: unknown) => {
      if (this.stopped) return;
      if (type !== "ERROR") {
        sawEvent = true;
        this.consecutiveErrors = 0;
      }
      const metadata = (object as WatchEventObject | undefined)?.metadata;
      switch (type) {
        case "ADDED":
        case "MODIFIED":
          if (metadata?.resourceVersion) this.resourceVersion = metadata.resourceVersion;
          this.options.onObject(object as RelaySession);
          break;
        case "BOOKMARK":
          if (metadata?.resourceVersion) this.resourceVersion = metadata.resourceVersion;
          break;
        case "DELETED":
          this.log.info("the RelaySession was deleted");
          this.stop();
          this.options.onDeleted();
          break;
        case "ERROR": {
          const status = object as WatchEventObject;
          if (status?.code === 410) gone = true;
          else this.log.warn({ status }, "watch error event");
          break;
        }
      }
    };
    const onDone = (err: unknown) => {
      this.abort = undefined;
      if (this.stopped) return; // our own abort
      const statusCode = (err as { statusCode?: number } | null)?.statusCode;
      if (gone || statusCode === 410) {
        // A relist that leads straight to another 410 must not become a tight loop.
        this.scheduleRelist(sawEvent ? 0 : this.nextBackoff());
        return;
      }
      const timedOut = (err as Error | null)?.name === "TimeoutError";
      if (!err || timedOut) {
        // A normal end (server timeout, or quiet for 30 s): resume at once unless it keeps ending
        // immediately without events, which is an error in disguise.
        const healthy = sawEvent || Date.now() - startedAt > 5000;
        if (healthy) this.consecutiveErrors = 0;
        this.stats.reconnects++;
        this.scheduleConnect(healthy ? 0 : this.nextBackoff());
        return;
      }
      this.stats.errors++;
      this.log.warn({ err: (err as Error).message, statusCode }, "watch failed; retrying");
      this.scheduleConnect(this.nextBackoff());
    };
    try {
      this.abort = await this.kubeConfig.watch(
        relaySessionsPath(this.ref.namespace),
        {
          fieldSelector: `metadata.name=${this.ref.name}`,
          resourceVersion: this.resourceVersion,
          allowWatchBookmarks: true,
          timeoutSeconds: this.options.timeoutSeconds ?? 300,
        },
        onEvent,
        onDone,
      );
      // stop() may have run while the request was being set up.
      if (this.stopped) this.abort.abort();
    } catch (err) {
      onDone(err);
    }
  }

  /** After 410: list the object afresh (it may have changed meanwhile) and watch from the list. */
  private async relist(): Promise<void> {
    if (this.stopped) return;
    this.stats.relists++;
    try {
      const { object, resourceVersion } = await listOwnRelaySession(this.kubeConfig, this.ref);
      if (this.stopped) return;
      if (!object) {
        this.log.info("the RelaySession is gone");
        this.stop();
        this.options.onDeleted();
        return;
      }
      this.resourceVersion = resourceVersion ?? object.metadata.resourceVersion;
      this.options.onObject(object);
      void this.connect();
    } catch (err) {
      if (this.stopped) return;
      this.stats.errors++;
      this.log.warn({ err: (err as Error).message }, "re-listing the RelaySession failed; retrying");
      this.scheduleRelist(this.nextBackoff());
    }
  }

  private scheduleRelist(delayMs: number): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.relist(), delayMs);
  }

  private scheduleConnect(delayMs: number): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), delayMs);
  }

  private nextBackoff(): number {
    const [min, max] = this.options.backoffMs ?? [500, 30_000];
    const delay = Math.min(max, min * 2 ** this.consecutiveErrors);
    this.consecutiveErrors = Math.min(this.consecutiveErrors + 1, 30);
    return delay;
  }
}
