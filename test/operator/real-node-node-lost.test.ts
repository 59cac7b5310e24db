/**
 * Fault matrix (docs/fault-matrix.md), on the real kubelet 1.20.2 of test/infra/real-node/ with
 * the operator in cluster from its chart: **the relay pod's node goes NotReady.**
 *
 * The kubelet is frozen with SIGSTOP (its containers keep running, as on a partitioned node). The
 * real node lifecycle controller of kube-controller-manager (part of the real-node control plane;
 * here with a 16 s --node-monitor-grace-period instead of 40 s) marks the node NotReady (Unknown)
 * and taints it `node.kubernetes.io/unreachable:NoExecute`; its taint manager evicts the relay pod
 * once the operator's short toleration has passed (Helm `relay.nodeLostTolerationSeconds`, 2 s here,
 * 30 s by default). The frozen kubelet never confirms the deletion, so after the pod's grace period
 * plus 15 s the operator counts the attempt as `NodeLost` and creates the next one, which waits
 * unscheduled while the only real node is tainted. SIGCONT brings the kubelet back: it removes the
 * old pod, the new one runs, and the session is Running in one pod. Nothing writes the node's
 * condition or taints but the controller (no API shortcut). An API-only standby node
 * (standby-node.ts) stays Ready beside it: with every node NotReady the controller would assume its
 * own network failed ("master disruption mode") and evict nothing.
 *
 * Timings are printed as a `# …` line for the record, not asserted beyond generous bounds.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { V1Node } from "@kubernetes/client-node";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { waitFor } from "../session/relay-harness.js";
import { chooseNode } from "./e2e-node.js";
import { NAMESPACE, POLL_MS, startFaultCluster, type FaultCluster } from "./real-node-faults.js";
import { startStandbyNode } from "./standby-node.js";

const choice = await chooseNode();
console.log(`# ${choice.line} (test/operator/real-node-node-lost.test.ts)`);
const skip =
  needsLoopbackNamespace || (choice.kind === "real" ? false : `needs the real node (${choice.line})`);
const TOLERATION_SECONDS = 2;

describe(`a relay pod's node goes NotReady: ${choice.label}`, { skip }, () => {
  let f: FaultCluster;
  const cleanups: Array<() => unknown> = [];

  before(async () => {
    f = await startFaultCluster({
      choice,
      outputs: ["nodeloss-out"],
      inputSeconds: 280,
      controlPlane: {
        // The kubelet renews its node Lease every 10 s; 16 s without one (default 40 s) → NotReady.
        extraControllerManagerArgs: ["--node-monitor-period=1s", "--node-monitor-grace-period=16s"],
      },
      chartValues: { relay: { nodeLostTolerationSeconds: TOLERATION_SECONDS } },
    });
    cleanups.push(() => f.stop());
    const standby = await startStandbyNode(f.cluster.cp);
    cleanups.push(() => standby.stop());
  });

  after(async () => {
    try {
      f?.cluster.realNode?.signalKubelet("SIGCONT");
    } catch {
      // not running any more
    }
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  });

  test("evicted after the short toleration, counted as NodeLost, Running again in one pod once the node is back", async () => {
    const node = f.cluster.realNode!;
    await f.applySession("nodeloss", "nodeloss-out");
    const tolerations = (await f.getPod("nodeloss-relay-0"))?.spec?.tolerations ?? [];
    for (const key of ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]) {
      const toleration = tolerations.find((t) => t.key === key);
      assert.equal(toleration?.effect, "NoExecute", key);
      assert.equal(toleration?.tolerationSeconds, TOLERATION_SECONDS, key);
    }

    const t0 = Date.now();
    const since = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
    const marks: Record<string, string> = {};
    node.signalKubelet("SIGSTOP");
    let resumed = false;
    try {
      await waitFor(
        async () => {
          const n = await f.getJson<V1Node>(["node", node.nodeName]);
          const ready = n?.status?.conditions?.find((c) => c.type === "Ready");
          const tainted = n?.spec?.taints?.some(
            (t) => t.key === "node.kubernetes.io/unreachable" && t.effect === "NoExecute",
          );
          return ready?.status !== "True" && !!tainted;
        },
        60_000,
        "node NotReady (Unknown) and tainted unreachable:NoExecute by the node lifecycle controller",
        POLL_MS,
      );
      marks.nodeNotReadyAndTainted = since();
      await waitFor(
        async () => (await f.getPod("nodeloss-relay-0"))?.metadata?.deletionTimestamp !== undefined,
        30_000,
        "nodeloss-relay-0 evicted by the taint manager (deletionTimestamp set)",
        POLL_MS,
      );
      marks.podEvicted = since();
      // Its grace period (30 s) + the operator's 15 s margin: the frozen kubelet never confirms. The
      // Ready condition says NodeLost only until the next pod's own state (Unschedulable) replaces
      // it; the session's Event keeps it.
      const nodeLostEvent = async () =>
        (
          await f.getJson<{ items: Array<{ message?: string }> }>([
            "events",
            "-n",
            NAMESPACE,
            "--field-selector",
            "involvedObject.name=nodeloss,reason=NodeLost",
          ])
        )?.items[0]?.message;
      await waitFor(
        async () =>
          (await f.getSession("nodeloss")).status?.restarts === 1 && (await nodeLostEvent()) !== undefined,
        70_000,
        "the session counts the attempt as NodeLost (restarts 1, a NodeLost event)",
        POLL_MS,
      );
      marks.nodeLostCounted = since();
      assert.match(
        (await nodeLostEvent()) ?? "",
        /pod nodeloss-relay-0 was deleted .* node 127\.0\.0\.1 has not confirmed it .*; restarting \(restart 1 of 3\)/,
      );
      // The next attempt exists, unscheduled while the only real node is tainted.
      await waitFor(
        async () => (await f.getPod("nodeloss-relay-1")) !== undefined,
        20_000,
        "nodeloss-relay-1",
        POLL_MS,
      );
      assert.equal((await f.getPod("nodeloss-relay-1"))?.spec?.nodeName, undefined);
      node.signalKubelet("SIGCONT");
      resumed = true;
      marks.kubeletResumed = since();
    } catch (err) {
      throw new Error(
        `${(err as Error).message} (marks ${JSON.stringify(marks)})${await f.context("nodeloss-relay-0")}`,
      );
    } finally {
      if (!resumed) node.signalKubelet("SIGCONT");
    }

    await waitFor(
      async () => {
        const s = await f.getSession("nodeloss");
        return (
          s.status?.phase === "Running" && s.status.podName === "nodeloss-relay-1" && s.status.restarts === 1
        );
      },
      90_000,
      "session Running again in nodeloss-relay-1",
      POLL_MS,
    ).catch(async (err: Error) => {
      throw new Error(
        `${err.message} (marks ${JSON.stringify(marks)})${await f.context("nodeloss-relay-1")}`,
      );
    });
    marks.runningAgain = since();
    // The resumed kubelet stops the old pod's containers, unmounts its volumes, then confirms the deletion.
    await waitFor(
      async () => (await f.getPod("nodeloss-relay-0")) === undefined,
      90_000,
      "the old pod removed by its resumed kubelet",
      POLL_MS,
    ).catch(async (err: Error) => {
      throw new Error(
        `${err.message} (marks ${JSON.stringify(marks)})${await f.context("nodeloss-relay-0")}`,
      );
    });
    marks.oldPodGone = since();
    assert.equal(await node.containerId(NAMESPACE, "nodeloss-relay-0", "relay"), undefined);
    assert.deepEqual(
      (await f.sessionPods("nodeloss")).map((p) => p.metadata?.name),
      ["nodeloss-relay-1"],
    );
    await f.outputFlowsSince("nodeloss", Date.now());
    console.log(`# node NotReady (kubelet SIGSTOP at 0 s): ${JSON.stringify(marks)}`);
    await f.deleteAndCheckGone("nodeloss");
  });
});
