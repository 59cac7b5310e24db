/**
 * The RelayPool's conditions from its counts: Ready (an idle warm pod can be handed out now) and
 * Exhausted (sessions are waiting for one). lastTransitionTime moves only when a status flips.
 */
import type { RelayPoolStatus } from "../../../crds/src/index.js";

type Condition = NonNullable<RelayPoolStatus["conditions"]>[number];

export function poolConditions(
  previous: readonly Condition[] | undefined,
  counts: { ready: number; warming: number; waiting: number },
  now: Date,
  generation: number | undefined,
): Condition[] {
  const desired: Array<Omit<Condition, "lastTransitionTime">> = [
    counts.ready > 0
      ? { type: "Ready", status: "True", reason: "WarmPodsIdle", message: `${counts.ready} idle warm pod(s)` }
      : {
          type: "Ready",
          status: "False",
          reason: counts.warming > 0 ? "WarmingUp" : "NoIdlePods",
          message: counts.warming > 0 ? `${counts.warming} pod(s) warming up` : "no idle warm pod",
        },
    counts.waiting > 0
      ? {
          type: "Exhausted",
          status: "True",
          reason: "PoolExhausted",
          message: `${counts.waiting} session(s) waiting for an idle warm pod`,
        }
      : { type: "Exhausted", status: "False", reason: "AsExpected", message: "" },
  ];
  return desired.map((condition) => {
    const before = previous?.find((c) => c.type === condition.type);
    return {
      ...condition,
      lastTransitionTime:
        before && before.status === condition.status
          ? before.lastTransitionTime
          : now.toISOString().replace(/\.\d+Z$/, "Z"),
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
    };
  });
}
