// The RelayPool API (trickle-relay.io/v1alpha1), declared once like RelaySession: a pool of warm
// relay pods (relay idle, ComfyStream loaded and warmed up) that RelaySessions with spec.poolRef
// are handed atomically. The CRD schema and the TypeScript types come from these declarations.
//
// Also here: the labels and annotations a pool pod carries, because three parties read them (the
// pool controller, the session controller that claims pods, and the relay in the pod).

import type { V1ObjectMeta } from "@kubernetes/client-node";
import { conditionSchema } from "./relay-session-status.js";
import {
  comfystreamSchema,
  FRAME_RATE,
  FRAME_SIZE,
  podSchema,
  videoSchema,
  type ComfyWorkflow,
} from "./relay-session.js";
import {
  array,
  boolean,
  integer,
  intOrPercent,
  object,
  preserved,
  string,
  type SchemaNode,
  type StoredOf,
  type WrittenOf,
} from "./schema-builder.js";
import { RELAY_SESSION_API_VERSION, RELAY_SESSION_GROUP } from "./names.js";

export const RELAY_POOL_KIND = "RelayPool";
export const RELAY_POOL_LIST_KIND = "RelayPoolList";
export const RELAY_POOL_PLURAL = "relaypools";
export const RELAY_POOL_SINGULAR = "relaypool";
export const RELAY_POOL_SHORT_NAME = "rlp";
export const RELAY_POOL_CRD_NAME = `${RELAY_POOL_PLURAL}.${RELAY_SESSION_GROUP}` as const;

/** Label on every pod of a pool: the pool's name (the pool's selector, also after allocation). */
export const LABEL_POOL = "trickle-relay.io/pool";
/**
 * Label with the pod's pool state, which the relay in the pod writes (warming → ready) and the
 * operator writes on allocation (allocated). Shown by `kubectl get pods -L trickle-relay.io/pool-state`.
 */
export const LABEL_POOL_STATE = "trickle-relay.io/pool-state";
export const POOL_POD_STATES = ["warming", "ready", "allocated", "draining"] as const;
export type PoolPodState = (typeof POOL_POD_STATES)[number];
/** Annotation the operator writes on a claimed pod: "namespace/name" of the session it serves. */
export const ANNOTATION_ALLOCATED_SESSION = "trickle-relay.io/allocated-session";
/** Annotation the operator writes on a claimed pod: when it was claimed (RFC 3339, milliseconds). */
export const ANNOTATION_ALLOCATED_AT = "trickle-relay.io/allocated-at";
/** Annotation the operator writes on a claimed pod: how long the session waited for it, in seconds. */
export const ANNOTATION_ALLOCATION_WAITED_SECONDS = "trickle-relay.io/allocation-waited-seconds";
/**
 * Annotation the relay of a `spec.recycle` pool writes on its own pod after its session ended cleanly
 * and ComfyStream passed the health check: the allocated-at of the claim that ended. The session
 * controller reads it as the session's Succeeded; the pool controller then unclaims the pod (idle again).
 */
export const ANNOTATION_RECYCLED = "trickle-relay.io/recycled";
/**
 * A warm pod's claim record: a Lease (coordination.k8s.io/v1) named like the pod, in its namespace,
 * created by the operator with the pod and owned by it. `spec.holderIdentity` says whose the pod is:
 * empty while idle, "namespace/name" of the session it was handed to (with the ANNOTATION_ALLOCATED_*
 * annotations and the session's uid and attempt as labels), or CLAIM_HOLDER_DRAIN while it is being
 * scaled away. The operator changes it only with an update carrying the Lease's resourceVersion, so
 * two claims of one pod can never both succeed; the relay in the pod watches this Lease.
 *
 * Why a Lease and not the pod itself: the claim is the one write a session waits for, and under a
 * burst the apiserver answered an update of a whole pod in ~100–200 ms against ~10–20 ms for a Lease
 * (bench-results/pool.md, sixth session). The pod's labels and owner follow the claim off that path.
 */
export const CLAIM_LEASE_API_VERSION = "coordination.k8s.io/v1";
/** The holder of a claim Lease whose pod is being removed (scale-down, pool deleted): never handed out. */
export const CLAIM_HOLDER_DRAIN = "trickle-relay.io/drain";
/**
 * What a claim Lease says about its pod, as the operator reads it (its pool and session controllers
 * both): idle, draining, or claimed for a session (its uid, "namespace/name", attempt and claim stamp).
 */
export type LeaseClaim =
  | { kind: "idle" }
  | { kind: "drain" }
  | { kind: "session"; sessionUid: string; session: string; attempt: number; allocatedAt: string };
/** The claim Lease of pool pod `podName` (same namespace). */
export function claimLeaseName(podName: string): string {
  return podName;
}
/** The condition reason of a pooled session waiting for an idle pod. */
export const POOL_EXHAUSTED_REASON = "PoolExhausted";

const autoscale = object(
  {
    bufferSize: intOrPercent({
      description:
        "Idle warm pods to keep on top of the allocated ones: a count (e.g. 2) or a percentage of the allocated pods, rounded up (e.g. 25%).",
    }),
    minReplicas: integer({ description: "Fewest pods of the pool.", minimum: 0, default: 0 }),
    maxReplicas: integer({
      description: "Most pods of the pool (idle and allocated).",
      minimum: 1,
      required: true,
    }),
  },
  {
    description:
      "Buffer autoscaler (Agones' FleetAutoscaler buffer policy): the pool holds allocated + bufferSize pods, between minReplicas and maxReplicas. When set, it decides the pool's size and spec.replicas is not used.",
  },
);

const warmup = object(
  {
    prompts: array(
      preserved<ComfyWorkflow>()({
        description: "One ComfyUI workflow in API format, as in RelaySession spec.prompts.",
      }),
      {
        description:
          "Workflows the warm-up runs through ComfyStream, normally the ones the sessions will use, so that the models are loaded and compiled before the first real frame. Empty: ComfyStream's pass-through.",
      },
    ),
    durationSeconds: integer({
      description:
        "Length of the synthetic stream sent through ComfyStream during warm-up; the pod reports Ready once frames came back (or, 0, right after ComfyStream answered the offer).",
      minimum: 0,
      maximum: 600,
      default: 3,
    }),
  },
  { description: "The warm-up a pool pod runs once before it reports Ready.", default: {} },
);

const template = object(
  {
    comfystream: { schema: comfystreamSchema.schema, presence: "required" as const } as SchemaNode<
      StoredOf<typeof comfystreamSchema>,
      WrittenOf<typeof comfystreamSchema>,
      "required"
    >,
    width: integer({ description: "Width of the warm-up stream's frames.", ...FRAME_SIZE }),
    height: integer({ description: "Height of the warm-up stream's frames.", ...FRAME_SIZE }),
    frameRate: integer({ description: "Frame rate of the warm-up stream.", ...FRAME_RATE }),
    video: videoSchema,
    pod: podSchema,
    warmup,
  },
  {
    description:
      "What every pod of the pool is: ComfyStream (url or sidecar), the relay pod's image, resources (incl. nvidia.com/gpu) and placement, the video defaults and the warm-up. A pooled session's own width, height, frameRate and video settings are used for its stream.",
    required: true,
  },
);

export const relayPoolSpecSchema = object(
  {
    template,
    replicas: integer({
      description:
        "Pods the pool keeps (idle and allocated). `kubectl scale rlp/NAME --replicas=N` and an HorizontalPodAutoscaler write it through the scale subresource.",
      minimum: 0,
      default: 1,
    }),
    autoscale,
    recycle: boolean({
      description:
        "false: a pod whose session ended is deleted and the pool refills (ComfyStream keeps state per peer). true: after a clean end of its session and a health check of ComfyStream (warmed up again if it stopped answering) the pod returns to idle and serves the next session; a failed session still replaces the pod. Applies to pods created after the change.",
      default: false,
    }),
  },
  { description: "Desired pool: what a warm pod is and how many to keep.", required: true },
);

export const relayPoolStatusSchema = object(
  {
    replicas: integer({ description: "Pods of the pool that exist (any state).", minimum: 0 }),
    desiredReplicas: integer({
      description: "Pods the pool should have now (spec.replicas, or the autoscaler's figure).",
      minimum: 0,
    }),
    readyReplicas: integer({ description: "Warm, idle pods ready to be allocated.", minimum: 0 }),
    allocatedReplicas: integer({ description: "Pods serving a session.", minimum: 0 }),
    warmingReplicas: integer({ description: "Pods starting or warming up.", minimum: 0 }),
    waitingSessions: integer({
      description: "Sessions waiting for an idle pod (PoolExhausted).",
      minimum: 0,
    }),
    selector: string({
      description: "Label selector of the pool's pods (for the scale subresource and HPAs).",
    }),
    observedGeneration: integer({
      description: "metadata.generation last acted on.",
      minimum: 0,
      format: "int64",
    }),
    conditions: array(conditionSchema, {
      description: "Ready (at least one idle warm pod) and Exhausted (sessions are waiting).",
      listMapKeys: ["type"],
    }),
  },
  { description: "Observed state of the pool, written by the operator." },
);

export type RelayPoolSpec = StoredOf<typeof relayPoolSpecSchema>;
export type RelayPoolSpecInput = WrittenOf<typeof relayPoolSpecSchema>;
export type RelayPoolTemplate = RelayPoolSpec["template"];
export type RelayPoolStatus = StoredOf<typeof relayPoolStatusSchema>;

export interface RelayPool {
  apiVersion: typeof RELAY_SESSION_API_VERSION;
  kind: typeof RELAY_POOL_KIND;
  metadata: V1ObjectMeta;
  spec: RelayPoolSpec;
  status?: RelayPoolStatus;
}

/** "25%" of `allocated` rounded up, or a plain count. */
export function resolveBufferSize(bufferSize: string | number | undefined, allocated: number): number {
  if (bufferSize === undefined) return 0;
  if (typeof bufferSize === "number") return bufferSize;
  if (bufferSize.endsWith("%")) return Math.ceil((allocated * Number(bufferSize.slice(0, -1))) / 100);
  return Number(bufferSize);
}

/** How many pods the pool should have with `allocated` of them serving sessions. */
export function desiredPoolReplicas(spec: RelayPoolSpec, allocated: number): number {
  const auto = spec.autoscale;
  if (!auto) return spec.replicas;
  const wanted = allocated + resolveBufferSize(auto.bufferSize, allocated);
  return Math.min(Math.max(wanted, auto.minReplicas), auto.maxReplicas);
}
