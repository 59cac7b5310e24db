/**
 * Bounds the frames in flight to ComfyStream (sent, not yet returned).
 *
 * The real ComfyStream queues every frame it receives without limit and returns each one after its
 * workflow ran (`video_incoming_frames` in its pipeline): a peer slower than the input falls further
 * behind every second (issue 10: 0.6 s → 7–13 s within 20 s on a CPU). So the relay sends no more
 * than `capacity` frames ahead of what has come back. A frame due while the window is full waits
 * until it is `maxHoldMs` late for room (a peer's hiccup should not cost frames, and later frames
 * wait behind it, so no more than that is ever added); after that it is dropped,
 * and so is the rest of its GOP (later frames reference it), until a keyframe finds room again.
 * Latency then stays near the peer's own processing time and the frame rate out is what the peer
 * can do. These drops are "peer-limited", counted apart from other drops.
 */
export type WindowVerdict = "send" | "hold" | "drop";

export interface PeerWindowOptions {
  capacity: number;
  /** How late a due frame may get waiting for room before it is dropped. Default 200 ms. */
  maxHoldMs?: number;
}

export class PeerWindow {
  capacity: number;
  private readonly maxHoldMs: number;
  private droppingUntilKeyframe = false;
  /** Frames not sent because the window stayed full (or their GOP had lost a frame to it). */
  peerLimitedDrops = 0;
  /** Frames that found the window full (held or dropped): how often the peer was the bottleneck. */
  saturations = 0;
  private lastSaturatedPts: number | undefined;

  constructor(options: PeerWindowOptions) {
    const { capacity } = options;
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`the peer window must be a whole number of frames >= 1, got ${capacity}`);
    }
    this.capacity = capacity;
    this.maxHoldMs = options.maxHoldMs ?? 200;
  }

  /**
   * What to do with a due frame (`pts` identifies it across repeated asks): `inFlight` = frames
   * sent and not back yet, `lateMs` = how far past its due time it is.
   */
  decide(frame: { pts: number; keyframe: boolean }, inFlight: number, lateMs: number): WindowVerdict {
    if (this.droppingUntilKeyframe && !frame.keyframe) {
      this.peerLimitedDrops++;
      return "drop";
    }
    if (inFlight < this.capacity) {
      this.droppingUntilKeyframe = false;
      return "send";
    }
    if (this.lastSaturatedPts !== frame.pts) {
      this.lastSaturatedPts = frame.pts;
      this.saturations++;
    }
    if (lateMs < this.maxHoldMs) return "hold";
    this.droppingUntilKeyframe = true;
    this.peerLimitedDrops++;
    return "drop";
  }

  /** A new capacity (the session keeps the window's time span when its frame rate changes). */
  resize(capacity: number): void {
    this.capacity = Math.max(1, Math.round(capacity));
  }

  /** A new peer connection: nothing is in flight to it, and it starts on a keyframe anyway. */
  reset(): void {
    this.droppingUntilKeyframe = false;
  }
}
