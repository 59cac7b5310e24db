import { defaultOutputUrl } from "../../../crds/src/output-url.js";
import { iceAddressesFromEnv } from "../webrtc/ice-config.js";
import {
  DEFAULT_QUEUE_CAPACITIES,
  type QueueCapacities,
  type RelayMode,
  type RelaySessionConfig,
} from "./types.js";

export const DEFAULT_BITRATE_KBPS = 2000;
export const DEFAULT_KEYFRAME_INTERVAL_SEC = 1;
/**
 * Frames in flight to ComfyStream at most (see PeerWindow): one processed, one waiting, and two on
 * the way there or back, so that a peer as fast as the input is not slowed by the round trip. A
 * slower peer ends up with at most two evicted frames, i.e. four processing periods of latency.
 */
export const DEFAULT_PEER_WINDOW_FRAMES = 4;

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
  bitrateKbps?: number;
  keyframeIntervalSec?: number;
  segmentDurationSec?: number;
  peerWindowFrames?: number;
  queueCapacities?: Partial<QueueCapacities>;
  iceAddresses?: string[];
  insecureTls?: boolean;
}

/**
 * Fills defaults: 512×512 at 30 fps, transcode at 2000 kbit/s with a keyframe every second (what
 * ComfyStream's own encoder uses), 1 s segments, the documented queue capacities.
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
    bitrateKbps: input.bitrateKbps ?? DEFAULT_BITRATE_KBPS,
    keyframeIntervalSec: input.keyframeIntervalSec ?? DEFAULT_KEYFRAME_INTERVAL_SEC,
    segmentDurationSec: input.segmentDurationSec ?? 1,
    peerWindowFrames: input.peerWindowFrames ?? DEFAULT_PEER_WINDOW_FRAMES,
    queueCapacities: { ...DEFAULT_QUEUE_CAPACITIES, ...input.queueCapacities },
    iceAddresses: input.iceAddresses?.length ? input.iceAddresses : iceAddressesFromEnv(),
    insecureTls: input.insecureTls ?? false,
  };
  if (input.controlUrl) config.controlUrl = input.controlUrl;
  if (input.eventsUrl) config.eventsUrl = input.eventsUrl;
  return config;
}
