/**
 * The forward path's transcoder: input MPEG-TS → ffmpeg (size, frame rate, GOP) → MPEG-TS on a pipe
 * → whole frames carrying input PTS, packetized for WebRTC by the relay. A pipe, not a UDP socket:
 * when the relay is short of CPU, ffmpeg waits for the relay to read, so frames are delayed rather
 * than lost (issue 12). Separate from the rest of the forward path because it owns an external
 * process and its lifecycle: restart after a crash (within ffmpeg's budget) and restart with another
 * GOP between segments when PeerPace advises it.
 */
import { randomInt } from "node:crypto";
import { H264Packetizer } from "werift";
import { FfmpegProcess, forwardTranscodeArgs, type resolveFfmpeg, type FfmpegExit } from "../media/ffmpeg.js";
import { TsDemuxer, type VideoAccessUnit } from "../media/ts-demux.js";
import { PesLengthWriter } from "../media/pes-length.js";
import { chooseVideoCodecs, type VideoCodecChoice } from "../media/encoder-probe.js";
import { forwardEncoderSettings } from "./config.js";
import type { PacedFrame } from "./pacer.js";
import type { SessionHost } from "./session-host.js";
import { RTP_WRAP } from "./rtp-header.js";

/** Intra-only frames get this many times the session's bitrate (the same picture needs more bits). */
const INTRA_BITRATE_FACTOR = 2;

export class Transcoder {
  private ffmpeg: FfmpegProcess | undefined;
  /** Reads the running ffmpeg's output; a new one for each ffmpeg run (its own PAT, PMT, counters). */
  private demuxer: TsDemuxer | undefined;
  /** Cuts access units into RTP packets; the forward path renumbers and restamps them on sending. */
  private readonly packetizer = new H264Packetizer({
    payloadType: 96,
    ssrc: randomInt(1, 2 ** 31),
    inputFormat: "annexb",
  });
  /** Writes each input video PES's length, so ffmpeg decodes a frame at its last byte (pes-length.ts). */
  private readonly pesLengths = new PesLengthWriter();
  /** Whether ffmpeg encodes every frame as a keyframe now (while ComfyStream is slower). */
  private intraOnlyNow = false;
  private restarting = false;
  private retuning = false;
  /** The encoder and decoder, once chosen; or why the required one is unusable. */
  private codecChoice: VideoCodecChoice | undefined;
  private codecFailure: string | undefined;

  constructor(
    private readonly host: SessionHost,
    /** Each frame out of ffmpeg, with its input PTS. */
    private readonly onFrame: (frame: PacedFrame) => void,
    /** After a restart with another GOP. */
    private readonly onGopChange: (intraOnly: boolean) => void,
  ) {}

  async start(ffmpegBinary: () => ReturnType<typeof resolveFfmpeg>): Promise<void> {
    const { log, config } = this.host;
    const binary = await ffmpegBinary();
    // NVENC/NVDEC or x264 (a probe, cached per process); a required NVENC that fails ends the start.
    try {
      this.codecChoice = await chooseVideoCodecs(config.encoder, { ffmpegPath: binary.path, logger: log });
    } catch (err) {
      this.codecFailure = (err as Error).message;
      throw err;
    }
    this.ffmpeg = new FfmpegProcess({
      ffmpegPath: binary.path,
      args: this.args(false),
      stdout: "pipe",
      logger: log,
    });
    // 'spawn' comes before any output of that run, and a run's 'exit' after all of it.
    this.ffmpeg.on("spawn", () => {
      this.demuxer = new TsDemuxer({ alignedSource: true, onAccessUnit: (au) => this.frameOut(au) });
    });
    this.ffmpeg.on("stdout", (chunk: Buffer) => this.demuxer?.push(chunk));
    this.ffmpeg.on("exit", (info: FfmpegExit) => {
      this.demuxer?.flush();
      void this.onExit(info);
    });
    this.ffmpeg.start();
    log.info(
      { ffmpeg: binary.path, version: binary.version, codecs: this.codecChoice },
      "transcoder started",
    );
  }

  /** Running, and not between a crash and its restart (which must start on the next segment). */
  get ready(): boolean {
    return this.ffmpeg?.running === true && !this.restarting;
  }

  get intraOnly(): boolean {
    return this.intraOnlyNow;
  }

  /** The encoder and decoder with their reason, for the status (null fields before the choice). */
  get codecs(): {
    encoder: VideoCodecChoice["encoder"] | null;
    decoder: VideoCodecChoice["decoder"] | null;
    reason: string;
  } {
    if (this.codecChoice) return this.codecChoice;
    return {
      encoder: null,
      decoder: null,
      reason: this.codecFailure ?? `not chosen yet (encoder ${this.host.config.encoder})`,
    };
  }

  async write(chunk: Buffer): Promise<void> {
    await this.writePieces(this.pesLengths.push(chunk));
  }

  /** The input segment written so far has ended: its last frame is complete. */
  async endOfSegment(): Promise<void> {
    await this.writePieces(this.pesLengths.endOfSegment());
  }

  /** One pipe write for what is ready: a held PES is many 188-byte packets (a syscall each, else). */
  private async writePieces(pieces: Buffer[]): Promise<void> {
    if (pieces.length === 0) return;
    await this.ffmpeg?.write(pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces));
  }

  /**
   * Restarts ffmpeg with the GOP PeerPace advised, between two input segments (each starts on a
   * keyframe, so the new ffmpeg decodes from its first byte). The old one finishes its frames first.
   */
  async setGop(intraOnly: boolean): Promise<void> {
    const ffmpeg = this.ffmpeg;
    if (!ffmpeg?.running || intraOnly === this.intraOnlyNow) return;
    this.retuning = true;
    try {
      ffmpeg.endInput();
      if (!(await ffmpeg.whenExited(1000))) await ffmpeg.stop();
      ffmpeg.setArgs(this.args(intraOnly));
      if (this.host.isEnded()) return;
      this.pesLengths.reset();
      ffmpeg.start();
      this.intraOnlyNow = intraOnly;
      this.onGopChange(intraOnly);
      this.host.emitStatus();
    } finally {
      this.retuning = false;
    }
  }

  /**
   * The peer connected in the middle of an input segment: rather than wait for the next segment
   * (and the encoder's next IDR), a new ffmpeg run decodes this segment from its start (`head`, the
   * bytes so far, which begin at a keyframe) but encodes only from `livePts` on, so its first frame
   * out is an IDR of the live picture. Costs one process start and a burst of decoding.
   */
  async restartAtLiveEdge(head: Buffer[], livePts: number): Promise<void> {
    const ffmpeg = this.ffmpeg;
    if (!ffmpeg) return;
    this.retuning = true;
    try {
      this.demuxer = undefined; // what the old run still writes is from before the live edge
      await ffmpeg.stop();
      ffmpeg.setArgs(this.args(this.intraOnlyNow, livePts));
      if (this.host.isEnded()) return;
      ffmpeg.start();
      this.pesLengths.reset();
      for (const piece of head) await this.write(piece);
    } finally {
      this.retuning = false;
    }
  }

  /** The input has ended: lets ffmpeg send its last frames, for up to `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    // ffmpeg exits once it has sent its last frame; under load it runs well behind its input, and
    // draining before that loses the stream's tail.
    this.ffmpeg?.endInput();
    await this.ffmpeg?.whenExited(timeoutMs);
  }

  async stop(): Promise<void> {
    await this.ffmpeg?.stop().catch(() => undefined);
  }

  /** The transcoder's arguments: the session's GOP, or intra-only while ComfyStream is slower (PeerPace). */
  private args(intraOnly: boolean, startAtPts?: number): string[] {
    const { config } = this.host;
    return forwardTranscodeArgs({
      ...(startAtPts === undefined ? {} : { startAtPts }),
      ...(this.codecChoice ? { codecs: this.codecChoice } : {}),
      width: config.width,
      height: config.height,
      frameRate: config.frameRate,
      // Intra frames need more bits for the same picture; only those the peer takes are sent.
      ...(intraOnly
        ? { gopFrames: 1, bitrate: `${config.bitrateKbps * INTRA_BITRATE_FACTOR}k` }
        : forwardEncoderSettings(config)),
    });
  }

  private async onExit(info: FfmpegExit): Promise<void> {
    const { host } = this;
    if (info.requested || this.retuning || host.isEnded() || host.isStopping()) return;
    const detail =
      `ffmpeg exited (code ${info.code ?? "none"}, signal ${info.signal ?? "none"})` +
      (info.error ? `: ${info.error.message}` : "") +
      (info.stderrTail ? `: ${info.stderrTail.trim().slice(-500)}` : "");
    host.setError("TranscoderCrashed", detail);
    // A new ffmpeg must start on a keyframe: the next input segment (segments start on one).
    this.restarting = true;
    this.pesLengths.reset(); // the new run starts on the next segment
    const restarted = await this.ffmpeg!.restart();
    this.restarting = false;
    if (!restarted) {
      await host.fail("TranscoderFailed", new Error(`${detail} (restart budget exhausted)`));
      return;
    }
    host.stats.counters.ffmpegRestarts++;
    host.log.warn({ restarts: host.stats.counters.ffmpegRestarts }, "transcoder restarted");
    host.emitStatus();
  }

  /** An access unit out of ffmpeg: its PTS is the input's (see forwardTranscodeArgs). */
  private frameOut(au: VideoAccessUnit): void {
    if (au.pts === undefined) return;
    // What ComfyStream is sent (scaled, baseline: no reordering delay), for the page's thumbnail.
    if (au.keyframe) this.host.stats.keyframes.note("input", au.data, "h264");
    const packets = this.packetizer.packetize(au.data, au.pts % RTP_WRAP).map((p) => p.serialize());
    if (packets.length > 0) this.onFrame({ pts: au.pts, keyframe: au.keyframe, packets });
  }
}
