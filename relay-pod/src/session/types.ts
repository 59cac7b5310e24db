/**
 * The relay session's configuration and the status snapshot it exposes. Everything that reports
 * on a session (REST status, Prometheus, the RelaySession status, trickle events) reads this one
 * snapshot shape, so the numbers agree everywhere.
 */
import type { AUDIO_MODES, AUDIO_OUTPUT_CODECS } from "../../../crds/src/index.js";
import type { EncoderPreference, VideoDecoder, VideoEncoder } from "../media/encoder-probe.js";
import type { InputStallPolicy, InputStallStatus } from "./input-stall.js";
import type { PeerOutagesStatus } from "./outages.js";

export type { EncoderPreference } from "../media/encoder-probe.js";

export type RelayMode = "transcode" | "passthrough";

/**
 * What happens to the input's audio: "comfystream" sends it to ComfyStream as Opus and puts what
 * comes back into the output; "passthrough" remuxes it into the output unchanged, in sync by PTS;
 * "none" drops it; "auto" is comfystream when the workflow has an audio node, else passthrough (the
 * reason in status says why).
 */
export type AudioMode = (typeof AUDIO_MODES)[number];
/** The output's audio codec: "auto" is the input's in passthrough, AAC for audio back from ComfyStream. */
export type AudioOutputCodecChoice = (typeof AUDIO_OUTPUT_CODECS)[number];

export interface QueueCapacities {
  /** Input frames demuxed and waiting to go out over WebRTC (in the transcoder or the pacer). */
  decodedFrames: number;
  /** Frames returned by ComfyStream waiting to be muxed into the output stream. */
  processedFrames: number;
  /** Finished output segments whose trickle POST has not completed. */
  outputSegments: number;
}

export const DEFAULT_QUEUE_CAPACITIES: QueueCapacities = {
  decodedFrames: 100,
  processedFrames: 100,
  outputSegments: 50,
};

export interface RelaySessionConfig {
  id: string;
  inputUrl: string;
  /** Defaults to the input URL + "-out" (Livepeer's naming). */
  outputUrl: string;
  controlUrl?: string;
  eventsUrl?: string;
  comfystreamUrl: string;
  /** ComfyUI API-format workflow(s), sent to ComfyStream as `prompts`. */
  prompts: unknown;
  width: number;
  height: number;
  frameRate: number;
  mode: RelayMode;
  audio: AudioMode;
  audioCodec: AudioOutputCodecChoice;
  /** Target bitrate of the H.264 sent to ComfyStream, kbit/s (transcode mode). */
  bitrateKbps: number;
  /** Keyframe (GOP) interval of the H.264 sent to ComfyStream, seconds (transcode mode). */
  keyframeIntervalSec: number;
  /** The transcoder's encoder: auto (NVENC when a probe finds a usable GPU, else x264), nvenc or x264. */
  encoder: EncoderPreference;
  /** Shortest output segment; a new one starts at the first IDR after this much PTS. */
  segmentDurationSec: number;
  /** Most frames in flight to ComfyStream (sent, not yet back); more are dropped as peer-limited. */
  peerWindowFrames: number;
  queueCapacities: QueueCapacities;
  /** Addresses WebRTC gathers host candidates on (loopback in tests, the pod IP in clusters). */
  iceAddresses: string[];
  insecureTls: boolean;
  /** When a silent input is reported and when it ends the session (input-stall.ts); default 10 s / 300 s. */
  inputStall?: InputStallPolicy;
}

export type SessionState =
  | "starting" // subscribing to the input, starting the transcoder
  | "connecting" // WebRTC offer/answer with ComfyStream in progress
  | "running" // frames flowing both ways
  | "degraded" // running, but ComfyStream is reconnecting, frames are being dropped, or the input stalled
  | "completed" // input ended; output closed
  | "stopped" // stopped on request
  | "failed"; // gave up; lastError says why

export type WebRtcConnectionState = "new" | "connecting" | "connected" | "disconnected" | "failed" | "closed";

export interface QueueSnapshot {
  size: number;
  capacity: number;
  dropped: number;
}

export interface SessionStatus {
  id: string;
  state: SessionState;
  webrtcState: WebRtcConnectionState;
  createdAt: string;
  startedAt?: string;
  endedAt?: string;
  inputUrl: string;
  outputUrl: string;
  controlUrl?: string;
  eventsUrl?: string;
  comfystreamUrl: string;
  width: number;
  height: number;
  frameRate: number;
  mode: RelayMode;
  /**
   * The forward transcode's encoder and decoder, and why (e.g. "x264: no CUDA device (…)"); null
   * until the transcoder has chosen (or when a required encoder is unusable: `codecReason` says so).
   * Passthrough encodes nothing: "none (passthrough)".
   */
  encoder: VideoEncoder | "none (passthrough)" | null;
  decoder: VideoDecoder | "none (passthrough)" | null;
  codecReason: string;
  queues: {
    decodedFrames: QueueSnapshot;
    processedFrames: QueueSnapshot;
    outputSegments: QueueSnapshot;
  };
  fps: { input: number; output: number };
  /** `dropped` counts every frame missing from the output; `peerLimited` those of them not sent because ComfyStream had the window full. */
  frames: {
    in: number;
    sent: number;
    returned: number;
    out: number;
    dropped: number;
    peerLimited: number;
  }; /**
   * The frames-in-flight window to ComfyStream and how full it is now; the transcoder's GOP:
   * "intra-only" while ComfyStream is slower than the input (`reason` says so), null in passthrough.
   */
  peerWindow: {
    capacity: number;
    inFlight: number;
    transcoderGop: "normal" | "intra-only" | null;
    reason?: string;
  };
  segments: { in: number; out: number; dropped: number; corrupt: number };
  /**
   * Times the input's clock jumped (back, or more than 5 s ahead) and the relay shifted the input's
   * timestamps to keep the stream continuous; from the first jump on, output PTS = input PTS + a
   * constant offset instead of the input PTS (media/ts-clock.ts). A 33-bit wrap is not a jump.
   */
  inputClockJumps: number;
  /**
   * The session's audio: the mode that runs and why, codecs in and out (null: none seen / none
   * written), frames in, out, dropped (by policy: hold full, unsupported codec, before the first
   * output segment) and corrupt (skipped), the hold queue, and how far the last audio written trailed
   * the video frame it followed (ms of PTS; null before any).
   */
  audio: {
    mode: "comfystream" | "passthrough" | "none";
    reason: string;
    codecIn: string | null;
    codecOut: string | null;
    frames: { in: number; out: number; dropped: number; corrupt: number };
    queue: { size: number; capacity: number };
    avOffsetMs: number | null;
  };
  /**
   * Where the output's IDRs come from: "peer" (ComfyStream's own, on PLI) or "re-encode" (it sent
   * none for too long, so the return path is re-encoded; `reason` says what was seen), and the
   * intervals between the IDRs written to the output (seconds of PTS; null before the second one).
   */
  outputKeyframes: {
    source: "peer" | "re-encode";
    reason?: string;
    reEncodedFrames: number;
    idrIntervalSec: { last: number | null; max: number | null };
  };
  /** Through ComfyStream: a frame sent to a frame back, matched by RTP timestamp. */
  latencyMs: { p50: number | null; p95: number | null; samples: number };
  /**
   * What the relay itself adds: forward = a frame displayable from the input (it and every frame
   * before it in display order complete: B-frames arrive after the frame they precede) to sent
   * over WebRTC (transcode and pacing); return = a frame back from ComfyStream to written into the output POST.
   */
  hopLatencyMs: {
    forward: { p50: number | null; p95: number | null };
    return: { p50: number | null; p95: number | null };
  };
  reconnects: number;
  /** Gaps in what ComfyStream returned (peer killed, silent, frames stopped), and how fast each was noticed. */
  peerOutages?: PeerOutagesStatus;
  /** Whether the trickle input has gone quiet without ending, and the policy for it. */
  input?: InputStallStatus;
  ffmpegRestarts: number;
  /** Generation of the prompts ComfyStream last acknowledged (1 = the initial prompts). */
  promptsGeneration: number;
  lastPromptUpdate?: { at: string; ok: boolean; reply?: unknown; error?: string };
  lastError?: { at: string; reason: string; message: string };
}
