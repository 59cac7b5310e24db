/**
 * Matches frames returned by ComfyStream to the frames the relay sent, by RTP timestamp.
 *
 * ComfyStream keeps each frame's pts, and aiortc adds one random constant to outgoing RTP
 * timestamps, so returned ts = sent ts + C (mod 2^32) (media-pipeline.md §3.0, §3.5). Once C is known
 * a returned frame gives back its input PTS (output PTS = input PTS, DESIGN §3.4) and when it was
 * sent (the latency through ComfyStream).
 *
 * Finding C: frames are evenly spaced, so with plain PTS timestamps an offset that is wrong by k
 * frames "matches" just as well (§3.5) — and ComfyStream may skip its first frames, so "first back =
 * first sent" is not safe either. The relay therefore sends each frame at its PTS plus a small
 * pseudo-random jitter (0–31 ticks of 90 kHz, under 0.35 ms; see `timestampJitter`). Spacing between
 * frames then differs from frame to frame, and only the true C maps several returned frames onto
 * sent ones. The first returned frames are held (at most `calibrationFrames`) while candidates are
 * voted on; then they are released with their PTS.
 */
import { RTP_WRAP } from "./rtp-header.js";

export interface SentFrame {
  rtpTimestamp: number;
  pts: number; // 90 kHz, 33-bit input PTS
  sentAt: number; // performance.now()
}

export interface MatchedFrame<T> {
  item: T;
  pts: number;
  /** undefined when the frame could not be matched (its PTS is extrapolated). */
  latencyMs: number | undefined;
}

const PTS_WRAP = 0x2_0000_0000;

/**
 * Deterministic jitter in ticks (0-31) for the n-th frame sent: a well-mixed integer hash (the
 * murmur3 finaliser), so the spacing from one frame to the next looks random. A plain multiplicative
 * hash would not do: its consecutive values step by nearly the same amount.
 */
export function timestampJitter(frameIndex: number): number {
  let h = frameIndex | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h & 31;
}

export class FrameMatcher<T> {
  private readonly sent = new Map<number, SentFrame>();
  private readonly order: number[] = [];
  private offset: number | undefined;
  private pending: Array<{ returnedTs: number; item: T; at: number }> = [];
  private unmatchedRun = 0;
  private lastPts: number | undefined;
  private lastSentTs: number | undefined;

  constructor(
    private readonly maxTracked = 600,
    private readonly calibrationFrames = 4,
  ) {}

  /** Forget everything (a new peer connection has a new random offset). */
  reset(): void {
    this.sent.clear();
    this.order.length = 0;
    this.offset = undefined;
    this.pending = [];
    this.unmatchedRun = 0;
  }

  recordSent(frame: SentFrame): void {
    if (!this.sent.has(frame.rtpTimestamp)) this.order.push(frame.rtpTimestamp);
    this.sent.set(frame.rtpTimestamp, frame);
    while (this.order.length > this.maxTracked) this.sent.delete(this.order.shift()!);
  }

  /**
   * Frames sent within the last `maxAgeMs` that have not come back. A frame the peer skipped is
   * forgotten as soon as a later one comes back; the age limit only keeps a peer that returns
   * nothing from holding the window shut for good. It is long: the real ComfyStream on a CPU
   * returns every frame, seconds late (issue 10), and those must count.
   */
  inFlight(now = performance.now(), maxAgeMs = 10_000): number {
    let count = 0;
    for (let index = this.order.length - 1; index >= 0; index--) {
      const frame = this.sent.get(this.order[index]!);
      if (!frame || now - frame.sentAt > maxAgeMs) break;
      count++;
    }
    // Frames back but held for calibration are no longer in flight.
    return Math.max(0, count - this.pending.length);
  }

  get calibrated(): boolean {
    return this.offset !== undefined;
  }

  /** Takes one returned frame; returns the frames now ready, in order, with their PTS. */
  accept(returnedTs: number, item: T, now = performance.now()): Array<MatchedFrame<T>> {
    if (this.offset === undefined) {
      this.pending.push({ returnedTs, item, at: now });
      if (!this.tryCalibrate()) return [];
      const ready = this.pending.map((p) => this.matchOne(p.returnedTs, p.item, p.at));
      this.pending = [];
      return ready;
    }
    return [this.matchOne(returnedTs, item, now)];
  }

  /** Releases held frames without a calibration (the stream ends before one was possible). */
  flushPending(): Array<MatchedFrame<T>> {
    const held = this.pending.map((p) => ({
      item: p.item,
      pts: this.extrapolatePts(p.returnedTs),
      latencyMs: undefined,
    }));
    this.pending = [];
    return held;
  }

  private matchOne(returnedTs: number, item: T, now: number): MatchedFrame<T> {
    const sentTs = (returnedTs - this.offset! + RTP_WRAP) % RTP_WRAP;
    const frame = this.sent.get(sentTs);
    if (frame) {
      this.unmatchedRun = 0;
      this.forgetUpTo(frame.rtpTimestamp);
      this.lastPts = frame.pts;
      this.lastSentTs = frame.rtpTimestamp;
      return { item, pts: frame.pts, latencyMs: now - frame.sentAt };
    }
    this.unmatchedRun++;
    if (this.unmatchedRun >= 30) {
      // Persistently unmatched: the peer changed its offset. Vote again on the next frames.
      this.offset = undefined;
      this.unmatchedRun = 0;
    }
    return { item, pts: this.extrapolatePts(sentTs), latencyMs: undefined };
  }

  /**
   * Chooses C once one candidate alone explains every held frame (or, after enough frames, the best).
   * Every held frame may anchor a candidate, not only the first back: that one may be a frame this
   * matcher never sent — on a connection taken over from an earlier session (peer-handover.ts),
   * ComfyStream still holds that session's last frames and pairs them with the first new outputs.
   */
  private tryCalibrate(): boolean {
    if (this.pending.length < 2 || this.order.length === 0) return false;
    // offset → when the latest frame it maps a held one to was sent (ties go to the shortest latency)
    const candidates = new Map<number, number>();
    for (const held of this.pending) {
      for (const sentTs of this.order) {
        const offset = (held.returnedTs - sentTs + RTP_WRAP) % RTP_WRAP;
        const sentAt = this.sent.get(sentTs)!.sentAt;
        if ((candidates.get(offset) ?? -Infinity) < sentAt) candidates.set(offset, sentAt);
      }
    }
    let bestVotes = -1;
    let best: Array<{ offset: number; sentAt: number }> = [];
    for (const [offset, sentAt] of candidates) {
      let votes = 0;
      for (const p of this.pending) {
        if (this.sent.has((p.returnedTs - offset + RTP_WRAP) % RTP_WRAP)) votes++;
      }
      if (votes > bestVotes) {
        bestVotes = votes;
        best = [];
      }
      if (votes === bestVotes) best.push({ offset, sentAt });
    }
    const unambiguous = best.length === 1 && bestVotes === this.pending.length;
    const enoughSeen = this.pending.length >= this.calibrationFrames && bestVotes >= 2 && best.length === 1;
    const givingUp = this.pending.length >= this.calibrationFrames * 2;
    if (!unambiguous && !enoughSeen && !givingUp) return false;
    best.sort((a, b) => b.sentAt - a.sentAt);
    this.offset = best[0]!.offset;
    return true;
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
