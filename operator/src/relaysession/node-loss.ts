/**
 * A relay pod whose node dies. Kubernetes' node lifecycle controller marks the node NotReady (or
 * Unknown) and taints it `node.kubernetes.io/not-ready` / `unreachable` with effect NoExecute; its
 * taint manager then deletes every pod that does not tolerate the taint, after the toleration's
 * `tolerationSeconds`. The DefaultTolerationSeconds admission plugin gives pods 300 s, which is five
 * minutes without video for a live stream; relay pods get a short toleration instead (the Helm
 * value `relay.nodeLostTolerationSeconds`, default 30 s).
 *
 * Deleting a pod on a dead node only sets its deletionTimestamp: the kubelet that would confirm the
 * deletion is gone, so the pod stays Terminating until the node comes back. A pod whose deletion is
 * overdue by NODE_CONFIRM_MARGIN_MS is therefore counted as a failed attempt (`NodeLost`) and the
 * session's next attempt starts, within its restart budget, wherever the scheduler finds room.
 */
import type { V1Pod, V1Toleration } from "@kubernetes/client-node";
import { toDate, type Failure } from "./status.js";

export const NODE_LOST_TAINTS = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];
export const DEFAULT_NODE_LOST_TOLERATION_SECONDS = 30;
/** How long past its grace period a deleted pod may stay before its node counts as lost. */
export const NODE_CONFIRM_MARGIN_MS = 15_000;

/**
 * `tolerations` plus a NoExecute toleration of `seconds` for each node-lost taint that none of
 * them already tolerates (a session's or the installation's own toleration of those taints wins).
 */
export function withNodeLostTolerations(
  tolerations: V1Toleration[] | undefined,
  seconds: number,
): V1Toleration[] {
  const own = (tolerations ?? []).map((t) => ({ ...t }));
  const covers = (t: V1Toleration, key: string) =>
    (t.key === key || (!t.key && t.operator === "Exists")) && (!t.effect || t.effect === "NoExecute");
  for (const key of NODE_LOST_TAINTS) {
    if (own.some((t) => covers(t, key))) continue;
    own.push({ key, operator: "Exists", effect: "NoExecute", tolerationSeconds: seconds });
  }
  return own;
}

/**
 * The failure of a pod that was deleted but whose kubelet never confirmed it (still there
 * NODE_CONFIRM_MARGIN_MS after its grace period ended), else undefined with the time left to wait.
 */
export function lostPodFailure(
  pod: V1Pod,
  now: Date,
): { failure: Failure; waitMs?: undefined } | { failure?: undefined; waitMs: number } {
  const graceEnd = toDate(pod.metadata?.deletionTimestamp);
  if (!graceEnd) return { waitMs: NODE_CONFIRM_MARGIN_MS };
  const lostAt = graceEnd.getTime() + NODE_CONFIRM_MARGIN_MS;
  if (now.getTime() < lostAt) return { waitMs: lostAt - now.getTime() };
  const node = pod.spec?.nodeName ? `node ${pod.spec.nodeName}` : "its node";
  const overdueSec = Math.round((now.getTime() - graceEnd.getTime()) / 1000);
  return {
    failure: {
      reason: "NodeLost",
      message:
        `pod ${pod.metadata?.name} was deleted (e.g. evicted from a NotReady node) but ${node} has not ` +
        `confirmed it ${overdueSec} s after its grace period: the node is lost`,
      at: now,
    },
  };
}
