import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { randomInt } from "node:crypto";
import dgram from "node:dgram";
import type { Logger } from "pino";
import { dePacketizeRtpPackets, RtpHeader, RtpPacket } from "werift";
import { Y4M_FRAME_MARKER, Y4mReader } from "./y4m.js";

export type StandinMode = "filter" | "passthrough";

export interface MediaCounters {
  framesIn: number;
  framesOut: number;
  /** Frames not returned: damaged on arrival, evicted by the rate cap, or pipeline stopped/paused. */
  framesDropped: number;
  keyframesOut: number;
  keyframeRequests: number;
  encoderRestarts: number;
}

export interface MediaProcessorOptions {
  mode: StandinMode;
  /** ffmpeg -vf used when the pipeline has a workflow loaded (filter mode). */
  filter: string;
  /** Processing-rate cap in frames/s (filter mode): a 1-slot newest-frame buffer like ComfyStream's input queue. 0 = none. */
  maxFps: number;
  ffmpegPath: string;
  /** Asked per frame: should it be processed at all, and with the workflow's filter (false = noop)? */
  gate: () => { process: boolean; applyFilter: boolean };
  /** Sends one RTP packet back to the peer (werift rewrites SSRC and payload type). */
  send: (packet: RtpPacket) => void;
  logger: Logger;
  /** Minimum spacing of PLI-driven encoder restarts. Default 1000 ms. */
  minKeyframeIntervalMs?: number;
  /**
   * "honour" (default): a PLI restarts the encoder, so an IDR follows. "ignore": like the real
   * ComfyStream on Debian's aiortc 1.4.0, whose H264Encoder drops its force_keyframe argument; the
   * only IDRs are x264's own, one per 250 frames.
   */
  keyframeRequests?: "honour" | "ignore";
  /**
   * With maxFps: "newest" (default) keeps one waiting frame, newer ones evict it, and only processed
   * frames come back. "comfystream": what the real ComfyStream's pipeline does. Its workflow takes
   * input from a one-slot queue (a newer frame evicts the waiting one: `tensor_cache.image_inputs`,
   * maxsize 1), but every frame received also waits in an unbounded queue (`video_incoming_frames`)
   * and goes back with the next output the workflow makes, whichever input that came from. So each
   * evicted frame is a debt never repaid: every later frame comes back one processing period later,
   * for the rest of the connection.
   */
  processingQueue?: "newest" | "comfystream";
}

/** Received frames waiting for an output, at most (the real peer has no limit). */
const INCOMING_QUEUE_LIMIT = 10_000;

const AUD_NAL = Buffer.from([0, 0, 0, 1, 0x09, 0xf0]);
const NAL_IDR = 5;

interface Encoder {
  process: ChildProcessWithoutNullStreams;
  ssrc: number;
  filtered: boolean;
  /** Input RTP timestamps of the frames written, oldest first; one is consumed per output access unit. */
  pendingTimestamps: number[];
  ffmpegTimestamp: number | undefined;
  inputTimestamp: number;
  currentIsKeyframe: boolean;
  startedAt: number;
}

/**
 * What the stand-in does to one peer's video. Output RTP timestamp = input RTP timestamp + a random
 * constant, as aiortc does when ComfyStream copies the input pts to the processed frame.
 *
 * - passthrough: the received RTP payloads go back unchanged, re-stamped and re-sequenced.
 * - filter: RTP → werift depacketizer → ffmpeg decoder (Annex-B in, YUV4MPEG2 out) → [rate cap] →
 *   ffmpeg encoder (YUV4MPEG2 in, `-vf` filter, libx264 baseline, RTP out on loopback UDP) → peer.
 *   libx264 cannot be told to make an IDR from outside the ffmpeg CLI, so a PLI starts a new
 *   encoder process (its first frame is an IDR); the decoder keeps running.
 */
export class MediaProcessor {
  readonly counters: MediaCounters = {
    framesIn: 0,
    framesOut: 0,
    framesDropped: 0,
    keyframesOut: 0,
    keyframeRequests: 0,
    encoderRestarts: 0,
  };

  private readonly timestampOffset = randomInt(0, 2 ** 32);
  private outputSequence = randomInt(0, 0x10000);
  private stopped = false;

  // passthrough state
  private passthroughTimestamp: number | undefined;
  private passthroughForwarding = false;

  // filter state: input side
  private assembling: { timestamp: number; packets: RtpPacket[]; damaged: boolean } | undefined;
  private lastInputSequence: number | undefined;
  private waitingForKeyframe = true;
  private decoder: ChildProcessWithoutNullStreams | undefined;
  private decoderReader: Y4mReader | undefined;
  private decodeTimestamps: number[] = [];

  // filter state: rate cap and output side
  private latestFrame: { timestamp: number; frame: Buffer } | undefined;
  /** "comfystream": timestamps of frames received and not yet given an output, oldest first. */
  private readonly incomingTimestamps: number[] = [];
  private rateTimer: NodeJS.Timeout | undefined;
  private encoder: Encoder | undefined;
  private readonly encodersBySsrc = new Map<number, Encoder>();
  private restartTimer: NodeJS.Timeout | undefined;
  private socket: dgram.Socket | undefined;
  private socketPort = 0;

  constructor(private readonly options: MediaProcessorOptions) {}

  /** Binds the loopback UDP socket the encoders send RTP to (filter mode). */
  async start(): Promise<void> {
    if (this.options.mode !== "filter") return;
    // Loopback UDP has no backpressure, so give a busy event loop room (4 MiB).
    const socket = dgram.createSocket({ type: "udp4", recvBufferSize: 4 * 1024 * 1024 });
    this.socket = socket;
    socket.on("message", (message) => this.onEncodedPacket(message));
    socket.on("error", (error) => this.options.logger.warn({ err: error }, "encoder RTP socket error"));
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    this.socketPort = socket.address().port;
    if (this.options.maxFps > 0) {
      this.rateTimer = setInterval(() => this.processLatestFrame(), 1000 / this.options.maxFps);
    }
  }

  pushRtp(packet: RtpPacket): void {
    if (this.stopped) return;
    if (this.options.mode === "passthrough") this.passThrough(packet);
    else this.assemble(packet);
  }

  /** PLI from the peer. */
  requestKeyframe(): void {
    this.counters.keyframeRequests++;
    if (this.options.keyframeRequests === "ignore") return;
    if (this.options.mode !== "filter" || !this.encoder || this.restartTimer) return;
    const minInterval = this.options.minKeyframeIntervalMs ?? 1000;
    const wait = this.encoder.startedAt + minInterval - Date.now();
    if (wait <= 0) this.restartEncoder();
    else {
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined;
        this.restartEncoder();
      }, wait);
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.rateTimer);
    clearTimeout(this.restartTimer);
    this.decoder?.kill("SIGKILL");
    for (const encoder of this.encodersBySsrc.values()) encoder.process.kill("SIGKILL");
    this.encodersBySsrc.clear();
    this.socket?.close();
  }

  private passThrough(packet: RtpPacket): void {
    const { timestamp, marker } = packet.header;
    if (timestamp !== this.passthroughTimestamp) {
      this.passthroughTimestamp = timestamp;
      this.counters.framesIn++;
      this.passthroughForwarding = this.options.gate().process;
      if (!this.passthroughForwarding) this.counters.framesDropped++;
    }
    if (!this.passthroughForwarding) return;
    if (containsIdr(packet.payload)) this.counters.keyframesOut++;
    this.sendRestamped(packet.payload, timestamp, marker, packet.header.payloadType);
  }

  private sendRestamped(payload: Buffer, inputTimestamp: number, marker: boolean, payloadType: number): void {
    const header = new RtpHeader({
      payloadType,
      marker,
      sequenceNumber: this.outputSequence,
      timestamp: (inputTimestamp + this.timestampOffset) >>> 0,
      ssrc: 0,
    });
    this.outputSequence = (this.outputSequence + 1) & 0xffff;
    if (marker) this.counters.framesOut++;
    this.options.send(new RtpPacket(header, payload));
  }

  private assemble(packet: RtpPacket): void {
    const { sequenceNumber, timestamp, marker } = packet.header;
    const lost =
      this.lastInputSequence !== undefined && sequenceNumber !== ((this.lastInputSequence + 1) & 0xffff);
    this.lastInputSequence = sequenceNumber;
    if (this.assembling && (this.assembling.timestamp !== timestamp || lost)) {
      this.assembling.damaged ||= lost;
      this.finishAccessUnit();
    }
    this.assembling ??= { timestamp, packets: [], damaged: lost };
    this.assembling.packets.push(packet);
    if (marker) this.finishAccessUnit();
  }

  private finishAccessUnit(): void {
    const unit = this.assembling;
    this.assembling = undefined;
    if (!unit) return;
    this.counters.framesIn++;
    if (unit.damaged) {
      this.counters.framesDropped++;
      this.waitingForKeyframe = true;
      return;
    }
    let frame: { data: Buffer; isKeyframe: boolean };
    try {
      frame = dePacketizeRtpPackets("MPEG4/ISO/AVC", unit.packets);
    } catch (error) {
      this.options.logger.warn({ err: error }, "undecodable access unit");
      this.counters.framesDropped++;
      this.waitingForKeyframe = true;
      return;
    }
    if (this.waitingForKeyframe && !frame.isKeyframe) {
      this.counters.framesDropped++;
      return;
    }
    this.waitingForKeyframe = false;
    const decoder = this.decoder ?? this.startDecoder();
    this.decodeTimestamps.push(unit.timestamp);
    // The trailing access unit delimiter lets ffmpeg's parser close this frame now instead of
    // waiting for the next one (a frame of latency).
    decoder.stdin.write(Buffer.concat([frame.data, AUD_NAL]));
  }

  private startDecoder(): ChildProcessWithoutNullStreams {
    const decoder = spawn(this.options.ffmpegPath, [
      ...["-hide_banner", "-loglevel", "error"],
      // analyzeduration 0 means "default" (5 s) to ffmpeg, and -fflags nobuffer oddly keeps a
      // second of frames in flight here; both measured.
      ...["-probesize", "32", "-analyzeduration", "1", "-flags", "low_delay"],
      ...["-threads", "1", "-f", "h264", "-i", "pipe:0"],
      ...["-an", "-vsync", "0", "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", "pipe:1"],
    ]);
    const reader = new Y4mReader((frame) => this.onDecodedFrame(frame));
    this.decoder = decoder;
    this.decoderReader = reader;
    this.decodeTimestamps = [];
    decoder.stdout.on("data", (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (error) {
        this.options.logger.error({ err: error }, "decoder output unreadable");
        decoder.kill("SIGKILL");
      }
    });
    decoder.stdin.on("error", () => undefined); // reported through "exit"
    this.logStderr(decoder, "decoder");
    decoder.on("exit", (code, signal) => {
      if (this.decoder !== decoder) return;
      this.decoder = undefined;
      this.decoderReader = undefined;
      if (!this.stopped) {
        this.options.logger.warn({ code, signal }, "decoder exited; restarting at the next keyframe");
        this.waitingForKeyframe = true;
      }
    });
    return decoder;
  }

  decodedFrames = 0;
  private onDecodedFrame(frame: Buffer): void {
    this.decodedFrames++;
    const timestamp = this.decodeTimestamps.shift();
    if (timestamp === undefined) return; // more output than input: cannot be matched, drop
    if (!this.options.gate().process) {
      this.counters.framesDropped++;
      return;
    }
    if (this.options.maxFps > 0 && this.options.processingQueue === "comfystream") {
      if (this.incomingTimestamps.length >= INCOMING_QUEUE_LIMIT) this.incomingTimestamps.shift();
      this.incomingTimestamps.push(timestamp);
      this.latestFrame = { timestamp, frame }; // the one-slot input: an unprocessed frame is evicted
      return;
    }
    if (this.options.maxFps > 0) {
      if (this.latestFrame) this.counters.framesDropped++; // evicted by a newer frame
      this.latestFrame = { timestamp, frame };
      return;
    }
    this.encode(timestamp, frame);
  }

  private processLatestFrame(): void {
    const latest = this.latestFrame;
    this.latestFrame = undefined;
    if (!latest) return;
    // "comfystream": the output goes back as the oldest frame still waiting for one.
    const timestamp = this.incomingTimestamps.shift() ?? latest.timestamp;
    this.encode(timestamp, latest.frame);
  }

  private encode(timestamp: number, frame: Buffer): void {
    const header = this.decoderReader?.header;
    if (!header || this.stopped) return;
    const applyFilter = this.options.gate().applyFilter;
    if (this.encoder && this.encoder.filtered !== applyFilter) this.restartEncoder();
    const encoder = this.encoder ?? this.startEncoder(header, applyFilter);
    encoder.pendingTimestamps.push(timestamp);
    encoder.process.stdin.write(Buffer.concat([Y4M_FRAME_MARKER, frame]));
  }

  private startEncoder(y4mHeader: Buffer, applyFilter: boolean): Encoder {
    let ssrc = randomInt(1, 2 ** 31); // ffmpeg -ssrc is a signed int
    while (this.encodersBySsrc.has(ssrc)) ssrc = randomInt(1, 2 ** 31);
    const args = [
      ...["-hide_banner", "-loglevel", "error"],
      ...["-probesize", "32", "-analyzeduration", "1", "-f", "yuv4mpegpipe", "-i", "pipe:0"],
      ...(applyFilter && this.options.filter ? ["-vf", this.options.filter] : []),
      // aiortc's encoder settings (baseline, zerolatency, 2 Mbit/s); no GOP of our own, so IDRs come from PLIs.
      ...["-an", "-vsync", "0", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"],
      ...["-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "250", "-b:v", "2M", "-threads", "1"],
      ...["-f", "rtp", "-payload_type", "96", "-ssrc", String(ssrc)],
      `udp://127.0.0.1:${this.socketPort}?pkt_size=1200`,
    ];
    const process = spawn(this.options.ffmpegPath, args);
    const encoder: Encoder = {
      process,
      ssrc,
      filtered: applyFilter,
      pendingTimestamps: [],
      ffmpegTimestamp: undefined,
      inputTimestamp: 0,
      currentIsKeyframe: false,
      startedAt: Date.now(),
    };
    this.encoder = encoder;
    this.encodersBySsrc.set(ssrc, encoder);
    process.stdin.on("error", () => undefined); // reported through "exit"
    this.logStderr(process, "encoder");
    process.on("exit", (code, signal) => {
      if (this.encoder === encoder) {
        this.encoder = undefined;
        if (!this.stopped) this.options.logger.warn({ code, signal }, "encoder exited unexpectedly");
      }
      // Late UDP datagrams from it may still be queued; forget it a little later.
      setTimeout(() => this.encodersBySsrc.delete(ssrc), 500).unref();
    });
    process.stdin.write(y4mHeader);
    return encoder;
  }

  private restartEncoder(): void {
    const previous = this.encoder;
    if (!previous) return;
    this.encoder = undefined; // the next frame starts a fresh encoder, whose first frame is an IDR
    this.counters.encoderRestarts++;
    previous.process.stdin.end(); // flushes what it still holds, then exits
    setTimeout(() => previous.process.kill("SIGKILL"), 3000).unref();
  }

  private onEncodedPacket(message: Buffer): void {
    if (this.stopped || message.length < 12) return;
    const packetType = message[1]!;
    if (packetType >= 200 && packetType <= 204) return; // RTCP sender report from ffmpeg
    let packet: RtpPacket;
    try {
      packet = RtpPacket.deSerialize(message);
    } catch {
      return;
    }
    const encoder = this.encodersBySsrc.get(packet.header.ssrc);
    if (!encoder) return;
    if (packet.header.timestamp !== encoder.ffmpegTimestamp) {
      encoder.ffmpegTimestamp = packet.header.timestamp;
      encoder.inputTimestamp = encoder.pendingTimestamps.shift() ?? encoder.inputTimestamp;
      encoder.currentIsKeyframe = false;
    }
    if (!encoder.currentIsKeyframe && containsIdr(packet.payload)) {
      encoder.currentIsKeyframe = true;
      this.counters.keyframesOut++;
    }
    this.sendRestamped(
      packet.payload,
      encoder.inputTimestamp,
      packet.header.marker,
      packet.header.payloadType,
    );
  }

  private logStderr(child: ChildProcessWithoutNullStreams, role: string): void {
    let pending = "";
    child.stderr.on("data", (chunk: Buffer) => {
      pending += chunk.toString("utf8");
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) if (line.trim()) this.options.logger.debug({ role }, line.trim());
    });
  }
}

/** True if this RTP payload carries (the start of) an IDR slice. */
function containsIdr(payload: Buffer): boolean {
  if (payload.length < 2) return false;
  const type = payload[0]! & 0x1f;
  if (type === NAL_IDR) return true;
  if (type === 28) return (payload[1]! & 0x80) !== 0 && (payload[1]! & 0x1f) === NAL_IDR;
  if (type === 24) {
    for (let offset = 1; offset + 2 < payload.length;) {
      const size = payload.readUInt16BE(offset);
      if ((payload[offset + 2]! & 0x1f) === NAL_IDR) return true;
      offset += 2 + size;
    }
  }
  return false;
}
