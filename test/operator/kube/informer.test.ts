/**
 * SupervisedInformer against a real kube-apiserver + etcd (test/infra/apiserver.ts): the cache
 * follows the cluster, and it recovers from the failures informers meet in production — 410 Gone,
 * a watch that goes silent, an apiserver crash — without losing objects, and stops quietly.
 * ConfigMaps stand in for any resource: the informer only sees a collection path.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type KubernetesListObject,
  type KubernetesObject,
  type V1ConfigMap,
} from "@kubernetes/client-node";
import { Registry } from "prom-client";
import { SupervisedInformer, type SupervisedInformerOptions } from "../../../operator/src/kube/informer.js";
import { createNamespacedInformers } from "../../../operator/src/kube/informer-group.js";
import { OwnerIndex } from "../../../operator/src/kube/owner-index.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../../infra/apiserver.js";
import { captureLogger, eventually, sleep } from "./helpers.js";
import { StallingProxy } from "./stalling-proxy.js";

const assets = await resolveEnvtestAssets();
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

// A custom resource for the 410 test: its watch cache starts when the CRD is created, so an early
// resourceVersion is outside its window (configmaps are cached from revision 1 on a fresh etcd).
const group = "kube-test.trickle-relay.io";
const gadgetCrd = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.${group}}
spec:
  group: ${group}
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, listKind: GadgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`;

describe("SupervisedInformer on a real kube-apiserver", { skip: assets.skipReason }, () => {
  let cp: ControlPlane;
  let kc: KubeConfig;
  let core: CoreV1Api;
  let custom: CustomObjectsApi;
  const informers: Array<{ stop(): Promise<void> }> = [];
  const proxies: StallingProxy[] = [];

  before(async () => {
    cp = await startControlPlane();
    kc = new KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
    core = kc.makeApiClient(CoreV1Api);
    custom = kc.makeApiClient(CustomObjectsApi);
    const applied = await cp.kubectl(["apply", "-f", "-"], { input: gadgetCrd });
    assert.equal(applied.code, 0, applied.stderr);
    const established = await cp.kubectl(["wait", "--for=condition=Established", `crd/gadgets.${group}`]);
    assert.equal(established.code, 0, established.stderr);
    for (const name of [
      "inf-basic",
      "inf-a",
      "inf-b",
      "inf-c",
      "inf-gone",
      "inf-silent",
      "inf-stop",
      "inf-crash",
      "inf-index-a",
      "inf-index-b",
    ]) {
      await core.createNamespace({ body: { metadata: { name } } });
    }
  });

  after(async () => {
    for (const informer of informers) await informer.stop();
    for (const proxy of proxies) await proxy.close();
    await cp?.stop();
  });

  function configMapInformer(
    namespace: string,
    options: Partial<SupervisedInformerOptions<V1ConfigMap>> = {},
  ): SupervisedInformer<V1ConfigMap> {
    const informer = new SupervisedInformer<V1ConfigMap>({
      kubeConfig: kc,
      name: namespace,
      path: `/api/v1/namespaces/${namespace}/configmaps`,
      backoff: { initialMs: 200, maxMs: 1_000 },
      ...options,
    });
    informers.push(informer);
    return informer;
  }

  const createConfigMap = (namespace: string, name: string, data: Record<string, string> = {}) =>
    core.createNamespacedConfigMap({ namespace, body: { metadata: { name }, data } });
  const patchConfigMap = (namespace: string, name: string, data: Record<string, string>) =>
    core.patchNamespacedConfigMap({ namespace, name, body: { data } }, mergePatch);
  const deleteConfigMap = (namespace: string, name: string) =>
    core.deleteNamespacedConfigMap({ namespace, name });
  const names = (objects: KubernetesObject[]) => objects.map((o) => o.metadata?.name).sort();

  test("the cache follows create, update and delete; update carries the old object; resync re-emits", async () => {
    const ns = "inf-basic";
    await createConfigMap(ns, "existing", { v: "0" });
    const informer = configMapInformer(ns, { resyncMs: 300 });
    const events: string[] = [];
    let lastUpdate: { obj: V1ConfigMap; old: V1ConfigMap } | undefined;
    const resynced = new Set<string>();
    informer.on("add", (obj) => events.push(`add ${obj.metadata?.name}`));
    informer.on("update", (obj, old) => {
      events.push(`update ${obj.metadata?.name}`);
      lastUpdate = { obj, old };
    });
    informer.on("delete", (obj) => events.push(`delete ${obj.metadata?.name}`));
    informer.on("resync", (obj) => resynced.add(obj.metadata?.name ?? ""));

    assert.equal(informer.synced, false);
    await informer.start();
    assert.equal(informer.synced, true, "start() resolves once the first list is cached");
    assert.equal(informer.get(ns, "existing")?.data?.v, "0");
    assert.equal(informer.get(ns, "existing")?.kind, "ConfigMap", "listed objects get their kind");
    assert.deepEqual(events, ["add existing"]);

    await createConfigMap(ns, "x", { v: "1" });
    await eventually("x added", 5_000, () => informer.get(ns, "x"));
    await patchConfigMap(ns, "x", { v: "2" });
    await eventually("x updated", 5_000, () => informer.get(ns, "x")?.data?.v === "2");
    assert.equal(lastUpdate?.old.data?.v, "1");
    assert.equal(lastUpdate?.obj.data?.v, "2");
    assert.deepEqual(names(informer.list(ns)), ["existing", "x"]);
    assert.deepEqual(names(informer.list()), ["existing", "x"]);
    assert.deepEqual(informer.list("elsewhere"), []);

    await deleteConfigMap(ns, "x");
    await eventually("x deleted", 5_000, () => informer.get(ns, "x") === undefined);
    assert.deepEqual(events, ["add existing", "add x", "update x", "delete x"]);
    resynced.clear(); // x may have been resynced while it existed (the API calls take over 300 ms under load)
    await eventually("resync of every cached object", 3_000, () => resynced.has("existing"));
    assert.ok(!resynced.has("x"), "deleted objects are not resynced");
    await informer.stop();
  });

  test("OwnerIndex: objects filed by owner as they are listed, added, moved and deleted, across a group", async () => {
    // The operator files relay pods by their session's uid; a label plays the owner here.
    const [a, b] = ["inf-index-a", "inf-index-b"];
    const labelled = (owner: string) => ({ metadata: { labels: { owner } } });
    await core.createNamespacedConfigMap({
      namespace: a,
      body: { metadata: { name: "early", labels: { owner: "s1" } } },
    });
    const group = createNamespacedInformers<V1ConfigMap>([a, b], (namespace) => ({
      kubeConfig: kc,
      name: `index-${namespace}`,
      path: `/api/v1/namespaces/${namespace}/configmaps`,
    }));
    informers.push(group);
    await group.start();
    const index = new OwnerIndex(group, (cm) => cm.metadata?.labels?.owner);
    const owned = (owner: string) =>
      index
        .byOwner(owner)
        .map((cm) => `${cm.metadata?.namespace}/${cm.metadata?.name}`)
        .sort();
    assert.deepEqual(owned("s1"), [`${a}/early`], "listed before the index existed");

    await core.createNamespacedConfigMap({
      namespace: a,
      body: { metadata: { name: "p1", labels: { owner: "s1" } } },
    });
    await core.createNamespacedConfigMap({
      namespace: b,
      body: { metadata: { name: "p2", labels: { owner: "s2" } } },
    });
    await core.createNamespacedConfigMap({ namespace: b, body: { metadata: { name: "unowned" } } });
    await eventually("added", 5_000, () => owned("s1").length === 2 && owned("s2").length === 1);
    assert.deepEqual(owned("s1"), [`${a}/early`, `${a}/p1`]);
    assert.deepEqual(owned("s2"), [`${b}/p2`]);

    await core.patchNamespacedConfigMap({ namespace: a, name: "p1", body: labelled("s2") }, mergePatch);
    await eventually("moved", 5_000, () => owned("s2").length === 2);
    assert.deepEqual(owned("s1"), [`${a}/early`]);
    assert.equal(
      index.byOwner("s2").find((cm) => cm.metadata?.name === "p1")?.metadata?.labels?.owner,
      "s2",
      "objects come from the cache, current",
    );

    await deleteConfigMap(a, "early");
    await eventually("deleted", 5_000, () => owned("s1").length === 0);
    assert.equal(index.owners, 1, "an owner with nothing left is forgotten");
    assert.deepEqual(owned("nobody"), []);
  });

  test("an informer group watches exactly the listed namespaces, or all of them", async () => {
    const scoped = createNamespacedInformers<V1ConfigMap>(["inf-a", "inf-b"], (namespace) => ({
      kubeConfig: kc,
      name: `cm/${namespace}`,
      path: `/api/v1/namespaces/${namespace}/configmaps`,
      labelSelector: "group-test=yes",
    }));
    const everywhere = createNamespacedInformers<V1ConfigMap>(undefined, (namespace) => ({
      kubeConfig: kc,
      name: `cm/${namespace ?? "*"}`,
      path: namespace ? `/api/v1/namespaces/${namespace}/configmaps` : "/api/v1/configmaps",
      labelSelector: "group-test=yes",
    }));
    informers.push(scoped, everywhere);
    const added: string[] = [];
    scoped.on("add", (obj) => added.push(`${obj.metadata?.namespace}/${obj.metadata?.name}`));
    await Promise.all([scoped.start(), everywhere.start()]);
    assert.ok(scoped.synced && everywhere.synced);

    const labelled = { labels: { "group-test": "yes" } };
    for (const namespace of ["inf-a", "inf-b", "inf-c"]) {
      await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "g", ...labelled } } });
    }
    await createConfigMap("inf-a", "unlabelled");
    await eventually("all three seen cluster-wide", 5_000, () => everywhere.list().length === 3);
    await eventually("both listed namespaces seen", 5_000, () => scoped.list().length === 2);
    await sleep(200);
    assert.deepEqual(added.sort(), ["inf-a/g", "inf-b/g"], "inf-c and unlabelled objects stay out");
    assert.equal(scoped.get("inf-c", "g"), undefined);
    assert.equal(everywhere.get("inf-c", "g")?.metadata?.name, "g");
    assert.equal(scoped.list("inf-b").length, 1);
    await Promise.all([scoped.stop(), everywhere.stop()]);
  });

  test("410 Gone on the watch → relist; an object created in the gap is not lost", async () => {
    const namespace = "inf-gone";
    const gadgets = { group, version: "v1", namespace, plural: "gadgets" };
    const createGadget = (name: string) =>
      custom.createNamespacedCustomObject({
        ...gadgets,
        body: { apiVersion: `${group}/v1`, kind: "Gadget", metadata: { name } },
      });
    await createGadget("before");
    const registry = new Registry();
    let lists = 0;
    // The first list claims a long-compacted resourceVersion, as a lagging cache might; the real
    // apiserver then answers the watch with 410 Expired.
    const informer = new SupervisedInformer<KubernetesObject>({
      kubeConfig: kc,
      name: "gone",
      path: `/apis/${group}/v1/namespaces/${namespace}/gadgets`,
      metrics: registry,
      backoff: { initialMs: 200, maxMs: 1_000 },
      list: async () => {
        const list = (await custom.listNamespacedCustomObject(
          gadgets,
        )) as KubernetesListObject<KubernetesObject>;
        if (++lists > 1) return list;
        await createGadget("in-the-gap");
        return { ...list, metadata: { ...list.metadata, resourceVersion: "1" } };
      },
    });
    informers.push(informer);
    const deleted: string[] = [];
    informer.on("delete", (obj) => deleted.push(obj.metadata?.name ?? ""));
    await informer.start();
    await eventually("relisted after 410", 10_000, () => informer.stats.expired >= 1 && lists >= 2);
    await eventually("gap object cached", 5_000, () => informer.get(namespace, "in-the-gap"));
    assert.deepEqual(names(informer.list(namespace)), ["before", "in-the-gap"]);
    assert.equal(informer.stats.relists, 1);
    assert.deepEqual(deleted, []);

    // And the watch that follows the relist is live.
    await createGadget("after");
    await eventually("live again", 5_000, () => informer.get(namespace, "after"));
    assert.equal(lists, 2, "one relist was enough");
    const text = await registry.metrics();
    assert.match(text, /operator_informer_gone_total\{informer="gone"\} 1/);
    assert.match(text, /operator_informer_lists_total\{informer="gone"\} 2/);
    assert.match(text, /operator_informer_watch_restarts_total\{informer="gone",reason="expired"\} 1/);
    assert.match(text, /operator_informer_synced\{informer="gone"\} 1/);
    await informer.stop();
  });

  test("a watch that goes silent (open connection, nothing delivered) is restarted by the watchdog", async () => {
    const ns = "inf-silent";
    const proxy = await StallingProxy.start(cp.server);
    proxies.push(proxy);
    const log = captureLogger();
    const informer = configMapInformer(ns, {
      kubeConfig: proxy.kubeConfig(kc),
      watchdogMs: 2_000,
      // The server would not end the watch during the test either: only the watchdog can help.
      watchTimeoutSeconds: 120,
      logger: log.logger,
    });
    await informer.start();
    await createConfigMap(ns, "before");
    await eventually("watch delivers", 5_000, () => informer.get(ns, "before"));

    proxy.stallOpenConnections();
    const stalledAt = performance.now();
    await createConfigMap(ns, "during");
    await sleep(400);
    assert.equal(informer.get(ns, "during"), undefined, "the stalled watch delivers nothing");
    await eventually("object made during the stall arrives", 8_000, () => informer.get(ns, "during"));
    const recoveredMs = performance.now() - stalledAt;
    assert.equal(informer.stats.watchdogRestarts, 1);
    assert.ok(informer.stats.relists >= 1);
    // client-node's own inactivity abort sits behind the watchdog (watchdogMs + 5 s); we beat it.
    assert.ok(recoveredMs < 5_000, `recovered after ${Math.round(recoveredMs)} ms`);
    assert.ok(log.lines.some((line) => line.msg === "watch silent too long; restarting with a relist"));
    await informer.stop();
  });

  test("stop() ends the watch quietly: no 'error' event, no warning, no connection left", async () => {
    const ns = "inf-stop";
    const proxy = await StallingProxy.start(cp.server);
    proxies.push(proxy);
    const log = captureLogger();
    const errors: Error[] = [];
    const informer = configMapInformer(ns, { kubeConfig: proxy.kubeConfig(kc), logger: log.logger });
    informer.on("error", (err) => errors.push(err));
    await informer.start();
    await eventually(
      "watch connected",
      5_000,
      () => informer.stats.watches >= 1 && proxy.openConnections >= 1,
    );
    await informer.stop();
    // undici keeps a finished connection idle for its keep-alive timeout (4 s) before closing it.
    await eventually("connections closed", 8_000, () => proxy.openConnections === 0);
    await createConfigMap(ns, "after-stop");
    await sleep(500);
    assert.equal(informer.get(ns, "after-stop"), undefined, "nothing is applied after stop()");
    assert.equal(informer.synced, false);
    assert.deepEqual(errors, []);
    assert.deepEqual(log.problems(), []);

    // Stopping an informer that cannot reach its apiserver ends its retries and rejects start().
    proxy.blackhole();
    const unreachable = configMapInformer(ns, { kubeConfig: proxy.kubeConfig(kc), listTimeoutMs: 300 });
    const unreachableErrors: Error[] = [];
    unreachable.on("error", (err) => unreachableErrors.push(err));
    const starting = unreachable.start();
    await eventually("a list failed", 5_000, () => unreachableErrors.length >= 1);
    const stopStarted = performance.now();
    await unreachable.stop();
    assert.ok(performance.now() - stopStarted < 500, "stop() does not wait out a backoff or a list");
    await assert.rejects(starting, /stopped before it synced/);
  });

  test("survives an apiserver crash and converges on changes it did not watch happen", async () => {
    const ns = "inf-crash";
    for (const name of ["keep", "change", "remove"]) await createConfigMap(ns, name, { v: "0" });
    const errors: Error[] = [];
    const updated: string[] = [];
    const deleted: string[] = [];
    const informer = configMapInformer(ns, { backoff: { initialMs: 300, maxMs: 1_000 } });
    informer.on("error", (err) => errors.push(err));
    informer.on("update", (obj) => updated.push(`${obj.metadata?.name}=${obj.data?.v}`));
    informer.on("delete", (obj) => deleted.push(obj.metadata?.name ?? ""));
    await informer.start();
    assert.deepEqual(names(informer.list(ns)), ["change", "keep", "remove"]);

    await cp.restartApiserver({ crash: true });
    // Changed as soon as the apiserver is back, while the informer is still reconnecting.
    await createConfigMap(ns, "new", { v: "1" });
    await patchConfigMap(ns, "change", { v: "1" });
    await deleteConfigMap(ns, "remove");

    await eventually("cache converged", 20_000, () => {
      const state = informer.list(ns).map((o) => `${o.metadata?.name}=${o.data?.v}`);
      return state.sort().join(",") === "change=1,keep=0,new=1";
    });
    assert.ok(errors.length >= 1, "the broken watch was reported");
    assert.ok(informer.stats.restarts >= 1);
    assert.deepEqual(deleted, ["remove"], "a delete it missed is still emitted");
    assert.deepEqual(updated, ["change=1"]);

    await createConfigMap(ns, "after");
    await eventually("watch live again", 5_000, () => informer.get(ns, "after"));
    await informer.stop();
  });
});
