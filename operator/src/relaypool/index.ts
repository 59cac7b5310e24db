// The RelayPool controller as operator.ts wires it: the reconciler (allocation included) and its metrics.

export { RelayPoolReconciler } from "./reconciler.js";
export type { PoolEventSink, PoolPodShapes, RelayPoolReconcilerDeps } from "./reconciler.js";
export { Allocator } from "./allocator.js";
export type { ClaimStamp, SessionArrival } from "./allocator.js";
export { PoolMetrics } from "./metrics.js";
export { PodLeases, isPodReady, sortPoolPods } from "./pool-pods.js";
