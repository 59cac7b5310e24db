/**
 * A token bucket per client, for POST /session/start: each client may start `burst` sessions at
 * once and then `perMinute` a minute. Starting a session is the API's one expensive request (an
 * ffmpeg process, a WebRTC peer, a ComfyStream offer), and --max-sessions alone lets one client
 * take every slot again as soon as it frees up. Written here rather than taken from
 * @fastify/rate-limit: that plugin counts requests in fixed windows (no burst with a steady refill)
 * and is not a dependency of this project, for ~60 lines on one route — see docs/architecture.md,
 * "What we wrote ourselves".
 */

export interface StartRateLimit {
  /** Tokens added per minute (sustained session starts per client per minute). */
  perMinute: number;
  /** Bucket size: starts allowed at once before the rate applies. */
  burst: number;
}

export type TakeResult = { ok: true } | { ok: false; retryAfterSec: number };

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/** Most clients tracked; beyond it the least recently refilled bucket is forgotten. */
const MAX_CLIENTS = 10_000;

export class TokenBucketLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;
  private lastSweep = 0;

  constructor(
    readonly limit: StartRateLimit,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(limit.perMinute > 0) || !(limit.burst >= 1)) {
      throw new Error(`a rate limit needs perMinute > 0 and burst >= 1, got ${JSON.stringify(limit)}`);
    }
    this.perMs = limit.perMinute / 60_000;
  }

  /** Takes one token from `client`'s bucket, or says how many whole seconds until one is there. */
  take(client: string): TakeResult {
    const now = this.now();
    this.sweep(now);
    const bucket = this.refilled(client, now);
    // Re-inserting keeps the Map in least-recently-used order for the eviction below.
    this.buckets.delete(client);
    this.buckets.set(client, bucket);
    if (this.buckets.size > MAX_CLIENTS) this.buckets.delete(this.buckets.keys().next().value!);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterSec: Math.max(1, Math.ceil((1 - bucket.tokens) / this.perMs / 1000)) };
  }

  /** Clients with a bucket that is not full (a full one is the same as none). */
  get trackedClients(): number {
    return this.buckets.size;
  }

  private refilled(client: string, now: number): Bucket {
    const bucket = this.buckets.get(client);
    if (!bucket) return { tokens: this.limit.burst, updatedAt: now };
    bucket.tokens = Math.min(this.limit.burst, bucket.tokens + (now - bucket.updatedAt) * this.perMs);
    bucket.updatedAt = now;
    return bucket;
  }

  /** Forgets full buckets, at most once a minute, so memory follows recent clients only. */
  private sweep(now: number): void {
    if (now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const [client, bucket] of this.buckets) {
      if (bucket.tokens + (now - bucket.updatedAt) * this.perMs >= this.limit.burst)
        this.buckets.delete(client);
    }
  }
}
