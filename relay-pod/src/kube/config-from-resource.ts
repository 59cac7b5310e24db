// A RelaySession resource's spec → the relay session's configuration (`trickle-relay run --session`).
// Only the fields the relay process acts on are read; pod placement, lifetime and the sidecar's
// image are the operator's business.

import type { ComfyWorkflow, RelaySession, RelaySessionSpec } from "../../../crds/src/index.js";
import { VIDEO_ENCODER_PREFERENCES, defaultOutputUrl } from "../../../crds/src/index.js";
import {
  DEFAULT_BITRATE_KBPS,
  DEFAULT_KEYFRAME_INTERVAL_SEC,
  buildSessionConfig,
} from "../session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../session/default-workflow.js";
import {
  InputStallSettingError,
  inputStallPolicyFrom,
  type InputStallPolicy,
} from "../session/input-stall.js";
import { normalisePrompts } from "../session/prompts.js";
import type { EncoderPreference, QueueCapacities, RelayMode, RelaySessionConfig } from "../session/types.js";

/** The spec cannot be run; the message names the field. */
export class SessionSpecError extends Error {}

/** Settings that are the pod's, not the resource's (the pod's addresses, queue sizes, TLS policy). */
export interface PodSessionSettings {
  iceAddresses?: string[];
  insecureTls?: boolean;
  /**
   * ComfyStream of a pool pod (`run --pool-pod --comfystream URL`): a pooled session's spec names a
   * RelayPool (spec.poolRef) instead of a ComfyStream, and the pod already knows its own.
   */
  comfystreamUrl?: string;
  /** The pool's spec.template.comfystream.offerTimeoutSeconds, with comfystreamUrl. */
  offerTimeoutSeconds?: number;
  queueCapacities?: Partial<QueueCapacities>;
}

export interface SessionFromResource {
  config: RelaySessionConfig;
  /** How long ComfyStream may take to answer `/offer` (spec.comfystream.offerTimeoutSeconds). */
  offerTimeoutMs: number;
  /** Spec settings the relay interprets rather than follows literally, for the log. */
  notes: string[];
}

/** The port a ComfyStream sidecar listens on when the spec leaves it out (the CRD's default). */
export const DEFAULT_SIDECAR_PORT = 8889;
const DEFAULT_OFFER_TIMEOUT_SECONDS = 300;

export function sessionConfigFromResource(
  resource: RelaySession,
  settings: PodSessionSettings = {},
): SessionFromResource {
  const spec = resource.spec as RelaySessionSpec | undefined;
  const namespace = resource.metadata?.namespace;
  const name = resource.metadata?.name;
  if (!namespace || !name) throw new SessionSpecError("the RelaySession has no namespace or name");
  if (!spec) throw new SessionSpecError(`RelaySession ${namespace}/${name} has no spec`);
  const inputUrl = spec.trickle?.inputUrl;
  if (!inputUrl) throw new SessionSpecError("spec.trickle.inputUrl is required");

  const notes: string[] = [];
  const mode = relayModeFromSpec(spec.video?.mode, notes);
  const { bitrateKbps, keyframeIntervalSeconds } = spec.video ?? {};
  const encoder = encoderFromSpec(spec.video?.encoder);
  if (mode === "passthrough" && encoder !== "auto") {
    notes.push(`spec.video.encoder ${encoder} applies to transcoding only: passthrough encodes nothing`);
  }
  // The CRD defaults both fields, so only values that differ from the defaults were asked for.
  const encoderSettingsAsked =
    (bitrateKbps ?? DEFAULT_BITRATE_KBPS) !== DEFAULT_BITRATE_KBPS ||
    (keyframeIntervalSeconds ?? DEFAULT_KEYFRAME_INTERVAL_SEC) !== DEFAULT_KEYFRAME_INTERVAL_SEC;
  if (mode === "passthrough" && encoderSettingsAsked) {
    notes.push(
      "spec.video.bitrateKbps and keyframeIntervalSeconds apply to transcoding only: passthrough sends the input's own H.264",
    );
  }
  let outputUrl = spec.trickle.outputUrl;
  if (!outputUrl) {
    try {
      outputUrl = defaultOutputUrl(inputUrl);
    } catch (err) {
      throw new SessionSpecError(`spec.trickle.outputUrl: ${(err as Error).message}`);
    }
  }

  const config = buildSessionConfig({
    id: `${namespace}/${name}`,
    inputUrl,
    outputUrl,
    ...(spec.trickle.controlUrl ? { controlUrl: spec.trickle.controlUrl } : {}),
    ...(spec.trickle.eventsUrl ? { eventsUrl: spec.trickle.eventsUrl } : {}),
    comfystreamUrl:
      spec.comfystream === undefined && settings.comfystreamUrl
        ? settings.comfystreamUrl
        : comfystreamUrlFromSpec(spec),
    prompts: promptsFromSpec(spec.prompts),
    ...(spec.width !== undefined ? { width: spec.width } : {}),
    ...(spec.height !== undefined ? { height: spec.height } : {}),
    ...(spec.frameRate !== undefined ? { frameRate: spec.frameRate } : {}),
    mode,
    ...(bitrateKbps !== undefined ? { bitrateKbps } : {}),
    ...(keyframeIntervalSeconds !== undefined ? { keyframeIntervalSec: keyframeIntervalSeconds } : {}),
    encoder,
    audio: spec.audio?.mode ?? "auto",
    audioCodec: spec.audio?.codec ?? "auto",
    inputStall: inputStallFromSpec(spec.inputStall),
    ...(spec.video?.segmentDurationSeconds !== undefined
      ? { segmentDurationSec: spec.video.segmentDurationSeconds }
      : {}),
    ...(spec.video?.peerWindowFrames !== undefined ? { peerWindowFrames: spec.video.peerWindowFrames } : {}),
    ...(settings.iceAddresses ? { iceAddresses: settings.iceAddresses } : {}),
    ...(settings.insecureTls !== undefined ? { insecureTls: settings.insecureTls } : {}),
    ...(settings.queueCapacities ? { queueCapacities: settings.queueCapacities } : {}),
  });
  const offerTimeoutSeconds =
    spec.comfystream?.offerTimeoutSeconds ?? settings.offerTimeoutSeconds ?? DEFAULT_OFFER_TIMEOUT_SECONDS;
  return { config, offerTimeoutMs: offerTimeoutSeconds * 1000, notes };
}

/** spec.inputStall as the session's stall watch takes it (policy wait: its endAfterSeconds unused). */
function inputStallFromSpec(stall: RelaySessionSpec["inputStall"] | undefined): InputStallPolicy {
  try {
    return inputStallPolicyFrom(
      {
        statusAfterSec: stall?.statusAfterSeconds,
        policy: stall?.policy,
        endAfterSec: stall?.policy === "wait" ? undefined : stall?.endAfterSeconds,
      },
      {
        statusAfterSec: "spec.inputStall.statusAfterSeconds",
        policy: "spec.inputStall.policy",
        endAfterSec: "spec.inputStall.endAfterSeconds",
      },
    );
  } catch (err) {
    if (err instanceof InputStallSettingError) throw new SessionSpecError(err.message);
    throw err;
  }
}

/** spec.comfystream.url, or the sidecar in the same pod on loopback. */
export function comfystreamUrlFromSpec(spec: Pick<RelaySessionSpec, "comfystream">): string {
  const comfystream = spec.comfystream;
  const hasUrl = comfystream?.url !== undefined;
  const hasSidecar = comfystream?.sidecar !== undefined;
  if (hasUrl === hasSidecar) {
    throw new SessionSpecError("spec.comfystream: exactly one of url and sidecar must be set");
  }
  if (hasUrl) return comfystream!.url!;
  return `http://127.0.0.1:${comfystream!.sidecar!.port ?? DEFAULT_SIDECAR_PORT}`;
}

/**
 * The workflows ComfyStream runs for spec.prompts. An empty list means ComfyStream's pass-through;
 * the relay always sends at least one workflow, so that is the LoadTensor → SaveTensor workflow,
 * which keeps the count at one for later edits (ComfyStream refuses updates that change it).
 */
export function promptsFromSpec(prompts: ComfyWorkflow[] | undefined): unknown[] {
  if (!prompts || prompts.length === 0) return [PASSTHROUGH_WORKFLOW];
  try {
    return normalisePrompts(prompts);
  } catch (err) {
    throw new SessionSpecError(`spec.prompts: ${(err as Error).message}`);
  }
}

/** spec.video.encoder (the CRD defaults it to auto). */
export function encoderFromSpec(encoder: string | undefined): EncoderPreference {
  if (encoder === undefined) return "auto";
  if ((VIDEO_ENCODER_PREFERENCES as readonly string[]).includes(encoder)) return encoder as EncoderPreference;
  throw new SessionSpecError(
    `spec.video.encoder: expected auto, nvenc or x264, got ${JSON.stringify(encoder)}`,
  );
}

/**
 * Auto would need a probe of the input before the first frame goes out (codec, profile, B-frames);
 * transcoding is always correct, so Auto transcodes.
 */
export function relayModeFromSpec(mode: string | undefined, notes: string[] = []): RelayMode {
  switch (mode) {
    case undefined:
    case "Transcode":
      return "transcode";
    case "Passthrough":
      return "passthrough";
    case "Auto":
      notes.push("spec.video.mode Auto: transcoding (always suits ComfyStream; no input probe)");
      return "transcode";
    default:
      throw new SessionSpecError(
        `spec.video.mode: expected Transcode, Passthrough or Auto, got ${JSON.stringify(mode)}`,
      );
  }
}
