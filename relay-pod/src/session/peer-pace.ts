/**
 * Matches the transcoder's frame rate to what ComfyStream can process.
 *
 * The peer window (peer-window.ts) keeps latency bounded when the peer is slower than the input,
 * but it can only drop whole GOP tails: the output then comes in bursts. Sending no more frames
 * than the peer handles avoids the drops altogether, so a peer that is saturated (frames held or
 * dropped at the window) for a few seconds gets the transcoder's frame-rate cap lowered to the rate
 * at which frames come back; once the window has been quiet for a while the cap is raised again
 * step by step, up to the session's frame rate, waiting longer after each raise that had to be undone.
 * Pure bookkeeping: the session samples it once a second and restarts ffmpeg with the advice.
 */
export interface PeerPaceSample {
  /** performance.now() of the sample. */
  now: number;
  /** Cumulative frames sent to and returned by the peer. */
  sent: number;
  returned: number;
  /** Cumulative frames the window held back or dropped (saturation events). */
  windowPressure: number;
}

export interface PeerPaceOptions {
  /** The session's frame rate: never above it. */
  maxFps: number;
  minFps?: number;
  /** How long a change is given before the next decision. Default 4 s. */
  settleMs?: number;
  /** Quiet time before the first raise; doubles after every raise that was undone. Default 10 s. */
  raiseAfterMs?: number;
}

const HISTORY_MS = 3000;
const MAX_RAISE_AFTER_MS = 160_000;

export class PeerPace {
  private readonly history: PeerPaceSample[] = [];
  private fps: number;
  private lastChangeAt = -Infinity;
  private lastPressureAt = -Infinity;
  private raiseAfterMs: number;
  private lastRaiseAt = -Infinity;
  /** Why the cap is below the session's frame rate (for status). */
  reason: string | undefined;

  constructor(private readonly options: PeerPaceOptions) {
    this.fps = options.maxFps;
    this.raiseAfterMs = options.raiseAfterMs ?? 10_000;
  }

  get frameRate(): number {
    return this.fps;
  }

  /** Takes a sample; returns a new frame-rate cap when the transcoder should change, else undefined. */
  sample(sample: PeerPaceSample): number | undefined {
    const previous = this.history.at(-1);
    if (previous && sample.windowPressure > previous.windowPressure) this.lastPressureAt = sample.now;
    this.history.push(sample);
    while (this.history.length > 1 && sample.now - this.history[0]!.now > HISTORY_MS) this.history.shift();
    const oldest = this.history[0]!;
    const spanSec = (sample.now - oldest.now) / 1000;
    if (spanSec < HISTORY_MS / 1000 - 0.5) return undefined;
    if (sample.now - this.lastChangeAt < (this.options.settleMs ?? 4000)) return undefined;
    const returnedFps = (sample.returned - oldest.returned) / spanSec;
    const pressured = sample.now - this.lastPressureAt < HISTORY_MS;

    if (pressured && returnedFps < this.fps * 0.85) {
      const target = Math.max(this.options.minFps ?? 1, Math.floor(returnedFps));
      if (target >= this.fps) return undefined;
      // Undone soon after a raise: the raise was too hopeful, wait longer next time.
      if (sample.now - this.lastRaiseAt < this.raiseAfterMs) {
        this.raiseAfterMs = Math.min(MAX_RAISE_AFTER_MS, this.raiseAfterMs * 2);
      }
      this.reason = `ComfyStream returned ${returnedFps.toFixed(1)} fps while frames waited for it: sending at most ${target} fps`;
      return this.change(target, sample.now);
    }
    const quietFor = sample.now - Math.max(this.lastPressureAt, this.lastChangeAt);
    if (this.fps < this.options.maxFps && quietFor >= this.raiseAfterMs) {
      const target = Math.min(this.options.maxFps, Math.ceil(this.fps * 1.25 + 1));
      this.lastRaiseAt = sample.now;
      this.reason =
        target < this.options.maxFps
          ? `ComfyStream kept up at ${this.fps} fps: trying ${target} fps`
          : undefined;
      return this.change(target, sample.now);
    }
    return undefined;
  }

  private change(target: number, now: number): number {
    this.fps = target;
    this.lastChangeAt = now;
    this.history.length = 0;
    return target;
  }
}
