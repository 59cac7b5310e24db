// The session's status snapshot → `status.relay` of its RelaySession (the RelayReport shape in crds/).
// The report describes this pod only: fields it has no value for are sent as null, which a JSON merge
// patch deletes, so nothing a previous pod wrote lingers (latency, lastError).

import type { RelayReport } from "../../../crds/src/index.js";
import type { SessionStatus, WebRtcConnectionState } from "../session/types.js";

/** A merge patch of status.relay: every field set, null where there is no value. */
export type RelayReportPatch = {
  [K in keyof Required<RelayReport>]: NonNullable<RelayReport[K]> | null;
};

type IceConnectionState = NonNullable<NonNullable<RelayReport["webrtc"]>["iceConnectionState"]>;

export interface RelayReportContext {
  now?: Date;
  /** metadata.generation whose spec.prompts ComfyStream runs now. */
  appliedPromptsGeneration?: number | undefined;
  /** A newer error than the session's own (e.g. ComfyStream refused edited prompts). */
  lastError?: { component: string; message: string; time: string } | undefined;
}

const MAX_ERROR_MESSAGE = 4096;

export function buildRelayReport(status: SessionStatus, context: RelayReportContext = {}): RelayReportPatch {
  const now = context.now ?? new Date();
  const sessionError = status.lastError
    ? {
        component: componentOfError(status.lastError.reason),
        message: `${status.lastError.reason}: ${status.lastError.message}`.slice(0, MAX_ERROR_MESSAGE),
        time: status.lastError.at,
      }
    : undefined;
  const lastError = newest(sessionError, context.lastError);
  const { p50, p95 } = status.latencyMs;
  return {
    lastUpdateTime: now.toISOString(),
    appliedPromptsGeneration: context.appliedPromptsGeneration ?? null,
    webrtc: {
      connectionState: status.webrtcState,
      iceConnectionState: iceStateOf(status.webrtcState),
    },
    queues: {
      decodedFrames: queue(status.queues.decodedFrames),
      processedFrames: queue(status.queues.processedFrames),
      outputSegments: queue(status.queues.outputSegments),
    },
    inputFps: round(status.fps.input, 2),
    outputFps: round(status.fps.output, 2),
    framesIn: status.frames.in,
    framesOut: status.frames.out,
    framesDropped: status.frames.dropped,
    framesPeerLimited: status.frames.peerLimited,
    outputKeyframes: outputKeyframesReport(status.outputKeyframes),
    encoder: status.encoder,
    decoder: status.decoder,
    codecReason: status.codecReason.slice(0, 1024),
    segmentsIn: status.segments.in,
    segmentsOut: status.segments.out,
    segmentsDropped: status.segments.dropped + status.segments.corrupt,
    inputClockJumps: status.inputClockJumps,
    // null (a merge patch removes the field) where this relay's status has none.
    peerOutages: status.peerOutages
      ? ({
          count: status.peerOutages.count,
          totalGapMs: Math.round(status.peerOutages.totalGapMs),
          lastDetectionMs:
            status.peerOutages.lastDetectionMs === null
              ? null
              : Math.round(status.peerOutages.lastDetectionMs),
        } as NonNullable<RelayReport["peerOutages"]>)
      : null,
    inputStalled: status.input?.stalled ?? null,
    audio: {
      mode: status.audio.mode,
      reason: status.audio.reason.slice(0, 1024),
      codecIn: status.audio.codecIn,
      codecOut: status.audio.codecOut,
      framesIn: status.audio.frames.in,
      framesOut: status.audio.frames.out,
      framesDropped: status.audio.frames.dropped,
      framesCorrupt: status.audio.frames.corrupt,
      queue: { size: status.audio.queue.size, capacity: status.audio.queue.capacity },
      avOffsetMs: status.audio.avOffsetMs,
    } as NonNullable<RelayReport["audio"]>,
    latencyMs: p50 === null || p95 === null ? null : { p50: round(p50, 1), p95: round(p95, 1) },
    reconnects: status.reconnects,
    lastError: lastError ?? null,
  };
}

/** null removes a value an earlier report wrote (the report is a merge patch). */
function outputKeyframesReport(
  keyframes: SessionStatus["outputKeyframes"],
): NonNullable<RelayReport["outputKeyframes"]> {
  const nested = {
    source: keyframes.source,
    reason: keyframes.reason?.slice(0, 1024) ?? null,
    idrIntervalSeconds: keyframes.idrIntervalSec.max,
  };
  return nested as NonNullable<RelayReport["outputKeyframes"]>;
}

/**
 * The report's component names (see the CRD's lastError.component) for the session's error reasons.
 * Unknown reasons are reported as "relay".
 */
export function componentOfError(reason: string): string {
  if (reason.startsWith("ComfyStream")) return "comfystream";
  if (reason.startsWith("Transcoder") || reason === "EncoderUnavailable") return "ffmpeg";
  if (reason === "InputFailed" || reason === "UnsupportedInput") return "trickle-input";
  if (reason === "OutputFailed") return "trickle-output";
  return "relay";
}

/**
 * The session tracks the peer connection's state, not ICE's separately; ICE is in the matching state
 * (werift's connectionState follows ICE and DTLS), with "connecting" being ICE "checking".
 */
function iceStateOf(state: WebRtcConnectionState): IceConnectionState {
  return state === "connecting" ? "checking" : state;
}

function queue(snapshot: { size: number; capacity: number }): { size: number; capacity: number } {
  return { size: snapshot.size, capacity: snapshot.capacity };
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.max(0, Math.round(value * factor) / factor);
}

function newest<T extends { time: string }>(a: T | undefined, b: T | undefined): T | undefined {
  if (!a) return b;
  if (!b) return a;
  return Date.parse(b.time) >= Date.parse(a.time) ? b : a;
}
