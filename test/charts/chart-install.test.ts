/**
 * The chart on a real kube-apiserver (test/infra/apiserver.ts): `helm install` cluster-wide and
 * namespaced, `helm upgrade`, `helm uninstall` keeping the CRD, and `kubectl apply -k` of the
 * plain-manifest kustomize base.
 *
 * RBAC, minimal and sufficient: authenticated with a bound token of the chart's ServiceAccount,
 * the operator's whole job on one session is done for real — list/watch RelaySessions, create the
 * per-session ServiceAccount/Role/RoleBinding exactly as operator/README.md describes them (which
 * passes the apiserver's RBAC escalation check only because the chart grants what that Role
 * grants), create the relay pod with a blocking owner reference, patch status, record Events, hold
 * its Lease, delete the pod and the session — and everything else tried is refused (403).
 * `kubectl auth can-i --as=<sa>` checks the full matrix of operatorActions/forbiddenActions.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import {
  CoordinationV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../infra/apiserver.js";
import { forbiddenActions, operatorActions, type Access } from "./expected-rbac.js";
import { chartDir, helm, installChart, parseManifests, repoRoot, type InstalledChart } from "./helm.js";

const assets = await resolveEnvtestAssets();

const group = "trickle-relay.io";
const version = "v1alpha1";
const plural = "relaysessions";

function sessionYaml(name: string): string {
  return readFileSync(`${repoRoot}/crds/examples/basic.yaml`, "utf8").replace(
    /^ {2}name: basic$/m,
    `  name: ${name}`,
  );
}

describe("chart on a real kube-apiserver", { skip: assets.skipReason }, () => {
  let cp: ControlPlane;
  let wide: InstalledChart; // cluster-wide release "tr" in tr-helm, leader election on
  let narrow: InstalledChart; // release "nsr" in tr-ns watching team-b and team-c

  /** kubectl as the chart's ServiceAccount (bound token). */
  const asOperator = (chart: InstalledChart, args: string[], input?: string) =>
    cp.kubectl(
      [`--kubeconfig=${chart.serviceAccountKubeconfig}`, ...args],
      input === undefined ? {} : { input },
    );

  async function canI(user: string, access: Access, namespace: string): Promise<boolean> {
    const args = ["auth", "can-i", access.verb, access.resource, "-n", namespace, `--as=${user}`];
    if (access.subresource) args.push(`--subresource=${access.subresource}`);
    const result = await cp.kubectl(args);
    const answer = result.stdout.trim();
    assert.ok(
      answer === "yes" || answer === "no",
      `can-i ${args.join(" ")}: ${result.stdout}${result.stderr}`,
    );
    return answer === "yes";
  }

  /** Every question at once, four kubectl processes at a time; returns the wrong answers. */
  async function wrongAnswers(user: string, namespace: string, accesses: Access[], expected: boolean) {
    const wrong: string[] = [];
    for (let i = 0; i < accesses.length; i += 4) {
      const batch = accesses.slice(i, i + 4);
      const answers = await Promise.all(batch.map((a) => canI(user, a, namespace)));
      answers.forEach((answer, j) => {
        const a = batch[j]!;
        if (answer !== expected)
          wrong.push(`${a.verb} ${a.resource}${a.subresource ? `/${a.subresource}` : ""} in ${namespace}`);
      });
    }
    return wrong;
  }

  before(async () => {
    cp = await startControlPlane();
    for (const ns of ["team-a", "team-b", "team-c"]) await cp.kubectl(["create", "namespace", ns]);
    wide = await installChart(cp, {
      release: "tr",
      namespace: "tr-helm",
      values: { leaderElection: { enabled: true } },
    });
    const established = await cp.kubectl([
      "wait",
      "--for=condition=Established",
      "crd/relaysessions.trickle-relay.io",
      "--timeout=60s",
    ]);
    assert.equal(established.code, 0, established.stderr);
    narrow = await installChart(cp, {
      release: "nsr",
      namespace: "tr-ns",
      values: { crds: { install: false }, watchNamespaces: ["team-b", "team-c"] },
    });
  });
  after(async () => {
    await cp?.stop();
  });

  test("helm install created the release's objects", async () => {
    const status = await helm(["status", "tr", "-n", "tr-helm", "--kubeconfig", cp.kubeconfigPath]);
    assert.match(status.stdout, /STATUS: deployed/);
    const got = await cp.kubectl([
      "get",
      "-n",
      "tr-helm",
      "deployment/tr-trickle-relay",
      "serviceaccount/tr-trickle-relay",
      "service/tr-trickle-relay-metrics",
      "role/tr-trickle-relay-leader-election",
      "rolebinding/tr-trickle-relay-leader-election",
      "clusterrole/tr-trickle-relay",
      "clusterrolebinding/tr-trickle-relay",
      "crd/relaysessions.trickle-relay.io",
      "-o",
      "name",
    ]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout.trim().split("\n").length, 8);
    const crd = JSON.parse(
      (await cp.kubectl(["get", "crd/relaysessions.trickle-relay.io", "-o", "json"])).stdout,
    );
    assert.equal(crd.metadata.annotations["helm.sh/resource-policy"], "keep");
    assert.equal(crd.metadata.annotations["meta.helm.sh/release-name"], "tr");
  });

  test("namespaced install: Role + RoleBinding in each watched namespace, nothing cluster-wide", async () => {
    for (const ns of ["team-b", "team-c"]) {
      const got = await cp.kubectl([
        "get",
        "-n",
        ns,
        "role/nsr-trickle-relay",
        "rolebinding/nsr-trickle-relay",
        "-o",
        "name",
      ]);
      assert.equal(got.code, 0, got.stderr);
    }
    assert.notEqual((await cp.kubectl(["get", "clusterrole/nsr-trickle-relay"])).code, 0);
    assert.notEqual((await cp.kubectl(["get", "-n", "team-a", "role/nsr-trickle-relay"])).code, 0);
    const deployment = JSON.parse(
      (await cp.kubectl(["get", "-n", "tr-ns", "deployment/nsr-trickle-relay", "-o", "json"])).stdout,
    );
    const args: string[] = deployment.spec.template.spec.containers[0].args;
    assert.deepEqual(
      args.filter((a) => a.startsWith("--namespace")),
      ["--namespace=team-b", "--namespace=team-c"],
    );
  });

  test("kubectl auth can-i: the chart's ServiceAccount may do every operator action, and nothing else listed", async () => {
    assert.deepEqual(await wrongAnswers(wide.user, "team-a", operatorActions, true), []);
    assert.deepEqual(await wrongAnswers(wide.user, "team-a", forbiddenActions, false), []);
    // Leases: its own (leader election) and warm pool pods' claim Leases, in every watched namespace.
    assert.equal(
      await canI(wide.user, { verb: "create", resource: "leases.coordination.k8s.io" }, "tr-helm"),
      true,
    );
    assert.equal(
      await canI(wide.user, { verb: "update", resource: "leases.coordination.k8s.io" }, "team-a"),
      true,
    );
    // Namespaced release: allowed in the watched namespaces only.
    assert.deepEqual(await wrongAnswers(narrow.user, "team-b", operatorActions, true), []);
    assert.deepEqual(await wrongAnswers(narrow.user, "team-a", operatorActions, false), []);
    assert.equal(await canI(narrow.user, { verb: "create", resource: "pods" }, "team-c"), true);
    assert.equal(
      await canI(narrow.user, { verb: "create", resource: "leases.coordination.k8s.io" }, "tr-ns"),
      false,
    );
  });

  test("the operator's job on one session, for real, as the chart's ServiceAccount (token)", async () => {
    const created = await cp.kubectl(["apply", "-n", "team-a", "-f", "-"], { input: sessionYaml("basic") });
    assert.equal(created.code, 0, created.stderr);
    const session = JSON.parse(
      (await asOperator(wide, ["get", "-n", "team-a", "rls/basic", "-o", "json"])).stdout,
    );
    const uid: string = session.metadata.uid;

    // list (all namespaces, cluster-wide install) and watch
    const listed = await asOperator(wide, ["get", "relaysessions", "--all-namespaces", "-o", "name"]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /basic/);
    const watched = await asOperator(wide, [
      "get",
      "--raw",
      `/apis/${group}/${version}/namespaces/team-a/${plural}?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dbasic`,
    ]);
    assert.equal(watched.code, 0, watched.stderr);
    assert.match(watched.stdout, /"type":"ADDED"/);

    // Per-session RBAC exactly as operator/README.md describes it, owned by the session.
    const owner = {
      apiVersion: `${group}/${version}`,
      kind: "RelaySession",
      name: "basic",
      uid,
      controller: true,
      blockOwnerDeletion: true,
    };
    const perSession = [
      {
        apiVersion: "v1",
        kind: "ServiceAccount",
        metadata: { name: "basic-relay", ownerReferences: [owner] },
      },
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        metadata: { name: "basic-relay", ownerReferences: [owner] },
        rules: [
          {
            apiGroups: [group],
            resources: ["relaysessions"],
            resourceNames: ["basic"],
            verbs: ["get", "list", "watch"],
          },
          {
            apiGroups: [group],
            resources: ["relaysessions/status"],
            resourceNames: ["basic"],
            verbs: ["get", "patch"],
          },
        ],
      },
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: "basic-relay", ownerReferences: [owner] },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "basic-relay" },
        subjects: [{ kind: "ServiceAccount", name: "basic-relay", namespace: "team-a" }],
      },
      {
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          name: "basic-relay-0",
          labels: {
            "app.kubernetes.io/name": "trickle-relay",
            "app.kubernetes.io/component": "relay",
            "app.kubernetes.io/managed-by": "trickle-relay-operator",
            "trickle-relay.io/session": "basic",
            "trickle-relay.io/session-uid": uid,
            "trickle-relay.io/attempt": "0",
          },
          ownerReferences: [owner],
        },
        spec: {
          restartPolicy: "Never",
          serviceAccountName: "basic-relay",
          containers: [
            {
              name: "relay",
              image: "trickle-relay/relay:0.1.0",
              command: ["trickle-relay"],
              args: ["run", "--session", "team-a/basic"],
            },
          ],
        },
      },
    ];
    for (const obj of perSession) {
      const result = await asOperator(wide, ["create", "-n", "team-a", "-f", "-"], JSON.stringify(obj));
      assert.equal(result.code, 0, `create ${obj.kind}: ${result.stderr}`);
    }
    // The relay pod's identity can then read only its own session and write only its status.
    const relay = "system:serviceaccount:team-a:basic-relay";
    assert.equal(
      await canI(
        relay,
        { verb: "patch", resource: "relaysessions.trickle-relay.io", subresource: "status" },
        "team-a",
      ),
      false,
      "no name: refused",
    );
    const relayCan = async (verb: string, name: string, subresource?: string) => {
      const args = [
        "auth",
        "can-i",
        verb,
        `relaysessions.trickle-relay.io/${name}`,
        "-n",
        "team-a",
        `--as=${relay}`,
      ];
      if (subresource) args.push(`--subresource=${subresource}`);
      return (await cp.kubectl(args)).stdout.trim() === "yes";
    };
    assert.equal(await relayCan("get", "basic"), true);
    assert.equal(await relayCan("patch", "basic", "status"), true);
    assert.equal(await relayCan("get", "other"), false);
    assert.equal(await relayCan("update", "basic"), false);

    // status, events, lease through the API client, with the ServiceAccount's token
    const kc = new KubeConfig();
    kc.loadFromFile(wide.serviceAccountKubeconfig);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const patched = (await custom.patchNamespacedCustomObjectStatus(
      {
        group,
        version,
        plural,
        namespace: "team-a",
        name: "basic",
        body: { status: { phase: "Pending", observedGeneration: 1 } },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    )) as { status: { phase: string } };
    assert.equal(patched.status.phase, "Pending");
    const event = (kind: string) => ({
      metadata: { name: `basic.${kind}`, namespace: "team-a" },
      involvedObject: {
        apiVersion: `${group}/${version}`,
        kind: "RelaySession",
        name: "basic",
        namespace: "team-a",
        uid,
      },
      reason: "PodCreated",
      message: "created pod basic-relay-0",
      type: "Normal",
      source: { component: "trickle-relay-operator" },
    });
    const coreEvent = await asOperator(
      wide,
      ["create", "-f", "-"],
      JSON.stringify({ apiVersion: "v1", kind: "Event", ...event("core") }),
    );
    assert.equal(coreEvent.code, 0, coreEvent.stderr);
    const newEvent = await asOperator(
      wide,
      ["create", "-f", "-"],
      JSON.stringify({
        apiVersion: "events.k8s.io/v1",
        kind: "Event",
        metadata: { name: "basic.new", namespace: "team-a" },
        regarding: {
          apiVersion: `${group}/${version}`,
          kind: "RelaySession",
          name: "basic",
          namespace: "team-a",
          uid,
        },
        reason: "PodCreated",
        note: "created pod basic-relay-0",
        type: "Normal",
        action: "Create",
        reportingController: "trickle-relay.io/operator",
        reportingInstance: "tr-trickle-relay-0",
        eventTime: new Date().toISOString().replace(/\.\d+Z$/, ".000000Z"),
      }),
    );
    assert.equal(newEvent.code, 0, newEvent.stderr);

    const leases = kc.makeApiClient(CoordinationV1Api);
    const leaseName = "tr-trickle-relay";
    await leases.createNamespacedLease({
      namespace: "tr-helm",
      body: { metadata: { name: leaseName }, spec: { holderIdentity: "op-0", leaseDurationSeconds: 15 } },
    });
    const lease = await leases.readNamespacedLease({ namespace: "tr-helm", name: leaseName });
    // (renewTime is a MicroTime the 1.20 apiserver parses only with 6 fractional digits; the
    // update itself is what matters here.)
    lease.spec!.holderIdentity = "op-1";
    await leases.replaceNamespacedLease({ namespace: "tr-helm", name: leaseName, body: lease });

    // Pod replaced / session expired (ttlSecondsAfterFinished)
    const podDeleted = await asOperator(wide, [
      "delete",
      "-n",
      "team-a",
      "pod/basic-relay-0",
      "--wait=false",
    ]);
    assert.equal(podDeleted.code, 0, podDeleted.stderr);
    const sessionDeleted = await asOperator(wide, ["delete", "-n", "team-a", "rls/basic", "--wait=false"]);
    assert.equal(sessionDeleted.code, 0, sessionDeleted.stderr);
  });

  test("refused for real (403): secrets, deployments, spec writes, RBAC escalation, other namespaces", async () => {
    const other = await cp.kubectl(["apply", "-n", "team-b", "-f", "-"], { input: sessionYaml("other") });
    assert.equal(other.code, 0, other.stderr);
    const refusals: Array<[InstalledChart, string[], string?]> = [
      [wide, ["get", "secrets", "-n", "team-a"]],
      [wide, ["create", "deployment", "x", "--image=busybox", "-n", "team-a"]],
      [wide, ["label", "rls/other", "-n", "team-b", "edited=yes"]], // never writes metadata/spec
      [wide, ["create", "clusterrole", "x", "--verb=get", "--resource=pods"]],
      [wide, ["delete", "crd", "relaysessions.trickle-relay.io", "--wait=false"]],
      // Escalation: a Role granting what the operator does not hold is refused by the apiserver.
      [wide, ["create", "role", "steal", "--verb=get", "--resource=secrets", "-n", "team-a"]],
      [wide, ["apply", "-n", "team-a", "-f", "-"], sessionYaml("made-by-operator")], // no create without the gateway
      [narrow, ["get", "rls", "-n", "team-a"]],
      [narrow, ["run", "x", "--image=busybox", "--restart=Never", "-n", "team-a"]],
      [narrow, ["get", "rls", "--all-namespaces"]],
      [
        narrow,
        ["create", "role", "x", "--verb=get", "--resource=relaysessions.trickle-relay.io", "-n", "team-a"],
      ],
    ];
    for (const [chart, args, input] of refusals) {
      const result = await asOperator(chart, args, input);
      assert.notEqual(result.code, 0, `${chart.release}: kubectl ${args.join(" ")} was allowed`);
      assert.match(
        result.stderr,
        /forbidden/i,
        `${chart.release}: kubectl ${args.join(" ")}: ${result.stderr}`,
      );
    }
    // …while the namespaced operator does its job in a watched namespace, escalation check included.
    const ok = await asOperator(
      narrow,
      ["create", "-n", "team-b", "-f", "-"],
      JSON.stringify({
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        metadata: { name: "other-relay" },
        rules: [
          {
            apiGroups: [group],
            resources: ["relaysessions"],
            resourceNames: ["other"],
            verbs: ["get", "list", "watch"],
          },
          {
            apiGroups: [group],
            resources: ["relaysessions/status"],
            resourceNames: ["other"],
            verbs: ["get", "patch"],
          },
        ],
      }),
    );
    assert.equal(ok.code, 0, ok.stderr);
  });

  test("helm upgrade to two replicas switches leader election on", async () => {
    const upgraded = await helm([
      "upgrade",
      "tr",
      chartDir,
      "-n",
      "tr-helm",
      "--kubeconfig",
      cp.kubeconfigPath,
      "--reuse-values",
      "--set",
      "replicaCount=2",
    ]);
    assert.equal(upgraded.code, 0, upgraded.stderr);
    const deployment = JSON.parse(
      (await cp.kubectl(["get", "-n", "tr-helm", "deployment/tr-trickle-relay", "-o", "json"])).stdout,
    );
    assert.equal(deployment.spec.replicas, 2);
    assert.ok(deployment.spec.template.spec.containers[0].args.includes("--leader-elect"));
  });

  test("kubectl apply -k of the kustomize base (kubectl 1.20's built-in kustomize), then a sample session", async () => {
    const applied = await cp.kubectl(["apply", "-k", `${repoRoot}/charts/gitops/kustomize/base`]);
    assert.equal(applied.code, 0, applied.stderr);
    const rendered = parseManifests(
      readFileSync(`${repoRoot}/charts/gitops/kustomize/base/trickle-relay.yaml`, "utf8"),
    );
    for (const o of rendered) {
      const got = await cp.kubectl([
        "get",
        ...(o.metadata.namespace ? ["-n", o.metadata.namespace] : []),
        `${o.kind}/${o.metadata.name}`,
        "-o",
        "name",
      ]);
      assert.equal(got.code, 0, `${o.kind} ${o.metadata.name}: ${got.stderr}`);
    }
    await cp.kubectl(["create", "namespace", "relay-sessions"]);
    const sample = await cp.kubectl([
      "apply",
      "-n",
      "relay-sessions",
      "-f",
      `${repoRoot}/charts/gitops/samples/relaysession.yaml`,
    ]);
    assert.equal(sample.code, 0, sample.stderr);
  });

  test("helm uninstall keeps the CRD (crds.keep) and with it the sessions", async () => {
    const uninstalled = await helm(["uninstall", "tr", "-n", "tr-helm", "--kubeconfig", cp.kubeconfigPath]);
    assert.equal(uninstalled.code, 0, uninstalled.stderr);
    assert.match(
      uninstalled.stdout + uninstalled.stderr,
      /kept due to the resource policy|release "tr" uninstalled/,
    );
    assert.equal((await cp.kubectl(["get", "crd/relaysessions.trickle-relay.io"])).code, 0);
    assert.equal((await cp.kubectl(["get", "-n", "relay-sessions", "rls/demo"])).code, 0);
    assert.notEqual(
      (await cp.kubectl(["get", "clusterrole/tr-trickle-relay"])).code,
      0,
      "the release's RBAC is gone",
    );
  });
});
