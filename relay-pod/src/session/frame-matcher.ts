/**
 * Matches frames returned by ComfyStream to the frames the relay sent, by RTP timestamp.
 *
 * ComfyStream keeps each frame's pts, and aiortc adds one random constant to outgoing RTP
 * timestamps, so returned ts = sent ts + C (mod 2^32) (media-pipeline.md §3.0, §3.5). The relay sends
 * RTP ts = input PTS (mod 2^32), so once C is known a returned frame gives back both its input PTS
 * (output PTS = input PTS, DESIGN §3.4) and when it was sent (the latency through ComfyStream).
 *
 * C is calibrated on the first returned frame against the first frame sent since the last reset: the
 * first thing ComfyStream can decode is the IDR that starts the stream. If ComfyStream skipped the
 * first frames, C is off by whole frames and latency reads high by that many frame times; a run of
 * unmatched frames triggers a recalibration against the oldest frame still waiting.
 */
export interface SentFrame {
  rtpTimestamp: number;
  pts: number; // 90 kHz, 33-bit input PTS
  sentAt: number; // performance.now()
}

export interface MatchedFrame {
  pts: number;
  latencyMs: number | undefined;
}

const RTP_WRAP = 0x1_0000_0000;
const PTS_WRAP = 0x2_0000_0000;

export class FrameMatcher {
  private readonly sent = new Map<number, SentFrame>();
  private readonly order: number[] = [];
  private offset: number | undefined;
  private unmatchedRun = 0;
  private lastPts: number | undefined;
  private lastSentTs: number | undefined;

  constructor(private readonly maxTracked = 600) {}

  /** Forget the calibration (a new peer connection has a new random offset). */
  reset(): void {
    this.sent.clear();
    this.order.length = 0;
    this.offset = undefined;
    this.unmatchedRun = 0;
  }

  recordSent(frame: SentFrame): void {
    if (!this.sent.has(frame.rtpTimestamp)) this.order.push(frame.rtpTimestamp);
    this.sent.set(frame.rtpTimestamp, frame);
    while (this.order.length > this.maxTracked) this.sent.delete(this.order.shift()!);
  }

  /** Frames sent and not yet seen back (a health number, since ComfyStream may skip frames). */
  get inFlight(): number {
    return this.sent.size;
  }

  match(returnedTimestamp: number, now = performance.now()): MatchedFrame {
    if (this.offset === undefined) this.calibrate(returnedTimestamp);
    const sentTs =
      this.offset === undefined ? undefined : (returnedTimestamp - this.offset + RTP_WRAP) % RTP_WRAP;
    const frame = sentTs === undefined ? undefined : this.sent.get(sentTs);
    if (frame) {
      this.unmatchedRun = 0;
      this.forgetUpTo(frame.rtpTimestamp);
      this.lastPts = frame.pts;
      this.lastSentTs = frame.rtpTimestamp;
      return { pts: frame.pts, latencyMs: now - frame.sentAt };
    }
    this.unmatchedRun++;
    if (this.unmatchedRun >= 30) {
      this.offset = undefined;
      this.unmatchedRun = 0;
    }
    return { pts: this.extrapolatePts(sentTs ?? returnedTimestamp), latencyMs: undefined };
  }

  private calibrate(returnedTimestamp: number): void {
    const first = this.order[0];
    if (first === undefined) return;
    this.offset = (returnedTimestamp - first + RTP_WRAP) % RTP_WRAP;
  }

  /** Frames sent before a matched one will not come back any more (ComfyStream skipped them). */
  private forgetUpTo(rtpTimestamp: number): void {
    while (this.order.length > 0) {
      const ts = this.order.shift()!;
      this.sent.delete(ts);
      if (ts === rtpTimestamp) break;
    }
  }

  private extrapolatePts(sentTs: number): number {
    if (this.lastPts === undefined || this.lastSentTs === undefined) return sentTs;
    let delta = (sentTs - this.lastSentTs + RTP_WRAP) % RTP_WRAP;
    if (delta > RTP_WRAP / 2) delta -= RTP_WRAP;
    return (this.lastPts + delta + PTS_WRAP) % PTS_WRAP;
  }
}
