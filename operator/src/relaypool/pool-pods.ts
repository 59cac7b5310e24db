/**
 * A pool's pods as the pool controller sorts them. Pure functions of the cached pods and their claim
 * Leases (crds/src/relay-pool.ts): which are idle and warm (ready to hand out), warming, allocated to
 * a session, finished, or on their way out. A pod is claimed as soon as its Lease names a session,
 * before the claim's labels reach the pod.
 */
import type { V1Lease, V1Pod } from "@kubernetes/client-node";
import { LABEL_POOL, LABEL_POOL_STATE, type LeaseClaim, type PoolPodState } from "../../../crds/src/index.js";

/**
 * The claim Lease of each pod of one namespace, matched by name and owner uid, and what the two
 * together say: the Lease is the claim; the claim's labels reach the pod a moment later.
 */
export class PodLeases {
  private readonly byPod = new Map<string, V1Lease>();
  /** Leases of pool pods that are gone or were replaced by a pod of the same name. */
  readonly stale: V1Lease[] = [];

  constructor(
    pods: readonly V1Pod[],
    leases: readonly V1Lease[],
    private readonly shapes: {
      leaseClaim(lease: V1Lease): LeaseClaim;
      leasePodUid(lease: V1Lease): string | undefined;
      /** The session uid of the pod's labels. */
      sessionUid(pod: V1Pod): string | undefined;
      /** The attempt of the pod's labels, -1 if none. */
      attempt(pod: V1Pod): number;
    },
  ) {
    const podUid = new Map(pods.map((pod) => [pod.metadata?.name ?? "", pod.metadata?.uid]));
    for (const lease of leases) {
      const name = lease.metadata?.name ?? "";
      if (podUid.get(name) === shapes.leasePodUid(lease)) this.byPod.set(name, lease);
      else this.stale.push(lease);
    }
  }

  lease(pod: V1Pod): V1Lease | undefined {
    return this.byPod.get(pod.metadata?.name ?? "");
  }

  claim(pod: V1Pod): LeaseClaim | undefined {
    const lease = this.lease(pod);
    return lease ? this.shapes.leaseClaim(lease) : undefined;
  }

  /** The session uid the pod is claimed for: from its Lease, else its labels. */
  sessionUid(pod: V1Pod): string | undefined {
    const claim = this.claim(pod);
    return claim?.kind === "session" ? claim.sessionUid : this.shapes.sessionUid(pod);
  }

  /** The session attempt the pod serves: from its Lease, else its labels (-1 if none). */
  attempt(pod: V1Pod): number {
    const claim = this.claim(pod);
    return claim?.kind === "session" ? claim.attempt : this.shapes.attempt(pod);
  }

  /** Claimed by its Lease for a session whose labels are not on the pod yet. */
  labelsPending(pod: V1Pod): boolean {
    const claim = this.claim(pod);
    return claim?.kind === "session" && claim.sessionUid !== this.shapes.sessionUid(pod);
  }
}

export interface PoolPods {
  /** Idle, warmed up and Ready: what a session can be given. Lowest index first. */
  idleReady: V1Pod[];
  /** Idle, not Ready yet (starting, pulling images, warming up), or without its claim Lease yet. */
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

/**
 * The cached pods of pool `poolName` in `pods` (one namespace), sorted into their states by their
 * labels and their claim Leases (`leases`). A pod without a Lease is never idle (it cannot be claimed).
 */
export function sortPoolPods(
  pods: readonly V1Pod[],
  poolName: string,
  shapes: { indexOf(poolName: string, podName?: string): number },
  leases: PodLeases,
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
    const claim = leases.claim(pod);
    const claimed = leases.sessionUid(pod) !== undefined;
    if (pod.metadata?.deletionTimestamp) sorted.terminating.push(pod);
    else if (claimed) (isFinished(pod) ? sorted.allocatedFinished : sorted.allocated).push(pod);
    else if (isFinished(pod)) sorted.idleFinished.push(pod);
    else if (podState(pod) === "draining" || claim?.kind === "drain") sorted.draining.push(pod);
    else if (isPodReady(pod) && claim !== undefined) sorted.idleReady.push(pod);
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
