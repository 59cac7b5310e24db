// The RelaySession status (.status): the operator's phase, conditions and bookkeeping, and the live
// report the relay pod writes into it. Declared apart from the spec because it has other writers
// (the operator and the relay pod, never the user) and shares none of the spec's formats; like the
// spec, its CRD schema and TypeScript types come from the one declaration (schema-builder.ts).

import {
  array,
  boolean,
  integer,
  number,
  object,
  string,
  stringEnum,
  type StoredOf,
} from "./schema-builder.js";

export const RELAY_SESSION_PHASES = [
  "Pending",
  "Starting",
  "Connecting",
  "Running",
  "Degraded",
  "Succeeded",
  "Failed",
] as const;

/** The metav1.Condition shape, with the apiserver-side validation Kubernetes itself uses. */
export const conditionSchema = object(
  {
    type: string({
      description: "Condition type in CamelCase, e.g. Ready.",
      required: true,
      pattern:
        "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
      maxLength: 316,
    }),
    status: stringEnum(["True", "False", "Unknown"], {
      description: "True, False or Unknown.",
      required: true,
    }),
    observedGeneration: integer({
      description: "metadata.generation the condition was computed from.",
      minimum: 0,
      format: "int64",
    }),
    lastTransitionTime: string({
      description: "When status last changed.",
      required: true,
      format: "date-time",
    }),
    reason: string({
      description: "Machine-readable CamelCase reason for the last transition.",
      required: true,
      pattern: "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
      minLength: 1,
      maxLength: 1024,
    }),
    message: string({
      description: "Human-readable details; may be empty.",
      required: true,
      maxLength: 32768,
    }),
  },
  { description: "One observation of the session's state (metav1.Condition)." },
);

const queueGauge = (what: string) =>
  object(
    {
      size: integer({ description: `${what} currently queued.`, minimum: 0 }),
      capacity: integer({
        description: `Most ${what.toLowerCase()} the queue holds before dropping.`,
        minimum: 0,
      }),
    },
    { description: `Queue of ${what.toLowerCase()}.` },
  );

const counter = (description: string) => integer({ description, minimum: 0, format: "int64" });
const fps = (description: string) => number({ description, minimum: 0 });

const relayReport = object(
  {
    lastUpdateTime: string({ description: "When the relay pod wrote this report.", format: "date-time" }),
    appliedPromptsGeneration: integer({
      description: "metadata.generation whose spec.prompts ComfyStream is running now.",
      minimum: 0,
      format: "int64",
    }),
    webrtc: object(
      {
        connectionState: stringEnum(["new", "connecting", "connected", "disconnected", "failed", "closed"], {
          description: "RTCPeerConnection.connectionState of the peer connection to ComfyStream.",
        }),
        iceConnectionState: stringEnum(
          ["new", "checking", "connected", "completed", "disconnected", "failed", "closed"],
          { description: "RTCPeerConnection.iceConnectionState of the peer connection to ComfyStream." },
        ),
      },
      { description: "State of the WebRTC connection to ComfyStream." },
    ),
    queues: object(
      {
        decodedFrames: queueGauge("Input frames waiting to be sent to ComfyStream"),
        processedFrames: queueGauge("Processed frames waiting to be muxed"),
        outputSegments: queueGauge("Output segments waiting to be published"),
      },
      { description: "Fill levels and capacities of the relay's bounded queues." },
    ),
    inputFps: fps("Frames per second arriving on the input channel."),
    outputFps: fps("Frames per second coming back from ComfyStream."),
    framesIn: counter("Frames received from the input channel."),
    framesOut: counter("Frames published to the output channel."),
    framesDropped: counter("Frames missing from the output (behind, peer-limited, lost)."),
    framesPeerLimited: counter(
      "Frames not sent because ComfyStream already had the peer window in flight (it processes slower than the input).",
    ),
    outputKeyframes: object(
      {
        source: stringEnum(["peer", "re-encode"], {
          description:
            "Where the output's IDRs come from: ComfyStream's own (on PLI), or a re-encode of the returned video because it sent none for too long.",
        }),
        reason: string({ description: "Why the returned video is re-encoded.", maxLength: 1024 }),
        idrIntervalSeconds: number({
          description: "Longest interval between IDRs written to the output so far, in seconds of PTS.",
          minimum: 0,
        }),
      },
      { description: "How the output is kept cuttable into segments." },
    ),
    encoder: string({
      description:
        'Encoder of the stream sent to ComfyStream: nvenc, x264 or "none (passthrough)"; unset until chosen.',
      maxLength: 64,
    }),
    decoder: string({
      description: 'Decoder of the input: nvdec, software or "none (passthrough)"; unset until chosen.',
      maxLength: 64,
    }),
    codecReason: string({
      description:
        'Why this encoder and decoder, e.g. "x264: no CUDA device (h264_nvenc: Cannot load libcuda.so.1)".',
      maxLength: 1024,
    }),
    segmentsIn: counter("Segments read from the input channel."),
    segmentsOut: counter("Segments published to the output channel."),
    segmentsDropped: counter("Input segments dropped whole (behind or corrupt)."),
    inputClockJumps: counter(
      "Times the input's clock jumped (back, or over 5 s ahead) and the relay shifted its timestamps to keep the output continuous.",
    ),
    peerOutages: object(
      {
        count: counter("Gaps in the video coming back from ComfyStream that ended (output resumed)."),
        totalGapMs: counter("Every gap summed, in milliseconds, the ongoing one included."),
        lastDetectionMs: integer({
          description: "Last frame back → loss noticed, for the latest outage, in milliseconds.",
          minimum: 0,
        }),
      },
      { description: "Outages of the returned video (ComfyStream dead, silent, or its frames stopped)." },
    ),
    inputStalled: boolean({
      description:
        "True while the trickle input has gone quiet without ending (lastError says for how long).",
    }),
    audio: object(
      {
        mode: stringEnum(["comfystream", "passthrough", "none"], {
          description: "The audio mode that runs.",
        }),
        reason: string({
          description: "Why this mode runs, and why input audio is not carried if so.",
          maxLength: 1024,
        }),
        codecIn: string({
          description: "Codec of the input's audio (aac, aac-latm, opus, mp2, ac3, …).",
          maxLength: 32,
        }),
        codecOut: string({
          description: "Codec of the audio written to the output; unset when none is.",
          maxLength: 32,
        }),
        framesIn: counter("Audio frames read from the input."),
        framesOut: counter("Audio frames written to the output."),
        framesDropped: counter(
          "Audio frames dropped by policy (hold full, unsupported codec, before the first output segment).",
        ),
        framesCorrupt: counter("Damaged audio frames skipped."),
        queue: queueGauge("Input audio frames held until the processed video reaches them"),
        avOffsetMs: number({
          description: "How far the last audio written trailed the video frame it followed, in ms of PTS.",
          minimum: 0,
        }),
      },
      { description: "The session's audio (issue 13): mode, codecs, counters, hold queue." },
    ),
    latencyMs: object(
      {
        p50: number({ description: "Median frame latency in milliseconds.", minimum: 0 }),
        p95: number({ description: "95th percentile frame latency in milliseconds.", minimum: 0 }),
      },
      { description: "Frame latency through ComfyStream (matched by RTP timestamp) over the last minute." },
    ),
    reconnects: counter("ComfyStream reconnections so far."),
    lastError: object(
      {
        component: string({
          description:
            "Part that failed: trickle-input, trickle-output, control, events, comfystream or ffmpeg.",
          maxLength: 64,
        }),
        message: string({ description: "What went wrong.", maxLength: 4096 }),
        time: string({ description: "When it happened.", format: "date-time" }),
      },
      { description: "The most recent error, kept after recovery." },
    ),
  },
  { description: "Live numbers written by the relay pod (at most once a second and on state changes)." },
);

export const relaySessionStatusSchema = object(
  {
    phase: stringEnum(RELAY_SESSION_PHASES, {
      description:
        "Lifecycle phase: Pending (no pod yet), Starting (pod starting), Connecting (WebRTC/trickle connecting), Running, Degraded (running with problems), Succeeded or Failed (final).",
    }),
    conditions: array(conditionSchema, {
      description: "Current observations, Ready first; one entry per type.",
      listMapKeys: ["type"],
    }),
    observedGeneration: integer({
      description: "metadata.generation the operator last acted on.",
      minimum: 0,
      format: "int64",
    }),
    podName: string({ description: "Name of the current session pod." }),
    startTime: string({ description: "When the first session pod started.", format: "date-time" }),
    completionTime: string({
      description: "When the session reached Succeeded or Failed.",
      format: "date-time",
    }),
    restarts: integer({ description: "How many times the operator re-created the session pod.", minimum: 0 }),
    allocation: object(
      {
        pool: string({ description: "The RelayPool the pod came from." }),
        podName: string({ description: "The warm pod handed to this session." }),
        allocationTime: string({
          description: "When the operator claimed the pod for this session.",
          format: "date-time",
        }),
        waitedSeconds: number({
          description:
            "From the session's first sight by the operator to the claim: how long allocation took (includes waiting for an exhausted pool).",
          minimum: 0,
        }),
      },
      {
        description:
          "The warm pod of spec.poolRef this session was given; unset until allocated or without a pool.",
      },
    ),
    relay: relayReport,
  },
  { description: "Observed state; the operator writes everything but relay, the relay pod writes relay." },
);

// ---------------------------------------------------------------------------------------------
// TypeScript types (derived from the declarations above)

export type RelaySessionStatus = StoredOf<typeof relaySessionStatusSchema>;
export type RelaySessionPhase = (typeof RELAY_SESSION_PHASES)[number];
export type RelaySessionCondition = NonNullable<RelaySessionStatus["conditions"]>[number];
export type RelayReport = NonNullable<RelaySessionStatus["relay"]>;
