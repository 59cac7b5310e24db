// The RelaySession controller as main.ts wires it: the reconciler, its Events, the desired objects.

export * from "./labels.js";
export {
  SESSION_LABEL,
  desiredRelayPod,
  desiredRelayRbac,
  podSpecHash,
  sessionOwnerReference,
} from "./desired-pod.js";
export type { DesiredPodOptions, RelayRbac } from "./desired-pod.js";
export * from "./status.js";
export { EventRecorder, MemoryEventSink } from "./events.js";
export type { EventRecorderOptions, EventSink, EventType, InvolvedObject } from "./events.js";
export { RelaySessionReconciler, podOwnerUid, splitKey, sweepOrphanPods } from "./reconciler.js";
export type {
  PodCache,
  ReconcileResult,
  RelaySessionReconcilerDeps,
  SessionCache,
  SweepOrphanPodsOptions,
} from "./reconciler.js";
export { poolPodShapes } from "./pool-shapes.js";
export type { PoolShapeOptions } from "./pool-shapes.js";
export type { PoolAccess } from "./pooled-session.js";
export {
  desiredPoolPod,
  desiredPoolRbac,
  claimedLease,
  claimPodPatch,
  idleClaimLease,
  poolPodName,
  POOL_READY_PORT,
  POOL_READY_PATH,
} from "./desired-pool-pod.js";
