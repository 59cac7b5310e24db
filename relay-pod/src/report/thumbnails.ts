/**
 * Thumbnails for the session page: a small JPEG of the newest input and output keyframe, about once
 * a second, only while someone watches the session.
 *
 * Cost, on purpose: nothing is decoded per frame. The stages keep a reference to the newest IDR
 * access unit they already handle (session/latest-keyframes.ts); here one long-lived ffmpeg per
 * side decodes just those keyframes (at most one a second) and scales them to a thumbnail. A
 * long-lived process instead of one ffmpeg per picture because starting ffmpeg costs ~60 ms of CPU
 * (measured: one-shot decode of a 512x512 IDR to JPEG, 0.06 s user+sys), while decoding one IDR in
 * a running process costs a few ms: `npm run bench:relay -- --ui-watch` measures the total.
 * The processes end when nobody has watched for a while (SessionThumbnails.close).
 */
import { spawn, type ChildProcessByStdio } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import type { Logger } from "../common/log.js";
import type { KeyframeCodec, KeyframeSide, LatestKeyframe } from "../session/latest-keyframes.js";

/** Width of a thumbnail in pixels (the height follows the picture's aspect ratio). */
export const THUMBNAIL_WIDTH = 192;

/**
 * Ends an access unit for ffmpeg's H.264/HEVC parser: without a start code after it, the parser
 * waits for the next keyframe (a second later) before it hands this one to the decoder.
 */
const END_OF_ACCESS_UNIT: Record<KeyframeCodec, Buffer> = {
  // H.264 access unit delimiter (NAL type 9), primary_pic_type 0 (I slices).
  h264: Buffer.from([0, 0, 0, 1, 0x09, 0x10]),
  // HEVC access unit delimiter (NAL type 35), pic_type 0.
  hevc: Buffer.from([0, 0, 0, 1, 0x46, 0x01, 0x10]),
};

export interface Thumbnail {
  jpeg: Buffer;
  /** The keyframe sequence number it was made from (LatestKeyframe.sequence). */
  sequence: number;
  /** Date.now() when it was made. */
  at: number;
}

/**
 * One side's decoder: a long-lived `ffmpeg -f h264 -i pipe:0 … -f image2pipe` that turns each
 * keyframe written to it into one JPEG. ffmpeg hands a picture on only once the next one has begun
 * (measured with ffmpeg 5.1: an access unit delimiter after it, or two, or -fps_mode passthrough
 * do not change that), so a thumbnail shows the keyframe before the newest: one keyframe interval
 * behind, ~1 s with the usual 1 s GOPs. A stream whose parameter sets allow reordering (B-frames)
 * is held longer by the decoder, up to its reorder depth in keyframes; the relay's own streams have
 * none (the transcoder's baseline output, which is the input thumbnail when transcoding, and
 * ComfyStream's output), so only a passthrough session's input with B-frames lags that much.
 */
export class KeyframeDecoder {
  private process: ChildProcessByStdio<Writable, Readable, null> | undefined;
  /** Sequence numbers of the keyframes written and not yet turned into a JPEG, oldest first. */
  private readonly written: number[] = [];
  private latest: Thumbnail | undefined;
  private failed = false;

  constructor(
    private readonly ffmpegPath: string,
    readonly codec: KeyframeCodec,
    private readonly log: Logger,
  ) {}

  get thumbnail(): Thumbnail | undefined {
    return this.latest;
  }

  /** Decodes this keyframe (the caller offers at most one a second). */
  offer(keyframe: LatestKeyframe): void {
    if (this.failed) return;
    // More than a couple waiting means ffmpeg is stuck (or far behind): start afresh.
    if (this.written.length > MAX_WAITING_KEYFRAMES) this.close();
    const child = this.ensureProcess();
    this.written.push(keyframe.sequence);
    child.stdin.write(Buffer.concat([keyframe.annexB, END_OF_ACCESS_UNIT[this.codec]]));
  }

  close(): void {
    const child = this.process;
    this.process = undefined;
    this.written.length = 0;
    if (!child) return;
    child.stdin.destroy();
    child.kill("SIGKILL");
  }

  private ensureProcess(): ChildProcessByStdio<Writable, Readable, null> {
    if (this.process) return this.process;
    const args = [
      ...["-hide_banner", "-loglevel", "error", "-nostdin", "-threads", "1"],
      // Decode as soon as a whole access unit is there: no probing ahead, no reordering delay.
      ...["-flags", "low_delay", "-probesize", "32", "-analyzeduration", "0"],
      ...["-f", this.codec, "-i", "pipe:0"],
      ...["-vf", `scale=${THUMBNAIL_WIDTH}:-2`, "-c:v", "mjpeg", "-q:v", "6", "-f", "image2pipe", "pipe:1"],
    ];
    const child = spawn(this.ffmpegPath, args, { stdio: ["pipe", "pipe", "ignore"] });
    this.process = child;
    child.stdin.on("error", () => undefined); // EPIPE after it exited: handled on "exit"
    let buffered: Buffer = Buffer.alloc(0);
    child.stdout.on("data", (chunk: Buffer) => {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      // image2pipe writes JPEGs back to back; each ends with EOI (FF D9), which cannot occur inside
      // the entropy-coded data (a 0xFF there is always followed by 0x00).
      let end: number;
      while ((end = buffered.indexOf(JPEG_END_OF_IMAGE)) >= 0) {
        const jpeg = buffered.subarray(0, end + 2);
        buffered = buffered.subarray(end + 2);
        this.latest = { jpeg: Buffer.from(jpeg), sequence: this.written.shift() ?? 0, at: Date.now() };
      }
    });
    child.on("error", (err) => {
      this.failed = true;
      this.log.warn({ err }, "thumbnail decoder could not start; the session page shows no thumbnails");
    });
    child.on("exit", (code, signal) => {
      if (this.process !== child) return;
      this.process = undefined;
      this.written.length = 0;
      // A keyframe it could not decode ends it; the next keyframe starts a fresh one.
      this.log.debug({ code, signal, codec: this.codec }, "thumbnail decoder exited");
    });
    return child;
  }
}

const JPEG_END_OF_IMAGE = Buffer.from([0xff, 0xd9]);
const MAX_WAITING_KEYFRAMES = 3;

/** Where the newest keyframes of a session come from. */
export type KeyframeSource = (side: KeyframeSide) => LatestKeyframe | undefined;

/** Both sides of one session. */
export class SessionThumbnails {
  private readonly decoders = new Map<KeyframeSide, KeyframeDecoder>();
  private readonly lastOffered = new Map<KeyframeSide, number>();

  constructor(
    private readonly ffmpegPath: string,
    private readonly source: KeyframeSource,
    private readonly log: Logger,
  ) {}

  /** Hands each side's newest keyframe to its decoder if it is new; call about once a second. */
  refresh(): void {
    for (const side of ["input", "output"] as const) {
      const keyframe = this.source(side);
      if (!keyframe || this.lastOffered.get(side) === keyframe.sequence) continue;
      let decoder = this.decoders.get(side);
      if (decoder && decoder.codec !== keyframe.codec) {
        decoder.close();
        decoder = undefined;
      }
      if (!decoder) {
        decoder = new KeyframeDecoder(this.ffmpegPath, keyframe.codec, this.log);
        this.decoders.set(side, decoder);
      }
      this.lastOffered.set(side, keyframe.sequence);
      decoder.offer(keyframe);
    }
  }

  get(side: KeyframeSide): Thumbnail | undefined {
    return this.decoders.get(side)?.thumbnail;
  }

  close(): void {
    for (const decoder of this.decoders.values()) decoder.close();
    this.decoders.clear();
    this.lastOffered.clear();
  }
}
