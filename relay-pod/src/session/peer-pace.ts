/**
 * Chooses how the transcoder encodes while ComfyStream is slower than the input.
 *
 * The peer window (peer-window.ts) keeps latency bounded by sending no more than the peer takes,
 * but with a normal GOP a frame left out costs the rest of its GOP (later frames reference it), so
 * a slow peer gets bursts: a keyframe and a frame or two, then nothing until the next keyframe. So * once the window has dropped frames in most of the last few seconds the transcoder switches to
 * intra-only (every frame a keyframe): any frame can then be left out alone, and the window passes
 * as many as the peer processes, evenly spread. A frame that only had to wait a little for room is
 * not pressure: peers have hiccups. When no frame has been dropped for a while (the peer keeps up
 * again) the normal GOP comes back; a switch back that
 * had to be undone soon makes the next wait twice as long. Intra frames cost more bits per frame,
 * but only the frames sent travel, and a ComfyStream sidecar is on loopback anyway.
 * Pure bookkeeping: the session samples it once a second and restarts ffmpeg on advice.
 */
export interface PeerPaceSample {
  /** performance.now() of the sample. */
  now: number; /** Cumulative count of frames the window dropped (the peer could not take them in time). */
  windowPressure: number;
}

export interface PeerPaceOptions {
  /** Saturated samples within the last `saturatedWindow` that switch to intra-only. Default 3 of 4. */
  saturatedSamples?: number;
  saturatedWindow?: number;
  /** Quiet time before the normal GOP comes back; doubles after every undone return. Default 15 s. */
  quietMs?: number;
}

const MAX_QUIET_MS = 240_000;
/** A return to the normal GOP undone within this long was too hopeful. */
const UNDONE_WITHIN_MS = 10_000;

export class PeerPace {
  private readonly recent: boolean[] = [];
  private lastPressure: number | undefined;
  private lastPressureAt = -Infinity;
  private lastReturnAt = -Infinity;
  private quietMs: number;
  /** True while the transcoder should encode every frame as a keyframe. */
  intraOnly = false;
  /** Why (for status), while intraOnly. */
  reason: string | undefined;

  constructor(private readonly options: PeerPaceOptions = {}) {
    this.quietMs = options.quietMs ?? 15_000;
  }

  /** Takes a sample; returns the new intraOnly when the transcoder should change, else undefined. */
  sample(sample: PeerPaceSample): boolean | undefined {
    const pressured = this.lastPressure !== undefined && sample.windowPressure > this.lastPressure;
    this.lastPressure = sample.windowPressure;
    if (pressured) this.lastPressureAt = sample.now;
    this.recent.push(pressured);
    const window = this.options.saturatedWindow ?? 4;
    while (this.recent.length > window) this.recent.shift();

    const saturated = this.recent.filter(Boolean).length >= (this.options.saturatedSamples ?? 3);
    if (!this.intraOnly && saturated) {
      if (sample.now - this.lastReturnAt < UNDONE_WITHIN_MS)
        this.quietMs = Math.min(MAX_QUIET_MS, this.quietMs * 2);
      this.intraOnly = true;
      this.reason =
        "ComfyStream takes fewer frames than come in: every frame is sent as a keyframe, so that those it cannot take are left out one by one";
      this.recent.length = 0;
      return true;
    }
    if (this.intraOnly && sample.now - this.lastPressureAt >= this.quietMs) {
      this.intraOnly = false;
      this.reason = undefined;
      this.lastReturnAt = sample.now;
      this.recent.length = 0;
      return false;
    }
    return undefined;
  }
}
