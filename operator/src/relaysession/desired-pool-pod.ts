// The objects a RelayPool should have: its warm pods and the RBAC they share. Here, beside the
// session's pod, because a warm pod is a relay pod (same image, containers, security, placement and
// GPU rules); only its arguments, labels, owner and readiness differ. operator.ts hands these
// builders to the pool controller (operator/src/relaypool), which decides how many to keep.

import type { V1Container, V1Lease, V1OwnerReference, V1Pod, V1Toleration } from "@kubernetes/client-node";
import {
  CLAIM_HOLDER_DRAIN,
  CLAIM_LEASE_API_VERSION,
  claimLeaseName,
  ANNOTATION_ALLOCATED_AT,
  ANNOTATION_ALLOCATED_SESSION,
  ANNOTATION_ALLOCATION_WAITED_SECONDS,
  ANNOTATION_RECYCLED,
  LABEL_POOL,
  LABEL_POOL_STATE,
  RELAY_POOL_KIND,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_PLURAL,
  type LeaseClaim,
  type RelayPool,
  type RelaySession,
} from "../../../crds/src/index.js";
import {
  DEFAULT_GPU_RESOURCE_NAME,
  RELAY_GPU_ENV,
  RELAY_TMP_PATH,
  TMP_VOLUME,
  comfystreamContainer,
  comfystreamUrlOfSpec,
  controllerReference,
  fieldEnv,
  relayRbacObjects,
  relaySecurityContext,
  requestsGpu,
  sessionOwnerReference,
  toResourceRequirements,
  type RelayPodDefaults,
  type RelayRbac,
} from "./desired-pod.js";
import {
  APP_NAME,
  LABEL_ATTEMPT,
  LABEL_COMPONENT,
  LABEL_MANAGED_BY,
  LABEL_NAME,
  LABEL_SESSION,
  LABEL_SESSION_UID,
  OPERATOR_NAME,
  RELAY_COMPONENT,
  RELAY_CONTAINER,
  sessionLabelValue,
} from "./labels.js";

/** Where a warm relay answers its readiness probe (`run --pool-pod`): 200 once warmed up and idle. */
export const POOL_READY_PORT = 8892;
export const POOL_READY_PATH = "/readyz";

/** `POOL-warm-N`: deterministic, so a repeated create after a stale cache is a harmless 409. */
export function poolPodName(poolName: string, index: number): string {
  return `${poolName}-warm-${index}`;
}

/** The index of a pool pod from its name, or -1. */
export function poolPodIndex(poolName: string, podName: string | undefined): number {
  const prefix = `${poolName}-warm-`;
  if (!podName?.startsWith(prefix)) return -1;
  const index = Number(podName.slice(prefix.length));
  return Number.isInteger(index) && index >= 0 ? index : -1;
}

/** `POOL-pool-relay`: the ServiceAccount, Role and RoleBinding the pool's pods share. */
export function poolRbacName(poolName: string): string {
  return `${poolName}-pool-relay`;
}

export function poolOwnerReference(pool: RelayPool): V1OwnerReference {
  return controllerReference(RELAY_POOL_KIND, pool.metadata);
}

export function poolPodLabels(pool: RelayPool): Record<string, string> {
  return {
    [LABEL_NAME]: APP_NAME,
    [LABEL_COMPONENT]: RELAY_COMPONENT,
    [LABEL_MANAGED_BY]: OPERATOR_NAME,
    [LABEL_POOL]: pool.metadata.name ?? "",
  };
}

export interface PoolPodOptions {
  relayImage: string;
  defaults?: RelayPodDefaults;
}

/** Warm pod number `index` of `pool`: the relay idles (`run --pool-pod`) until a session claims it. */
export function desiredPoolPod(pool: RelayPool, index: number, options: PoolPodOptions): V1Pod {
  const namespace = pool.metadata.namespace ?? "default";
  const poolName = pool.metadata.name ?? "";
  const template = pool.spec.template;
  const placement = template.pod ?? {};
  const warmup = template.warmup ?? { durationSeconds: 3 };
  const defaults = options.defaults ?? {};

  const relay: V1Container = {
    name: RELAY_CONTAINER,
    image: placement.image ?? options.relayImage,
    command: ["trickle-relay"],
    args: [
      "run",
      "--pool-pod",
      "--pool-comfystream",
      comfystreamUrlOfSpec(template.comfystream),
      "--pool-offer-timeout",
      String(template.comfystream.offerTimeoutSeconds ?? 300),
      "--warmup-seconds",
      String(warmup.durationSeconds ?? 3),
      "--width",
      String(template.width ?? 512),
      "--height",
      String(template.height ?? 512),
      "--frame-rate",
      String(template.frameRate ?? 30),
      ...(pool.spec.recycle ? ["--pool-recycle"] : []),
    ],
    env: [
      fieldEnv("POD_NAME", "metadata.name"),
      fieldEnv("POD_NAMESPACE", "metadata.namespace"),
      ...(warmup.prompts?.length
        ? [{ name: "TRICKLE_RELAY_WARMUP_PROMPTS", value: JSON.stringify(warmup.prompts) }]
        : []),
    ],
    ports: [{ name: "pool-ready", containerPort: POOL_READY_PORT, protocol: "TCP" }],
    // Ready only once ComfyStream answered and the warm-up ran: the operator hands out Ready pods only.
    readinessProbe: {
      httpGet: { path: POOL_READY_PATH, port: POOL_READY_PORT },
      periodSeconds: 1,
      failureThreshold: 1,
    },
    securityContext: relaySecurityContext(),
    volumeMounts: [{ name: TMP_VOLUME, mountPath: RELAY_TMP_PATH }],
  };
  if (placement.imagePullPolicy) relay.imagePullPolicy = placement.imagePullPolicy;
  const relayResources = toResourceRequirements(placement.resources) ?? structuredClone(defaults.resources);
  if (relayResources) relay.resources = relayResources;
  if (requestsGpu(relayResources, defaults.gpuResourceName ?? DEFAULT_GPU_RESOURCE_NAME)) {
    relay.env!.push(...RELAY_GPU_ENV.map((env) => ({ ...env })));
  }
  const containers = [relay];
  const sidecar = template.comfystream.sidecar;
  if (sidecar)
    containers.push(comfystreamContainer(sidecar, defaults.gpuResourceName ?? DEFAULT_GPU_RESOURCE_NAME));

  const pod: V1Pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: poolPodName(poolName, index),
      namespace,
      labels: { ...poolPodLabels(pool), [LABEL_POOL_STATE]: "warming" },
      ownerReferences: [poolOwnerReference(pool)],
    },
    spec: {
      restartPolicy: "Never",
      serviceAccountName: poolRbacName(poolName),
      automountServiceAccountToken: true,
      enableServiceLinks: false,
      securityContext: { seccompProfile: { type: "RuntimeDefault" } },
      containers,
      volumes: [{ name: TMP_VOLUME, emptyDir: {} }],
    },
  };
  const spec = pod.spec!;
  const nodeSelector = placement.nodeSelector ?? defaults.nodeSelector;
  if (nodeSelector) spec.nodeSelector = { ...nodeSelector };
  const tolerations = placement.tolerations ?? defaults.tolerations;
  if (tolerations) spec.tolerations = tolerations.map((t) => ({ ...t }) as V1Toleration);
  if (placement.affinity) spec.affinity = structuredClone(placement.affinity);
  const runtimeClassName = placement.runtimeClassName ?? defaults.runtimeClassName;
  if (runtimeClassName) spec.runtimeClassName = runtimeClassName;
  if (placement.priorityClassName) spec.priorityClassName = placement.priorityClassName;
  if (placement.imagePullSecrets)
    spec.imagePullSecrets = placement.imagePullSecrets.map((s) => ({ name: s.name }));
  return pod;
}

/**
 * The pool pods' ServiceAccount, Role and RoleBinding. A warm pod does not know which session it
 * will serve, so it may read the namespace's RelaySessions and patch their status (the relay writes
 * only status.relay of the session its pod was given), read Leases (its own claim Lease, to see the
 * claim), and read pods and patch them (its own, to say it is idle again after a recycled session).
 */
export function desiredPoolRbac(pool: RelayPool): RelayRbac {
  return relayRbacObjects(
    {
      name: poolRbacName(pool.metadata.name ?? ""),
      namespace: pool.metadata.namespace ?? "default",
      labels: poolPodLabels(pool),
      owner: poolOwnerReference(pool),
    },
    [
      {
        apiGroups: [RELAY_SESSION_GROUP],
        resources: [RELAY_SESSION_PLURAL],
        verbs: ["get", "list", "watch"],
      },
      {
        apiGroups: [RELAY_SESSION_GROUP],
        resources: [`${RELAY_SESSION_PLURAL}/status`],
        verbs: ["get", "patch"],
      },
      // patch: a recycling pod marks itself idle again (ANNOTATION_RECYCLED). Granted whatever
      // spec.recycle says, since the Role is made once per pool and recycle may be switched on later.
      { apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch", "patch"] },
      { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "list", "watch"] },
    ],
  );
}

export interface ClaimStamp {
  at: Date;
  /** From the operator's first sight of the session to this claim. */
  waitedSeconds: number;
  /** The session's current attempt (status.restarts). */
  attempt: number;
}

/** The claim Lease of a new warm pod (crds/src/relay-pool.ts): no holder (idle), owned by the pod. */
export function idleClaimLease(pool: RelayPool, pod: V1Pod): V1Lease {
  const name = pod.metadata?.name ?? "";
  return {
    apiVersion: CLAIM_LEASE_API_VERSION,
    kind: "Lease",
    metadata: {
      name: claimLeaseName(name),
      namespace: pod.metadata?.namespace ?? pool.metadata.namespace ?? "default",
      labels: poolPodLabels(pool),
      // Goes with its pod (garbage collector); the pool controller also removes one left behind.
      ownerReferences: [
        { apiVersion: "v1", kind: "Pod", name, uid: pod.metadata?.uid ?? "", blockOwnerDeletion: false },
      ],
    },
    spec: {},
  };
}

export function leaseClaimOf(lease: V1Lease): LeaseClaim {
  const holder = lease.spec?.holderIdentity ?? "";
  if (holder === "") return { kind: "idle" };
  if (holder === CLAIM_HOLDER_DRAIN) return { kind: "drain" };
  const attempt = Number(lease.metadata?.labels?.[LABEL_ATTEMPT]);
  return {
    kind: "session",
    sessionUid: lease.metadata?.labels?.[LABEL_SESSION_UID] ?? "",
    session: holder,
    attempt: Number.isInteger(attempt) ? attempt : -1,
    allocatedAt: lease.metadata?.annotations?.[ANNOTATION_ALLOCATED_AT] ?? "",
  };
}

/** The uid of the pod a claim Lease belongs to (its owner), if any. */
export function leasePodUid(lease: V1Lease): string | undefined {
  return lease.metadata?.ownerReferences?.find((ref) => ref.kind === "Pod")?.uid;
}

/** The labels and annotations a claim writes (on the Lease and the pod), which unclaiming removes. */
const CLAIM_LABELS = [LABEL_SESSION, LABEL_SESSION_UID, LABEL_ATTEMPT];
const CLAIM_ANNOTATIONS = [
  ANNOTATION_ALLOCATED_SESSION,
  ANNOTATION_ALLOCATED_AT,
  ANNOTATION_ALLOCATION_WAITED_SECONDS,
];

/** A copy of `map` without `keys`. */
function without(map: Record<string, string> | undefined, keys: readonly string[]): Record<string, string> {
  const copy: Record<string, string> = { ...map };
  for (const key of keys) delete copy[key];
  return copy;
}

function claimLabels(session: RelaySession, stamp: ClaimStamp): Record<string, string> {
  return {
    [LABEL_SESSION]: sessionLabelValue(session.metadata.name ?? ""),
    [LABEL_SESSION_UID]: session.metadata.uid ?? "",
    [LABEL_ATTEMPT]: String(stamp.attempt),
  };
}

function claimAnnotations(session: RelaySession, stamp: ClaimStamp): Record<string, string> {
  return {
    [ANNOTATION_ALLOCATED_SESSION]: `${session.metadata.namespace}/${session.metadata.name}`,
    [ANNOTATION_ALLOCATED_AT]: stamp.at.toISOString(),
    [ANNOTATION_ALLOCATION_WAITED_SECONDS]: String(Math.round(stamp.waitedSeconds * 1000) / 1000),
  };
}

/**
 * The claim: the pod's Lease (as cached) held by `session`. The caller writes it with the cached
 * resourceVersion (update): of two claims of one pod only one can succeed.
 */
export function claimedLease(lease: V1Lease, session: RelaySession, stamp: ClaimStamp): V1Lease {
  return {
    ...lease,
    metadata: {
      ...lease.metadata,
      labels: { ...lease.metadata?.labels, ...claimLabels(session, stamp) },
      annotations: { ...lease.metadata?.annotations, ...claimAnnotations(session, stamp) },
    },
    spec: { holderIdentity: `${session.metadata.namespace}/${session.metadata.name}` },
  };
}

/** The Lease of a pod being scaled away (written with the cached resourceVersion: a claimed pod is spared). */
export function drainingLease(lease: V1Lease): V1Lease {
  return { ...lease, spec: { holderIdentity: CLAIM_HOLDER_DRAIN } };
}

/** The Lease of a recycled pod: no holder, no claim labels or annotations (idle again). */
export function freedLease(lease: V1Lease): V1Lease {
  const labels = without(lease.metadata?.labels, CLAIM_LABELS);
  const annotations = without(lease.metadata?.annotations, CLAIM_ANNOTATIONS);
  return { ...lease, metadata: { ...lease.metadata, labels, annotations }, spec: {} };
}

/**
 * What follows a claim on the pod itself (a merge patch, after the Lease was written): the session's
 * labels (the pod is then the session's pod of this attempt, found by the session controller's owner
 * index), the state `allocated`, the claim annotations, and the session as the only controller owner,
 * so that deleting the pool leaves the session's pod alone and deleting the session removes it. No
 * resourceVersion: the Lease already decided whose the pod is.
 */
export function claimPodPatch(session: RelaySession, stamp: ClaimStamp): Pick<V1Pod, "metadata"> {
  return {
    metadata: {
      labels: { ...claimLabels(session, stamp), [LABEL_POOL_STATE]: "allocated" },
      annotations: claimAnnotations(session, stamp),
      ownerReferences: [sessionOwnerReference(session)],
    },
  };
}

/** The claim stamp a session Lease carries (to write the same one on the pod). */
export function stampOfLease(lease: V1Lease): ClaimStamp {
  const annotations = lease.metadata?.annotations ?? {};
  const attempt = Number(lease.metadata?.labels?.[LABEL_ATTEMPT]);
  const waited = Number(annotations[ANNOTATION_ALLOCATION_WAITED_SECONDS]);
  return {
    at: new Date(annotations[ANNOTATION_ALLOCATED_AT] ?? 0),
    waitedSeconds: Number.isFinite(waited) ? waited : 0,
    attempt: Number.isInteger(attempt) ? attempt : 0,
  };
}

/**
 * Whether the relay of `pod` (a claimed warm pod) ended its session cleanly and is idle again: it
 * marked the pod with the allocated-at of this very claim (a mark of an earlier claim is stale).
 */
export function isRecycledPoolPod(pod: V1Pod): boolean {
  const annotations = pod.metadata?.annotations;
  const recycled = annotations?.[ANNOTATION_RECYCLED];
  return recycled !== undefined && recycled === annotations?.[ANNOTATION_ALLOCATED_AT];
}

/**
 * A recycled pod (as cached) given back to `pool`: the reverse of claimPodPatch (session labels and
 * claim annotations gone, the pool the controller owner again, state `ready`). Written with the
 * cached resourceVersion, like the claim.
 */
export function unclaimedPoolPod(pod: V1Pod, pool: RelayPool): V1Pod {
  const metadata = { ...pod.metadata };
  const idle = { ...pod, metadata };
  metadata.labels = { ...without(metadata.labels, CLAIM_LABELS), [LABEL_POOL_STATE]: "ready" };
  metadata.annotations = without(metadata.annotations, [...CLAIM_ANNOTATIONS, ANNOTATION_RECYCLED]);
  metadata.ownerReferences = [poolOwnerReference(pool)];
  return idle;
}
