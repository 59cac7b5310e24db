/**
 * The rate-limited, de-duplicating work queue of controller-runtime (client-go's workqueue) for
 * string keys such as "namespace/name":
 *
 * - a key waiting in the queue is queued once, however often it is added (the `dirty` set);
 * - a key is never handled by two workers at once: added while being processed, it is queued again
 *   only when that run finishes (the `processing` set);
 * - `addRateLimited` waits max(per-key exponential backoff, global token bucket), the default
 *   controller rate limiter (5 ms doubling to 1000 s per key; 10 qps with a burst of 100 overall);
 * - `run` maps a handler's outcome like controller-runtime's reconcileHandler: throw → retry with
 *   backoff (except `TerminalError`), `{ requeueAfterMs }` → forget the backoff and come back then,
 *   anything else → forget the backoff.
 */
import type { Logger } from "pino";
import type { Counter, Gauge, Histogram, Registry } from "prom-client";
import { silentLogger } from "../../../relay-pod/src/index.js";
import { counterIn, gaugeIn, histogramIn } from "./metrics.js";

export type ReconcileResult = { requeueAfterMs?: number } | void;
export type ReconcileHandler = (key: string) => Promise<ReconcileResult>;

/** Thrown by a handler for a failure that retrying cannot fix (e.g. an invalid spec): no requeue. */
export class TerminalError extends Error {
  override name = "TerminalError";
}

export interface WorkQueueOptions {
  /** Names the queue in logs and metrics (default "default"). */
  name?: string;
  /** First per-key retry delay (default 5 ms). */
  baseDelayMs?: number;
  /** Longest per-key retry delay (default 1000 s). */
  maxDelayMs?: number;
  /** Overall rate of rate-limited adds (default 10 per second). */
  qps?: number;
  /** Rate-limited adds allowed at once before `qps` applies (default 100). */
  burst?: number;
  logger?: Logger;
  /** Registers `operator_workqueue_*` metrics labelled `name=<name>`. */
  metrics?: Registry;
  /** Monotonic milliseconds; injectable for tests. */
  now?: () => number;
  /**
   * A key's handler starts at most once per this many milliseconds (default 0: at once). Adds in
   * between are gathered into the next run: a burst of events for one key is handled in batches
   * instead of one run per event.
   */
  minIntervalMs?: number;
}

const monotonicNow = () => performance.now();

/** Per-key delay doubling from `baseMs` up to `maxMs` with each consecutive failure. */
export class ItemExponentialBackoff {
  private readonly failures = new Map<string, number>();

  constructor(
    private readonly baseMs = 5,
    private readonly maxMs = 1_000_000,
  ) {}

  /** The delay for this failure of `key`; counts it. */
  when(key: string): number {
    const failures = this.failures.get(key) ?? 0;
    this.failures.set(key, failures + 1);
    if (failures > 60) return this.maxMs; // 2^60 overflows any sane maximum anyway
    return Math.min(this.baseMs * 2 ** failures, this.maxMs);
  }

  retries(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  forget(key: string): void {
    this.failures.delete(key);
  }
}

/** Token bucket: `burst` tokens, refilled at `qps`; a reservation beyond them waits its turn. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly qps = 10,
    private readonly burst = 100,
    private readonly now: () => number = monotonicNow,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Takes one token; returns how long to wait (ms) until it is really available. */
  reserve(): number {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.qps);
    this.last = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.qps) * 1000;
  }
}

interface WorkQueueMetrics {
  depth: Gauge<"name">;
  adds: Counter<"name">;
  retries: Counter<"name">;
  workDuration: Histogram<"name">;
}

export class WorkQueue {
  readonly name: string;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly itemBackoff: ItemExponentialBackoff;
  private readonly bucket: TokenBucket;
  private readonly metrics: WorkQueueMetrics | undefined;
  private readonly queue: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly minIntervalMs: number;
  /** When each key's handler last started (only kept with minIntervalMs). */
  private readonly lastStarted = new Map<string, number>();
  /** Dirty keys held back until their interval is over. */
  private readonly spaced = new Map<string, NodeJS.Timeout>();
  private waiters: Array<() => void> = [];
  private workers: Array<Promise<void>> = [];
  private stopping = false;

  constructor(options: WorkQueueOptions = {}) {
    this.name = options.name ?? "default";
    this.minIntervalMs = options.minIntervalMs ?? 0;
    this.log = (options.logger ?? silentLogger).child({ workqueue: this.name });
    this.now = options.now ?? monotonicNow;
    this.itemBackoff = new ItemExponentialBackoff(options.baseDelayMs ?? 5, options.maxDelayMs ?? 1_000_000);
    this.bucket = new TokenBucket(options.qps ?? 10, options.burst ?? 100, this.now);
    const registry = options.metrics;
    this.metrics = registry && {
      depth: gaugeIn(registry, "operator_workqueue_depth", "Keys waiting in the work queue", ["name"]),
      adds: counterIn(registry, "operator_workqueue_adds_total", "Keys added to the work queue", ["name"]),
      retries: counterIn(registry, "operator_workqueue_retries_total", "Rate-limited re-adds (retries)", [
        "name",
      ]),
      workDuration: histogramIn(
        registry,
        "operator_workqueue_work_duration_seconds",
        "Time a handler took for one key",
        ["name"],
        [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60],
      ),
    };
  }

  /** Keys waiting to be handled (not those in progress or scheduled for later). */
  get length(): number {
    return this.queue.length;
  }

  get shuttingDown(): boolean {
    return this.stopping;
  }

  add(key: string): void {
    if (this.stopping || this.dirty.has(key)) return;
    this.metrics?.adds.inc({ name: this.name });
    this.dirty.add(key);
    if (this.processing.has(key)) return; // queued again when the current run finishes
    this.enqueueSpaced(key);
  }

  /** Queues dirty `key` now, or once minIntervalMs has passed since its handler last started. */
  private enqueueSpaced(key: string): void {
    const last = this.lastStarted.get(key);
    const waitMs = last === undefined ? 0 : last + this.minIntervalMs - this.now();
    if (waitMs > 0) {
      if (this.spaced.has(key)) return;
      this.spaced.set(
        key,
        setTimeout(() => {
          this.spaced.delete(key);
          if (!this.stopping) this.enqueueSpaced(key);
        }, waitMs),
      );
      return;
    }
    this.lastStarted.delete(key);
    this.queue.push(key);
    this.metrics?.depth.set({ name: this.name }, this.queue.length);
    this.waiters.shift()?.();
  }

  /** Adds `key` after `delayMs`; of several pending delays for one key the earliest wins. */
  addAfter(key: string, delayMs: number): void {
    if (this.stopping) return;
    if (delayMs <= 0) return this.add(key);
    const at = this.now() + delayMs;
    const pending = this.delayed.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    this.delayed.set(key, { at, timer });
  }

  /** Adds `key` after its backoff: max(per-key exponential delay, global token bucket). */
  addRateLimited(key: string): void {
    if (this.stopping) return;
    this.metrics?.retries.inc({ name: this.name });
    this.addAfter(key, Math.max(this.itemBackoff.when(key), this.bucket.reserve()));
  }

  /** Resets `key`'s backoff (after a success). */
  forget(key: string): void {
    this.itemBackoff.forget(key);
  }

  /** Consecutive rate-limited adds of `key` since it was last forgotten. */
  numRequeues(key: string): number {
    return this.itemBackoff.retries(key);
  }

  /**
   * Starts `workers` concurrent loops that take keys and call `handler`; resolves when they have all
   * exited after shutdown().
   */
  run(workers: number, handler: ReconcileHandler): Promise<void> {
    const started = Array.from({ length: Math.max(1, workers) }, () => this.work(handler));
    this.workers.push(...started);
    return Promise.all(started).then(() => undefined);
  }

  /**
   * Stops taking keys, drops waiting and scheduled ones, and resolves once every handler already
   * running has finished.
   */
  async shutdown(): Promise<void> {
    this.stopping = true;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    for (const timer of this.spaced.values()) clearTimeout(timer);
    this.spaced.clear();
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
    await Promise.all(this.workers);
  }

  private async next(): Promise<string | undefined> {
    for (;;) {
      if (this.stopping) return undefined;
      const key = this.queue.shift();
      if (key !== undefined) {
        this.metrics?.depth.set({ name: this.name }, this.queue.length);
        this.dirty.delete(key);
        this.processing.add(key);
        if (this.minIntervalMs > 0) this.lastStarted.set(key, this.now());
        return key;
      }
      await new Promise<void>((wake) => this.waiters.push(wake));
    }
  }

  private done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key) && !this.stopping) this.enqueueSpaced(key);
  }

  private async work(handler: ReconcileHandler): Promise<void> {
    for (;;) {
      const key = await this.next();
      if (key === undefined) return;
      const started = this.now();
      try {
        const result = await handler(key);
        this.forget(key);
        const requeueAfterMs = result?.requeueAfterMs;
        if (requeueAfterMs !== undefined && requeueAfterMs > 0) this.addAfter(key, requeueAfterMs);
      } catch (err) {
        if (err instanceof TerminalError) {
          this.forget(key);
          this.log.error({ err, key }, "handler failed for good; not retrying");
        } else {
          this.log.warn(
            { err, key, retries: this.numRequeues(key) + 1 },
            "handler failed; retrying with backoff",
          );
          this.addRateLimited(key);
        }
      } finally {
        this.metrics?.workDuration.observe({ name: this.name }, (this.now() - started) / 1000);
        this.done(key);
      }
    }
  }
}
