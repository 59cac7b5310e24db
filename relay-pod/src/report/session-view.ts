/**
 * A session as the REST API shows it. The first fields are exactly the older Python service's
 * (`session_id`, `status`, the three URLs, `width`, `height`, `created_at`, `queue_sizes`,
 * `queue_capacity`, `processing_health`, `webrtc_state`), so its callers keep working; the rest
 * are the numbers that service never had (fps, counters, latency, reconnects, the last error).
 * Differences on purpose: `queue_capacity` holds numbers (ours are bounded; theirs said
 * "unlimited"), `status` is our state name, and `created_at` is UTC with a "Z".
 */
import type { QueueSnapshot, SessionStatus } from "../session/types.js";

/** A queue this full counts as the bottleneck in `processing_health`. */
const BOTTLENECK_FILL_RATIO = 0.8;

export function sessionView(status: SessionStatus): Record<string, unknown> {
  const q = status.queues;
  return {
    session_id: status.id,
    status: status.state,
    input_stream_url: status.inputUrl,
    output_stream_url: status.outputUrl,
    comfystream_url: status.comfystreamUrl,
    control_url: status.controlUrl ?? null,
    events_url: status.eventsUrl ?? null,
    width: status.width,
    height: status.height,
    frame_rate: status.frameRate,
    mode: status.mode,
    encoder: status.encoder,
    decoder: status.decoder,
    codec_reason: status.codecReason,
    created_at: status.createdAt,
    started_at: status.startedAt ?? null,
    ended_at: status.endedAt ?? null,
    queue_sizes: {
      decoded_frames: q.decodedFrames.size,
      processed_frames: q.processedFrames.size,
      output_segments: q.outputSegments.size,
    },
    queue_capacity: {
      decoded_frames: q.decodedFrames.capacity,
      processed_frames: q.processedFrames.capacity,
      output_segments: q.outputSegments.capacity,
    },
    queue_dropped: {
      decoded_frames: q.decodedFrames.dropped,
      processed_frames: q.processedFrames.dropped,
      output_segments: q.outputSegments.dropped,
    },
    processing_health: {
      input_to_webrtc_backlog: q.decodedFrames.size,
      webrtc_to_output_backlog: q.processedFrames.size,
      output_publishing_backlog: q.outputSegments.size,
      bottleneck: bottleneck(status),
    },
    webrtc_state: status.webrtcState,
    fps: { input: status.fps.input, output: status.fps.output },
    frames: {
      in: status.frames.in,
      sent: status.frames.sent,
      returned: status.frames.returned,
      out: status.frames.out,
      dropped: status.frames.dropped,
      peer_limited: status.frames.peerLimited,
    },
    peer_window: {
      capacity: status.peerWindow.capacity,
      in_flight: status.peerWindow.inFlight,
      transcoder_gop: status.peerWindow.transcoderGop,
      reason: status.peerWindow.reason ?? null,
    },
    segments: { ...status.segments },
    input_clock_jumps: status.inputClockJumps,
    audio: {
      mode: status.audio.mode,
      reason: status.audio.reason,
      codec_in: status.audio.codecIn,
      codec_out: status.audio.codecOut,
      frames: { ...status.audio.frames },
      queue: { ...status.audio.queue },
      av_offset_ms: status.audio.avOffsetMs,
    },
    output_keyframes: {
      source: status.outputKeyframes.source,
      reason: status.outputKeyframes.reason ?? null,
      re_encoded_frames: status.outputKeyframes.reEncodedFrames,
      idr_interval_sec: { ...status.outputKeyframes.idrIntervalSec },
    },
    latency_ms: { p50: status.latencyMs.p50, p95: status.latencyMs.p95, samples: status.latencyMs.samples },
    reconnects: status.reconnects,
    ffmpeg_restarts: status.ffmpegRestarts,
    prompts_generation: status.promptsGeneration,
    last_prompt_update: status.lastPromptUpdate ? { ...status.lastPromptUpdate } : null,
    last_error: status.lastError
      ? { reason: status.lastError.reason, message: status.lastError.message, at: status.lastError.at }
      : null,
  };
}

/** Which stage is falling behind, judged by how full its input queue is (the first full one wins). */
function bottleneck(status: SessionStatus): string {
  const q = status.queues;
  const full = (queue: QueueSnapshot) =>
    queue.capacity > 0 && queue.size >= queue.capacity * BOTTLENECK_FILL_RATIO;
  if (full(q.decodedFrames)) return "sending to ComfyStream is slow (decoded_frames queue nearly full)";
  if (full(q.processedFrames)) return "output muxing is slow (processed_frames queue nearly full)";
  if (full(q.outputSegments))
    return "publishing to the output trickle channel is slow (output_segments queue nearly full)";
  return "No bottleneck detected";
}
