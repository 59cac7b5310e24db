/**
 * Two priorities for the operator's writes to the apiserver: urgent writes that someone waits for
 * (a warm pod's claim: a session's allocation time is until it is written) and background writes
 * that can come a little later (a session's status, Events, a pool's status).
 *
 * Why: during a burst of allocations every claim was followed by a status patch and an Event POST,
 * and on a busy control plane those compete with the claims still in flight for the same apiserver
 * and etcd (bench-results/pool.md). Background writes now wait while urgent writes are in flight
 * (or were until `lingerMs` ago, so that a burst arriving in waves is not cut up), then go at most
 * `releaseParallelism` at a time. None waits longer than `maxDeferMs`: under a steady stream of
 * claims, statuses and Events are late, never lost.
 */

export interface BackgroundWrites {
  /** Runs `write` when no urgent write is in flight (at the latest after the bound). */
  background<T>(write: () => Promise<T>): Promise<T>;
}

export interface WritePriorityOptions {
  /** Quiet = no urgent write for this long (ms). Default 50. */
  lingerMs?: number;
  /** The longest a background write is held back (ms). Default 2000. */
  maxDeferMs?: number;
  /** Held-back writes released at once when it is quiet. Default 16. */
  releaseParallelism?: number;
  now?: () => number;
}

interface Waiter {
  deadline: number;
  release: () => void;
}

export class WritePriority implements BackgroundWrites {
  private readonly lingerMs: number;
  private readonly maxDeferMs: number;
  private readonly releaseParallelism: number;
  private readonly now: () => number;
  private urgent = 0;
  private lastUrgentEnd = -Infinity;
  private running = 0;
  private readonly waiting: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(options: WritePriorityOptions = {}) {
    this.lingerMs = options.lingerMs ?? 50;
    this.maxDeferMs = options.maxDeferMs ?? 2000;
    this.releaseParallelism = options.releaseParallelism ?? 16;
    this.now = options.now ?? (() => performance.now());
  }

  /** Marks an urgent write as pending (queued or in flight); call the returned function once it is answered. */
  beginUrgent(): () => void {
    this.urgent++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.urgent--;
      this.lastUrgentEnd = this.now();
      this.pump();
    };
  }

  /** Urgent writes pending and background writes held back, for tests and metrics. */
  get pending(): { urgent: number; heldBack: number } {
    return { urgent: this.urgent, heldBack: this.waiting.length };
  }

  async background<T>(write: () => Promise<T>): Promise<T> {
    // The common case, no claim anywhere near: straight through, no limit.
    if (this.waiting.length === 0 && this.quiet()) this.running++;
    else {
      // pump() counts it as running when it releases it.
      await new Promise<void>((release) => {
        this.waiting.push({ deadline: this.now() + this.maxDeferMs, release });
        this.pump();
      });
    }
    try {
      return await write();
    } finally {
      this.running--;
      this.pump();
    }
  }

  private quiet(): boolean {
    return this.urgent === 0 && this.now() - this.lastUrgentEnd >= this.lingerMs;
  }

  /** Releases what may go now, and sets one timer for the next moment something may. */
  private pump(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const now = this.now();
    // Waiters are in arrival order, so their deadlines are too.
    while (this.waiting.length > 0 && this.running < this.releaseParallelism) {
      if (!this.quiet() && this.waiting[0]!.deadline > now) break;
      this.running++;
      this.waiting.shift()!.release();
    }
    if (this.waiting.length === 0) return;
    const next = Math.min(
      this.waiting[0]!.deadline,
      this.urgent === 0 ? this.lastUrgentEnd + this.lingerMs : Infinity,
    );
    // At capacity: a finishing write pumps again; the timer only covers the deadline and the linger.
    this.timer = setTimeout(() => this.pump(), Math.max(1, Math.ceil(next - this.now())));
  }
}
