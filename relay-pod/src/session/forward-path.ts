/**
 * The forward path: the trickle input (subscription, demux, per-segment validation and drop
 * decisions) → the transcoder, or in passthrough the input's own access units → the pacer, gated by
 * the peer window → RTP to ComfyStream, renumbered and restamped for matching. Separate because it
 * is one direction of flow with its own backpressure (the pacer's queue, the peer window, PeerPace's
 * choice of GOP); the return path meets it only in the FrameMatcher.
 */
import { randomInt } from "node:crypto";
import { H264Packetizer } from "werift";
import type { resolveFfmpeg } from "../media/ffmpeg.js";
import { TsAudioDemuxer } from "../media/ts-audio.js";
import { TsClock } from "../media/ts-clock.js";
import { TsDemuxer, type VideoAccessUnit } from "../media/ts-demux.js";
import { STREAM_TYPE_HEVC } from "../media/ts-packet.js";
import { TrickleSubscriber, type SubscribedSegment } from "../trickle/subscriber.js";
import { timestampJitter, type FrameMatcher } from "./frame-matcher.js";
import { Transcoder } from "./forward-transcoder.js";
import { FramePacer, type PacedFrame } from "./pacer.js";
import type { AudioPath } from "./audio-path.js";
import type { PeerLink } from "./peer-link.js";
import { PeerPace } from "./peer-pace.js";
import { PeerWindow } from "./peer-window.js";
import type { SentFrame } from "./return-path.js";
import { RTP_WRAP, setRtpSequenceNumber, setRtpTimestamp } from "./rtp-header.js";
import type { KeyframeCodec } from "./latest-keyframes.js";
import type { SessionHost } from "./session-host.js";
import type { SessionStatus } from "./types.js";

const H264_STREAM_TYPE = 0x1b;
/**
 * How late a frame may get waiting for room in the peer window with a normal GOP, where a drop costs
 * the rest of the GOP: long enough to ride out a peer's hiccup (200 ms was not, for the aiortc
 * stand-in on a busy machine), short against the latency a slow peer builds up before intra-only.
 */
const DEFAULT_WINDOW_HOLD_MS = 500;
/** The same while intra-only, where a drop costs only the frame itself. */
const INTRA_WINDOW_HOLD_MS = 100;
/** Most bytes of one input segment kept while waiting for the peer (see relayInputSegment). */
const MAX_LIVE_EDGE_HOLD_BYTES = 8 * 1024 * 1024;
/** How long a session waits for an input channel that does not exist yet before it ends. */
const INPUT_CHANNEL_WAIT_MS = 30_000;

/** What the forward path needs of the link to ComfyStream. */
export type PeerSide = Pick<PeerLink, "state" | "connectedPeer">;

export class ForwardPath {
  private subscriber: TrickleSubscriber | undefined;
  /** Set in transcode mode. */
  private transcoder: Transcoder | undefined;
  /** Set in passthrough mode, where input access units go to WebRTC without ffmpeg. */
  private packetizer: H264Packetizer | undefined;
  private readonly pacer: FramePacer;
  private readonly peerWindow: PeerWindow;
  private readonly peerPace: PeerPace | undefined;
  private paceTimer: NodeJS.Timeout | undefined;
  private pendingIntraOnly: boolean | undefined;
  private forwardSequenceNumber = randomInt(0, 0x10000);
  private waitForInputKeyframe = true;
  /** Keeps the input's timestamps continuous across clock jumps (see TsClock). */
  private readonly inputClock: TsClock;

  constructor(
    private readonly host: SessionHost,
    private readonly matcher: FrameMatcher<SentFrame>,
    private readonly peer: PeerSide,
    private readonly audio: AudioPath,
  ) {
    const { config } = host;
    this.pacer = new FramePacer({
      capacity: config.queueCapacities.decodedFrames,
      send: (frame) => this.sendFrame(frame),
      admit: (frame, lateMs) => this.admitToPeer(frame, lateMs),
    });
    this.peerWindow = new PeerWindow({
      capacity: config.peerWindowFrames,
      maxHoldMs: DEFAULT_WINDOW_HOLD_MS,
    });
    // Passthrough sends the input's own GOP: it is not the relay's to change.
    if (config.mode === "transcode") this.peerPace = new PeerPace();
    this.inputClock = new TsClock({
      onJump: (jump) => {
        host.stats.counters.inputClockJumps++;
        host.log.info(
          { pid: jump.pid, expectedPts: jump.expected, receivedPts: jump.received, offset: jump.offset },
          "the input's clock jumped: its timestamps are shifted to continue the stream",
        );
      },
    });
  }

  /** The forward encoder and decoder with their reason (SessionStatus encoder, decoder, codecReason). */
  codecStatus(): Pick<SessionStatus, "encoder" | "decoder" | "codecReason"> {
    if (this.host.config.mode === "passthrough") {
      return {
        encoder: "none (passthrough)",
        decoder: "none (passthrough)",
        codecReason: "passthrough: the input's H.264 is sent as is",
      };
    }
    if (!this.transcoder) {
      return {
        encoder: null,
        decoder: null,
        codecReason: `not chosen yet (encoder ${this.host.config.encoder})`,
      };
    }
    const { encoder, decoder, reason } = this.transcoder.codecs;
    return { encoder, decoder, codecReason: reason };
  }

  /** The packetizer (passthrough) or the running transcoder; throws if ffmpeg cannot be started. */
  async prepare(ffmpeg: () => ReturnType<typeof resolveFfmpeg>): Promise<void> {
    if (this.host.config.mode === "passthrough") {
      this.packetizer = new H264Packetizer({
        payloadType: 96,
        ssrc: randomInt(1, 2 ** 31),
        inputFormat: "annexb",
      });
      return;
    }
    this.transcoder = new Transcoder(
      this.host,
      (frame) => this.pacer.push(frame),
      // Intra-only: a frame left out costs no other, so it waits only a frame or so for room.
      (intraOnly) => this.peerWindow.setMaxHoldMs(intraOnly ? INTRA_WINDOW_HOLD_MS : DEFAULT_WINDOW_HOLD_MS),
    );
    await this.transcoder.start(ffmpeg);
  }

  /** Subscribes to the input and starts relaying it; the input's end completes the session. */
  startInput(): void {
    const { config, log } = this.host;
    this.subscriber = new TrickleSubscriber(config.inputUrl, {
      startSeq: -2,
      // A session may be started a moment before its input's publisher creates the channel.
      waitForChannelMs: INPUT_CHANNEL_WAIT_MS,
      insecureTls: config.insecureTls,
      logger: log,
    });
    void this.readInput();
  }

  /** Once a second, PeerPace's look at the peer (transcode mode only). */
  startPaceSampling(): void {
    if (!this.peerPace) return;
    this.paceTimer = setInterval(() => this.samplePeerPace(), 1000);
    this.paceTimer.unref();
  }

  /** A new peer connection: start on a keyframe, with an empty window. */
  resetStream(): void {
    this.waitForInputKeyframe = true;
    this.peerWindow.reset();
  }

  /** Frames queued for a connection that is gone. */
  clearQueue(): void {
    this.pacer.clear();
  }

  /** Frames waiting in the pacer. */
  get queued(): number {
    return this.pacer.size;
  }

  /** Frames lost on this side (input drops are counted in SessionStats). */
  get droppedFrames(): number {
    return this.pacer.dropped + this.peerWindow.peerLimitedDrops;
  }

  get peerLimitedDrops(): number {
    return this.peerWindow.peerLimitedDrops;
  }

  queues(): Pick<SessionStatus["queues"], "decodedFrames"> {
    const capacity = this.host.config.queueCapacities.decodedFrames;
    return { decodedFrames: { size: this.pacer.size, capacity, dropped: this.pacer.dropped } };
  }

  peerWindowStatus(now: number): SessionStatus["peerWindow"] {
    const intraOnly = this.transcoder?.intraOnly ?? false;
    return {
      capacity: this.peerWindow.capacity,
      inFlight: this.matcher.inFlight(now),
      transcoderGop: this.host.config.mode !== "transcode" ? null : intraOnly ? "intra-only" : "normal",
      ...(intraOnly && this.peerPace?.reason ? { reason: this.peerPace.reason } : {}),
    };
  }

  /** Teardown, first step: no more input, no more GOP changes. */
  stopInput(): void {
    if (this.paceTimer) clearInterval(this.paceTimer);
    this.subscriber?.close();
  }

  /** The input has ended: lets the transcoder hand over its last frames. */
  async drainTranscoder(timeoutMs: number): Promise<void> {
    await this.transcoder?.drain(timeoutMs);
  }

  async stop(): Promise<void> {
    this.pacer.stop();
    await this.transcoder?.stop();
  }

  // ---- input: trickle → demux (count, validate, PTS) → ffmpeg ------------------------------------

  private async readInput(): Promise<void> {
    const { host } = this;
    const subscriber = this.subscriber!;
    try {
      for (;;) {
        const segment = await subscriber.next();
        if (!segment) break;
        if (host.isEnded()) {
          segment.discard();
          return;
        }
        await this.relayInputSegment(segment);
      }
      if (host.isEnded()) return;
      host.log.info("input stream ended");
      await host.complete();
    } catch (err) {
      if (host.isEnded()) return;
      await host.fail("InputFailed", err);
    }
  }

  /**
   * Streams one input segment into ffmpeg. The head is held until the demuxer has found a video PES,
   * so a corrupt or non-video segment is skipped whole instead of confusing the decoder. Segments
   * start on keyframes, so skipping whole ones (when behind, or while ComfyStream is away) keeps the
   * decoded stream clean.
   */
  private async relayInputSegment(segment: SubscribedSegment): Promise<void> {
    const { host } = this;
    const { counters } = host.stats;
    const transcoder = this.transcoder;
    counters.segmentsIn++;
    if (this.pendingIntraOnly !== undefined) {
      const intraOnly = this.pendingIntraOnly;
      this.pendingIntraOnly = undefined;
      await transcoder?.setGop(intraOnly);
    }
    let frames = 0;
    let latestPts: number | undefined;
    const demuxer = new TsDemuxer({
      // A frame is complete at its stuffed last packet, as the transcoder's input sees it (pes-length.ts).
      stuffingEndsPes: true,
      onAccessUnit: (au) => {
        frames++;
        if (au.pts !== undefined) latestPts = au.pts;
        host.stats.noteInputFrame(au.pts);
        // Passthrough sends the input as is; transcoding, the transcoder notes its own keyframes.
        if (au.keyframe && !transcoder)
          host.stats.keyframes.note("input", au.data, codecOfStreamType(au.streamType));
        if (this.packetizer && !drop && !host.isEnded()) this.forwardAccessUnit(au);
      },
    });
    // Audio is read from every segment, dropped ones too: the sound goes on where video has a gap.
    const audioDemuxer =
      this.audio.mode === "none"
        ? undefined
        : new TsAudioDemuxer((pes, stream) => this.audio.onInput(pes, stream));
    let drop = this.shouldDropInputSegment();
    // Transcoding, a segment skipped only because the peer is not connected yet is kept in memory
    // (bounded), so that a connection made during it starts at the live edge (see joinAtLiveEdge).
    let awaitingPeer = drop && transcoder !== undefined && this.peer.state !== "connected";
    let framesBeforeLiveEdge = 0;
    const held: Buffer[] = [];
    let validated = false;
    let heldBytes = 0;
    for await (const chunk of this.inputClock.mend(segment.body)) {
      demuxer.push(chunk);
      audioDemuxer?.push(chunk);
      if (host.isEnded()) continue;
      if (awaitingPeer) {
        held.push(chunk);
        heldBytes += chunk.length;
        if (heldBytes > MAX_LIVE_EDGE_HOLD_BYTES) {
          awaitingPeer = false;
          held.length = 0;
        } else if (this.peer.state === "connected" && transcoder?.ready && latestPts !== undefined) {
          awaitingPeer = false;
          drop = false;
          validated = true;
          framesBeforeLiveEdge = frames;
          await transcoder.restartAtLiveEdge(held.splice(0), latestPts);
          host.log.info(
            { seq: segment.seq, skippedFrames: frames - 1 },
            "peer connected mid-segment: joined at the live edge",
          );
        }
        continue;
      }
      if (drop) continue;
      if (!validated) {
        held.push(chunk);
        heldBytes += chunk.length;
        if (demuxer.stats.videoPid === undefined || demuxer.stats.accessUnits === 0) {
          if (heldBytes > 4 * 1024 * 1024) break; // no video within 4 MiB: not a video segment
          continue;
        }
        validated = true;
        for (const piece of held) await transcoder?.write(piece);
        held.length = 0;
        continue;
      }
      await transcoder?.write(chunk);
    }
    if (validated && !drop) await transcoder?.endOfSegment();
    demuxer.flush();
    if (audioDemuxer) {
      audioDemuxer.flush();
      this.audio.noteCorrupt(audioDemuxer.stats.corruptFrames);
    }
    if (this.packetizer) {
      this.finishPassthroughSegment(segment.seq, frames, drop, demuxer.stats);
      return;
    }
    if (framesBeforeLiveEdge > 0) {
      // Frames before the peer was there: never encoded, left out by policy.
      counters.inputFramesDropped += framesBeforeLiveEdge - 1;
      return;
    }
    if (!validated && !drop) {
      if (frames > 0 && !host.isEnded()) {
        // A segment whose only frame completed at flush: still usable.
        for (const piece of held) await transcoder?.write(piece);
        await transcoder?.endOfSegment();
        return;
      }
      counters.segmentsCorrupt++;
      host.log.warn(
        { seq: segment.seq, stats: demuxer.stats },
        "skipped an input segment with no video frames",
      );
      return;
    }
    if (drop) {
      counters.segmentsDropped++;
      counters.inputFramesDropped += frames;
      host.log.debug({ seq: segment.seq, frames }, "dropped an input segment");
    }
  }

  private shouldDropInputSegment(): boolean {
    if (this.peer.state !== "connected") return true;
    if (!this.packetizer && !(this.transcoder?.ready ?? false)) return true;
    // Behind: more frames waiting to go out than the queue holds.
    return this.pacer.size >= this.host.config.queueCapacities.decodedFrames;
  }

  /** Once a second: should the transcoder switch between its normal GOP and intra-only (PeerPace)? */
  private samplePeerPace(): void {
    const pace = this.peerPace;
    if (!pace || this.peer.state !== "connected") return;
    const advice = pace.sample({ now: performance.now(), windowPressure: this.peerWindow.peerLimitedDrops });
    if (advice === undefined) return;
    this.pendingIntraOnly = advice;
    this.host.log.info(
      { intraOnly: advice, reason: pace.reason ?? "ComfyStream keeps up again" },
      advice
        ? "ComfyStream is slower than the input: intra-only from the next segment"
        : "back to the normal GOP",
    );
  }

  // ---- passthrough mode: input H.264 access units → RTP → pacer (no transcoding) ------------------

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
    const { counters } = this.host.stats;
    if (dropped) {
      counters.segmentsDropped++;
      counters.inputFramesDropped += frames;
    } else if (frames === 0) {
      counters.segmentsCorrupt++;
      this.host.log.warn({ seq, stats }, "skipped an input segment with no video frames");
    } else if (stats.streamType !== H264_STREAM_TYPE) {
      counters.segmentsCorrupt++;
      counters.inputFramesDropped += frames;
      this.host.setError(
        "UnsupportedInput",
        `passthrough needs H.264 input; this stream's video is stream type 0x${(stats.streamType ?? 0).toString(16)} (use transcode mode)`,
      );
    }
  }

  // ---- pacer → WebRTC -----------------------------------------------------------------------------

  /** The peer window's say on a due frame (see PeerWindow); frames sendFrame would discard pass. */
  private admitToPeer(frame: PacedFrame, lateMs: number): "send" | "hold" | "drop" {
    if (!this.peer.connectedPeer || this.waitForInputKeyframe) return "send";
    // From the first frame: a burst while the peer is starting is a debt it never repays (see PeerWindow).
    return this.peerWindow.decide(frame, this.matcher.inFlight(), lateMs);
  }

  private sendFrame(frame: PacedFrame): void {
    const peer = this.peer.connectedPeer;
    if (!peer) return;
    if (this.waitForInputKeyframe) {
      if (!frame.keyframe) return;
      this.waitForInputKeyframe = false;
    }
    const { stats } = this.host;
    // PTS plus a tiny per-frame jitter, so returned frames can be told apart (see FrameMatcher).
    const rtpTs = (frame.pts + timestampJitter(stats.counters.framesSent)) % RTP_WRAP;
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
    stats.noteFrameSent(frame.pts, now);
  }
}

function codecOfStreamType(streamType: number): KeyframeCodec {
  return streamType === STREAM_TYPE_HEVC ? "hevc" : "h264";
}
