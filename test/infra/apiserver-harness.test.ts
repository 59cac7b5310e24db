/**
 * Exercises the envtest-style control plane of test/infra/apiserver.ts against the API semantics the
 * operator relies on (specs/kubernetes-operator.md §4.5): CRD defaulting, the status subresource,
 * 410 on a stale watch, owner-reference garbage collection, RBAC with static tokens, and an
 * apiserver restart. Skipped only when the binaries cannot be obtained (not root and not cached).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  Watch,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "./apiserver.js";

const assets = await resolveEnvtestAssets();

const group = "test.trickle-relay.io";
const version = "v1";
const plural = "widgets";
const namespace = "harness";

const widgetCrd = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.${group}
spec:
  group: ${group}
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget, listKind: WidgetList }
  versions:
    - name: ${version}
      served: true
      storage: true
      subresources: { status: {} }
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: { type: integer, default: 3 }
                colour: { type: string }
            status:
              type: object
              properties:
                ready: { type: boolean }
                message: { type: string }
`;

type Widget = {
  metadata: { name: string; uid: string; generation: number; resourceVersion: string };
  spec: { size?: number; colour?: string };
  status?: { ready?: boolean; message?: string };
};

const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

async function eventually<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((done) => setTimeout(done, 250));
  }
}

describe(
  "envtest control plane (real kube-apiserver + etcd + kube-controller-manager)",
  { skip: assets.skipReason },
  () => {
    let cp: ControlPlane;
    let kc: KubeConfig;
    let core: CoreV1Api;
    let custom: CustomObjectsApi;

    before(async () => {
      cp = await startControlPlane({
        controllerManager: true,
        users: [{ name: "alice", groups: ["widget-readers"] }],
      });
      kc = new KubeConfig();
      kc.loadFromFile(cp.kubeconfigPath);
      core = kc.makeApiClient(CoreV1Api);
      custom = kc.makeApiClient(CustomObjectsApi);
    });

    after(async () => {
      await cp?.stop();
    });

    test("client-node creates a namespace through the generated kubeconfig", async () => {
      const created = await core.createNamespace({ body: { metadata: { name: namespace } } });
      assert.equal(created.metadata?.name, namespace);
      const version = await cp.kubectl(["version", "-o", "json"]);
      assert.equal(version.code, 0, version.stderr);
      assert.match(JSON.parse(version.stdout).serverVersion.gitVersion, /^v1\.20\./);
    });

    test("kubectl applies a CRD and the apiserver defaults spec.size", async () => {
      const applied = await cp.kubectl(["apply", "-f", "-"], { input: widgetCrd });
      assert.equal(applied.code, 0, applied.stderr);
      const established = await cp.kubectl([
        "wait",
        "--for=condition=Established",
        `crd/widgets.${group}`,
        "--timeout=30s",
      ]);
      assert.equal(established.code, 0, established.stderr);

      const widget = `apiVersion: ${group}/${version}\nkind: Widget\nmetadata: {name: w1, namespace: ${namespace}}\nspec: {colour: ""}\n`;
      const created = await cp.kubectl(["apply", "-f", "-"], { input: widget });
      assert.equal(created.code, 0, created.stderr);
      const w1 = (await custom.getNamespacedCustomObject({
        group,
        version,
        namespace,
        plural,
        name: "w1",
      })) as Widget;
      assert.equal(w1.spec.size, 3, "schema default applied");
      // The kube-openapi vendor fix: an empty string must not be rejected as null under Go 1.19.
      assert.equal(w1.spec.colour, "");
      assert.equal(w1.metadata.generation, 1);
    });

    test("the status subresource splits spec and status", async () => {
      // Status sent to the main resource is ignored; a spec change bumps generation.
      const main = (await custom.patchNamespacedCustomObject(
        {
          group,
          version,
          namespace,
          plural,
          name: "w1",
          body: { spec: { size: 5 }, status: { ready: true } },
        },
        mergePatch,
      )) as Widget;
      assert.equal(main.spec.size, 5);
      assert.equal(main.status?.ready, undefined);
      assert.equal(main.metadata.generation, 2);

      // Spec sent to /status is ignored; status changes do not bump generation.
      const status = (await custom.patchNamespacedCustomObjectStatus(
        {
          group,
          version,
          namespace,
          plural,
          name: "w1",
          body: { spec: { size: 9 }, status: { ready: true, message: "" } },
        },
        mergePatch,
      )) as Widget;
      assert.equal(status.spec.size, 5);
      assert.deepEqual(status.status, { ready: true, message: "" });
      assert.equal(status.metadata.generation, 2);
    });

    test("a watch from a stale resourceVersion gets ERROR 410 Expired", async () => {
      const watch = new Watch(kc);
      const event = await new Promise<{ type: string; code?: number; reason?: string }>(
        (resolveEvent, reject) => {
          const timer = setTimeout(() => reject(new Error("no watch event within 15 s")), 15_000);
          void watch
            .watch(
              `/apis/${group}/${version}/namespaces/${namespace}/${plural}`,
              { resourceVersion: "1" },
              (type, obj: { code?: number; reason?: string }) => {
                clearTimeout(timer);
                resolveEvent({ type, code: obj.code, reason: obj.reason });
              },
              (err: unknown) => {
                if (err) {
                  clearTimeout(timer);
                  reject(err instanceof Error ? err : new Error(String(err)));
                }
              },
            )
            .then((controller) => setTimeout(() => controller.abort(), 15_000).unref());
        },
      );
      assert.deepEqual(event, { type: "ERROR", code: 410, reason: "Expired" });
    });

    test("the garbage collector deletes a ConfigMap owned by a deleted custom object", async () => {
      // The Widget CRD was created after the controller manager started; a restart puts it into the
      // garbage collector's discovery now rather than at its next 30 s rediscovery.
      await cp.restartControllerManager();
      const owner = (await custom.createNamespacedCustomObject({
        group,
        version,
        namespace,
        plural,
        body: { apiVersion: `${group}/${version}`, kind: "Widget", metadata: { name: "owner" }, spec: {} },
      })) as Widget;
      await core.createNamespacedConfigMap({
        namespace,
        body: {
          metadata: {
            name: "owned",
            ownerReferences: [
              { apiVersion: `${group}/${version}`, kind: "Widget", name: "owner", uid: owner.metadata.uid },
            ],
          },
          data: { k: "v" },
        },
      });
      // Still there while its owner exists.
      assert.equal((await core.readNamespacedConfigMap({ namespace, name: "owned" })).data?.k, "v");
      await custom.deleteNamespacedCustomObject({ group, version, namespace, plural, name: "owner" });

      const started = Date.now();
      await eventually("ConfigMap garbage-collected", 30_000, async () => {
        try {
          await core.readNamespacedConfigMap({ namespace, name: "owned" });
          return undefined;
        } catch (err) {
          if (err instanceof ApiException && err.code === 404) return true;
          throw err;
        }
      });
      console.log(`# garbage collection took ${Date.now() - started} ms`);
    });

    test("RBAC applies to a static user token", async () => {
      const token = await cp.createUserToken("alice", ["widget-readers"]);
      const asAlice = new KubeConfig();
      asAlice.loadFromOptions({
        clusters: kc.clusters,
        users: [{ name: "alice", token }],
        contexts: [{ name: "alice", cluster: kc.clusters[0]!.name, user: "alice" }],
        currentContext: "alice",
      });
      const aliceCustom = asAlice.makeApiClient(CustomObjectsApi);
      const list = () => aliceCustom.listNamespacedCustomObject({ group, version, namespace, plural });
      await assert.rejects(list(), (err: unknown) => err instanceof ApiException && err.code === 403);

      const rbac = `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: widget-reader}
rules: [{apiGroups: ["${group}"], resources: [widgets], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: widget-readers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: widget-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: widget-readers}]
`;
      const applied = await cp.kubectl(["apply", "-f", "-"], { input: rbac });
      assert.equal(applied.code, 0, applied.stderr);
      const items = await eventually("RBAC grant visible", 10_000, async () => {
        try {
          return ((await list()) as { items: Widget[] }).items;
        } catch (err) {
          if (err instanceof ApiException && err.code === 403) return undefined;
          throw err;
        }
      });
      assert.ok(items.some((w) => w.metadata.name === "w1"));

      const denied = await cp.kubectl([
        "--as=alice",
        "--as-group=widget-readers",
        "delete",
        "widget",
        "w1",
        "-n",
        namespace,
      ]);
      assert.notEqual(denied.code, 0);
      assert.match(denied.stderr, /forbidden/i);
    });

    test("a ServiceAccount token from the TokenRequest API authenticates as the ServiceAccount", async () => {
      await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: "robot" } } });
      const token = await cp.createServiceAccountToken(namespace, "robot");
      const asRobot = new KubeConfig();
      asRobot.loadFromOptions({
        clusters: kc.clusters,
        users: [{ name: "robot", token }],
        contexts: [{ name: "robot", cluster: kc.clusters[0]!.name, user: "robot" }],
        currentContext: "robot",
      });
      await assert.rejects(
        asRobot.makeApiClient(CoreV1Api).listNamespacedConfigMap({ namespace }),
        (err: unknown) =>
          err instanceof ApiException &&
          err.code === 403 &&
          String(err.body).includes(`system:serviceaccount:${namespace}:robot`),
      );
    });

    test("restartApiserver (graceful, then crash) keeps the data in etcd and serves again", async () => {
      await cp.restartApiserver();
      await cp.restartApiserver({ crash: true });
      const w1 = (await custom.getNamespacedCustomObject({
        group,
        version,
        namespace,
        plural,
        name: "w1",
      })) as Widget;
      assert.equal(w1.spec.size, 5);
    });

    test("the namespace controller finishes deleting a namespace", async () => {
      await core.deleteNamespace({ name: namespace });
      await eventually("namespace gone", 60_000, async () => {
        try {
          await core.readNamespace({ name: namespace });
          return undefined;
        } catch (err) {
          if (err instanceof ApiException && err.code === 404) return true;
          throw err;
        }
      });
    });
  },
);
