/**
 * The return path: RTP back from ComfyStream → access units → matched to the frames sent (PTS and
 * latency, FrameMatcher) → keyframe repair → MPEG-TS mux → segments cut on IDRs → the trickle
 * output channel. Separate from the forward path because the two share only the matcher: this side
 * has its own queue, its own drop policy (up to the next IDR when the output stalls) and the output
 * segments' lifecycle.
 */
import { TricklePublisher, type SegmentWriter } from "../trickle/publisher.js";
import { TricklePostStalledError } from "../trickle/errors.js";
import type { resolveFfmpeg } from "../media/ffmpeg.js";
import { KeyframeRepair, type ReturnedFrame } from "../media/keyframe-repair.js";
import { IdrSegmenter } from "../media/segmenter.js";
import { TsMuxer } from "../media/ts-mux.js";
import { ptsForwardDistance, PTS_CLOCK_HZ } from "../media/ts-packet.js";
import { H264Depacketizer } from "../webrtc/h264-depacketizer.js";
import type { AudioPes, AudioStreamInfo } from "../media/ts-audio.js";
import type { AudioPath } from "./audio-path.js";
import type { FrameMatcher } from "./frame-matcher.js";
import type { SessionHost } from "./session-host.js";
import type { SessionStatus } from "./types.js";

/** Output segments that may fail in a row (each retried as a new POST) before the session fails. */
const MAX_CONSECUTIVE_SEGMENT_FAILURES = 5;

/** What the forward path remembers of a sent frame, to hand back with the returned one. */
export type SentFrame = { annexB: Buffer; keyframe: boolean };

/** An RTP packet from ComfyStream, as ComfyStreamPeer emits it. */
export interface ReturnedRtp {
  header: { timestamp: number; marker: boolean; sequenceNumber: number };
  payload: Buffer;
}

interface ProcessedFrame {
  annexB: Buffer;
  pts: number;
  keyframe: boolean;
  returnedAt: number;
}

interface OpenSegment {
  writer: SegmentWriter;
  startedAt: number;
}

export class ReturnPath {
  private depacketizer = new H264Depacketizer();
  /** Set once start() found ffmpeg; without it the peer's own IDRs are all the output gets. */
  private keyframeRepair: KeyframeRepair | undefined;
  /** When each returned frame (by PTS) came back, for the return-hop latency across the repair stage. */
  private readonly returnedAtByPts = new Map<number, number>();
  private lastOutputIdrPts: number | undefined;
  private readonly outputIdrIntervalSec = { last: null as number | null, max: null as number | null };
  private readonly segmenter: IdrSegmenter;
  private readonly muxer = new TsMuxer();
  private publisher: TricklePublisher | undefined;
  /** Output segments failed in a row (reset by one acknowledged); past the limit the session fails. */
  private consecutiveSegmentFailures = 0;

  private readonly processedQueue: Array<ProcessedFrame> = [];
  private processedDropped = 0;
  private droppingOutputUntilIdr = false;
  private outputLoopRunning = false;
  private openSegment: OpenSegment | undefined;
  private pendingSegmentEnds = 0;
  private outputSegmentsDropped = 0;

  constructor(
    private readonly host: SessionHost,
    private readonly matcher: FrameMatcher<SentFrame>,
    private readonly audio: AudioPath,
  ) {
    this.segmenter = new IdrSegmenter({ minSegmentDurationSec: host.config.segmentDurationSec });
  }

  /** Sets up keyframe repair (when ffmpeg is there) and opens the output channel; throws if it cannot. */
  async start(ffmpeg: () => ReturnType<typeof resolveFfmpeg>): Promise<void> {
    await this.startKeyframeRepair(ffmpeg);
    const { config, log } = this.host;
    this.publisher = new TricklePublisher(config.outputUrl, {
      contentType: "video/MP2T",
      start: "next",
      insecureTls: config.insecureTls,
      logger: log,
    });
    await this.publisher.start();
  }

  /** The input's audio stream to carry (undefined: video only); listed in the output's PMT from now on. */
  setAudioStream(stream: AudioStreamInfo | undefined): void {
    this.muxer.setAudio(stream && { streamType: stream.streamType, descriptors: stream.descriptors });
  }

  /** A new peer connection: its RTP stream starts afresh. */
  resetStream(): void {
    this.depacketizer = new H264Depacketizer();
    this.keyframeRepair?.resetStream();
  }

  onReturnedRtp(packet: ReturnedRtp): void {
    const { stats } = this.host;
    for (const au of this.depacketizer.push(packet)) {
      stats.counters.framesReturned++;
      for (const matched of this.matcher.accept(au.rtpTimestamp, au)) {
        if (matched.latencyMs !== undefined) stats.latency.add(matched.latencyMs);
        const frame = { annexB: matched.item.annexB, pts: matched.pts, keyframe: matched.item.keyframe };
        if (!this.keyframeRepair) {
          this.enqueueProcessed({ ...frame, returnedAt: performance.now() });
          continue;
        }
        this.returnedAtByPts.set(frame.pts, performance.now());
        if (this.returnedAtByPts.size > 600) {
          this.returnedAtByPts.delete(this.returnedAtByPts.keys().next().value!);
        }
        this.keyframeRepair.push(frame);
      }
    }
  }

  /** Frames waiting for the output loop (the session's drain waits for none). */
  get queued(): number {
    return this.processedQueue.length;
  }

  /** Frames lost on this side: dropped from the queue, or lost in the repair stage. */
  get droppedFrames(): number {
    return this.processedDropped + (this.keyframeRepair?.framesLost ?? 0);
  }

  queues(): Pick<SessionStatus["queues"], "processedFrames" | "outputSegments"> {
    const caps = this.host.config.queueCapacities;
    return {
      processedFrames: {
        size: this.processedQueue.length,
        capacity: caps.processedFrames,
        dropped: this.processedDropped,
      },
      outputSegments: {
        size: this.pendingSegmentEnds,
        capacity: caps.outputSegments,
        dropped: this.outputSegmentsDropped,
      },
    };
  }

  outputKeyframesStatus(): SessionStatus["outputKeyframes"] {
    const repair = this.keyframeRepair?.status();
    return {
      source: repair?.source ?? "peer",
      ...(repair?.reason ? { reason: repair.reason } : {}),
      reEncodedFrames: repair?.reEncodedFrames ?? 0,
      idrIntervalSec: { ...this.outputIdrIntervalSec },
    };
  }

  /** The re-encoder (if it runs) still holds the last frames: `graceMs` to hand them over. */
  async closeRepair(graceMs: number): Promise<void> {
    await this.keyframeRepair?.close(graceMs);
  }

  /**
   * Writes out what is queued, ends the last segment, then the output channel — unless `endOutput`
   * is false (the relay is being replaced: the next one publishes on, the stream goes on).
   */
  async close(endOutput = true): Promise<void> {
    while (this.outputLoopRunning) await new Promise((r) => setTimeout(r, 10));
    // The input's audio after the last video frame: the end of the stream's sound, not to be lost.
    if (this.openSegment && this.muxer.hasAudio) {
      await this.writeAudio(this.audio.takeAll()).catch(() => undefined);
    }
    this.closeOpenSegment();
    const deadline = Date.now() + 5000;
    while (this.pendingSegmentEnds > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    // Ending the output channel tells downstream the stream is over (trickle-protocol.md §5.3).
    await (endOutput ? this.publisher?.close() : this.publisher?.leave())?.catch((err: unknown) => {
      this.host.log.warn({ err: (err as Error).message }, "closing the output channel failed");
    });
  }

  /** Frames out of the keyframe repair stage (the peer's own, or re-encoded ones) go to the muxer. */
  private onRepairedFrame(frame: ReturnedFrame): void {
    const returnedAt = this.returnedAtByPts.get(frame.pts) ?? performance.now();
    this.returnedAtByPts.delete(frame.pts);
    this.enqueueProcessed({ ...frame, returnedAt });
  }

  private async startKeyframeRepair(ffmpeg: () => ReturnType<typeof resolveFfmpeg>): Promise<void> {
    const { config, log } = this.host;
    let ffmpegPath: string;
    try {
      ffmpegPath = (await ffmpeg()).path;
    } catch (err) {
      log.warn(
        { err: (err as Error).message },
        "no ffmpeg: output IDRs come only from ComfyStream (segments cannot be cut if it sends none)",
      );
      return;
    }
    this.keyframeRepair = new KeyframeRepair({
      segmentDurationSec: config.segmentDurationSec,
      bitrateKbps: config.bitrateKbps,
      ffmpegPath,
      logger: log,
      emit: (frame) => this.onRepairedFrame(frame),
      onSourceChange: () => this.host.emitStatus(),
    });
  }

  private noteOutputIdr(pts: number): void {
    const previous = this.lastOutputIdrPts;
    this.lastOutputIdrPts = pts;
    if (previous === undefined) return;
    const gap = ptsForwardDistance(previous, pts) / PTS_CLOCK_HZ;
    if (gap > 3600) return; // a timestamp jump, not an interval
    this.outputIdrIntervalSec.last = Math.round(gap * 1000) / 1000;
    this.outputIdrIntervalSec.max = Math.max(
      this.outputIdrIntervalSec.max ?? 0,
      this.outputIdrIntervalSec.last,
    );
  }

  private enqueueProcessed(frame: ProcessedFrame): void {
    if (this.droppingOutputUntilIdr && !frame.keyframe) {
      this.processedDropped++;
      return;
    }
    this.droppingOutputUntilIdr = false;
    const caps = this.host.config.queueCapacities;
    if (
      this.processedQueue.length >= caps.processedFrames ||
      this.pendingSegmentEnds >= caps.outputSegments
    ) {
      // The output POST is stalled: drop up to the next IDR and start a fresh segment there.
      this.processedDropped += this.processedQueue.length + 1;
      this.processedQueue.length = 0;
      this.droppingOutputUntilIdr = true;
      this.closeOpenSegment();
      return;
    }
    this.processedQueue.push(frame);
    if (!this.outputLoopRunning) void this.runOutputLoop();
  }

  private async runOutputLoop(): Promise<void> {
    this.outputLoopRunning = true;
    try {
      while (this.processedQueue.length > 0) {
        const frame = this.processedQueue.shift()!;
        try {
          await this.writeOutputFrame(frame);
        } catch (err) {
          // End of stream (the server closed the channel) or a publisher that keeps failing is fatal;
          // one failed segment (a stuck POST cut, a connection lost to a restarting server) is not:
          // the output goes on in a new segment, on a new POST, from the next IDR.
          const failures = ++this.consecutiveSegmentFailures;
          if (this.publisher?.closed || failures > MAX_CONSECUTIVE_SEGMENT_FAILURES) throw err;
          this.openSegment = undefined;
          this.outputSegmentsDropped++;
          const stalled = err instanceof TricklePostStalledError;
          this.host.setError(stalled ? "OutputStalled" : "OutputSegmentFailed", (err as Error).message);
        }
      }
    } catch (err) {
      if (!this.host.isEnded()) await this.host.fail("OutputFailed", err);
    } finally {
      this.outputLoopRunning = false;
    }
  }

  private async writeOutputFrame(frame: ProcessedFrame): Promise<void> {
    const publisher = this.publisher;
    if (!publisher) return;
    const cut = this.segmenter.shouldCut(frame.pts, frame.keyframe);
    if (!this.openSegment && !cut) {
      this.processedDropped++; // before the first IDR there is nothing a segment could start with
      this.audio.dropDue(frame.pts);
      return;
    }
    if (cut) {
      this.closeOpenSegment();
      this.openSegment = { writer: await publisher.nextSegment(), startedAt: Date.now() };
    }
    const bytes = this.muxer.muxAccessUnit(
      { annexB: frame.annexB, pts: frame.pts, keyframe: frame.keyframe },
      cut,
    );
    await this.openSegment!.writer.write(bytes);
    // The input's audio up to this frame's PTS, right after it: interleaved by PTS, in sync.
    if (this.muxer.hasAudio) await this.writeAudio(this.audio.takeDue(frame.pts));
    if (frame.keyframe) {
      this.noteOutputIdr(frame.pts);
      this.host.stats.keyframes.note("output", frame.annexB, "h264");
    }
    const { stats } = this.host;
    stats.counters.framesOut++;
    stats.returnHop.add(performance.now() - frame.returnedAt);
    stats.outputRate.mark();
  }

  private async writeAudio(due: AudioPes[]): Promise<void> {
    for (const pes of due) {
      await this.openSegment!.writer.write(
        this.muxer.muxAudioPes({ payload: pes.payload, pts: pes.pts!, streamId: pes.streamId }),
      );
      this.audio.noteWritten(pes);
    }
  }

  private closeOpenSegment(): void {
    const segment = this.openSegment;
    if (!segment) return;
    this.openSegment = undefined;
    this.pendingSegmentEnds++;
    segment.writer
      .end()
      .then(() => {
        this.host.stats.counters.segmentsOut++;
        this.consecutiveSegmentFailures = 0;
      })
      .catch((err: unknown) => {
        this.outputSegmentsDropped++;
        this.host.log.warn({ err: (err as Error).message, seq: segment.writer.seq }, "output segment failed");
      })
      .finally(() => this.pendingSegmentEnds--);
  }
}
