import { EventEmitter } from "node:events";
import { createSocket, type Socket } from "node:dgram";
import type { AddressInfo } from "node:net";
import { silentLogger, type Logger } from "../common/log.js";
import { TrickleSubscriber, type SubscribedSegment } from "../trickle/subscriber.js";
import { TrickleControlReader, TrickleEventsWriter } from "../trickle/json-channels.js";
import { randomInt } from "node:crypto";
import { H264Packetizer } from "werift";
import { TsDemuxer, type VideoAccessUnit } from "../media/ts-demux.js";
import {
  FfmpegProcess,
  forwardTranscodeArgs,
  isRtcpPacket,
  parseRtcpSenderReport,
  resolveFfmpeg,
  rtpBaseFromSenderReport,
  rtpTimestampToPts,
  type FfmpegExit,
} from "../media/ffmpeg.js";
import { buildStatusEvent } from "./status-events.js";
import { FramePacer, type PacedFrame } from "./pacer.js";
import { PeerWindow } from "./peer-window.js";
import { PeerPace } from "./peer-pace.js";
import { RtpFrameAssembler, setRtpSequenceNumber, setRtpTimestamp, type RtpFrame } from "./rtp-frames.js";
import { FrameMatcher, timestampJitter } from "./frame-matcher.js";
import { forwardEncoderSettings } from "./config.js";
import { buildSessionStatus, SessionStats } from "./session-stats.js";
import type { SessionHost } from "./session-host.js";
import { ReturnPath, type SentFrame } from "./return-path.js";
import { PeerLink } from "./peer-link.js";
import { normalisePrompts, promptsFromControlMessage } from "./prompts.js";
import type { RelaySessionConfig, SessionState, SessionStatus } from "./types.js";

export interface RelaySessionOptions {
  logger?: Logger;
  /** Backoff between ComfyStream reconnects: min, max (ms). */
  reconnectBackoffMs?: [number, number];
  /** Consecutive failed ComfyStream connects before the session fails. */
  reconnectBudget?: number;
  /** Interval of status events on the events channel (ai-runner: 10 s). */
  eventsIntervalMs?: number;
  /** How long to wait for ComfyStream to return the last frames once the input has ended. */
  drainTimeoutMs?: number;
  /** Limit for ComfyStream's answer to `/offer` (warm-up runs inside it). Default: the peer's, 300 s. */
  offerTimeoutMs?: number;
}

const RTP_WRAP = 0x1_0000_0000;
const H264_STREAM_TYPE = 0x1b;
/** Intra-only frames get this many times the session's bitrate (the same picture needs more bits). */
const INTRA_BITRATE_FACTOR = 2;
/** * How late a frame may get waiting for room in the peer window with a normal GOP, where a drop costs
 * the rest of the GOP: long enough to ride out a peer's hiccup (200 ms was not, for the aiortc
 * stand-in on a busy machine), short against the latency a slow peer builds up before intra-only.
 */
const DEFAULT_WINDOW_HOLD_MS = 500;
/** The same while intra-only, where a drop costs only the frame itself. */
const INTRA_WINDOW_HOLD_MS = 100;
/** How long a session waits for an input channel that does not exist yet before it ends. */
const INPUT_CHANNEL_WAIT_MS = 30_000;
/** Receive buffer asked for on ffmpeg's RTP socket (Linux reports double what it grants). */
const RTP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * One relay session: trickle input → ffmpeg (transcode, RTP) → pacer → WebRTC to ComfyStream →
 * returned RTP → depacketize → MPEG-TS mux → trickle output; plus prompt updates from the control
 * channel and status events (DESIGN.md §3). Events: "status" (state or WebRTC state changed), "end",
 * "prompts-applied" (prompts: unknown[]) — ComfyStream runs these now (offer answered or update accepted).
 */
export class RelaySession extends EventEmitter {
  readonly id: string;
  private readonly log: Logger;
  private state: SessionState = "starting";
  private readonly createdAt = new Date();
  private startedAt: Date | undefined;
  private endedAt: Date | undefined;
  private lastError: SessionStatus["lastError"];

  private subscriber: TrickleSubscriber | undefined;
  private controlReader: TrickleControlReader | undefined;
  private eventsWriter: TrickleEventsWriter | undefined;
  private eventsTimer: NodeJS.Timeout | undefined;
  private ffmpeg: FfmpegProcess | undefined;
  private transcoderRtpPort = 0;
  private ffmpegBinary:
    | ReturnType<typeof resolveFfmpeg>
    | undefined; /** Whether the transcoder encodes every frame as a keyframe now (while ComfyStream is slower). */
  private transcodeIntraOnly = false;
  private readonly peerPace: PeerPace | undefined;
  private paceTimer: NodeJS.Timeout | undefined;
  private pendingIntraOnly: boolean | undefined;
  private retuningTranscoder = false;
  /** Set in passthrough mode, where input access units go to WebRTC without ffmpeg. */
  private packetizer: H264Packetizer | undefined;
  private rtpSocket: Socket | undefined;
  private lastTranscoderLossWarning = -Infinity;

  private readonly pacer: FramePacer;
  private readonly assembler: RtpFrameAssembler;
  private readonly matcher = new FrameMatcher<SentFrame>();
  private readonly returnPath: ReturnPath;
  private readonly link: PeerLink;
  private readonly peerWindow: PeerWindow;
  private forwardSequenceNumber = randomInt(0, 0x10000);
  /** ffmpeg's RTP timestamps are its own; this maps them back onto input PTS (calibrated per ffmpeg run). */
  private ffmpegTimestampBase: number | undefined;
  private firstPtsIntoFfmpeg: number | undefined;
  private lastInputPts: number | undefined;
  private waitForInputKeyframe = true;
  private restartingTranscoder = false;

  private readonly stats = new SessionStats();
  private ended: Promise<void>;
  private resolveEnded!: () => void;
  private stopping = false;

  constructor(
    readonly config: RelaySessionConfig,
    private readonly options: RelaySessionOptions = {},
  ) {
    super();
    this.id = config.id;
    this.log = (options.logger ?? silentLogger).child({ session: config.id });
    this.pacer = new FramePacer({
      capacity: config.queueCapacities.decodedFrames,
      send: (frame) => this.sendFrame(frame),
      admit: (frame, lateMs) => this.admitToPeer(frame, lateMs),
    });
    this.assembler = new RtpFrameAssembler((frame) => this.onTranscodedFrame(frame));
    this.peerWindow = new PeerWindow({
      capacity: config.peerWindowFrames,
      maxHoldMs: DEFAULT_WINDOW_HOLD_MS,
    }); // Passthrough sends the input's own GOP: it is not the relay's to change.
    if (config.mode === "transcode") this.peerPace = new PeerPace();
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
    const host: SessionHost = {
      config,
      log: this.log,
      stats: this.stats,
      state: () => this.state,
      isEnded: () => this.isEnded(),
      isStopping: () => this.stopping,
      setState: (state) => this.setState(state),
      setError: (reason, message) => this.setError(reason, message),
      emitStatus: () => this.emitStatus(),
      fail: (reason, err) => this.fail(reason, err),
      complete: () => this.finish("completed"),
    };
    this.returnPath = new ReturnPath(host, this.matcher);
    this.link = new PeerLink(
      host,
      options,
      {
        onNewStream: () => {
          this.matcher.reset();
          this.returnPath.resetStream();
          this.waitForInputKeyframe = true;
          this.peerWindow.reset();
        },
        onRtp: (packet) => this.returnPath.onReturnedRtp(packet),
        onLost: () => this.pacer.clear(),
        onPromptsApplied: (prompts) => this.emit("prompts-applied", prompts),
      },
      normalisePrompts(config.prompts),
    );
  }

  /** Starts every stage; resolves once the pipeline is set up, not when ComfyStream is connected. */
  async start(): Promise<void> {
    this.startedAt = new Date();
    this.log.info(
      { input: this.config.inputUrl, output: this.config.outputUrl, comfystream: this.config.comfystreamUrl },
      "starting relay session",
    );
    try {
      if (this.config.mode === "passthrough") {
        this.packetizer = new H264Packetizer({
          payloadType: 96,
          ssrc: randomInt(1, 2 ** 31),
          inputFormat: "annexb",
        });
      } else {
        await this.startTranscoder();
      }
      await this.returnPath.start(() => this.resolveFfmpegOnce());
    } catch (err) {
      await this.fail("StartFailed", err);
      throw err;
    }
    this.subscriber = new TrickleSubscriber(this.config.inputUrl, {
      startSeq: -2,
      // A session may be started a moment before its input's publisher creates the channel.
      waitForChannelMs: INPUT_CHANNEL_WAIT_MS,
      insecureTls: this.config.insecureTls,
      logger: this.log,
    });
    void this.readInput();
    if (this.config.controlUrl) void this.readControl(this.config.controlUrl);
    if (this.config.eventsUrl) this.startEvents(this.config.eventsUrl);
    if (this.peerPace) {
      this.paceTimer = setInterval(() => this.samplePeerPace(), 1000);
      this.paceTimer.unref();
    }
    this.link.connect();
  }

  /** Resolves when the session has ended (completed, stopped or failed). */
  whenEnded(): Promise<void> {
    return this.ended;
  }

  async stop(): Promise<void> {
    if (this.isEnded()) return;
    this.log.info("stopping relay session on request");
    await this.finish("stopped");
  }

  async updatePrompts(input: unknown): Promise<{ ok: boolean; reply?: unknown; error?: string }> {
    return this.link.updatePrompts(input);
  }

  status(): SessionStatus {
    const now = performance.now();
    const caps = this.config.queueCapacities;
    return buildSessionStatus(
      this.stats,
      {
        id: this.id,
        config: this.config,
        state: this.state,
        webrtcState: this.link.state,
        createdAt: this.createdAt,
        startedAt: this.startedAt,
        endedAt: this.endedAt,
        lastError: this.lastError,
        lastPromptUpdate: this.link.lastPromptUpdate,
        promptsGeneration: this.link.promptsGeneration,
        queues: {
          decodedFrames: { size: this.pacer.size, capacity: caps.decodedFrames, dropped: this.pacer.dropped },
          ...this.returnPath.queues(),
        },
        stageDroppedFrames:
          this.assembler.damagedFrames +
          this.pacer.dropped +
          this.peerWindow.peerLimitedDrops +
          this.returnPath.droppedFrames,
        peerLimited: this.peerWindow.peerLimitedDrops,
        peerWindow: {
          capacity: this.peerWindow.capacity,
          inFlight: this.matcher.inFlight(now),
          transcoderGop:
            this.config.mode !== "transcode" ? null : this.transcodeIntraOnly ? "intra-only" : "normal",
          ...(this.transcodeIntraOnly && this.peerPace?.reason ? { reason: this.peerPace.reason } : {}),
        },
        outputKeyframes: this.returnPath.outputKeyframesStatus(),
      },
      now,
    );
  }

  // ---- input: trickle → demux (count, validate, PTS) → ffmpeg ------------------------------------

  private async readInput(): Promise<void> {
    const subscriber = this.subscriber!;
    try {
      for (;;) {
        const segment = await subscriber.next();
        if (!segment) break;
        if (this.isEnded()) {
          segment.discard();
          return;
        }
        await this.relayInputSegment(segment);
      }
      if (this.isEnded()) return;
      this.log.info("input stream ended");
      await this.finish("completed");
    } catch (err) {
      if (this.isEnded()) return;
      await this.fail("InputFailed", err);
    }
  }

  /**
   * Streams one input segment into ffmpeg. The head is held until the demuxer has found a video PES,
   * so a corrupt or non-video segment is skipped whole instead of confusing the decoder. Segments
   * start on keyframes, so skipping whole ones (when behind, or while ComfyStream is away) keeps the
   * decoded stream clean.
   */
  private async relayInputSegment(segment: SubscribedSegment): Promise<void> {
    this.stats.counters.segmentsIn++;
    if (this.pendingIntraOnly !== undefined) await this.retuneTranscoder();
    let frames = 0;
    let firstPts: number | undefined;
    const demuxer = new TsDemuxer({
      onAccessUnit: (au) => {
        frames++;
        if (au.pts !== undefined) {
          firstPts ??= au.pts;
          this.lastInputPts = au.pts;
        }
        this.stats.noteInputFrame(au.pts);
        if (this.packetizer && !drop && !this.isEnded()) this.forwardAccessUnit(au);
      },
    });
    const drop = this.shouldDropInputSegment();
    const held: Buffer[] = [];
    let validated = false;
    let heldBytes = 0;
    for await (const chunk of segment.body) {
      demuxer.push(chunk);
      if (drop || this.isEnded()) continue;
      if (!validated) {
        held.push(chunk);
        heldBytes += chunk.length;
        if (demuxer.stats.videoPid === undefined || demuxer.stats.accessUnits === 0) {
          if (heldBytes > 4 * 1024 * 1024) break; // no video within 4 MiB: not a video segment
          continue;
        }
        validated = true;
        this.noteFirstPtsIntoFfmpeg(firstPts);
        for (const piece of held) await this.ffmpeg?.write(piece);
        held.length = 0;
        continue;
      }
      await this.ffmpeg?.write(chunk);
    }
    demuxer.flush();
    if (this.packetizer) {
      this.finishPassthroughSegment(segment.seq, frames, drop, demuxer.stats);
      return;
    }
    if (!validated && !drop) {
      if (frames > 0 && !this.isEnded()) {
        // A segment whose only frame completed at flush: still usable.
        this.noteFirstPtsIntoFfmpeg(firstPts);
        for (const piece of held) await this.ffmpeg?.write(piece);
        return;
      }
      this.stats.counters.segmentsCorrupt++;
      this.log.warn(
        { seq: segment.seq, stats: demuxer.stats },
        "skipped an input segment with no video frames",
      );
      return;
    }
    if (drop) {
      this.stats.counters.segmentsDropped++;
      this.stats.counters.inputFramesDropped += frames;
      this.log.debug({ seq: segment.seq, frames }, "dropped an input segment");
    }
  }
  private shouldDropInputSegment(): boolean {
    if (this.link.state !== "connected") return true;
    const transcoderReady = this.ffmpeg?.running === true && !this.restartingTranscoder;
    if (!this.packetizer && !transcoderReady) return true;
    // Behind: more frames waiting to go out than the queue holds.
    return this.pacer.size >= this.config.queueCapacities.decodedFrames;
  }

  private noteFirstPtsIntoFfmpeg(pts: number | undefined): void {
    if (this.firstPtsIntoFfmpeg === undefined && pts !== undefined) this.firstPtsIntoFfmpeg = pts;
  }

  // ---- forward, passthrough mode: input H.264 access units → RTP → pacer (no transcoding) ---------

  /**
   * Passthrough (media-pipeline.md §3.2): the input's own H.264 goes to ComfyStream unchanged, one
   * access unit at a time, with RTP ts = input PTS. Saves ffmpeg's ~70 ms and its memory; the price
   * is no scaling, no frame-rate cap, and PLI cannot be honoured (the next input keyframe, at most
   * one segment away, does the job).
   */
  private forwardAccessUnit(au: VideoAccessUnit): void {
    if (au.streamType !== H264_STREAM_TYPE || au.pts === undefined) return;
    const packets = this.packetizer!.packetize(au.data, au.pts % RTP_WRAP).map((p) => p.serialize());
    this.pacer.push({ pts: au.pts, keyframe: au.keyframe, packets });
  }

  private finishPassthroughSegment(
    seq: number,
    frames: number,
    dropped: boolean,
    stats: TsDemuxer["stats"],
  ): void {
    if (dropped) {
      this.stats.counters.segmentsDropped++;
      this.stats.counters.inputFramesDropped += frames;
    } else if (frames === 0) {
      this.stats.counters.segmentsCorrupt++;
      this.log.warn({ seq, stats }, "skipped an input segment with no video frames");
    } else if (stats.streamType !== H264_STREAM_TYPE) {
      this.stats.counters.segmentsCorrupt++;
      this.stats.counters.inputFramesDropped += frames;
      this.setError(
        "UnsupportedInput",
        `passthrough needs H.264 input; this stream's video is stream type 0x${(stats.streamType ?? 0).toString(16)} (use transcode mode)`,
      );
    }
  }

  // ---- forward: ffmpeg RTP → frames → pacer → WebRTC ----------------------------------------------

  private async startTranscoder(): Promise<void> {
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
        if (this.assembler.lostPackets !== lostBefore) this.warnTranscoderLoss();
        return;
      }
      const report = parseRtcpSenderReport(packet);
      if (report) this.ffmpegTimestampBase = rtpBaseFromSenderReport(report);
    });
    this.rtpSocket = socket;
    const ffmpegBinary = await this.resolveFfmpegOnce();
    this.transcoderRtpPort = (socket.address() as AddressInfo).port;
    const args = this.transcoderArgs(false);
    this.ffmpeg = new FfmpegProcess({ ffmpegPath: ffmpegBinary.path, args, logger: this.log });
    this.ffmpeg.on("exit", (info: FfmpegExit) => void this.onFfmpegExit(info));
    this.ffmpeg.start();
    this.log.info(
      { ffmpeg: ffmpegBinary.path, version: ffmpegBinary.version, rtpReceiveBufferBytes: receiveBufferBytes },
      "transcoder started",
    );
  } /** The transcoder's arguments: the session's GOP, or intra-only while ComfyStream is slower (PeerPace). */
  private transcoderArgs(intraOnly: boolean): string[] {
    return forwardTranscodeArgs({
      width: this.config.width,
      height: this.config.height,
      frameRate: this.config.frameRate,
      // Intra frames need more bits for the same picture; only those the peer takes are sent.
      ...(intraOnly
        ? { gopFrames: 1, bitrate: `${this.config.bitrateKbps * INTRA_BITRATE_FACTOR}k` }
        : forwardEncoderSettings(this.config)),
      rtpPort: this.transcoderRtpPort,
      rtcpPort: this.transcoderRtpPort,
    });
  } /** Once a second: should the transcoder switch between its normal GOP and intra-only (PeerPace)? */
  private samplePeerPace(): void {
    const pace = this.peerPace;
    if (!pace || this.link.state !== "connected") return;
    const advice = pace.sample({ now: performance.now(), windowPressure: this.peerWindow.peerLimitedDrops });
    if (advice === undefined) return;
    this.pendingIntraOnly = advice;
    this.log.info(
      { intraOnly: advice, reason: pace.reason ?? "ComfyStream keeps up again" },
      advice
        ? "ComfyStream is slower than the input: intra-only from the next segment"
        : "back to the normal GOP",
    );
  } /**
   * Restarts ffmpeg with the GOP PeerPace advised, between two input segments (each starts on a
   * keyframe, so the new ffmpeg decodes from its first byte). The old one finishes its frames first.
   */
  private async retuneTranscoder(): Promise<void> {
    const intraOnly = this.pendingIntraOnly;
    const ffmpeg = this.ffmpeg;
    this.pendingIntraOnly = undefined;
    if (intraOnly === undefined || !ffmpeg?.running || intraOnly === this.transcodeIntraOnly) return;
    this.retuningTranscoder = true;
    try {
      ffmpeg.endInput();
      if (!(await ffmpeg.whenExited(1000))) await ffmpeg.stop();
      await new Promise((resolve) => setTimeout(resolve, 20)); // its last datagrams
      this.assembler.reset();
      this.ffmpegTimestampBase = undefined;
      this.firstPtsIntoFfmpeg = undefined;
      ffmpeg.setArgs(this.transcoderArgs(intraOnly));
      if (this.isEnded()) return;
      ffmpeg.start();
      this.transcodeIntraOnly = intraOnly; // Intra-only: a frame left out costs no other, so it waits only a frame or so for room.
      this.peerWindow.setMaxHoldMs(intraOnly ? INTRA_WINDOW_HOLD_MS : DEFAULT_WINDOW_HOLD_MS);
      this.emitStatus();
    } finally {
      this.retuningTranscoder = false;
    }
  }

  private async onFfmpegExit(info: FfmpegExit): Promise<void> {
    if (info.requested || this.retuningTranscoder || this.isEnded() || this.stopping) return;
    const detail =
      `ffmpeg exited (code ${info.code ?? "none"}, signal ${info.signal ?? "none"})` +
      (info.error ? `: ${info.error.message}` : "") +
      (info.stderrTail ? `: ${info.stderrTail.trim().slice(-500)}` : "");
    this.setError("TranscoderCrashed", detail);
    this.assembler.reset();
    this.ffmpegTimestampBase = undefined;
    this.firstPtsIntoFfmpeg = undefined;
    // A new ffmpeg must start on a keyframe: the next input segment (segments start on one).
    this.restartingTranscoder = true;
    const restarted = await this.ffmpeg!.restart();
    this.restartingTranscoder = false;
    if (!restarted) {
      await this.fail("TranscoderFailed", new Error(`${detail} (restart budget exhausted)`));
      return;
    }
    this.stats.counters.ffmpegRestarts++;
    this.log.warn({ restarts: this.stats.counters.ffmpegRestarts }, "transcoder restarted");
    this.emitStatus();
  }

  /** At most one warning per 5 s: a starved event loop loses packets in bursts. */
  private warnTranscoderLoss(): void {
    const now = performance.now();
    if (now - this.lastTranscoderLossWarning < 5000) return;
    this.lastTranscoderLossWarning = now;
    this.log.warn(
      { lostPackets: this.assembler.lostPackets, droppedFrames: this.assembler.damagedFrames },
      "RTP from ffmpeg lost on loopback (receive buffer overrun: the relay is short of CPU)",
    );
  }

  private onTranscodedFrame(frame: RtpFrame): void {
    if (this.ffmpegTimestampBase === undefined) {
      // No sender report yet: assume the first frame out is the first frame in (ffmpeg keeps PTS).
      if (this.firstPtsIntoFfmpeg === undefined) return;
      this.ffmpegTimestampBase =
        (frame.rtpTimestamp - (this.firstPtsIntoFfmpeg % RTP_WRAP) + RTP_WRAP) % RTP_WRAP;
    }
    const pts = rtpTimestampToPts(frame.rtpTimestamp, this.ffmpegTimestampBase, this.lastInputPts ?? 0);
    this.pacer.push({ pts, keyframe: frame.keyframe, packets: frame.packets });
  }

  /** The peer window's say on a due frame (see PeerWindow); frames sendFrame would discard pass. */
  private admitToPeer(frame: PacedFrame, lateMs: number): "send" | "hold" | "drop" {
    if (!this.link.connectedPeer || this.waitForInputKeyframe) return "send";
    // From the first frame: a burst while the peer is starting is a debt it never repays (see PeerWindow).
    return this.peerWindow.decide(frame, this.matcher.inFlight(), lateMs);
  }

  private sendFrame(frame: PacedFrame): void {
    const peer = this.link.connectedPeer;
    if (!peer) return;
    if (this.waitForInputKeyframe) {
      if (!frame.keyframe) return;
      this.waitForInputKeyframe = false;
    }
    // PTS plus a tiny per-frame jitter, so returned frames can be told apart (see FrameMatcher).
    const rtpTs = (frame.pts + timestampJitter(this.stats.counters.framesSent)) % RTP_WRAP;
    for (const packet of frame.packets) {
      setRtpTimestamp(packet, rtpTs);
      // Numbered here, not by ffmpeg: frames the relay drops must leave no gap, or the peer sees
      // loss, asks for retransmissions and discards the next frames up to its next keyframe.
      setRtpSequenceNumber(packet, this.forwardSequenceNumber);
      this.forwardSequenceNumber = (this.forwardSequenceNumber + 1) & 0xffff;
      peer.sendRtp(packet);
    }
    const now = performance.now();
    this.matcher.recordSent({ rtpTimestamp: rtpTs, pts: frame.pts, sentAt: now });
    this.stats.noteFrameSent(frame.pts, now);
  }

  /** ffmpeg is found (and its version asked) once per session, for the transcoder and the repair stage. */
  private resolveFfmpegOnce(): ReturnType<typeof resolveFfmpeg> {
    this.ffmpegBinary ??= resolveFfmpeg({ logger: this.log });
    return this.ffmpegBinary;
  }

  // ---- control and events -------------------------------------------------------------------------

  private async readControl(url: string): Promise<void> {
    const reader = new TrickleControlReader(url, { insecureTls: this.config.insecureTls, logger: this.log });
    this.controlReader = reader;
    try {
      for await (const message of reader) {
        if (this.isEnded()) break;
        let prompts: unknown[] | undefined;
        try {
          prompts = promptsFromControlMessage(message);
        } catch (err) {
          this.log.warn({ err: (err as Error).message }, "ignored a control message");
          continue;
        }
        if (prompts) await this.updatePrompts(prompts);
      }
    } catch (err) {
      if (!this.isEnded())
        this.log.warn({ err: (err as Error).message }, "control channel ended with an error");
    }
  }

  private startEvents(url: string): void {
    this.eventsWriter = new TrickleEventsWriter(url, {
      insecureTls: this.config.insecureTls,
      logger: this.log,
    });
    const startTimeMs = this.createdAt.getTime();
    const send = () => {
      const event = buildStatusEvent(this.status(), { startTimeMs, lastParams: this.link.currentPrompts });
      this.eventsWriter?.write(event, "ai_stream_status").catch((err: unknown) => {
        this.log.debug({ err: (err as Error).message }, "status event not delivered");
      });
    };
    this.eventsTimer = setInterval(send, this.options.eventsIntervalMs ?? 10_000);
    this.eventsTimer.unref();
  }

  // ---- state, errors, teardown ----------------------------------------------------------------------

  private isEnded(): boolean {
    return this.state === "completed" || this.state === "stopped" || this.state === "failed";
  }

  private setState(state: SessionState): void {
    if (this.state === state || this.isEnded()) return;
    this.state = state;
    this.emitStatus();
  }

  private setError(reason: string, message: string): void {
    this.lastError = { at: new Date().toISOString(), reason, message };
    this.log.warn({ reason, message }, "relay session error");
    this.emitStatus();
  }

  private emitStatus(): void {
    this.emit("status", this.status());
  }

  private async fail(reason: string, err: unknown): Promise<void> {
    this.setError(reason, (err as Error)?.message ?? String(err));
    await this.finish("failed");
  }

  private async finish(finalState: "completed" | "stopped" | "failed"): Promise<void> {
    if (this.stopping) return this.ended;
    this.stopping = true;
    this.link.cancelReconnect();
    if (this.eventsTimer) clearInterval(this.eventsTimer);
    if (this.paceTimer) clearInterval(this.paceTimer);
    this.subscriber?.close();
    this.controlReader?.close();

    if (finalState === "completed") {
      // Let the transcoder and ComfyStream hand back what is still in flight.
      // ffmpeg exits once it has sent its last frame; under load it runs well behind its input, and
      // draining before that loses the stream's tail.
      const drainTimeoutMs = this.options.drainTimeoutMs ?? 3000;
      const drainStart = Date.now();
      this.ffmpeg?.endInput();
      if (this.ffmpeg && (await this.ffmpeg.whenExited(drainTimeoutMs))) {
        await new Promise((r) => setTimeout(r, 50)); // its last UDP datagrams
      }
      await this.waitForDrain(Math.max(500, drainTimeoutMs - (Date.now() - drainStart)));
    }
    // The re-encoder (if it runs) still holds the last frames.
    await this.returnPath.closeRepair(finalState === "completed" ? 1000 : 0);
    this.pacer.stop();
    await this.ffmpeg?.stop().catch(() => undefined);
    this.rtpSocket?.close();
    await this.link.close();

    await this.returnPath.close();
    if (this.eventsWriter) {
      // The last event already tells the final state, so a gateway sees the stream end cleanly.
      const finalStatus = { ...this.status(), state: finalState, endedAt: new Date().toISOString() };
      const event = buildStatusEvent(finalStatus, { startTimeMs: this.createdAt.getTime() });
      await this.eventsWriter.write(event, "ai_stream_status").catch(() => undefined);
      await this.eventsWriter.close().catch(() => undefined);
    }
    this.endedAt = new Date();
    this.state = finalState;
    this.log.info({ state: finalState, status: this.status() }, "relay session ended");
    this.emitStatus();
    this.emit("end", this.status());
    this.resolveEnded();
  }

  private async waitForDrain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastReturned = -1;
    let quietSince = Date.now();
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      if (this.stats.counters.framesReturned !== lastReturned) {
        lastReturned = this.stats.counters.framesReturned;
        quietSince = Date.now();
      }
      const inFlight = this.pacer.size + this.returnPath.queued;
      if (inFlight === 0 && this.stats.counters.framesReturned >= this.stats.counters.framesSent) return;
      if (inFlight === 0 && Date.now() - quietSince > 1000) return;
    }
  }
}
