import { defaultOutputUrl } from "../../../crds/src/output-url.js";
import { iceAddressesFromEnv } from "../webrtc/ice-config.js";
import {
  DEFAULT_QUEUE_CAPACITIES,
  type QueueCapacities,
  type RelayMode,
  type RelaySessionConfig,
} from "./types.js";

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
  segmentDurationSec?: number;
  queueCapacities?: Partial<QueueCapacities>;
  iceAddresses?: string[];
  insecureTls?: boolean;
}

/** Fills defaults: 512×512 at 30 fps, 1 s segments, transcode, the documented queue capacities. */
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
    segmentDurationSec: input.segmentDurationSec ?? 1,
    queueCapacities: { ...DEFAULT_QUEUE_CAPACITIES, ...input.queueCapacities },
    iceAddresses: input.iceAddresses?.length ? input.iceAddresses : iceAddressesFromEnv(),
    insecureTls: input.insecureTls ?? false,
  };
  if (input.controlUrl) config.controlUrl = input.controlUrl;
  if (input.eventsUrl) config.eventsUrl = input.eventsUrl;
  return config;
}
