/**
 * The session's counters and rate/latency windows, and the status snapshot assembled from them and
 * from each stage's queues. Separate from the stages so that they only count, and the shape of
 * SessionStatus (which the API, the operator's CR status and the events channel all show) is
 * built in one place. stats.ts holds the generic meters this uses.
 */
import { LatestKeyframes } from "./latest-keyframes.js";
import type { InputStallStatus } from "./input-stall.js";
import { OutageMeter } from "./outages.js";
import { PercentileWindow, RateMeter } from "./stats.js";
import type { RelaySessionConfig, SessionState, SessionStatus, WebRtcConnectionState } from "./types.js";

export class SessionStats {
  readonly counters = {
    framesIn: 0,
    framesSent: 0,
    framesReturned: 0,
    framesOut: 0,
    inputFramesDropped: 0,
    segmentsIn: 0,
    segmentsOut: 0,
    segmentsDropped: 0,
    segmentsCorrupt: 0,
    inputClockJumps: 0,
    reconnects: 0,
    ffmpegRestarts: 0,
  };
  readonly inputRate = new RateMeter();
  readonly outputRate = new RateMeter();
  readonly latency = new PercentileWindow();
  readonly forwardHop = new PercentileWindow();
  readonly returnHop = new PercentileWindow();
  /** The newest input and output keyframes, for thumbnails. */
  readonly keyframes = new LatestKeyframes();
  /** Gaps in the returned stream (performance.now() clock). */
  readonly outages = new OutageMeter();
  /** When each input frame (by PTS) was complete in the input, for the forward-hop latency. */
  private readonly inputFrameArrival = new Map<number, number>();
  /**
   * The latest input arrival among the frames sent so far. Frames go out in display order; with
   * B-frames the input arrives in decode order, so a P-frame arrives before the B-frames shown
   * ahead of it and cannot be shown (by anyone) until they are in. The forward hop counts from that
   * moment, so it measures the relay rather than the input's reordering.
   */
  private displayableAt = 0;

  /** An input access unit is complete (pts undefined: counted, but no forward-hop sample). */
  noteInputFrame(pts: number | undefined, now = performance.now()): void {
    if (pts !== undefined) {
      this.inputFrameArrival.set(pts, now);
      if (this.inputFrameArrival.size > 1000) {
        this.inputFrameArrival.delete(this.inputFrameArrival.keys().next().value!);
      }
    }
    this.counters.framesIn++;
    this.inputRate.mark();
  }

  /** A frame went to ComfyStream at `now`: its forward hop, if its input arrival is known. */
  noteFrameSent(pts: number, now: number): void {
    this.counters.framesSent++;
    const arrived = this.inputFrameArrival.get(pts);
    if (arrived !== undefined) {
      this.displayableAt = Math.max(this.displayableAt, arrived);
      this.forwardHop.add(now - this.displayableAt);
      this.inputFrameArrival.delete(pts);
    }
  }
}

/** What the snapshot needs beyond SessionStats: the session's own fields and each stage's view. */
export interface StatusParts {
  id: string;
  config: RelaySessionConfig;
  state: SessionState;
  webrtcState: WebRtcConnectionState;
  createdAt: Date;
  startedAt: Date | undefined;
  endedAt: Date | undefined;
  lastError: SessionStatus["lastError"];
  lastPromptUpdate: SessionStatus["lastPromptUpdate"];
  promptsGeneration: number;
  queues: SessionStatus["queues"];
  /** Frames lost by the stages themselves (not counted in SessionStats): see frames.dropped. */
  stageDroppedFrames: number;
  peerLimited: number;
  peerWindow: SessionStatus["peerWindow"];
  outputKeyframes: SessionStatus["outputKeyframes"];
  codecs: Pick<SessionStatus, "encoder" | "decoder" | "codecReason">;
  audio: SessionStatus["audio"];
  input?: InputStallStatus;
}

/** The status snapshot; `now` is the same instant for the rates and the peer window's in-flight count. */
export function buildSessionStatus(stats: SessionStats, parts: StatusParts, now: number): SessionStatus {
  const { counters, latency, forwardHop, returnHop } = stats;
  const { config } = parts;
  const status: SessionStatus = {
    id: parts.id,
    state: parts.state,
    webrtcState: parts.webrtcState,
    createdAt: parts.createdAt.toISOString(),
    inputUrl: config.inputUrl,
    outputUrl: config.outputUrl,
    comfystreamUrl: config.comfystreamUrl,
    width: config.width,
    height: config.height,
    frameRate: config.frameRate,
    mode: config.mode,
    encoder: parts.codecs.encoder,
    decoder: parts.codecs.decoder,
    codecReason: parts.codecs.codecReason,
    queues: parts.queues,
    fps: { input: stats.inputRate.rate(now), output: stats.outputRate.rate(now) },
    frames: {
      in: counters.framesIn,
      sent: counters.framesSent,
      returned: counters.framesReturned,
      out: counters.framesOut,
      dropped: counters.inputFramesDropped + parts.stageDroppedFrames,
      peerLimited: parts.peerLimited,
    },
    peerWindow: parts.peerWindow,
    segments: {
      in: counters.segmentsIn,
      out: counters.segmentsOut,
      dropped: counters.segmentsDropped,
      corrupt: counters.segmentsCorrupt,
    },
    inputClockJumps: counters.inputClockJumps,
    audio: parts.audio,
    outputKeyframes: parts.outputKeyframes,
    latencyMs: {
      p50: latency.percentile(50),
      p95: latency.percentile(95),
      samples: latency.size,
    },
    hopLatencyMs: {
      forward: { p50: forwardHop.percentile(50), p95: forwardHop.percentile(95) },
      return: { p50: returnHop.percentile(50), p95: returnHop.percentile(95) },
    },
    reconnects: counters.reconnects,
    peerOutages: stats.outages.snapshot(now),
    ffmpegRestarts: counters.ffmpegRestarts,
    promptsGeneration: parts.promptsGeneration,
  };
  if (config.controlUrl) status.controlUrl = config.controlUrl;
  if (config.eventsUrl) status.eventsUrl = config.eventsUrl;
  if (parts.startedAt) status.startedAt = parts.startedAt.toISOString();
  if (parts.endedAt) status.endedAt = parts.endedAt.toISOString();
  if (parts.lastPromptUpdate) status.lastPromptUpdate = parts.lastPromptUpdate;
  if (parts.lastError) status.lastError = parts.lastError;
  if (parts.input) status.input = parts.input;
  return status;
}
