// A relay pod's node dies: the tolerations that bound how long its pod stays there, and the rule
// that counts a deletion its kubelet never confirms as a lost node (operator/src/relaysession/node-loss.ts).
// The whole path on a real kubelet and node lifecycle controller: test/operator/real-node-faults.test.ts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import {
  NODE_CONFIRM_MARGIN_MS,
  lostPodFailure,
  withNodeLostTolerations,
} from "../../../operator/src/relaysession/node-loss.js";

describe("node loss", () => {
  test("short NoExecute tolerations are added unless the pod already tolerates those taints", () => {
    assert.deepEqual(withNodeLostTolerations(undefined, 7), [
      { key: "node.kubernetes.io/not-ready", operator: "Exists", effect: "NoExecute", tolerationSeconds: 7 },
      {
        key: "node.kubernetes.io/unreachable",
        operator: "Exists",
        effect: "NoExecute",
        tolerationSeconds: 7,
      },
    ]);
    const own = {
      key: "node.kubernetes.io/unreachable",
      operator: "Exists",
      effect: "NoExecute",
      tolerationSeconds: 600,
    };
    assert.deepEqual(
      withNodeLostTolerations([own], 7).map((t) => [t.key, t.tolerationSeconds]),
      [
        ["node.kubernetes.io/unreachable", 600],
        ["node.kubernetes.io/not-ready", 7],
      ],
    );
    // "Tolerate everything" covers both; a NoSchedule toleration of the key does not.
    assert.equal(withNodeLostTolerations([{ operator: "Exists" }], 7).length, 1);
    assert.equal(
      withNodeLostTolerations(
        [{ key: "node.kubernetes.io/not-ready", operator: "Exists", effect: "NoSchedule" }],
        7,
      ).length,
      3,
    );
  });

  test("a deleted pod is lost only once its kubelet is overdue past the grace period", () => {
    const graceEnd = new Date("2026-12-07T12:00:00Z");
    const pod: V1Pod = {
      metadata: { name: "basic-relay-0", deletionTimestamp: graceEnd },
      spec: { nodeName: "node-a", containers: [] },
    };
    const before = lostPodFailure(pod, new Date(graceEnd.getTime() + 1000));
    assert.equal(before.failure, undefined);
    assert.equal(before.waitMs, NODE_CONFIRM_MARGIN_MS - 1000);
    const after = lostPodFailure(pod, new Date(graceEnd.getTime() + NODE_CONFIRM_MARGIN_MS));
    assert.equal(after.failure?.reason, "NodeLost");
    assert.match(
      after.failure?.message ?? "",
      /pod basic-relay-0 .* node node-a has not confirmed it 15 s after/,
    );
  });
});
