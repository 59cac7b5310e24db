/** Small, allocation-light counters the session uses for its status snapshot. */

/** Frames per second over a sliding window of recent event times. */
export class RateMeter {
  private readonly times: number[] = [];
  constructor(private readonly windowMs = 3000) {}

  mark(now = performance.now()): void {
    this.times.push(now);
    this.trim(now);
  }

  rate(now = performance.now()): number {
    this.trim(now);
    if (this.times.length < 2) return 0;
    const span = Math.max(now - this.times[0]!, 1);
    return Math.round((this.times.length / span) * 1000 * 10) / 10;
  }

  private trim(now: number): void {
    const cutoff = now - this.windowMs;
    let drop = 0;
    while (drop < this.times.length && this.times[drop]! < cutoff) drop++;
    if (drop > 0) this.times.splice(0, drop);
  }
}

/** p50/p95 over the most recent `capacity` samples (a ring, so memory stays fixed). */
export class PercentileWindow {
  private readonly samples: Float64Array;
  private count = 0;
  private next = 0;

  constructor(capacity = 600) {
    this.samples = new Float64Array(capacity);
  }

  add(value: number): void {
    this.samples[this.next] = value;
    this.next = (this.next + 1) % this.samples.length;
    if (this.count < this.samples.length) this.count++;
  }

  get size(): number {
    return this.count;
  }

  percentile(p: number): number | null {
    if (this.count === 0) return null;
    const sorted = Array.from(this.samples.subarray(0, this.count)).sort((a, b) => a - b);
    const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return Math.round(sorted[index]! * 10) / 10;
  }

  clear(): void {
    this.count = 0;
    this.next = 0;
  }
}
