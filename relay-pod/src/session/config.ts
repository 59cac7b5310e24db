import { defaultOutputUrl } from "../../../crds/src/index.js";
import { iceAddressesFromEnv } from "../webrtc/ice-config.js";
import { DEFAULT_INPUT_STALL_POLICY, type InputStallPolicy } from "./input-stall.js";
import {
  DEFAULT_QUEUE_CAPACITIES,
  type AudioMode,
  type AudioOutputCodecChoice,
  type EncoderPreference,
  type QueueCapacities,
  type RelayMode,
  type RelaySessionConfig,
} from "./types.js";

export const DEFAULT_BITRATE_KBPS = 2000;
export const DEFAULT_KEYFRAME_INTERVAL_SEC = 1;
/**
 * Frames in flight to ComfyStream at most (see PeerWindow). Measured through the real server
 * (bench:relay --real-comfystream): with a slow workflow, 2 returns as many frames a second as 4
 * with half the latency (0.9 s through the peer instead of 1.8 s at 2 fps), and a fast one still
 * returns 30 fps. 1 stalls: the real server hands a frame to its workflow only when the next one
 * arrives (its last frame never comes back), hence the minimum.
 */
export const DEFAULT_PEER_WINDOW_FRAMES = 2;
export const PEER_WINDOW_LIMITS = { min: 2, max: 120 } as const;

/**
 * The transcoder's rate control for a session: x264 counts the GOP in frames, so the interval is
 * taken at the session's frame rate (the cap; a slower input stretches it).
 */
export function forwardEncoderSettings(
  config: Pick<RelaySessionConfig, "bitrateKbps" | "keyframeIntervalSec" | "frameRate">,
): { bitrate: string; gopFrames: number } {
  return {
    bitrate: `${config.bitrateKbps}k`,
    gopFrames: Math.max(1, Math.round(config.keyframeIntervalSec * config.frameRate)),
  };
}

export interface SessionConfigInput {
  id: string;
  inputUrl: string;
  outputUrl?: string;
  controlUrl?: string;
  eventsUrl?: string;
  comfystreamUrl: string;
  prompts: unknown;
  width?: number;
  height?: number;
  frameRate?: number;
  mode?: RelayMode;
  audio?: AudioMode;
  audioCodec?: AudioOutputCodecChoice;
  bitrateKbps?: number;
  keyframeIntervalSec?: number;
  encoder?: EncoderPreference;
  segmentDurationSec?: number;
  peerWindowFrames?: number;
  queueCapacities?: Partial<QueueCapacities>;
  iceAddresses?: string[];
  insecureTls?: boolean;
  inputStall?: Partial<InputStallPolicy>;
}

/**
 * Fills defaults: 512×512 at 30 fps, transcode at 2000 kbit/s with a keyframe every second (what
 * ComfyStream's own encoder uses) with NVENC when a GPU is usable, else x264; 1 s segments, the documented queue capacities.
 */
export function buildSessionConfig(input: SessionConfigInput): RelaySessionConfig {
  const config: RelaySessionConfig = {
    id: input.id,
    inputUrl: input.inputUrl,
    outputUrl: input.outputUrl ?? defaultOutputUrl(input.inputUrl),
    comfystreamUrl: input.comfystreamUrl,
    prompts: input.prompts,
    width: input.width ?? 512,
    height: input.height ?? 512,
    frameRate: input.frameRate ?? 30,
    mode: input.mode ?? "transcode",
    audio: input.audio ?? "auto",
    audioCodec: input.audioCodec ?? "auto",
    bitrateKbps: input.bitrateKbps ?? DEFAULT_BITRATE_KBPS,
    keyframeIntervalSec: input.keyframeIntervalSec ?? DEFAULT_KEYFRAME_INTERVAL_SEC,
    encoder: input.encoder ?? "auto",
    segmentDurationSec: input.segmentDurationSec ?? 1,
    peerWindowFrames: input.peerWindowFrames ?? DEFAULT_PEER_WINDOW_FRAMES,
    queueCapacities: { ...DEFAULT_QUEUE_CAPACITIES, ...input.queueCapacities },
    iceAddresses: input.iceAddresses?.length ? input.iceAddresses : iceAddressesFromEnv(),
    insecureTls: input.insecureTls ?? false,
    inputStall: { ...DEFAULT_INPUT_STALL_POLICY, ...input.inputStall },
  };
  if (input.controlUrl) config.controlUrl = input.controlUrl;
  if (input.eventsUrl) config.eventsUrl = input.eventsUrl;
  return config;
}
