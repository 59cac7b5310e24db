/**
 * Events for the trickle `-events` channel in ai-runner's schema (trickle-protocol.md §12.4), so a
 * go-livepeer gateway reading a relay session's events sees what it sees from an ai-runner: a
 * `status` event every 10 s and an `error` event when something fails. This module only builds the
 * objects; the events writer (trickle) decides when to send them and wraps them for the channel.
 */
import { createHash } from "node:crypto";
import type { SessionState, SessionStatus } from "./types.js";

/** ai-runner's pipeline states (AR `process/status.py`). */
export type AiRunnerState =
  "LOADING" | "ONLINE" | "DEGRADED_INPUT" | "DEGRADED_INFERENCE" | "OFFLINE" | "ERROR";

/** The pipeline name reported when the caller gives none; ai-runner's ComfyUI pipeline is "comfyui". */
export const DEFAULT_PIPELINE = "comfyui";

/**
 * ai-runner's state for one of ours. "degraded" means ComfyStream is reconnecting or frames are being
 * dropped; only when WebRTC is up and no input arrives is the input the thing that is degraded.
 */
export function aiRunnerState(status: Pick<SessionStatus, "state" | "webrtcState" | "fps">): AiRunnerState {
  const byState: Record<SessionState, AiRunnerState> = {
    starting: "LOADING",
    connecting: "LOADING",
    running: "ONLINE",
    degraded: "DEGRADED_INFERENCE",
    completed: "OFFLINE",
    stopped: "OFFLINE",
    failed: "ERROR",
  };
  if (status.state === "degraded" && status.webrtcState === "connected" && status.fps.input === 0) {
    return "DEGRADED_INPUT";
  }
  return byState[status.state];
}

export interface StatusEventOptions {
  /** Pipeline name reported to the gateway. Default "comfyui". */
  pipeline?: string;
  /**
   * The prompts/params last applied. Their hash is always reported; the object itself only when
   * `omitLastParams` is not set (ai-runner sends it once after a change, then null, and the gateway
   * keeps the previous value).
   */
  lastParams?: unknown;
  omitLastParams?: boolean;
  /** When the session (the "pipeline") started, Unix ms. */
  startTimeMs: number;
  /** When the state last changed, Unix ms. Default: endedAt, startedAt or createdAt of the snapshot. */
  lastStateUpdateTimeMs?: number;
  /** When input/output was last seen, Unix ms; null when unknown (SessionStatus does not carry them). */
  lastInputTimeMs?: number | null;
  lastOutputTimeMs?: number | null;
  /** Clock for `timestamp` and `last_status_timestamp`. Default Date.now(). */
  nowMs?: number;
}

/**
 * A `type: "status"` event in ai-runner's schema, plus a `relay` block with our own numbers
 * (queues, latency, counters), which the gateway passes through untouched.
 */
export function buildStatusEvent(
  status: SessionStatus,
  options: StatusEventOptions,
): Record<string, unknown> {
  const now = options.nowMs ?? Date.now();
  const promptUpdate = status.lastPromptUpdate;
  const lastParamsUpdateTime = promptUpdate?.ok ? toMs(promptUpdate.at) : null;
  const hasParams = options.lastParams !== undefined;
  return {
    type: "status",
    timestamp: now,
    pipeline: options.pipeline ?? DEFAULT_PIPELINE,
    start_time: options.startTimeMs,
    state: aiRunnerState(status),
    last_state_update_time:
      options.lastStateUpdateTimeMs ?? toMs(status.endedAt ?? status.startedAt ?? status.createdAt),
    input_status: {
      last_input_time: options.lastInputTimeMs ?? null,
      fps: status.fps.input,
    },
    inference_status: {
      last_output_time: options.lastOutputTimeMs ?? null,
      fps: status.fps.output,
      last_params_update_time: lastParamsUpdateTime,
      last_params: hasParams && !options.omitLastParams ? options.lastParams : null,
      last_params_hash: hasParams ? paramsHash(options.lastParams) : null,
      last_error_time: status.lastError ? toMs(status.lastError.at) : null,
      last_error: status.lastError ? `${status.lastError.reason}: ${status.lastError.message}` : null,
      // ai-runner restarts its inference process; our equivalent is reconnecting to ComfyStream.
      // ffmpeg restarts are reported in the relay block.
      last_restart_time: null,
      last_restart_logs: null,
      restart_count: status.reconnects,
    },
    last_status_timestamp: now,
    relay: {
      session_id: status.id,
      state: status.state,
      mode: status.mode,
      webrtc_state: status.webrtcState,
      queue_sizes: {
        decoded_frames: status.queues.decodedFrames.size,
        processed_frames: status.queues.processedFrames.size,
        output_segments: status.queues.outputSegments.size,
      },
      queue_capacity: {
        decoded_frames: status.queues.decodedFrames.capacity,
        processed_frames: status.queues.processedFrames.capacity,
        output_segments: status.queues.outputSegments.capacity,
      },
      frames: { ...status.frames },
      segments: { ...status.segments },
      latency_ms: { p50: status.latencyMs.p50, p95: status.latencyMs.p95 },
      reconnects: status.reconnects,
      ffmpeg_restarts: status.ffmpegRestarts,
      prompts_generation: status.promptsGeneration,
      last_error: status.lastError ? { ...status.lastError } : null,
    },
  };
}

/** A `type: "error"` event as ai-runner sends it (`{pipeline, message, time}`), plus our reason code. */
export function buildErrorEvent(
  error: { message: string; reason?: string; at?: string | number },
  options: { pipeline?: string; nowMs?: number } = {},
): Record<string, unknown> {
  const now = options.nowMs ?? Date.now();
  const at = error.at === undefined ? now : typeof error.at === "number" ? error.at : toMs(error.at);
  return {
    type: "error",
    timestamp: now,
    pipeline: options.pipeline ?? DEFAULT_PIPELINE,
    message: error.reason ? `${error.reason}: ${error.message}` : error.message,
    time: at,
    ...(error.reason ? { reason: error.reason } : {}),
  };
}

/**
 * How ai-runner frames an event on the events channel (§12.4): `{event, queue_event_type}`. The
 * gateway unwraps it and routes by queue type.
 */
export function wrapEvent(
  event: Record<string, unknown>,
  queueEventType = "ai_stream_events",
): { event: Record<string, unknown>; queue_event_type: string } {
  return { event, queue_event_type: queueEventType };
}

/**
 * ai-runner reports `md5(json.dumps(params, sort_keys=True))`. Python's default separators and
 * ASCII escaping are reproduced so equal params hash equally on both sides; numbers are written
 * JavaScript's way (Python would print 1.0 where JSON.parse has already made it 1).
 */
export function paramsHash(params: unknown): string {
  return createHash("md5").update(pythonSortedJson(params)).digest("hex");
}

function pythonSortedJson(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : "NaN";
  if (typeof value === "string") return asciiJsonString(value);
  if (Array.isArray(value)) return `[${value.map(pythonSortedJson).join(", ")}]`;
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${asciiJsonString(k)}: ${pythonSortedJson(v)}`).join(", ")}}`;
  }
  return asciiJsonString(String(value));
}

function asciiJsonString(text: string): string {
  return JSON.stringify(text).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

function toMs(iso: string): number | null {
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}
