/**
 * What "no pod twice" rests on, checked against a real kube-apiserver + etcd (no operator): a write
 * carrying a pod's old resourceVersion is refused with 409 once someone else changed the pod. Both
 * forms the pool controller uses: the claim (an update of the whole pod, allocator.ts, body from
 * claimedPoolPod) and the drain label on scale-down (a merge patch carrying metadata.resourceVersion,
 * reconciler.ts), which must spare a pod claimed meanwhile. The same claim with the current version
 * goes through.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Pod,
} from "@kubernetes/client-node";
import type { RelaySession } from "../../../crds/src/index.js";
import { claimedPoolPod } from "../../../operator/src/relaysession/desired-pool-pod.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../../infra/apiserver.js";

const assets = await resolveEnvtestAssets();
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

const session = (name: string): RelaySession =>
  ({
    apiVersion: "trickle-relay.io/v1alpha1",
    kind: "RelaySession",
    metadata: { name, namespace: "claims", uid: `00000000-0000-0000-0000-0000000000${name.slice(-2)}` },
    spec: { poolRef: { name: "gpu" } },
  }) as unknown as RelaySession;

async function status(call: Promise<unknown>): Promise<number> {
  try {
    await call;
    return 200;
  } catch (error) {
    if (error instanceof ApiException) return error.code;
    throw error;
  }
}

describe("claim preconditions (real apiserver)", { skip: assets.skipReason }, () => {
  let cp: ControlPlane;
  let core: CoreV1Api;

  before(async () => {
    cp = await startControlPlane();
    const kc = new KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
    core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: "claims" } } });
  });

  after(async () => {
    await cp?.stop();
  });

  test("a claim or drain with a stale resourceVersion is refused (409); with the current one it is written", async () => {
    const idle: V1Pod = await core.createNamespacedPod({
      namespace: "claims",
      body: {
        metadata: {
          name: "gpu-warm-0",
          labels: { "trickle-relay.io/pool": "gpu", "trickle-relay.io/pool-state": "ready" },
        },
        spec: { containers: [{ name: "relay", image: "trickle-relay/relay:faults" }] },
      },
    });
    // Someone else (another operator replica, an earlier claim) wins the pod first.
    const first = await core.replaceNamespacedPod({
      namespace: "claims",
      name: "gpu-warm-0",
      body: claimedPoolPod(idle, session("s-01"), { at: new Date(), waitedSeconds: 0, attempt: 0 }),
    });
    assert.notEqual(first.metadata?.resourceVersion, idle.metadata?.resourceVersion);

    // A second claim from the stale copy (the cache had not caught up): refused.
    const late = claimedPoolPod(idle, session("s-02"), { at: new Date(), waitedSeconds: 0, attempt: 0 });
    assert.equal(
      await status(core.replaceNamespacedPod({ namespace: "claims", name: "gpu-warm-0", body: late })),
      409,
    );
    // The drain label as a merge patch carrying the stale version: refused too (a claimed pod is spared).
    const drain = {
      metadata: {
        resourceVersion: idle.metadata?.resourceVersion,
        labels: { "trickle-relay.io/pool-state": "draining" },
      },
    };
    assert.equal(
      await status(
        core.patchNamespacedPod({ namespace: "claims", name: "gpu-warm-0", body: drain }, mergePatch),
      ),
      409,
    );
    const stored = await core.readNamespacedPod({ namespace: "claims", name: "gpu-warm-0" });
    assert.equal(stored.metadata?.labels?.["trickle-relay.io/session"], "s-01", "the first claim stands");
    assert.equal(stored.metadata?.labels?.["trickle-relay.io/pool-state"], "allocated");

    // From the current version the write goes through (what a retry on the next round does).
    const current = {
      ...drain,
      metadata: { ...drain.metadata, resourceVersion: stored.metadata?.resourceVersion },
    };
    assert.equal(
      await status(
        core.patchNamespacedPod({ namespace: "claims", name: "gpu-warm-0", body: current }, mergePatch),
      ),
      200,
    );
  });
});
