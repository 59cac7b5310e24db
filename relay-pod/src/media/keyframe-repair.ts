/**
 * Keeps the return path cuttable: an IDR at least every segment duration, whatever the peer does.
 *
 * The relay asks ComfyStream for keyframes (PLI), but the real server on Debian's aiortc 1.4.0 never
 * makes one on request: its H264Encoder ignores `force_keyframe`, so x264's own GOP of 250 frames is
 * all there is (issue 10: one IDR in 224 frames, one output segment per run). When the returned
 * stream goes longer than `maxIdrGapSec` without an IDR, this stage re-encodes the return path from
 * then on: ffmpeg reads the returned H.264 as MPEG-TS on stdin, decodes it, encodes it with libx264
 * (ultrafast, zerolatency, an IDR forced every segment duration) and writes MPEG-TS with the same PTS
 * to stdout. A peer that does answer PLIs never pays for it.
 *
 * The handover keeps every reference intact: the frames since the peer's last IDR are kept, the
 * re-encoder decodes from that IDR on, its output for frames already emitted is discarded, and it is
 * told to force an IDR on the first frame after them, so the output continues with an IDR.
 */
import { silentLogger, type Logger } from "../common/log.js";
import { FfmpegProcess, type FfmpegExit } from "./ffmpeg-process.js";
import { TsDemuxer } from "./ts-demux.js";
import { TsMuxer } from "./ts-mux.js";
import { PTS_CLOCK_HZ, ptsForwardDistance } from "./ts-packet.js";

export interface ReturnedFrame {
  annexB: Buffer;
  /** 90 kHz input PTS (output PTS = input PTS). */
  pts: number;
  keyframe: boolean;
}

export type KeyframeSource = "peer" | "re-encode";

export interface KeyframeRepairStatus {
  /** Where the output's IDRs come from. */
  source: KeyframeSource;
  /** Why the re-encoder runs (absent while the peer's own IDRs are used). */
  reason?: string;
  /** Frames the re-encoder has produced for the output. */
  reEncodedFrames: number;
  /** Longest gap between the peer's IDRs seen so far, seconds. */
  peerMaxIdrGapSec: number | undefined;
}

export interface KeyframeRepairOptions {
  /** The output's segment duration: the re-encoder forces an IDR this often. */
  segmentDurationSec: number;
  /** Gap between the peer's IDRs (seconds of PTS) that starts the re-encoder. Default 2 × segment + 0.5 s. */
  maxIdrGapSec?: number;
  /** Bitrate of the re-encoded output, kbit/s. */
  bitrateKbps: number;
  ffmpegPath: string;
  /** Receives every output frame, in order. */
  emit: (frame: ReturnedFrame) => void;
  logger?: Logger;
  /** Called when the source changes (for status). */
  onSourceChange?: (status: KeyframeRepairStatus) => void;
}

/** What is kept of the peer's current GOP, at most (the handover needs it from its IDR). */
const MAX_KEPT_FRAMES = 900;
const MAX_KEPT_BYTES = 64 * 1024 * 1024;
/** Re-encoder crashes tolerated before the peer's own stream is used again for good. */
const MAX_REENCODER_FAILURES = 3;

export class KeyframeRepair {
  private readonly log: Logger;
  private readonly maxGapTicks: number;
  private source: KeyframeSource = "peer";
  private reason: string | undefined;
  private lastPeerIdrPts: number | undefined;
  private peerMaxIdrGapTicks = 0;
  /** The peer's frames since its last IDR (the IDR first); undefined before one or once over the limits. */
  private kept: ReturnedFrame[] | undefined;
  private keptBytes = 0;
  private lastEmittedPts: number | undefined;
  private reEncoder: ReEncoder | undefined;
  private reEncodedFrames = 0;
  private failures = 0;
  private gaveUp = false;
  private closed = false;
  /** Frames that could not be emitted (while a crashed re-encoder waits for the peer's next IDR). */
  framesLost = 0;

  constructor(private readonly options: KeyframeRepairOptions) {
    this.log = options.logger ?? silentLogger;
    const gapSec = options.maxIdrGapSec ?? options.segmentDurationSec * 2 + 0.5;
    this.maxGapTicks = Math.round(gapSec * PTS_CLOCK_HZ);
  }

  status(): KeyframeRepairStatus {
    return {
      source: this.source,
      ...(this.reason ? { reason: this.reason } : {}),
      reEncodedFrames: this.reEncodedFrames,
      peerMaxIdrGapSec:
        this.lastPeerIdrPts === undefined ? undefined : this.peerMaxIdrGapTicks / PTS_CLOCK_HZ,
    };
  }

  /** One frame returned by the peer, in order. */
  push(frame: ReturnedFrame): void {
    if (this.closed) return;
    this.keep(frame);
    if (this.reEncoder) {
      this.reEncoder.feed(frame);
      return;
    }
    if (this.source === "re-encode") {
      // Needed but not running (a new peer stream, or after a crash): it starts at the peer's next
      // IDR; the peer's frames before it cannot follow re-encoded ones.
      if (frame.keyframe) this.startReEncoder();
      else this.framesLost++;
      return;
    }
    this.emitOwn(frame);
    if (this.lastPeerIdrPts !== undefined && !frame.keyframe && !this.gaveUp && this.kept) {
      const gap = ptsForwardDistance(this.lastPeerIdrPts, frame.pts);
      if (gap > this.maxGapTicks) {
        this.switchToReEncode(
          `the peer sent no IDR for ${(gap / PTS_CLOCK_HZ).toFixed(1)} s although keyframes were requested (PLI)`,
        );
      }
    }
  }

  /**
   * A new peer connection: its stream starts afresh with an IDR. A peer that ignored keyframe
   * requests before is not asked to prove it again: the re-encoder starts at the new stream's IDR.
   */
  resetStream(): void {
    this.stopReEncoder();
    this.kept = undefined;
    this.keptBytes = 0;
    this.lastPeerIdrPts = undefined;
  }

  /** Hands on what the re-encoder still holds (up to `timeoutMs`), then stops it. */
  async close(timeoutMs = 1000): Promise<void> {
    this.closed = true;
    const encoder = this.reEncoder;
    this.reEncoder = undefined;
    if (encoder) await encoder.drainAndStop(timeoutMs);
  }

  private keep(frame: ReturnedFrame): void {
    if (frame.keyframe) {
      if (this.lastPeerIdrPts !== undefined) {
        const gap = ptsForwardDistance(this.lastPeerIdrPts, frame.pts);
        if (gap < PTS_CLOCK_HZ * 3600) this.peerMaxIdrGapTicks = Math.max(this.peerMaxIdrGapTicks, gap);
      }
      this.lastPeerIdrPts = frame.pts;
      this.kept = [];
      this.keptBytes = 0;
    }
    if (!this.kept || this.reEncoder) return;
    this.kept.push(frame);
    this.keptBytes += frame.annexB.length;
    if (this.kept.length > MAX_KEPT_FRAMES || this.keptBytes > MAX_KEPT_BYTES) {
      this.kept = undefined; // too long to replay; the next IDR starts keeping again
      this.keptBytes = 0;
    }
  }

  private emitOwn(frame: ReturnedFrame): void {
    this.lastEmittedPts = frame.pts;
    this.options.emit(frame);
  }

  private switchToReEncode(reason: string): void {
    this.source = "re-encode";
    this.reason = reason;
    this.log.warn({ reason }, "re-encoding the returned video so that the output can be cut into segments");
    this.startReEncoder();
    this.options.onSourceChange?.(this.status());
  }

  /** Starts the re-encoder at the kept IDR and feeds it everything kept since. */
  private startReEncoder(): void {
    const kept = this.kept;
    const first = kept?.[0];
    if (!kept || !first) return;
    const last = this.lastEmittedPts;
    // Output already emitted past the kept IDR is not emitted twice (PTS after it, taking the wrap).
    const emitAfterPts = last !== undefined && isAtOrAfter(last, first.pts) ? last : undefined;
    const encoder = new ReEncoder({
      ffmpegPath: this.options.ffmpegPath,
      firstPts: first.pts,
      emitAfterPts,
      keyframeEverySec: this.options.segmentDurationSec,
      bitrateKbps: this.options.bitrateKbps,
      logger: this.log,
      emit: (frame) => {
        this.reEncodedFrames++;
        this.lastEmittedPts = frame.pts;
        this.options.emit(frame);
      },
      onExit: (exit) => this.onReEncoderExit(encoder, exit),
    });
    this.reEncoder = encoder;
    for (const frame of kept) encoder.feed(frame);
  }

  private onReEncoderExit(encoder: ReEncoder, exit: FfmpegExit): void {
    if (this.reEncoder !== encoder || this.closed) return;
    this.reEncoder = undefined;
    this.failures++;
    const detail =
      `re-encoder exited (code ${exit.code ?? "none"}, signal ${exit.signal ?? "none"})` +
      (exit.stderrTail ? `: ${exit.stderrTail.trim().slice(-300)}` : "");
    if (this.failures < MAX_REENCODER_FAILURES) {
      this.log.warn({ detail }, "return-path re-encoder failed; restarting at the peer's next IDR");
      return;
    }
    // The peer's own stream, seldom cuttable, is better than none.
    this.gaveUp = true;
    this.source = "peer";
    this.reason = `re-encoder failed ${this.failures} times (${detail}); the peer's own IDRs are used`;
    this.log.error({ detail }, "return-path re-encoder keeps failing; passing the peer's stream on as it is");
    this.options.onSourceChange?.(this.status());
  }

  private stopReEncoder(): void {
    const encoder = this.reEncoder;
    this.reEncoder = undefined;
    void encoder?.stop();
  }
}

/** True when `pts` is `reference` or up to an hour after it on the 33-bit clock. */
function isAtOrAfter(pts: number, reference: number): boolean {
  return ptsForwardDistance(reference, pts) < PTS_CLOCK_HZ * 3600;
}

interface ReEncoderOptions {
  ffmpegPath: string;
  /** PTS of the first frame fed (ffmpeg's t = 0). */
  firstPts: number;
  /** Output at or before this PTS was already emitted from the peer's own stream. */
  emitAfterPts: number | undefined;
  keyframeEverySec: number;
  bitrateKbps: number;
  logger: Logger;
  emit: (frame: ReturnedFrame) => void;
  onExit: (exit: FfmpegExit) => void;
}

/** One ffmpeg that decodes and re-encodes the returned stream, TS in and out, PTS kept. */
class ReEncoder {
  private readonly process: FfmpegProcess;
  private readonly muxer = new TsMuxer();
  private readonly demuxer: TsDemuxer;
  private fedFrames = 0;
  private waitingForIdr: boolean;

  constructor(private readonly options: ReEncoderOptions) {
    const emitAfter = options.emitAfterPts;
    // ffmpeg's `t` in -force_key_frames counts from the first frame fed.
    const firstNewSec =
      emitAfter === undefined ? 0 : ptsForwardDistance(options.firstPts, emitAfter) / PTS_CLOCK_HZ + 0.001;
    this.waitingForIdr = emitAfter !== undefined;
    // ffmpeg writes whole TS packets to its stdout: a chunk's last packet is taken at once, not held
    // until the next frame's first packet confirms it (a frame of latency on every returned frame).
    this.demuxer = new TsDemuxer({
      alignedSource: true,
      onAccessUnit: (au) => {
        if (au.pts === undefined) return;
        if (emitAfter !== undefined && this.waitingForIdr) {
          // Emitted already, or not an IDR to continue the output with.
          if (au.pts === emitAfter || !isAtOrAfter(au.pts, emitAfter) || !au.keyframe) return;
          this.waitingForIdr = false;
        }
        this.options.emit({ annexB: au.data, pts: au.pts, keyframe: au.keyframe });
      },
    });
    this.process = new FfmpegProcess({
      ffmpegPath: options.ffmpegPath,
      args: reEncodeArgs(firstNewSec, options.keyframeEverySec, options.bitrateKbps),
      stdout: "pipe",
      logger: options.logger,
    });
    this.process.on("stdout", (chunk: Buffer) => this.demuxer.push(chunk));
    this.process.on("exit", (exit: FfmpegExit) => {
      if (!exit.requested && exit.code !== 0) options.onExit(exit);
    });
    this.process.start();
  }

  feed(frame: ReturnedFrame): void {
    const bytes = this.muxer.muxAccessUnit(frame, this.fedFrames === 0);
    this.fedFrames++;
    void this.process.write(bytes).catch(() => undefined); // a dead ffmpeg is reported through "exit"
  }

  async drainAndStop(timeoutMs: number): Promise<void> {
    this.process.endInput();
    await this.process.whenExited(timeoutMs);
    this.demuxer.flush();
    await this.process.stop();
  }

  async stop(): Promise<void> {
    await this.process.stop();
  }
}

/**
 * ffmpeg arguments of the return-path re-encoder. `-copyts` with no mux delay keeps PTS exactly,
 * with `-enc_time_base 1:90000` (else the encoder's time base is the frame rate ffmpeg guessed from
 * the first frames, and a 25 fps stream after a 30 fps start came out on a 1/30 s grid: seen through
 * the real ComfyStream) and `-avoid_negative_ts disabled` (PTS just before a 33-bit wrap stay as they
 * are, see forwardTranscodeArgs);
 * a declared PES length (`-omit_video_pes_length 0`) lets the relay take each frame as soon as it is
 * written; `t` in the keyframe expression counts from the first frame fed, so the first IDR falls on
 * the first frame at or after `firstIdrSec` and one follows every `everySec`.
 */
export function reEncodeArgs(firstIdrSec: number, everySec: number, bitrateKbps: number): string[] {
  const forceKeyframes = `expr:gte(t,${firstIdrSec.toFixed(4)}+n_forced*${everySec.toFixed(4)})`;
  return [
    ...["-hide_banner", "-loglevel", "error", "-nostdin"],
    // Little probing: the kept frames arrive at once, and later ones in real time. Each PES (one
    // access unit with its length, from TsMuxer) goes to the decoder as it is: the H.264 parser
    // would hold every frame until the next one's first NAL (a frame of latency; see
    // forwardTranscodeArgs).
    ...["-probesize", "32", "-analyzeduration", "1", "-fflags", "+noparse+nofillin"],
    ...["-flags", "low_delay", "-threads", "1"],
    ...["-f", "mpegts", "-i", "pipe:0", "-map", "0:v:0", "-an", "-copyts", "-fps_mode", "passthrough"],
    ...["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline"],
    ...["-bf", "0", "-g", "100000", "-force_key_frames", forceKeyframes, "-b:v", `${bitrateKbps}k`],
    ...["-enc_time_base", "1:90000", "-avoid_negative_ts", "disabled"],
    ...["-threads", "1", "-muxdelay", "0", "-muxpreload", "0", "-omit_video_pes_length", "0"],
    ...["-flush_packets", "1", "-f", "mpegts", "pipe:1"],
  ];
}
