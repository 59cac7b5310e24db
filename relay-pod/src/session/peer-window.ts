/**
 * Bounds the frames in flight to ComfyStream (sent, not yet returned).
 *
 * The real ComfyStream's workflow takes its input from a one-slot queue (a newer frame evicts the
 * waiting one), yet every frame it receives waits in an unbounded queue for an output and goes back
 * with the next one the workflow makes (`tensor_cache.image_inputs`, maxsize 1, and
 * `video_incoming_frames` in its pipeline). A frame sent while one is being processed and another
 * waits is therefore evicted, and from then on every frame comes back one processing period later,
 * for the rest of the connection: with a peer slower than its input, latency grew from 0.6 s to
 * 7–13 s within 20 s (issue 10). With at most W frames in flight, no more than W − 2 can ever be
 * evicted (an eviction needs one frame processed, one waiting and one arriving), so latency stays
 * below W processing periods; W also has to cover the frames on the way, or a fast peer is slowed.
 *
 * A frame due while the window is full waits until it is `maxHoldMs` late for room (a frame coming
 * back frees it within a processing period; later frames wait behind it, so no more than that is
 * ever added); after that it is dropped, and so is the rest of its GOP (later frames reference it),
 * until a keyframe finds room again. These drops are "peer-limited", counted apart from others.
 * The window applies from the first frame: a burst while the peer starts up is evicted just the same.
 */
export type WindowVerdict = "send" | "hold" | "drop";

export interface PeerWindowOptions {
  capacity: number; /** How late a due frame may get waiting for room before it is dropped. Default 200 ms (the session uses 500). */
  maxHoldMs?: number;
}

export class PeerWindow {
  readonly capacity: number;
  private maxHoldMs: number;
  private droppingUntilKeyframe = false;
  /** Frames not sent because the window stayed full (or their GOP had lost a frame to it). */
  peerLimitedDrops = 0; /** Frames that found the window full (held or dropped). */
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
  } /** How late a frame may get waiting for room (0: a frame that finds no room is dropped at once). */
  setMaxHoldMs(maxHoldMs: number): void {
    this.maxHoldMs = maxHoldMs;
  }

  /** A new peer connection: nothing is in flight to it, and it starts on a keyframe anyway. */
  reset(): void {
    this.droppingUntilKeyframe = false;
  }
}
