/**
 * What happens to a warm pod after its session and when its pool shrinks, with the real operator
 * binary on a real kube-apiserver + etcd. Pods are played by FakePoolKubelet (pool-harness.ts).
 *
 * 1. `spec.recycle: true`: the relay of the claimed pod marks it recycled (with the relay's own
 *    markRecycled, as `run --pool-pod --pool-recycle` does after a clean end and a ComfyStream health
 *    check); the session is Succeeded, the same pod (same uid) is unclaimed, back to the pool, and
 *    serves the next session. A session that fails on a recycling pool still loses its pod.
 * 2. Default (no recycle): the pod of an ended session is deleted and the pool refills with a new pod.
 * 3. Scale-down and pool deletion: idle pods go through `draining` (label) before they are deleted,
 *    seen on a watch of the pods; the allocated pod is never touched.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { KubeConfig, Watch, type V1Pod } from "@kubernetes/client-node";
import { configFromKubeconfig, kubeAccess } from "../../../relay-pod/src/kube/api-client.js";
import { markRecycled } from "../../../relay-pod/src/kube/pool-claim.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../../infra/apiserver.js";
import { repoRoot, startOperator, waitFor, type OperatorProcess } from "../operator-harness.js";
import { FakePoolKubelet, PoolKubectl, claimsOf, poolYaml, pooledSessionsYaml } from "./pool-harness.js";

const assets = await resolveEnvtestAssets();
const STATE = "trickle-relay.io/pool-state";

describe(
  "RelayPool pod lifecycle (real apiserver, operator binary, stand-in kubelet)",
  { skip: assets.skipReason },
  () => {
    let cp: ControlPlane;
    let kc: KubeConfig;
    let kubectl: PoolKubectl;
    const operators: OperatorProcess[] = [];
    const kubelets: FakePoolKubelet[] = [];

    before(async () => {
      cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds")] });
      kc = new KubeConfig();
      kc.loadFromFile(cp.kubeconfigPath);
      kubectl = new PoolKubectl(cp);
    });

    after(async () => {
      for (const kubelet of kubelets) kubelet.stop();
      for (const operator of operators) await operator.stop().catch(() => undefined);
      await cp?.stop();
    });

    async function setUp(namespace: string): Promise<FakePoolKubelet> {
      await kubectl.ok(["create", "namespace", namespace]);
      const kubelet = new FakePoolKubelet(kc, namespace).start();
      kubelets.push(kubelet);
      const op = await startOperator({
        kubeconfigPath: cp.kubeconfigPath,
        args: ["--no-leader-elect", "--namespace", namespace],
      });
      operators.push(op);
      await op.waitReady(60_000);
      return kubelet;
    }

    async function waitPoolReady(namespace: string, ready: number): Promise<void> {
      await waitFor(`${ready} ready`, 60_000, async () => {
        return (await kubectl.pool(namespace, "gpu")).status?.readyReplicas === ready;
      });
    }

    const phaseOf = async (namespace: string, name: string) =>
      (await kubectl.sessions(namespace)).find((s) => s.metadata.name === name)?.status?.phase;

    test("spec.recycle: a cleanly ended session gives its pod back to the pool, which serves the next one", async () => {
      const ns = "pool-recycle";
      const kubelet = await setUp(ns);
      await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 1, recycle: true }));
      await waitPoolReady(ns, 1);
      const [warm] = await kubectl.pods(ns, "gpu");
      assert.ok(
        warm!.spec!.containers.find((c) => c.name === "relay")!.args!.includes("--pool-recycle"),
        "the relay is told to recycle",
      );

      await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", ["first"]));
      await waitFor("first allocated", 30_000, async () =>
        claimsOf(await kubectl.pods(ns, "gpu")).has("first"),
      );
      const claimed = (await kubectl.pods(ns, "gpu"))[0]!;
      // The relay's end of a clean session: its own mark, as run --pool-pod --pool-recycle writes it.
      await markRecycled(
        kubeAccess(configFromKubeconfig(cp.kubeconfigPath)),
        { namespace: ns, name: claimed.metadata!.name! },
        claimed.metadata!.annotations!["trickle-relay.io/allocated-at"]!,
        AbortSignal.timeout(10_000),
      );

      await waitFor("first Succeeded", 30_000, async () => (await phaseOf(ns, "first")) === "Succeeded");
      const idle = await waitFor("the same pod idle again", 30_000, async () => {
        const pods = await kubectl.pods(ns, "gpu");
        const pod = pods.find((p) => p.metadata?.uid === warm!.metadata!.uid);
        return pod && !pod.metadata?.labels?.["trickle-relay.io/session"] ? pod : undefined;
      });
      assert.equal(idle.metadata?.labels?.[STATE], "ready");
      assert.equal(idle.metadata?.ownerReferences?.[0]?.kind, "RelayPool", "owned by the pool again");
      assert.equal(idle.metadata?.annotations?.["trickle-relay.io/allocated-session"], undefined);
      assert.equal((await kubectl.pods(ns, "gpu")).length, 1, "no replacement pod was created");
      await waitPoolReady(ns, 1);
      const events = await kubectl.ok(["get", "events", "-n", ns, "-o", "json"]);
      assert.match(events, /"reason": "Recycled"/);

      await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", ["second"]));
      await waitFor("second allocated", 30_000, async () =>
        claimsOf(await kubectl.pods(ns, "gpu")).has("second"),
      );
      const again = (await kubectl.pods(ns, "gpu"))[0]!;
      assert.equal(again.metadata?.uid, warm!.metadata!.uid, "the next session got the recycled pod");

      // A failed session is not recycled: the pod goes and the pool refills.
      await kubelet.exit(again.metadata!.name!, 1);
      await waitFor("a new pod", 60_000, async () => {
        const pods = (await kubectl.pods(ns, "gpu")).filter((p) => !p.metadata?.deletionTimestamp);
        return pods.some(
          (p) => p.metadata?.uid !== warm!.metadata!.uid && !p.metadata?.labels?.["trickle-relay.io/session"],
        );
      });
    });

    test("default: the pod of an ended session is deleted and the pool refills with a new one", async () => {
      const ns = "pool-norecycle";
      const kubelet = await setUp(ns);
      await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 1 }));
      await waitPoolReady(ns, 1);
      await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", ["one"]));
      await waitFor("allocated", 30_000, async () => claimsOf(await kubectl.pods(ns, "gpu")).has("one"));
      const used = (await kubectl.pods(ns, "gpu"))[0]!;
      await kubelet.exit(used.metadata!.name!, 0);
      await waitFor("Succeeded", 30_000, async () => (await phaseOf(ns, "one")) === "Succeeded");
      await waitFor("a fresh pod Ready", 60_000, async () => {
        const pods = await kubectl.pods(ns, "gpu");
        return pods.length === 1 && pods[0]!.metadata?.uid !== used.metadata?.uid;
      });
      await waitPoolReady(ns, 1);
    });

    test("scale-down and pool deletion drain idle pods (label) before deleting them; the allocated pod stays", async (t) => {
      const ns = "pool-drain";
      await setUp(ns);
      await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 4 }));
      await waitPoolReady(ns, 4);
      await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", ["stay"]));
      const held = await waitFor(
        "allocated",
        30_000,
        async () => claimsOf(await kubectl.pods(ns, "gpu")).get("stay")?.[0],
      );

      // Every state each pod had on the watch, and the state it was deleted in.
      const states = new Map<string, string[]>();
      const deletedIn = new Map<string, string | undefined>();
      const watch = await new Watch(kc).watch(
        `/api/v1/namespaces/${ns}/pods`,
        {},
        (type, pod: V1Pod) => {
          const name = pod.metadata?.name ?? "";
          const state = pod.metadata?.labels?.[STATE];
          states.set(name, [...(states.get(name) ?? []), state ?? "-"]);
          if (type === "DELETED") deletedIn.set(name, state);
        },
        () => undefined,
      );
      t.after(() => watch.abort());

      await kubectl.ok(["scale", "rlp/gpu", "-n", ns, "--replicas=2"]);
      await waitFor("two idle pods removed", 30_000, () => deletedIn.size === 2);
      for (const [name, state] of deletedIn) {
        assert.equal(
          state,
          "draining",
          `${name} was deleted while draining (states: ${states.get(name)?.join(" → ")})`,
        );
        assert.notEqual(name, held);
      }
      const left = (await kubectl.pods(ns, "gpu")).map((p) => p.metadata?.name);
      assert.equal(left.length, 2);
      assert.ok(left.includes(held), "the allocated pod was not touched");

      deletedIn.clear();
      await kubectl.ok(["delete", "rlp", "gpu", "-n", ns]);
      await waitFor("the idle pod removed", 30_000, () => deletedIn.size === 1);
      const [[name, state]] = [...deletedIn];
      assert.notEqual(name, held);
      // Without the controller manager here, only the operator removes it: through draining.
      assert.equal(state, "draining", `states: ${states.get(name!)?.join(" → ")}`);
      const remaining = await kubectl.pods(ns, "gpu");
      assert.deepEqual(
        remaining.map((p) => p.metadata?.name),
        [held],
        "the session's pod stays",
      );
      assert.equal(remaining[0]!.metadata?.labels?.[STATE], "allocated");
    });
  },
);
