/**
 * The forward path's transcoder: input MPEG-TS → ffmpeg (size, frame rate, GOP) → RTP on a loopback
 * socket → whole frames carrying input PTS. Separate from the rest of the forward path because it
 * owns an external process and its lifecycle: restart after a crash (within ffmpeg's budget),
 * restart with another GOP between segments when PeerPace advises it, and mapping ffmpeg's own RTP
 * timestamps back onto input PTS across those restarts.
 */
import { createSocket, type Socket } from "node:dgram";
import type { AddressInfo } from "node:net";
import {
  FfmpegProcess,
  forwardTranscodeArgs,
  isRtcpPacket,
  parseRtcpSenderReport,
  type resolveFfmpeg,
  rtpBaseFromSenderReport,
  rtpTimestampToPts,
  type FfmpegExit,
} from "../media/ffmpeg.js";
import { chooseVideoCodecs, type VideoCodecChoice } from "../media/encoder-probe.js";
import { forwardEncoderSettings } from "./config.js";
import type { PacedFrame } from "./pacer.js";
import { RtpFrameAssembler, type RtpFrame } from "./rtp-frames.js";
import type { SessionHost } from "./session-host.js";

const RTP_WRAP = 0x1_0000_0000;
/** Intra-only frames get this many times the session's bitrate (the same picture needs more bits). */
const INTRA_BITRATE_FACTOR = 2;
/** Receive buffer asked for on ffmpeg's RTP socket (Linux reports double what it grants). */
const RTP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

export class Transcoder {
  private ffmpeg: FfmpegProcess | undefined;
  private rtpSocket: Socket | undefined;
  private rtpPort = 0;
  private readonly assembler: RtpFrameAssembler;
  /** ffmpeg's RTP timestamps are its own; this maps them back onto input PTS (calibrated per ffmpeg run). */
  private ffmpegTimestampBase: number | undefined;
  private firstPtsIntoFfmpeg: number | undefined;
  private lastInputPts: number | undefined;
  /** Whether ffmpeg encodes every frame as a keyframe now (while ComfyStream is slower). */
  private intraOnlyNow = false;
  private restarting = false;
  private retuning = false;
  private lastLossWarning = -Infinity;
  /** The encoder and decoder, once chosen; or why the required one is unusable. */
  private codecChoice: VideoCodecChoice | undefined;
  private codecFailure: string | undefined;

  constructor(
    private readonly host: SessionHost,
    /** Each frame out of ffmpeg, with its input PTS. */
    onFrame: (frame: PacedFrame) => void,
    /** After a restart with another GOP. */
    private readonly onGopChange: (intraOnly: boolean) => void,
  ) {
    this.assembler = new RtpFrameAssembler((frame) => {
      const paced = this.toInputPts(frame);
      if (paced) onFrame(paced);
    });
  }

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
    // Loopback UDP has no backpressure: whatever arrives while the event loop is busy waits in the
    // socket's receive buffer, and the kernel's default (~208 KiB, ~50 datagrams by truesize) was
    // overrun by a few hundred ms of CPU starvation, costing whole frames. Ask for more; the kernel
    // caps it at net.core.rmem_max.
    const socket = createSocket({ type: "udp4", recvBufferSize: RTP_RECEIVE_BUFFER_BYTES });
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(0, "127.0.0.1", () => resolve());
    });
    const receiveBufferBytes = socket.getRecvBufferSize();
    // RTP and RTCP share the port; ffmpeg's sender reports reveal its random RTP timestamp base.
    socket.on("message", (packet) => {
      if (!isRtcpPacket(packet)) {
        const lostBefore = this.assembler.lostPackets;
        this.assembler.push(packet);
        if (this.assembler.lostPackets !== lostBefore) this.warnLoss();
        return;
      }
      const report = parseRtcpSenderReport(packet);
      if (report) this.ffmpegTimestampBase = rtpBaseFromSenderReport(report);
    });
    this.rtpSocket = socket;
    this.rtpPort = (socket.address() as AddressInfo).port;
    const args = this.args(false);
    this.ffmpeg = new FfmpegProcess({ ffmpegPath: binary.path, args, logger: log });
    this.ffmpeg.on("exit", (info: FfmpegExit) => void this.onExit(info));
    this.ffmpeg.start();
    log.info(
      {
        ffmpeg: binary.path,
        version: binary.version,
        rtpReceiveBufferBytes: receiveBufferBytes,
        codecs: this.codecChoice,
      },
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

  /** Frames lost whole to packets missing on the loopback socket. */
  get damagedFrames(): number {
    return this.assembler.damagedFrames;
  }

  /** The newest input PTS, near which ffmpeg's timestamps are unwrapped. */
  noteInputPts(pts: number): void {
    this.lastInputPts = pts;
  }

  /** The first PTS written to this ffmpeg run: the fallback anchor until its first sender report. */
  noteFirstPts(pts: number | undefined): void {
    if (this.firstPtsIntoFfmpeg === undefined && pts !== undefined) this.firstPtsIntoFfmpeg = pts;
  }

  async write(chunk: Buffer): Promise<void> {
    await this.ffmpeg?.write(chunk);
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
      await new Promise((resolve) => setTimeout(resolve, 20)); // its last datagrams
      this.resetTimestamps();
      ffmpeg.setArgs(this.args(intraOnly));
      if (this.host.isEnded()) return;
      ffmpeg.start();
      this.intraOnlyNow = intraOnly;
      this.onGopChange(intraOnly);
      this.host.emitStatus();
    } finally {
      this.retuning = false;
    }
  }

  /** The input has ended: lets ffmpeg send its last frames, for up to `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    // ffmpeg exits once it has sent its last frame; under load it runs well behind its input, and
    // draining before that loses the stream's tail.
    this.ffmpeg?.endInput();
    if (this.ffmpeg && (await this.ffmpeg.whenExited(timeoutMs))) {
      await new Promise((r) => setTimeout(r, 50)); // its last UDP datagrams
    }
  }

  async stop(): Promise<void> {
    await this.ffmpeg?.stop().catch(() => undefined);
    this.rtpSocket?.close();
  }

  /** The transcoder's arguments: the session's GOP, or intra-only while ComfyStream is slower (PeerPace). */
  private args(intraOnly: boolean): string[] {
    const { config } = this.host;
    return forwardTranscodeArgs({
      width: config.width,
      height: config.height,
      frameRate: config.frameRate,
      // Intra frames need more bits for the same picture; only those the peer takes are sent.
      ...(intraOnly
        ? { gopFrames: 1, bitrate: `${config.bitrateKbps * INTRA_BITRATE_FACTOR}k` }
        : forwardEncoderSettings(config)),
      rtpPort: this.rtpPort,
      rtcpPort: this.rtpPort,
      ...(this.codecChoice ? { codecs: this.codecChoice } : {}),
    });
  }

  /** A new ffmpeg run has a new RTP timestamp base and sequence. */
  private resetTimestamps(): void {
    this.assembler.reset();
    this.ffmpegTimestampBase = undefined;
    this.firstPtsIntoFfmpeg = undefined;
  }

  private async onExit(info: FfmpegExit): Promise<void> {
    const { host } = this;
    if (info.requested || this.retuning || host.isEnded() || host.isStopping()) return;
    const detail =
      `ffmpeg exited (code ${info.code ?? "none"}, signal ${info.signal ?? "none"})` +
      (info.error ? `: ${info.error.message}` : "") +
      (info.stderrTail ? `: ${info.stderrTail.trim().slice(-500)}` : "");
    host.setError("TranscoderCrashed", detail);
    this.resetTimestamps();
    // A new ffmpeg must start on a keyframe: the next input segment (segments start on one).
    this.restarting = true;
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

  /** At most one warning per 5 s: a starved event loop loses packets in bursts. */
  private warnLoss(): void {
    const now = performance.now();
    if (now - this.lastLossWarning < 5000) return;
    this.lastLossWarning = now;
    this.host.log.warn(
      { lostPackets: this.assembler.lostPackets, droppedFrames: this.assembler.damagedFrames },
      "RTP from ffmpeg lost on loopback (receive buffer overrun: the relay is short of CPU)",
    );
  }

  /** A frame out of ffmpeg, restamped with input PTS; undefined while nothing anchors the mapping. */
  private toInputPts(frame: RtpFrame): PacedFrame | undefined {
    if (this.ffmpegTimestampBase === undefined) {
      // No sender report yet: assume the first frame out is the first frame in (ffmpeg keeps PTS).
      if (this.firstPtsIntoFfmpeg === undefined) return undefined;
      this.ffmpegTimestampBase =
        (frame.rtpTimestamp - (this.firstPtsIntoFfmpeg % RTP_WRAP) + RTP_WRAP) % RTP_WRAP;
    }
    const pts = rtpTimestampToPts(frame.rtpTimestamp, this.ffmpegTimestampBase, this.lastInputPts ?? 0);
    return { pts, keyframe: frame.keyframe, packets: frame.packets };
  }
}
