// The RelaySession API (trickle-relay.io/v1alpha1), declared once. The CRD's openAPIV3Schema and the
// TypeScript types below both come from these declarations (see schema-builder.ts), so `kubectl
// explain`, apiserver validation/defaulting and the operator's and relay pod's code agree by
// construction. Descriptions are written for `kubectl explain` readers. This module holds the spec
// and the resource as a whole; the status is declared in relay-session-status.ts and re-exported here.

import type { V1Affinity, V1EnvVarSource, V1ObjectMeta } from "@kubernetes/client-node";
import {
  array,
  integer,
  map,
  number,
  object,
  preserved,
  quantity,
  string,
  stringEnum,
  type StoredOf,
  type WrittenOf,
} from "./schema-builder.js";
import { inputStallSchema } from "./input-stall.js";
import { RELAY_SESSION_API_VERSION, RELAY_SESSION_KIND } from "./names.js";
import type { RelaySessionStatus } from "./relay-session-status.js";

export {
  RELAY_SESSION_PHASES,
  relaySessionStatusSchema,
  type RelayReport,
  type RelaySessionCondition,
  type RelaySessionPhase,
  type RelaySessionStatus,
} from "./relay-session-status.js";

// ---------------------------------------------------------------------------------------------
// Shared formats

/** http(s) URL with a host; the host part may not contain whitespace, `/`, `?` or `#`. */
export const HTTP_URL_PATTERN = "^https?://[^\\s/?#]+([/?#]\\S*)?$";
const URL_MAX_LENGTH = 2048;
/** RFC 1123 subdomain, as Kubernetes requires for RuntimeClass and PriorityClass names. */
const DNS_SUBDOMAIN_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/** Environment variable names as the Kubernetes 1.20 pod API accepts them. */
const ENV_VAR_NAME_PATTERN = "^[-._a-zA-Z][-._a-zA-Z0-9]*$";

/** Frame sizes: ComfyUI models work on latents of 8×8 pixels, and encoders want even sizes. */
export const FRAME_SIZE = { minimum: 64, maximum: 2048, multipleOf: 8, default: 512 } as const;
export const FRAME_RATE = { minimum: 1, maximum: 60, default: 30 } as const;
/** spec.audio.mode (also the relay's --audio and the REST API's `audio`). */
export const AUDIO_MODES = ["auto", "passthrough", "none", "comfystream"] as const;
/** spec.audio.codec, the output's audio codec (also the relay's --audio-codec and the REST API's `audio_codec`). */
export const AUDIO_OUTPUT_CODECS = ["auto", "aac", "opus"] as const;
/** spec.video.encoder (also the relay's --encoder and the REST API's `encoder`). */
export const VIDEO_ENCODER_PREFERENCES = ["auto", "nvenc", "x264"] as const;

const httpUrl = (description: string) =>
  string({ description, pattern: HTTP_URL_PATTERN, maxLength: URL_MAX_LENGTH });

const imagePullPolicy = (whose: string) =>
  stringEnum(["Always", "IfNotPresent", "Never"], {
    description: `Pull policy for ${whose}; unset means the Kubernetes default (Always for :latest tags, otherwise IfNotPresent).`,
  });

const resourceRequirements = (whose: string, extra: string) =>
  object(
    {
      requests: map(quantity({ description: "A resource quantity, e.g. 500m, 2, 4Gi." }), {
        description: `Minimum resources reserved for ${whose}, by resource name (cpu, memory, ...).`,
      }),
      limits: map(quantity({ description: "A resource quantity, e.g. 500m, 2, 4Gi, or 1 for a GPU." }), {
        description: `Maximum resources ${whose} may use, by resource name. Extended resources such as nvidia.com/gpu must be set here (a request, if any, must equal the limit).`,
      }),
    },
    { description: `Compute resources of ${whose}, as in a core/v1 container. ${extra}` },
  );

const envVar = object(
  {
    name: string({
      description: "Environment variable name.",
      required: true,
      pattern: ENV_VAR_NAME_PATTERN,
      maxLength: 256,
    }),
    value: string({ description: "Literal value. Leave unset when valueFrom is used." }),
    valueFrom: preserved<V1EnvVarSource>()({
      description:
        "Source of the value, as core/v1 EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef); passed to the pod unchanged.",
    }),
  },
  { description: "One environment variable, as in a core/v1 container." },
);

// ---------------------------------------------------------------------------------------------
// spec

const trickleChannels = object(
  {
    inputUrl: string({
      description:
        "Trickle channel the relay subscribes to for the source video (MPEG-TS segments), e.g. https://gateway:7280/live/stream-1. Required.",
      required: true,
      pattern: HTTP_URL_PATTERN,
      maxLength: URL_MAX_LENGTH,
    }),
    outputUrl: httpUrl(
      'Trickle channel the relay publishes the processed video to. Defaults to the input URL with "-out" appended to its last path segment (query string kept).',
    ),
    controlUrl: httpUrl(
      "Trickle channel carrying prompt updates (ai-runner or ComfyStream BYOC JSON messages). Unset: prompts change only through spec.prompts.",
    ),
    eventsUrl: httpUrl(
      "Trickle channel the relay posts a JSON status event to every 10 seconds. Unset: no events.",
    ),
  },
  { description: "Trickle channel URLs of the session (Livepeer trickle protocol).", required: true },
);

const comfystreamSidecar = object(
  {
    image: string({
      description: "ComfyStream server image, e.g. livepeer/comfystream:0.1.8. Required.",
      required: true,
      minLength: 1,
      maxLength: 1024,
    }),
    imagePullPolicy: imagePullPolicy("the ComfyStream image"),
    port: integer({
      description:
        "Port the ComfyStream server listens on inside the pod; the relay connects to http://127.0.0.1:<port>.",
      minimum: 1,
      maximum: 65535,
      default: 8889,
    }),
    args: array(string({ description: "One argument." }), {
      description:
        "Arguments for the ComfyStream container, replacing the image's default command arguments (e.g. --workspace, --port).",
    }),
    env: array(envVar, {
      description: "Environment variables of the ComfyStream container.",
      listMapKeys: ["name"],
    }),
    resources: resourceRequirements(
      "the ComfyStream container",
      "Put the GPU here: limits: {nvidia.com/gpu: 1}.",
    ),
  },
  {
    description:
      "Run ComfyStream as a second container in the session pod, which then holds the GPU. The pod serves one session, matching ComfyStream's one-peer-at-a-time limit.",
  },
);

export const comfystreamSchema = object(
  {
    url: httpUrl(
      "Base URL of an existing ComfyStream server; the relay POSTs its WebRTC offer to <url>/offer. Exactly one of url and sidecar.",
    ),
    sidecar: comfystreamSidecar,
    offerTimeoutSeconds: integer({
      description:
        "How long the relay waits for the answer to its /offer; ComfyStream warms the workflow up inside that request, which can take minutes on a cold GPU.",
      minimum: 5,
      maximum: 3600,
      default: 300,
    }),
  },
  {
    description:
      "The ComfyStream server that processes the frames: exactly one of url (an existing server) or sidecar (started in the session pod). Required unless poolRef names a RelayPool, whose template then gives it.",
    exactlyOneOf: ["url", "sidecar"],
  },
);

export const videoSchema = object(
  {
    mode: stringEnum(["Transcode", "Passthrough", "Auto"], {
      description:
        "Transcode: re-encode the input to H.264 constrained baseline at width×height and at most frameRate (always works). Passthrough: forward the input's H.264 unchanged (it must already suit ComfyStream). Auto: pass through when the input suits, otherwise transcode.",
      default: "Transcode",
    }),
    bitrateKbps: integer({
      description: "Target bitrate of the H.264 stream sent to ComfyStream, in kbit/s (transcoding only).",
      minimum: 100,
      maximum: 50000,
      default: 2000,
    }),
    keyframeIntervalSeconds: number({
      description:
        "Keyframe (GOP) interval of the stream sent to ComfyStream, in seconds (transcoding only).",
      minimum: 0.25,
      maximum: 10,
      default: 1,
    }),
    segmentDurationSeconds: number({
      description:
        "Minimum duration of an output trickle segment; a new segment starts at the first keyframe after it.",
      minimum: 0.25,
      maximum: 10,
      default: 1,
    }),
    encoder: stringEnum(VIDEO_ENCODER_PREFERENCES, {
      description:
        "H.264 encoder of the transcode. auto: NVENC (h264_nvenc, with NVDEC decoding) when a one-frame test encode at start succeeds, which needs a GPU in the relay container (pod.resources.limits), otherwise libx264. nvenc: NVENC or the session fails (the probe's error is in status.relay.lastError). x264: libx264, no probe. status.relay.encoder, decoder and codecReason show the choice and why.",
      default: "auto",
    }),
    peerWindowFrames: integer({
      description:
        "Most frames in flight to ComfyStream (sent, not yet returned). ComfyStream evicts a frame that arrives while one is processed and one waits, and every later frame then returns a processing period late; more frames than this are dropped (peer-limited) instead. Raise it only for a distant ComfyStream; 1 stalls (ComfyStream hands a frame on only when the next arrives).",
      minimum: 2,
      maximum: 120,
      default: 2,
    }),
  },
  { description: "Video encoding and segmenting settings.", default: {} },
);

const audio = object(
  {
    mode: stringEnum(AUDIO_MODES, {
      description:
        "What happens to the input's audio (AAC, LATM or Opus). comfystream: decoded, sent to ComfyStream as 48 kHz Opus on an audio m-line, and what comes back goes out, in sync by PTS. passthrough: remuxed into the output unchanged (re-encoded only when codec asks for another), in sync with the processed video by PTS. none: video only. auto: comfystream when the workflow has an audio node (LoadAudioTensor), else passthrough; status.relay.audio.reason says which and why.",
      default: "auto",
    }),
    codec: stringEnum(AUDIO_OUTPUT_CODECS, {
      description:
        "The output's audio codec. auto: the input's codec in passthrough, AAC for audio back from ComfyStream (so RTMP/HLS viewers keep working). aac or opus: that codec (passthrough then re-encodes when the input's differs).",
      default: "auto",
    }),
  },
  { description: "Audio settings.", default: {} },
);

const toleration = object(
  {
    key: string({
      description: "Taint key the toleration applies to; empty with operator Exists matches all taints.",
    }),
    operator: stringEnum(["Exists", "Equal"], {
      description: "Exists matches any value; Equal matches value. Unset means Equal.",
    }),
    value: string({ description: "Taint value to match when operator is Equal." }),
    effect: stringEnum(["NoSchedule", "PreferNoSchedule", "NoExecute"], {
      description: "Taint effect to match; unset matches all effects.",
    }),
    tolerationSeconds: integer({
      description: "For NoExecute: how long the pod stays bound after the taint appears; unset is forever.",
      format: "int64",
    }),
  },
  { description: "A core/v1 toleration, e.g. for the taint on GPU nodes." },
);

export const podSchema = object(
  {
    image: string({
      description: "Relay container image; unset uses the operator's configured relay image.",
      minLength: 1,
      maxLength: 1024,
    }),
    imagePullPolicy: imagePullPolicy("the relay image"),
    imagePullSecrets: array(
      object(
        {
          name: string({
            description: "Name of a docker-registry Secret in the session's namespace.",
            required: true,
          }),
        },
        { description: "Reference to an image pull Secret." },
      ),
      { description: "Secrets for pulling the relay and ComfyStream images." },
    ),
    resources: resourceRequirements(
      "the relay container",
      "It runs ffmpeg and WebRTC, CPU-bound; the GPU belongs to comfystream.sidecar.resources, unless the relay should encode with NVENC (video.encoder): then give it one here too (limits: {nvidia.com/gpu: 1}), and the operator sets NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES on it.",
    ),
    nodeSelector: map(string({ description: "Required node label value." }), {
      description: "Node labels the session pod requires, e.g. a GPU model label.",
    }),
    tolerations: array(toleration, {
      description: "Taints the session pod tolerates (GPU nodes are often tainted).",
    }),
    affinity: preserved<V1Affinity>()({
      description:
        "Scheduling affinity of the session pod, as core/v1 Affinity; passed to the pod unchanged.",
    }),
    runtimeClassName: string({
      description:
        "RuntimeClass of the session pod, e.g. nvidia where the NVIDIA runtime is not the node default.",
      pattern: DNS_SUBDOMAIN_PATTERN,
      maxLength: 253,
    }),
    priorityClassName: string({
      description: "PriorityClass of the session pod.",
      pattern: DNS_SUBDOMAIN_PATTERN,
      maxLength: 253,
    }),
  },
  { description: "Image, resources and placement of the session pod." },
);

const lifetime = object(
  {
    maxDurationSeconds: integer({
      description:
        "Longest the session may run; the pod gets it as activeDeadlineSeconds and the session then ends Failed (DeadlineExceeded). Unset: no limit.",
      minimum: 1,
      format: "int64",
    }),
    startupTimeoutSeconds: integer({
      description:
        "How long the session may take from pod creation to media flowing (image pulls, ComfyStream warm-up) before the attempt counts as failed.",
      minimum: 10,
      default: 600,
    }),
    ttlSecondsAfterFinished: integer({
      description:
        "Seconds after the session ends (Succeeded or Failed) before the operator deletes the RelaySession. Unset: kept until deleted.",
      minimum: 0,
      format: "int64",
    }),
    maxRestarts: integer({
      description:
        "Restart budget: how many times the operator re-creates a failed session pod before the session is Failed.",
      minimum: 0,
      maximum: 100,
      default: 3,
    }),
  },
  { description: "Duration limits, cleanup and restart budget of the session.", default: {} },
);

const prompts = array(
  preserved<ComfyWorkflow>()({
    description:
      "One ComfyUI workflow in API format (node id → {class_type, inputs}); stored verbatim, unknown fields kept.",
  }),
  {
    description:
      "ComfyUI workflows ComfyStream runs on every frame. Editing them updates the running session without a restart (the same number of workflows must be kept). Empty: ComfyStream's pass-through (noop) mode.",
  },
);

/** What a pooled session (spec.poolRef) does when its pool has no idle warm pod. */
export const POOL_EXHAUSTED_POLICIES = ["wait", "cold"] as const;

const poolRef = object(
  {
    name: string({
      description: "Name of a RelayPool in the session's namespace.",
      required: true,
      pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
      maxLength: 50,
    }),
    onExhausted: stringEnum(POOL_EXHAUSTED_POLICIES, {
      description:
        "When the pool has no idle Ready pod: wait (phase Pending, condition reason PoolExhausted, allocated first come first served as pods become Ready) or cold (start a per-session pod from the pool's template, as without a pool).",
      default: "wait",
    }),
  },
  {
    description:
      "Take a warm pod of a RelayPool instead of starting a new one: the relay and ComfyStream in it are already running and warmed up. Exactly one of comfystream and poolRef; with poolRef the pool's template gives ComfyStream, the pod and the video settings.",
  },
);

export const relaySessionSpecSchema = object(
  {
    trickle: trickleChannels,
    comfystream: comfystreamSchema,
    poolRef,
    prompts,
    width: integer({
      description: `Width in pixels of the frames sent to ComfyStream (input is scaled to cover and centre-cropped). ${FRAME_SIZE.minimum}–${FRAME_SIZE.maximum}, a multiple of ${FRAME_SIZE.multipleOf}.`,
      ...FRAME_SIZE,
    }),
    height: integer({
      description: `Height in pixels of the frames sent to ComfyStream. ${FRAME_SIZE.minimum}–${FRAME_SIZE.maximum}, a multiple of ${FRAME_SIZE.multipleOf}.`,
      ...FRAME_SIZE,
    }),
    frameRate: integer({
      description: `Highest frame rate sent to ComfyStream, in frames per second (${FRAME_RATE.minimum}–${FRAME_RATE.maximum}); faster input is decimated.`,
      ...FRAME_RATE,
    }),
    video: videoSchema,
    audio,
    inputStall: inputStallSchema,
    pod: podSchema,
    lifetime,
  },
  {
    description:
      "Desired session: where the video comes from and goes to, how it is processed, and where it runs.",
    required: true,
    exactlyOneOf: ["comfystream", "poolRef"],
  },
);

// ---------------------------------------------------------------------------------------------
// TypeScript types (all derived from the declarations above; the status's in relay-session-status.ts)

/** One ComfyUI workflow in API format: node id → `{ class_type, inputs }`. */
export type ComfyWorkflow = Record<string, unknown>;

/** The spec as read from the apiserver: schema defaults applied. */
export type RelaySessionSpec = StoredOf<typeof relaySessionSpecSchema>;
/** The spec as a user may write it: fields with schema defaults may be left out. */
export type RelaySessionSpecInput = WrittenOf<typeof relaySessionSpecSchema>;

export type TrickleChannels = RelaySessionSpec["trickle"];
export type ComfyStreamSpec = NonNullable<RelaySessionSpec["comfystream"]>;
export type PoolRef = NonNullable<RelaySessionSpec["poolRef"]>;
export type ComfyStreamSidecarSpec = NonNullable<ComfyStreamSpec["sidecar"]>;
export type VideoSpec = RelaySessionSpec["video"];
export type PodSpec = NonNullable<RelaySessionSpec["pod"]>;
export type LifetimeSpec = RelaySessionSpec["lifetime"];
export type ResourceRequirements = NonNullable<PodSpec["resources"]>;

export interface RelaySession {
  apiVersion: typeof RELAY_SESSION_API_VERSION;
  kind: typeof RELAY_SESSION_KIND;
  metadata: V1ObjectMeta;
  spec: RelaySessionSpec;
  status?: RelaySessionStatus;
}

/** What `kubectl apply` may send: defaults not yet applied, no status. */
export interface RelaySessionInput {
  apiVersion: typeof RELAY_SESSION_API_VERSION;
  kind: typeof RELAY_SESSION_KIND;
  metadata: V1ObjectMeta;
  spec: RelaySessionSpecInput;
}
