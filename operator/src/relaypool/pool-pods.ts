/**
 * A pool's pods as the pool controller sorts them. Pure functions of the cached pods: which are
 * idle and warm (ready to hand out), warming, allocated to a session, finished, or on their way out.
 */
import type { V1Pod } from "@kubernetes/client-node";
import { LABEL_POOL, LABEL_POOL_STATE, type PoolPodState } from "../../../crds/src/index.js";

export interface PoolPods {
  /** Idle, warmed up and Ready: what a session can be given. Lowest index first. */
  idleReady: V1Pod[];
  /** Idle, not Ready yet (starting, pulling images, warming up). */
  warming: V1Pod[];
  /** Claimed for a session and not finished. */
  allocated: V1Pod[];
  /** Claimed for a session, and its containers ended (the session's controller reads the end first). */
  allocatedFinished: V1Pod[];
  /** Idle pods marked for removal (scale-down, pool deleted): never handed out, deleted next. */
  draining: V1Pod[];
  /** Never claimed, and ended (crashed while idle): replaced. */
  idleFinished: V1Pod[];
  /** Being deleted. */
  terminating: V1Pod[];
}

export function isPodReady(pod: V1Pod): boolean {
  return (
    pod.status?.phase === "Running" &&
    pod.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true
  );
}

export function isFinished(pod: V1Pod): boolean {
  return pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed";
}

export function podState(pod: V1Pod): PoolPodState | undefined {
  return pod.metadata?.labels?.[LABEL_POOL_STATE] as PoolPodState | undefined;
}

/** The cached pods of pool `poolName` in `pods` (one namespace), sorted into their states. */
export function sortPoolPods(
  pods: readonly V1Pod[],
  poolName: string,
  shapes: { sessionUid(pod: V1Pod): string | undefined; indexOf(poolName: string, podName?: string): number },
): PoolPods {
  const sorted: PoolPods = {
    idleReady: [],
    warming: [],
    allocated: [],
    allocatedFinished: [],
    idleFinished: [],
    draining: [],
    terminating: [],
  };
  for (const pod of pods) {
    if (pod.metadata?.labels?.[LABEL_POOL] !== poolName) continue;
    const claimed = shapes.sessionUid(pod) !== undefined;
    if (pod.metadata?.deletionTimestamp) sorted.terminating.push(pod);
    else if (claimed) (isFinished(pod) ? sorted.allocatedFinished : sorted.allocated).push(pod);
    else if (isFinished(pod)) sorted.idleFinished.push(pod);
    else if (podState(pod) === "draining") sorted.draining.push(pod);
    else if (isPodReady(pod)) sorted.idleReady.push(pod);
    else sorted.warming.push(pod);
  }
  const byIndex = (a: V1Pod, b: V1Pod) =>
    shapes.indexOf(poolName, a.metadata?.name) - shapes.indexOf(poolName, b.metadata?.name);
  sorted.idleReady.sort(byIndex);
  sorted.warming.sort(byIndex);
  return sorted;
}

/** Pods that count towards the pool's size: all but the finished and the terminating ones. */
export function liveCount(sorted: PoolPods): number {
  return sorted.idleReady.length + sorted.warming.length + sorted.allocated.length;
}
