/**
 * The newest keyframe (an IDR access unit, Annex-B H.264) seen on each side of the session, for
 * thumbnails: the stages hand over the buffer they already have (no copy, no decode), and a viewer
 * decodes one of them at most once a second, only while someone watches (report/thumbnails.ts).
 */
export type KeyframeSide = "input" | "output";
/** ffmpeg's name for the elementary stream format (the input may be HEVC; the peer returns H.264). */
export type KeyframeCodec = "h264" | "hevc";

export interface LatestKeyframe {
  annexB: Buffer;
  codec: KeyframeCodec;
  /** Counts keyframes seen on this side, so a reader can tell a new one from the one it decoded. */
  sequence: number;
  /** Date.now() when it was seen. */
  at: number;
}

export class LatestKeyframes {
  private readonly latest = new Map<KeyframeSide, LatestKeyframe>();

  note(side: KeyframeSide, annexB: Buffer, codec: KeyframeCodec): void {
    const sequence = (this.latest.get(side)?.sequence ?? 0) + 1;
    this.latest.set(side, { annexB, codec, sequence, at: Date.now() });
  }

  get(side: KeyframeSide): LatestKeyframe | undefined {
    return this.latest.get(side);
  }
}
