/**
 * A RelaySession as the standalone API's `session` object. The object is built by the standalone
 * service's own sessionView, so field names, order and `processing_health` are the same; what the
 * resource does not carry is then set to null rather than invented (see README.md, "Differences"),
 * and the Kubernetes facts a caller may want (phase, Ready, pod, generations) are added.
 */
import {
  FRAME_RATE,
  FRAME_SIZE,
  READY_CONDITION,
  defaultOutputUrl,
  type RelaySession,
  type RelaySessionPhase,
} from "../../../crds/src/index.js";
import { sessionView, type SessionState, type SessionStatus } from "../../../relay-pod/src/index.js";
import { CREATED_BY_LABEL, GATEWAY_CREATED_BY, SESSION_ID_ANNOTATION } from "./session-names.js";

/**
 * The standalone service's state names where one means the same; "pending" (no pod running yet)
 * has no standalone equivalent.
 */
const STATE_BY_PHASE: Record<RelaySessionPhase, SessionState | "pending"> = {
  Pending: "pending",
  Starting: "starting",
  Connecting: "connecting",
  Running: "running",
  Degraded: "degraded",
  Succeeded: "completed",
  Failed: "failed",
};

export const FINISHED_PHASES: ReadonlySet<string> = new Set<RelaySessionPhase>(["Succeeded", "Failed"]);

/** The id the standalone API shows: the caller's id when the name was derived from it. */
export function sessionIdOf(session: RelaySession): string {
  return session.metadata.annotations?.[SESSION_ID_ANNOTATION] ?? session.metadata.name ?? "";
}

export function isGatewaySession(session: RelaySession): boolean {
  return session.metadata.labels?.[CREATED_BY_LABEL] === GATEWAY_CREATED_BY;
}

/** The URL the relay posts its offer to: the given server, or the sidecar on the pod's loopback. */
export function comfystreamUrlOf(session: RelaySession): string | null {
  const { url, sidecar } = session.spec.comfystream ?? {};
  if (url !== undefined) return url;
  if (sidecar !== undefined) return `http://127.0.0.1:${sidecar.port ?? 8889}`;
  return null;
}

export function outputUrlOf(session: RelaySession): string {
  const { inputUrl, outputUrl } = session.spec.trickle;
  if (outputUrl !== undefined) return outputUrl;
  try {
    return defaultOutputUrl(inputUrl);
  } catch {
    return ""; // the operator reports such a spec as Failed (InvalidSpec)
  }
}

export function relaySessionView(session: RelaySession): Record<string, unknown> {
  const { metadata, spec } = session;
  const status = session.status ?? {};
  const relay = status.relay ?? {};
  const queues = relay.queues ?? {};
  const queue = (reported: { size?: number; capacity?: number } | undefined) => ({
    size: reported?.size ?? 0,
    capacity: reported?.capacity ?? 0,
    dropped: 0, // not in the resource; nulled below
  });
  const ready = status.conditions?.find((condition) => condition.type === READY_CONDITION);
  const state: string = metadata.deletionTimestamp
    ? "stopping"
    : status.phase
      ? STATE_BY_PHASE[status.phase]
      : "pending";
  // A failed session's reason is in Ready (budget spent, deadline, invalid spec); otherwise the
  // relay's own last error is the most specific one.
  const lastError =
    status.phase === "Failed" && ready?.status === "False"
      ? { at: ready.lastTransitionTime, reason: ready.reason, message: ready.message }
      : relay.lastError
        ? {
            at: relay.lastError.time ?? "",
            reason: relay.lastError.component ?? "relay",
            message: relay.lastError.message ?? "",
          }
        : undefined;

  const standalone: SessionStatus = {
    id: sessionIdOf(session),
    state: "starting", // replaced below: phases and states are not the same set
    webrtcState: relay.webrtc?.connectionState ?? "new",
    createdAt: timestamp(metadata.creationTimestamp) ?? "",
    startedAt: timestamp(status.startTime),
    endedAt: timestamp(status.completionTime),
    inputUrl: spec.trickle.inputUrl,
    outputUrl: outputUrlOf(session),
    controlUrl: spec.trickle.controlUrl,
    eventsUrl: spec.trickle.eventsUrl,
    comfystreamUrl: comfystreamUrlOf(session) ?? "",
    width: spec.width ?? FRAME_SIZE.default,
    height: spec.height ?? FRAME_SIZE.default,
    frameRate: spec.frameRate ?? FRAME_RATE.default,
    mode: "transcode", // replaced below: the spec also has Auto
    encoder: codecOf(relay.encoder, ["nvenc", "x264", "none (passthrough)"]),
    decoder: codecOf(relay.decoder, ["nvdec", "software", "none (passthrough)"]),
    codecReason: relay.codecReason ?? "",
    queues: {
      decodedFrames: queue(queues.decodedFrames),
      processedFrames: queue(queues.processedFrames),
      outputSegments: queue(queues.outputSegments),
    },
    fps: { input: relay.inputFps ?? 0, output: relay.outputFps ?? 0 },
    frames: {
      in: relay.framesIn ?? 0,
      sent: 0,
      returned: 0,
      out: relay.framesOut ?? 0,
      dropped: 0,
      peerLimited: relay.framesPeerLimited ?? 0,
    },
    peerWindow: { capacity: 0, inFlight: 0, transcoderGop: null },
    segments: { in: relay.segmentsIn ?? 0, out: relay.segmentsOut ?? 0, dropped: 0, corrupt: 0 },
    outputKeyframes: {
      source: relay.outputKeyframes?.source ?? "peer",
      ...(relay.outputKeyframes?.reason ? { reason: relay.outputKeyframes.reason } : {}),
      reEncodedFrames: 0,
      idrIntervalSec: { last: null, max: relay.outputKeyframes?.idrIntervalSeconds ?? null },
    },
    latencyMs: { p50: relay.latencyMs?.p50 ?? null, p95: relay.latencyMs?.p95 ?? null, samples: 0 },
    hopLatencyMs: { forward: { p50: null, p95: null }, return: { p50: null, p95: null } },
    reconnects: relay.reconnects ?? 0,
    ffmpegRestarts: 0,
    inputClockJumps: relay.inputClockJumps ?? 0,
    audio: {
      mode: relay.audio?.mode ?? "none",
      reason: relay.audio?.reason ?? "",
      codecIn: relay.audio?.codecIn ?? null,
      codecOut: relay.audio?.codecOut ?? null,
      frames: {
        in: relay.audio?.framesIn ?? 0,
        out: relay.audio?.framesOut ?? 0,
        dropped: relay.audio?.framesDropped ?? 0,
        corrupt: relay.audio?.framesCorrupt ?? 0,
      },
      queue: { size: relay.audio?.queue?.size ?? 0, capacity: relay.audio?.queue?.capacity ?? 0 },
      avOffsetMs: relay.audio?.avOffsetMs ?? null,
    },
    promptsGeneration: 0,
    lastError,
  };
  const view = sessionView(standalone);
  const notInResource = null;
  return {
    ...view,
    status: state,
    comfystream_url: comfystreamUrlOf(session),
    mode: (spec.video?.mode ?? "Transcode").toLowerCase(),
    queue_dropped: notInResource,
    frames: {
      in: relay.framesIn ?? 0,
      sent: notInResource,
      returned: notInResource,
      out: relay.framesOut ?? 0,
      dropped: relay.framesDropped ?? 0,
      peer_limited: relay.framesPeerLimited ?? 0,
    },
    segments: {
      in: relay.segmentsIn ?? 0,
      out: relay.segmentsOut ?? 0,
      dropped: relay.segmentsDropped ?? 0,
      corrupt: notInResource,
    },
    latency_ms: {
      p50: relay.latencyMs?.p50 ?? null,
      p95: relay.latencyMs?.p95 ?? null,
      samples: notInResource,
    },
    ffmpeg_restarts: notInResource,
    // metadata.generation of the prompts ComfyStream runs (the standalone service counts updates).
    prompts_generation: relay.appliedPromptsGeneration ?? null,
    last_prompt_update: notInResource,
    // Kubernetes facts the standalone service has no field for.
    name: metadata.name,
    namespace: metadata.namespace,
    phase: status.phase ?? null,
    ready: ready ? { status: ready.status, reason: ready.reason, message: ready.message } : null,
    generation: metadata.generation ?? null,
    observed_generation: status.observedGeneration ?? null,
    pod_name: status.podName ?? null,
    restarts: status.restarts ?? 0,
    webrtc_ice_state: relay.webrtc?.iceConnectionState ?? null,
    report_updated_at: relay.lastUpdateTime ?? null,
    managed_by_gateway: isGatewaySession(session),
  };
}

/** Custom objects come back as plain JSON, but a typed client may have turned times into Dates. */
function timestamp(value: string | Date | undefined): string | undefined {
  if (value === undefined) return undefined;
  return value instanceof Date ? value.toISOString() : value;
}

/** A codec name the relay reported, if it is one the session view knows; null otherwise. */
function codecOf<T extends string>(value: string | undefined, known: readonly T[]): T | null {
  return known.includes(value as T) ? (value as T) : null;
}
