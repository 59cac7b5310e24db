/**
 * Releases transcoded frames to WebRTC at the pace of their timestamps.
 *
 * Trickle delivers input in bursts (a segment can arrive faster than real time after a stall), and
 * ffmpeg turns a burst into a burst of RTP. ComfyStream keeps a one-frame input queue, so a burst is
 * mostly dropped on its side (the old Python relay's main defect, comfystream-webrtc.md §3.1). The
 * pacer holds frames and sends each at anchor + (pts - anchorPts); it re-anchors when the stream
 * jumps (a dropped segment, a restart) or when it has fallen behind by more than maxLagMs.
 *
 * The first frame sets the anchor, and it is often the latest of all (ffmpeg probes its input
 * before the first frame). Frames that then arrive early by the same amount, frame after frame, are
 * not a burst but a schedule set too late: when every frame of a window arrived early, the anchor
 * moves earlier by the smallest of those leads, so steady live input is not held back.
 *
 * Bounded: when `capacity` frames wait, new frames are dropped up to the next keyframe, so the
 * receiver sees a clean gap instead of frames that reference missing ones.
 */
import { ptsSignedDistance } from "../media/ts-packet.js";

export interface PacedFrame {
  /** 90 kHz timestamp that spaces frames (the input PTS). */
  pts: number;
  keyframe: boolean;
  packets: Buffer[];
}

export interface FramePacerOptions {
  capacity: number;
  send: (frame: PacedFrame) => void;
  /**
   * Asked when a frame is due (`lateMs`: how long past its due time it is now): "send" it, "hold"
   * it and ask again shortly (later frames wait behind it), or "drop" it. Default: always send.
   */
  admit?: (frame: PacedFrame, lateMs: number) => "send" | "hold" | "drop";
  /** A frame later than this is sent at once and the clock re-anchored. */
  maxLagMs?: number;
  /** A frame due further ahead than this means a timestamp jump: re-anchor. */
  maxLeadMs?: number;
}

export class FramePacer {
  private readonly queue: PacedFrame[] = [];
  private anchor: { wallMs: number; pts: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private droppingUntilKeyframe = false;
  private windowMinLeadMs = Infinity;
  private windowFrames = 0;
  /** Lead still to be taken out of the schedule, a few ms per frame (no burst, no re-anchor). */
  private pendingShiftMs = 0;
  private stopped = false; /** Frames are late because `admit` held them (until one goes out on time or the queue empties). */
  private behindFromHolds = false;
  dropped = 0;
  sent = 0;

  constructor(private readonly options: FramePacerOptions) {}

  get size(): number {
    return this.queue.length;
  }

  push(frame: PacedFrame): void {
    if (this.stopped) return;
    if (this.droppingUntilKeyframe && !frame.keyframe) {
      this.dropped++;
      return;
    }
    this.droppingUntilKeyframe = false;
    if (this.queue.length >= this.options.capacity) {
      this.dropped++;
      this.droppingUntilKeyframe = true;
      return;
    }
    this.noteLead(frame);
    this.queue.push(frame);
    if (!this.timer) this.schedule();
  }

  /** Tracks how early frames arrive against the schedule; see the class comment. */
  private noteLead(frame: PacedFrame): void {
    if (!this.anchor) return;
    if (this.pendingShiftMs > 0) {
      const step = Math.min(this.pendingShiftMs, MAX_SHIFT_PER_FRAME_MS);
      this.anchor.wallMs -= step;
      this.pendingShiftMs -= step;
    }
    const lead = this.anchor.wallMs + ptsDeltaMs(frame.pts, this.anchor.pts) - performance.now();
    this.windowMinLeadMs = Math.min(this.windowMinLeadMs, lead);
    if (++this.windowFrames < LEAD_WINDOW_FRAMES) return;
    // The whole window was early by at least this much: take it out of the schedule.
    this.pendingShiftMs = this.windowMinLeadMs > 1 ? this.windowMinLeadMs : 0;
    this.windowMinLeadMs = Infinity;
    this.windowFrames = 0;
  }

  /** Drops everything queued (the peer went away) and restarts pacing from the next frame. */
  clear(): number {
    const n = this.queue.length;
    this.dropped += n;
    this.queue.length = 0;
    this.anchor = undefined;
    this.behindFromHolds = false;
    this.droppingUntilKeyframe = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    return n;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }

  private schedule(): void {
    this.timer = undefined;
    const maxLag = this.options.maxLagMs ?? 250;
    const maxLead = this.options.maxLeadMs ?? 1000;
    while (this.queue.length > 0) {
      const frame = this.queue[0]!;
      const now = performance.now();
      if (!this.anchor) this.anchor = { wallMs: now, pts: frame.pts };
      const due = this.anchor.wallMs + ptsDeltaMs(frame.pts, this.anchor.pts); // Frames late because `admit` held them keep their schedule: re-anchoring would reset how late
      // they are, the hold would never end, and the queue would fill instead.
      if (due - now > maxLead || (now - due > maxLag && !this.behindFromHolds)) {
        this.anchor = { wallMs: now, pts: frame.pts };
      } else if (due > now + 1) {
        this.timer = setTimeout(() => this.schedule(), due - now);
        return;
      }
      const verdict = this.options.admit?.(frame, Math.max(0, now - due)) ?? "send";
      if (verdict === "hold") {
        this.behindFromHolds = true;
        this.timer = setTimeout(() => this.schedule(), HOLD_POLL_MS);
        return;
      }
      if (now - due <= maxLag || this.queue.length === 1) this.behindFromHolds = false;
      this.queue.shift();
      if (verdict === "drop") continue;
      this.sent++;
      this.options.send(frame);
    }
  }
}

/** How often a held frame asks again. */
const HOLD_POLL_MS = 5;
/** Frames over which a steady lead must hold before the anchor moves (about half a second). */
const LEAD_WINDOW_FRAMES = 15;
/** Catching up plays at most this much faster per frame (8 ms on a 33 ms frame: about 1.25×). */
const MAX_SHIFT_PER_FRAME_MS = 8;

/** Milliseconds from `from` to `to` on the 33-bit 90 kHz clock, taking the short way round. */
export function ptsDeltaMs(to: number, from: number): number {
  return ptsSignedDistance(from, to) / 90;
}
