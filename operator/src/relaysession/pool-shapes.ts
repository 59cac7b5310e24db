/**
 * What the pool controller (operator/src/relaypool) needs to know about relay pods, from the
 * session side that defines them: the warm pod of a pool, its RBAC, its claim Lease, and the labels
 * that tie a pod to a session. operator.ts hands this object to the pool controller.
 */
import type { KubeConfig, V1Lease, V1Pod } from "@kubernetes/client-node";
import type { RelayPool, RelaySession } from "../../../crds/src/index.js";
import type { RelayPodDefaults } from "./desired-pod.js";
import {
  claimPodPatch,
  claimedLease,
  desiredPoolPod,
  desiredPoolRbac,
  drainingLease,
  freedLease,
  idleClaimLease,
  isRecycledPoolPod,
  leaseClaimOf,
  leasePodUid,
  poolPodIndex,
  stampOfLease,
  unclaimedPoolPod,
  type ClaimStamp,
} from "./desired-pool-pod.js";
import { LABEL_SESSION_UID } from "./labels.js";
import { attemptOf } from "./pod-lifecycle.js";
import { SessionRbac } from "./session-rbac.js";

export interface PoolShapeOptions {
  kubeConfig: KubeConfig;
  relayImage: string;
  relayDefaults?: RelayPodDefaults;
}

export function poolPodShapes(options: PoolShapeOptions) {
  const rbac = new SessionRbac(options.kubeConfig, undefined);
  return {
    pod: (pool: RelayPool, index: number): V1Pod =>
      desiredPoolPod(pool, index, { relayImage: options.relayImage, defaults: options.relayDefaults }),
    indexOf: (poolName: string, podName: string | undefined) => poolPodIndex(poolName, podName),
    ensureRbac: (pool: RelayPool) =>
      rbac.ensureObjects(pool.metadata.uid ?? "", pool.metadata.namespace ?? "default", () =>
        desiredPoolRbac(pool),
      ),
    idleLease: (pool: RelayPool, pod: V1Pod) => idleClaimLease(pool, pod),
    claim: (lease: V1Lease, session: RelaySession, stamp: ClaimStamp) => claimedLease(lease, session, stamp),
    claimPodPatch: (session: RelaySession, stamp: ClaimStamp) => claimPodPatch(session, stamp),
    stampOfLease: (lease: V1Lease) => stampOfLease(lease),
    drainLease: (lease: V1Lease) => drainingLease(lease),
    freeLease: (lease: V1Lease) => freedLease(lease),
    leaseClaim: (lease: V1Lease) => leaseClaimOf(lease),
    leasePodUid: (lease: V1Lease) => leasePodUid(lease),
    isRecycled: (pod: V1Pod) => isRecycledPoolPod(pod),
    unclaim: (pod: V1Pod, pool: RelayPool) => unclaimedPoolPod(pod, pool),
    sessionUid: (pod: V1Pod) => pod.metadata?.labels?.[LABEL_SESSION_UID],
    attempt: (pod: V1Pod) => attemptOf(pod),
  };
}
