/** Return-path segment boundaries: a new trickle segment starts on an IDR once enough PTS has passed. */
import { PTS_CLOCK_HZ, ptsForwardDistance, PTS_MODULUS } from "./ts-packet.js";

export interface IdrSegmenterOptions {
  /** Minimum segment length in seconds of PTS (go-livepeer's LIVE_AI_MIN_SEG_DUR default is 1). */
  minSegmentDurationSec?: number;
}

export class IdrSegmenter {
  private readonly minTicks: number;
  private segmentStartPts: number | undefined;

  constructor(options: IdrSegmenterOptions = {}) {
    const seconds = options.minSegmentDurationSec ?? 1;
    if (!(seconds >= 0) || !Number.isFinite(seconds)) {
      throw new RangeError(`minSegmentDurationSec must be a finite number >= 0, got ${seconds}`);
    }
    this.minTicks = Math.round(seconds * PTS_CLOCK_HZ);
  }

  /**
   * True when this access unit must start a new segment: it is a keyframe and either no segment has
   * started yet or at least the minimum duration of PTS (90 kHz, 33-bit wrap handled) has passed
   * since the current one started. A PTS that jumps backwards counts as a long gap (it is a new
   * timeline, so a new segment is the right place for it).
   */
  shouldCut(pts: number, keyframe: boolean): boolean {
    if (!keyframe) return false;
    if (this.segmentStartPts !== undefined) {
      const elapsed = ptsForwardDistance(this.segmentStartPts, pts);
      if (elapsed < this.minTicks) return false;
    }
    this.segmentStartPts = ((Math.round(pts) % PTS_MODULUS) + PTS_MODULUS) % PTS_MODULUS;
    return true;
  }

  /** PTS at which the current segment started, if any. */
  get currentSegmentStartPts(): number | undefined {
    return this.segmentStartPts;
  }

  /** Forget the current segment (e.g. after the output stream was restarted): the next IDR cuts. */
  reset(): void {
    this.segmentStartPts = undefined;
  }
}
