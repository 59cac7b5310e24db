/**
 * The relay pods' RBAC as the operator ensures it (operator/src/relaysession/session-rbac.ts), on a
 * real kube-apiserver: a Role an older operator wrote with other rules is replaced by the current
 * one (a pool's Role from before its pods watched their claim Leases must gain `leases`), and an
 * up-to-date Role is left as it is (same uid).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { KubeConfig, RbacAuthorizationV1Api } from "@kubernetes/client-node";
import type { RelayPool } from "../../../crds/src/index.js";
import { desiredPoolRbac } from "../../../operator/src/relaysession/desired-pool-pod.js";
import { SessionRbac } from "../../../operator/src/relaysession/session-rbac.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../../infra/apiserver.js";

const assets = await resolveEnvtestAssets();

const pool = {
  apiVersion: "trickle-relay.io/v1alpha1",
  kind: "RelayPool",
  metadata: { name: "gpu", namespace: "rbac", uid: "00000000-0000-0000-0000-0000000000aa" },
  spec: {},
} as unknown as RelayPool;

describe("relay pod RBAC (real apiserver)", { skip: assets.skipReason }, () => {
  let cp: ControlPlane;
  let kc: KubeConfig;

  before(async () => {
    cp = await startControlPlane();
    kc = new KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
    await cp.kubectl(["create", "namespace", "rbac"]);
  });

  after(async () => {
    await cp?.stop();
  });

  test("a pool Role written by an older operator (no leases) is replaced; a current one is kept", async () => {
    const rbacApi = kc.makeApiClient(RbacAuthorizationV1Api);
    const { role } = desiredPoolRbac(pool);
    const older = {
      ...role,
      rules: role.rules!.filter((rule) => !rule.apiGroups?.includes("coordination.k8s.io")),
    };
    assert.equal(older.rules.length, role.rules!.length - 1, "the current Role has the leases rule");
    await rbacApi.createNamespacedRole({ namespace: "rbac", body: older });

    const rbac = new SessionRbac(kc, 0);
    await rbac.ensureObjects("pool-uid", "rbac", () => desiredPoolRbac(pool));
    const replaced = await rbacApi.readNamespacedRole({ namespace: "rbac", name: role.metadata!.name! });
    assert.ok(
      replaced.rules?.some((rule) => rule.resources?.includes("leases") && rule.verbs.includes("watch")),
      "the pool's pods may watch their claim Leases now",
    );

    await rbac.ensureObjects("pool-uid", "rbac", () => desiredPoolRbac(pool));
    const kept = await rbacApi.readNamespacedRole({ namespace: "rbac", name: role.metadata!.name! });
    assert.equal(kept.metadata?.uid, replaced.metadata?.uid, "an up-to-date Role is not recreated");
  });
});
