/**
 * A HorizontalPodAutoscaler scales a RelayPool through its scale subresource, on a real
 * kube-apiserver + etcd with the real HPA controller of kube-controller-manager 1.20.2 and the
 * operator binary. Pods are played by FakePoolKubelet (pool-harness.ts).
 *
 * No metrics server runs: the HPA controller clamps the target's spec.replicas into
 * [minReplicas, maxReplicas] before it looks at any metric, so an HPA with minReplicas 3 on a pool
 * of 1 must scale it to 3, and lowering maxReplicas to 2 must scale it down to 2. Inside the range
 * it reads the scale's selector (status.selector, the CRD's labelSelectorPath) and then fails to get
 * the CPU metric: the condition ScalingActive=False/FailedGetResourceMetric (not InvalidSelector)
 * shows that the selector it read is usable.
 *
 * What a user checks: the HPA's status (currentReplicas, desiredReplicas, conditions) and its
 * SuccessfulRescale Events, the pool's spec.replicas / status, and the pool's pods; scaling down
 * through the HPA spares the allocated pod like `kubectl scale` does.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../../infra/apiserver.js";
import {
  repoRoot,
  startOperator,
  waitFor as harnessWaitFor,
  type OperatorProcess,
} from "../operator-harness.js";
import { FakePoolKubelet, PoolKubectl, claimsOf, poolYaml, pooledSessionsYaml } from "./pool-harness.js";

const assets = await resolveEnvtestAssets();
const NS = "pool-hpa";
/** kubectl polls: each is a few processes, so not every 100 ms. */
const POLL_MS = 500;
const HPA_V2 = "horizontalpodautoscalers.v2beta2.autoscaling";

const waitFor = <T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | false>) =>
  harnessWaitFor(what, timeoutMs, probe, POLL_MS);

interface Hpa {
  spec: { minReplicas?: number; maxReplicas: number };
  status?: {
    currentReplicas?: number;
    desiredReplicas?: number;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
  };
}

function hpaYaml(minReplicas: number, maxReplicas: number): string {
  return JSON.stringify({
    apiVersion: "autoscaling/v2beta2",
    kind: "HorizontalPodAutoscaler",
    metadata: { name: "gpu", namespace: NS },
    spec: {
      scaleTargetRef: { apiVersion: "trickle-relay.io/v1alpha1", kind: "RelayPool", name: "gpu" },
      minReplicas,
      maxReplicas,
      metrics: [
        {
          type: "Resource",
          resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 80 } },
        },
      ],
    },
  });
}

describe(
  "an HPA scales a RelayPool (real apiserver, real HPA controller, operator binary, stand-in kubelet)",
  { skip: assets.skipReason },
  () => {
    let cp: ControlPlane;
    let kubectl: PoolKubectl;
    let kubelet: FakePoolKubelet | undefined;
    let operator: OperatorProcess | undefined;

    before(async () => {
      cp = await startControlPlane({
        crdPaths: [join(repoRoot, "crds")],
        extraControllers: ["horizontalpodautoscaling"],
        // Default 15 s between two looks at each HPA.
        extraControllerManagerArgs: ["--horizontal-pod-autoscaler-sync-period=1s"],
      });
      const kc = new KubeConfig();
      kc.loadFromFile(cp.kubeconfigPath);
      kubectl = new PoolKubectl(cp);
      await kubectl.ok(["create", "namespace", NS]);
      kubelet = new FakePoolKubelet(kc, NS).start();
      operator = await startOperator({
        kubeconfigPath: cp.kubeconfigPath,
        args: ["--no-leader-elect", "--namespace", NS],
      });
      await operator.waitReady(60_000);
    });

    after(async () => {
      kubelet?.stop();
      await operator?.stop().catch(() => undefined);
      await cp?.stop();
    });

    const hpa = async () =>
      // The v2beta2 view: kubectl's default (autoscaling/v1) keeps conditions in an annotation.
      JSON.parse(await kubectl.ok(["get", HPA_V2, "gpu", "-n", NS, "-o", "json"])) as Hpa;
    const livePods = async () =>
      (await kubectl.pods(NS, "gpu")).filter((p) => !p.metadata?.deletionTimestamp);
    const rescaleEvents = async () =>
      (
        JSON.parse(
          await kubectl.ok([
            "get",
            "events",
            "-n",
            NS,
            "--field-selector",
            "involvedObject.kind=HorizontalPodAutoscaler,reason=SuccessfulRescale",
            "-o",
            "json",
          ]),
        ) as { items: Array<{ message?: string }> }
      ).items.map((e) => e.message ?? "");
    /** For a failure message: what the HPA and the controller manager said. */
    const context = async () =>
      `\n--- kubectl describe hpa ---\n${(await cp.kubectl(["describe", HPA_V2, "gpu", "-n", NS])).stdout}` +
      `\n--- pool ---\n${JSON.stringify((await kubectl.pool(NS, "gpu")).status)}`;

    test("minReplicas 3 scales a pool of 1 to 3 warm pods; maxReplicas 2 scales it down and spares the allocated pod", async () => {
      await kubectl.ok(["apply", "-f", "-"], poolYaml(NS, "gpu", { replicas: 1 }));
      await waitFor(
        "the pool of 1 ready",
        60_000,
        async () => (await kubectl.pool(NS, "gpu")).status?.readyReplicas === 1,
      );
      const selector = (await kubectl.pool(NS, "gpu")).status?.selector;
      assert.equal(selector, "trickle-relay.io/pool=gpu", "the scale subresource's selector");

      await kubectl.ok(["apply", "-f", "-"], hpaYaml(3, 5));
      await waitFor("HPA: current 3, desired 3; pool: 3 replicas, 3 ready pods", 60_000, async () => {
        const status = (await hpa()).status;
        const pool = await kubectl.pool(NS, "gpu");
        return (
          status?.currentReplicas === 3 &&
          status.desiredReplicas === 3 &&
          pool.spec.replicas === 3 &&
          pool.status?.replicas === 3 &&
          pool.status.readyReplicas === 3 &&
          (await livePods()).length === 3
        );
      }).catch(async (err: Error) => {
        throw new Error(`${err.message}${await context()}`);
      });
      assert.ok(
        (await rescaleEvents()).some((m) =>
          /New size: 3; reason: Current number of replicas below Spec.MinReplicas/.test(m),
        ),
        `SuccessfulRescale to 3: ${JSON.stringify(await rescaleEvents())}`,
      );
      // Inside [3, 5] it reads the selector and asks for the CPU metric, which nothing serves here.
      const active = await waitFor("ScalingActive reported", 30_000, async () =>
        (await hpa()).status?.conditions?.find((c) => c.type === "ScalingActive"),
      );
      assert.equal(active.status, "False");
      assert.equal(active.reason, "FailedGetResourceMetric", `${active.message}${await context()}`);

      await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(NS, "gpu", ["live"]));
      const allocated = await waitFor(
        "the session allocated",
        30_000,
        async () => claimsOf(await kubectl.pods(NS, "gpu")).get("live")?.[0],
      );
      const allocatedUid = (await livePods()).find((p) => p.metadata?.name === allocated)?.metadata?.uid;

      await kubectl.ok(["apply", "-f", "-"], hpaYaml(1, 2));
      const remaining = await waitFor("HPA: desired 2; pool: 2 replicas, 2 pods", 60_000, async () => {
        const status = (await hpa()).status;
        const pool = await kubectl.pool(NS, "gpu");
        const pods = await livePods();
        return status?.currentReplicas === 2 &&
          status.desiredReplicas === 2 &&
          pool.spec.replicas === 2 &&
          pool.status?.replicas === 2 &&
          pods.length === 2
          ? pods
          : undefined;
      }).catch(async (err: Error) => {
        throw new Error(`${err.message}${await context()}`);
      });
      assert.ok(
        (await rescaleEvents()).some((m) =>
          /New size: 2; reason: Current number of replicas above Spec.MaxReplicas/.test(m),
        ),
        `SuccessfulRescale to 2: ${JSON.stringify(await rescaleEvents())}`,
      );
      assert.ok(
        remaining.some(
          (p) =>
            p.metadata?.uid === allocatedUid && p.metadata?.labels?.["trickle-relay.io/session"] === "live",
        ),
        "the allocated pod is kept, still claimed by its session",
      );
      const status = (await kubectl.pool(NS, "gpu")).status!;
      assert.equal(status.allocatedReplicas, 1);
      assert.equal(status.readyReplicas, 1);
    });
  },
);
