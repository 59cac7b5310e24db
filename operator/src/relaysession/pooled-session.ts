/**
 * What a pooled RelaySession (spec.poolRef) needs from the session controller. The claim itself is
 * the pool controller's (operator/src/relaypool/allocator.ts: it hands idle warm pods to waiting
 * sessions first come first served, one pool at a time); here the session side:
 *
 * - the session as the pod lifecycle sees it: its spec completed from the pool's template
 *   (ComfyStream, pod image, resources and placement), so a cold fallback pod and the restart budget work
 *   exactly as for a session without a pool;
 * - which of its pods is the claimed warm pod, and when the startup deadline started for it (the
 *   claim, not the pod's creation long before);
 * - what it says while it waits (phase Pending, reason PoolExhausted) and whether it goes cold.
 */
import type { V1Pod } from "@kubernetes/client-node";
import {
  ANNOTATION_ALLOCATED_AT,
  ANNOTATION_ALLOCATION_WAITED_SECONDS,
  LABEL_POOL,
  POOL_EXHAUSTED_REASON,
  type RelayPool,
  type RelaySession,
  type RelaySessionStatus,
} from "../../../crds/src/index.js";

/** What the session controller may ask of the pools (the pool informer and the pool controller). */
export interface PoolAccess {
  get(namespace: string, name: string): RelayPool | undefined;
  /** Idle warm pods of the pool that are Ready now (from the pod cache). */
  idleReadyPods(namespace: string, name: string): number;
  /**
   * Whether a warm pod's claim Lease already names the session for this attempt (the claim's labels
   * may not be on the pod yet).
   */
  claimPending(namespace: string, sessionUid: string, attempt: number): boolean;
  /** A session of the pool needs a pod: the pool controller looks at the pool soon. */
  requestAllocation(namespace: string, name: string): void;
}

export const POOL_NOT_FOUND_REASON = "PoolNotFound";

/** Whether `pod` is a warm pool pod (claimed for a session, or still idle). */
export function isPoolPod(pod: V1Pod): boolean {
  return pod.metadata?.labels?.[LABEL_POOL] !== undefined;
}

/** When the session's clock starts on `pod`: the claim for a warm pod, else the pod's creation. */
export function podStartFor(pod: V1Pod): string | Date | undefined {
  return pod.metadata?.annotations?.[ANNOTATION_ALLOCATED_AT] ?? pod.metadata?.creationTimestamp;
}

/**
 * The session with what its pool's template gives: ComfyStream and the pod (image, resources,
 * placement). The stream settings (size, rate, video) stay the session's own. The result only feeds the lifecycle's decisions and
 * the cold pod; nothing of it is written back to the session (GitOps tools must see no drift).
 */
export function withPoolTemplate(session: RelaySession, pool: RelayPool): RelaySession {
  const template = pool.spec.template;
  return {
    ...session,
    spec: {
      ...session.spec,
      comfystream: template.comfystream,
      ...(template.pod ? { pod: template.pod } : {}),
    },
  };
}

/** The waiting status of a pooled session without a pod. */
export function waitingOutcome(session: RelaySession, pool: RelayPool | undefined) {
  const poolName = session.spec.poolRef?.name ?? "";
  if (!pool) {
    return {
      kind: "WaitingForPool" as const,
      reason: POOL_NOT_FOUND_REASON,
      message: `RelayPool ${poolName} does not exist (yet); waiting for it`,
    };
  }
  return {
    kind: "WaitingForPool" as const,
    reason: POOL_EXHAUSTED_REASON,
    message: `waiting for an idle warm pod of RelayPool ${poolName} (first come, first served)`,
  };
}

/** status.allocation for a warm pool pod claimed for the session (from what the claim wrote on it). */
export function allocationOfPod(pod: V1Pod): RelaySessionStatus["allocation"] | undefined {
  const pool = pod.metadata?.labels?.[LABEL_POOL];
  const allocatedAt = pod.metadata?.annotations?.[ANNOTATION_ALLOCATED_AT];
  if (!pool || !allocatedAt) return undefined;
  const allocation: NonNullable<RelaySessionStatus["allocation"]> = {
    pool,
    podName: pod.metadata?.name ?? "",
    allocationTime: allocatedAt,
  };
  const waited = Number(pod.metadata?.annotations?.[ANNOTATION_ALLOCATION_WAITED_SECONDS]);
  if (Number.isFinite(waited) && waited >= 0) allocation.waitedSeconds = waited;
  return allocation;
}
