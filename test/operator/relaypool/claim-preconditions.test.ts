/**
 * What "no pod twice" rests on, checked against a real kube-apiserver + etcd (no operator): a warm
 * pod's claim is an update of its claim Lease (crds/src/relay-pool.ts) carrying the Lease's
 * resourceVersion, refused with 409 once someone else changed the Lease. Both writes the pool
 * controller makes that way: the claim (allocator.ts, body from claimedLease) and the drain on
 * scale-down (reconciler.ts, drainingLease), which must spare a pod claimed meanwhile. The same write
 * with the current version goes through. And the relay's view: it reads the claim from the Lease.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  type V1Lease,
} from "@kubernetes/client-node";
import type { RelayPool, RelaySession } from "../../../crds/src/index.js";
import {
  claimedLease,
  drainingLease,
  idleClaimLease,
} from "../../../operator/src/relaysession/desired-pool-pod.js";
import { withRequestTimeout } from "../../../operator/src/kube/client.js";
import { leanLeaseWrites } from "../../../operator/src/kube/lean-writes.js";
import { claimOf } from "../../../relay-pod/src/kube/pool-claim.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../../infra/apiserver.js";

const assets = await resolveEnvtestAssets();

const session = (name: string): RelaySession =>
  ({
    apiVersion: "trickle-relay.io/v1alpha1",
    kind: "RelaySession",
    metadata: { name, namespace: "claims", uid: `00000000-0000-0000-0000-0000000000${name.slice(-2)}` },
    spec: { poolRef: { name: "gpu" } },
  }) as unknown as RelaySession;

const pool = {
  apiVersion: "trickle-relay.io/v1alpha1",
  kind: "RelayPool",
  metadata: { name: "gpu", namespace: "claims", uid: "00000000-0000-0000-0000-0000000000aa" },
  spec: {},
} as unknown as RelayPool;

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
  let leases: CoordinationV1Api;
  /** The operator's own claim write (operator/src/kube/lean-writes.ts), as the allocator sends it. */
  let claimWrites: Pick<CoordinationV1Api, "replaceNamespacedLease">;

  before(async () => {
    cp = await startControlPlane();
    const kc = new KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
    core = kc.makeApiClient(CoreV1Api);
    leases = kc.makeApiClient(CoordinationV1Api);
    claimWrites = leanLeaseWrites(withRequestTimeout(kc, 30_000));
    await core.createNamespace({ body: { metadata: { name: "claims" } } });
  });

  after(async () => {
    await cp?.stop();
  });

  test("a claim or drain with a stale Lease resourceVersion is refused (409); with the current one it is written", async () => {
    const pod = await core.createNamespacedPod({
      namespace: "claims",
      body: {
        metadata: {
          name: "gpu-warm-0",
          labels: { "trickle-relay.io/pool": "gpu", "trickle-relay.io/pool-state": "ready" },
        },
        spec: { containers: [{ name: "relay", image: "trickle-relay/relay:faults" }] },
      },
    });
    const idle: V1Lease = await leases.createNamespacedLease({
      namespace: "claims",
      body: idleClaimLease(pool, pod),
    });
    assert.equal(claimOf(idle), undefined, "an idle Lease is no claim for the relay");
    const replace = (body: V1Lease) =>
      claimWrites.replaceNamespacedLease({ namespace: "claims", name: "gpu-warm-0", body });
    const stamp = { at: new Date(), waitedSeconds: 0, attempt: 0 };

    // Someone else (another operator replica, an earlier claim) wins the pod first.
    const first = await replace(claimedLease(idle, session("s-01"), stamp));
    assert.notEqual(first.metadata?.resourceVersion, idle.metadata?.resourceVersion);

    // A second claim from the stale copy (the cache had not caught up): refused.
    assert.equal(await status(replace(claimedLease(idle, session("s-02"), stamp))), 409);
    // The drain from the stale copy: refused too (a claimed pod is spared).
    assert.equal(await status(replace(drainingLease(idle))), 409);
    const stored = await leases.readNamespacedLease({ namespace: "claims", name: "gpu-warm-0" });
    assert.equal(stored.spec?.holderIdentity, "claims/s-01", "the first claim stands");
    assert.equal(stored.metadata?.labels?.["trickle-relay.io/session-uid"], session("s-01").metadata.uid);
    assert.deepEqual(claimOf(stored)?.session, { namespace: "claims", name: "s-01" }, "what the relay reads");
    assert.equal(
      stored.metadata?.ownerReferences?.[0]?.uid,
      pod.metadata?.uid,
      "the Lease is owned by its pod (it goes with it)",
    );

    // From the current version the write goes through (what a retry on the next round does).
    assert.equal(await status(replace(drainingLease(stored))), 200);
    const drained = await leases.readNamespacedLease({ namespace: "claims", name: "gpu-warm-0" });
    assert.equal(claimOf(drained), undefined, "a draining pod is no claim for the relay");
  });
});
