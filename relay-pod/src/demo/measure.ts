/**
 * What the demo measures from outside the relay: when each input frame was handed to the input
 * channel and when the same frame (same PTS: the relay keeps input timestamps) came out of the output
 * channel, and how the output was cut into segments. The summary explains its numbers with these.
 */
import {
  PTS_CLOCK_HZ,
  TS_PACKET_SIZE,
  TS_SYNC_BYTE,
  packetHasPusi,
  packetHasRandomAccess,
  packetPayloadOffset,
  parsePesHeader,
} from "../media/ts-packet.js";

export interface FrameStart {
  pts: number;
  /** random_access_indicator on the frame's first packet (the relay's muxer and ffmpeg's set it on IDRs). */
  keyframe: boolean;
}

/**
 * Reports each video frame of an MPEG-TS byte stream as soon as its first packet arrives. A muxer
 * writes a frame's packets together, so that is when the frame reached the reader (a demuxer would
 * report a frame only when the next one starts).
 */
export class FrameStartScanner {
  private carry = Buffer.alloc(0);

  constructor(private readonly onFrame: (frame: FrameStart) => void) {}

  push(chunk: Buffer): void {
    const data = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    let offset = 0;
    while (offset + TS_PACKET_SIZE <= data.length) {
      if (data[offset] !== TS_SYNC_BYTE) {
        offset++; // out of step: look for the next sync byte
        continue;
      }
      this.visitPacket(data, offset);
      offset += TS_PACKET_SIZE;
    }
    this.carry = Buffer.from(data.subarray(offset));
  }

  private visitPacket(data: Buffer, offset: number): void {
    if (!packetHasPusi(data, offset)) return;
    const payload = packetPayloadOffset(data, offset);
    if (payload < 0) return;
    const pes = parsePesHeader(data, payload, offset + TS_PACKET_SIZE);
    // Video PES only (stream ids 0xE0-0xEF); PAT and PMT also start units but are not PES.
    if (pes === undefined || pes.pts === undefined || (pes.streamId & 0xf0) !== 0xe0) return;
    this.onFrame({ pts: pes.pts, keyframe: packetHasRandomAccess(data, offset) });
  }
}

export interface LatencyFigures {
  p50: number;
  p95: number;
  max: number;
  frames: number;
}

export interface SegmentFigures {
  count: number;
  /**
   * Seconds of video per output segment (PTS of its first frame to the next segment's first), over
   * every segment but the last, which the end of the input cuts short.
   */
  shortestSec?: number;
  longestSec?: number;
  lastSec?: number;
  /** Mean spacing of the IDRs in the output, seconds. */
  idrIntervalSec?: number;
}

export interface DemoMeasurements {
  inputFrames: number;
  outputFrames: number;
  /** Output frames whose input time is known. */
  matchedFrames: number;
  /** From the first input frame handed to the input channel to the first output frame read back. */
  firstOutputAfterMs?: number;
  segments: SegmentFigures;
  latency?: {
    all: LatencyFigures;
    startUp?: LatencyFigures;
    afterStartUp?: LatencyFigures;
    /** Where the slowest 5 % of frames were; `fromMs` is the lowest latency among them. */
    slowest: { frames: number; fromMs: number; inStartUp: number; afterIdr: number; elsewhere: number };
  };
}

/** The first seconds of output (by PTS) count as start-up: connections, decoders and encoders starting. */
export const START_UP_SECONDS = 2;
/** A frame this soon after a returned IDR (by PTS) counts as "after an IDR". */
export const AFTER_IDR_SECONDS = 0.2;

interface OutputFrame extends FrameStart {
  segment: number;
  latencyMs?: number;
  /** The latest IDR at or before this frame (the return path has no B-frames: PTS only grows). */
  lastKeyframePts?: number;
}

/** Input and output frame times of one demo run. Times are milliseconds on one monotonic clock. */
export class DemoTimeline {
  private readonly inputTimes = new Map<number, number>();
  private firstInputAt: number | undefined;
  private inputFrames = 0;
  private readonly output: OutputFrame[] = [];
  private firstOutputAt: number | undefined;
  private segments = 0;

  /** A frame of the input reached the input channel at `atMs`. */
  inputFrame(pts: number, atMs: number): void {
    this.inputFrames++;
    this.firstInputAt ??= atMs;
    this.inputTimes.set(pts, atMs);
  }

  /** An output segment begins; the frames reported next belong to it. */
  outputSegment(): void {
    this.segments++;
  }

  /** A frame was read from the output channel at `atMs`. */
  outputFrame(frame: FrameStart, atMs: number): void {
    this.firstOutputAt ??= atMs;
    const sentAt = this.inputTimes.get(frame.pts);
    this.inputTimes.delete(frame.pts);
    const previous = this.output.at(-1);
    const lastKeyframePts = frame.keyframe ? frame.pts : previous?.lastKeyframePts;
    const latencyMs = sentAt === undefined ? undefined : atMs - sentAt;
    this.output.push({ ...frame, segment: this.segments - 1, latencyMs, lastKeyframePts });
  }

  measurements(): DemoMeasurements {
    const result: DemoMeasurements = {
      inputFrames: this.inputFrames,
      outputFrames: this.output.length,
      matchedFrames: this.output.filter((f) => f.latencyMs !== undefined).length,
      segments: { count: this.segments, ...this.segmentDurations() },
    };
    if (this.firstInputAt !== undefined && this.firstOutputAt !== undefined)
      result.firstOutputAfterMs = this.firstOutputAt - this.firstInputAt;
    const latency = this.latency();
    if (latency) result.latency = latency;
    return result;
  }

  private segmentDurations(): Omit<SegmentFigures, "count"> {
    const firstPts: number[] = [];
    for (const frame of this.output) firstPts[frame.segment] ??= frame.pts;
    const starts = firstPts.filter((pts) => pts !== undefined);
    const durations = starts.slice(1).map((pts, i) => (pts - starts[i]!) / PTS_CLOCK_HZ);
    // The last segment ends with its last frame plus one frame interval.
    const last = this.output.at(-1);
    const frameInterval = medianFrameInterval(this.output.map((f) => f.pts));
    if (last && starts.length > 0 && frameInterval !== undefined)
      durations.push((last.pts - starts.at(-1)! + frameInterval) / PTS_CLOCK_HZ);
    const keyframes = this.output.filter((f) => f.keyframe).map((f) => f.pts);
    const figures: Omit<SegmentFigures, "count"> = {};
    const complete = durations.slice(0, -1);
    if (complete.length > 0) {
      figures.shortestSec = Math.min(...complete);
      figures.longestSec = Math.max(...complete);
    }
    if (durations.length > 0) figures.lastSec = durations.at(-1)!;
    if (keyframes.length >= 2)
      figures.idrIntervalSec = (keyframes.at(-1)! - keyframes[0]!) / (keyframes.length - 1) / PTS_CLOCK_HZ;
    return figures;
  }

  private latency(): DemoMeasurements["latency"] {
    const timed = this.output.filter(
      (f): f is OutputFrame & { latencyMs: number } => f.latencyMs !== undefined,
    );
    if (timed.length === 0) return undefined;
    const firstPts = this.output[0]!.pts;
    const inStartUp = (f: OutputFrame) => f.pts - firstPts < START_UP_SECONDS * PTS_CLOCK_HZ;
    const afterIdr = (f: OutputFrame) =>
      f.lastKeyframePts !== undefined && f.pts - f.lastKeyframePts < AFTER_IDR_SECONDS * PTS_CLOCK_HZ;
    const all = figures(timed.map((f) => f.latencyMs))!;
    const slowestFrames = [...timed]
      .sort((a, b) => b.latencyMs - a.latencyMs)
      .slice(0, Math.ceil(timed.length * 0.05));
    const slowest = {
      frames: slowestFrames.length,
      fromMs: slowestFrames.at(-1)!.latencyMs,
      inStartUp: 0,
      afterIdr: 0,
      elsewhere: 0,
    };
    for (const frame of slowestFrames) {
      if (inStartUp(frame)) slowest.inStartUp++;
      else if (afterIdr(frame)) slowest.afterIdr++;
      else slowest.elsewhere++;
    }
    const result: NonNullable<DemoMeasurements["latency"]> = { all, slowest };
    const startUp = figures(timed.filter(inStartUp).map((f) => f.latencyMs));
    if (startUp) result.startUp = startUp;
    const afterStartUp = figures(timed.filter((f) => !inStartUp(f)).map((f) => f.latencyMs));
    if (afterStartUp) result.afterStartUp = afterStartUp;
    return result;
  }
}

function figures(values: number[]): LatencyFigures | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number) =>
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
  return { p50: rank(50), p95: rank(95), max: sorted.at(-1)!, frames: sorted.length };
}

function medianFrameInterval(pts: number[]): number | undefined {
  const sorted = [...pts].sort((a, b) => a - b);
  const gaps = sorted
    .slice(1)
    .map((value, i) => value - sorted[i]!)
    .filter((gap) => gap > 0);
  if (gaps.length === 0) return undefined;
  gaps.sort((a, b) => a - b);
  return gaps[Math.floor(gaps.length / 2)];
}
