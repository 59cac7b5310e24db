/**
 * RelayPool warm pools with the real operator binary on a real kube-apiserver + etcd. What a user
 * checks: `kubectl get rlp` / `rls`, the pool's pods and their labels, `kubectl scale`, `kubectl wait`.
 *
 * Pods are played by FakePoolKubelet (pool-harness.ts: Running, then Ready after a stand-in warm-up;
 * `exit()` ends a pod like a relay whose input ended); the relay's own part (status.relay) is
 * patched by the test where a scenario needs a session Running.
 *
 * 1. 50 sessions at once against a 10-pod pool: exactly 10 allocated, no pod twice, 40 Pending with
 *    PoolExhausted; as allocated sessions end, the pool refills and the next sessions in creation
 *    order get the new pods;
 * 2. the operator SIGKILLed mid-allocation and restarted, and two replicas under leader election
 *    with the leader SIGKILLed mid-allocation: no pod claimed twice, no session with two pods, none
 *    lost, first come first served kept;
 * 3. `kubectl scale rlp` up and down: scale-down removes idle pods and never an allocated one;
 *    the autoscaler buffer keeps idle pods on top of the allocated ones;
 * 4. a warm pod crashing while idle is replaced; one crashing while allocated restarts its session
 *    (restart budget) on a new warm pod;
 * 5. `onExhausted: cold` starts a per-session pod from the pool's template;
 * 6. the example manifest is valid, and comfystream + poolRef together are refused;
 *    deleting a pool removes its idle pods (garbage collector) and spares the allocated one;
 * 7. `kubectl wait --for=condition=Ready rls/X` returns for a pooled session once media flows.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Pod,
} from "@kubernetes/client-node";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../../infra/apiserver.js";
import { repoRoot, startOperator, waitFor, type OperatorProcess } from "../operator-harness.js";
import {
  FakePoolKubelet,
  createPooledSession,
  PoolKubectl,
  claimsOf,
  poolYaml,
  pooledSessionsYaml,
  readyReason,
} from "./pool-harness.js";

const assets = await resolveEnvtestAssets();
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

const names = (prefix: string, count: number) =>
  Array.from({ length: count }, (_, i) => `${prefix}-${String(i).padStart(2, "0")}`);

describe("RelayPool (real apiserver, operator binary, stand-in kubelet)", { skip: assets.skipReason }, () => {
  let cp: ControlPlane;
  let kc: KubeConfig;
  let kubectl: PoolKubectl;
  const operators: OperatorProcess[] = [];
  const kubelets: FakePoolKubelet[] = [];

  before(async () => {
    // With the controller manager: its garbage collector is what removes a deleted pool's idle pods.
    cp = await startControlPlane({ controllerManager: true, crdPaths: [join(repoRoot, "crds")] });
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
    return kubelet;
  }

  async function operator(namespace: string, name = "operator"): Promise<OperatorProcess> {
    const op = await startOperator({
      name,
      kubeconfigPath: cp.kubeconfigPath,
      args: ["--no-leader-elect", "--namespace", namespace],
    });
    operators.push(op);
    await op.waitReady(60_000);
    return op;
  }

  /** Pooled sessions created one after another, 30 ms apart (as from a gateway), in the background. */
  async function createOneByOne(ns: string, sessionNames: string[]): Promise<void> {
    const custom = kc.makeApiClient(CustomObjectsApi);
    for (const name of sessionNames) {
      await createPooledSession(custom, ns, name);
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
  }

  async function waitPoolReady(namespace: string, pool: string, ready: number): Promise<void> {
    await waitFor(`${pool}: ${ready} ready`, 60_000, async () => {
      const status = (await kubectl.pool(namespace, pool)).status;
      return status?.readyReplicas === ready;
    });
  }

  test("50 sessions against a 10-pod pool: 10 allocated, 40 PoolExhausted, refilled first come first served", async () => {
    const ns = "pool-burst";
    const kubelet = await setUp(ns);
    const op = await operator(ns);
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 10 }));
    await waitPoolReady(ns, "gpu", 10);

    const sessionNames = names("s", 50);
    await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", sessionNames));

    const pending = await waitFor("10 allocated, 40 PoolExhausted", 60_000, async () => {
      const sessions = await kubectl.sessions(ns);
      const exhausted = sessions.filter((s) => readyReason(s) === "PoolExhausted");
      const allocated = sessions.filter((s) => s.status?.allocation?.podName);
      return exhausted.length === 40 && allocated.length === 10 ? sessions : undefined;
    });
    for (const session of pending.filter((s) => readyReason(s) === "PoolExhausted"))
      assert.equal(session.status?.phase, "Pending", `${session.metadata.name} is Pending`);

    let pods = await kubectl.pods(ns, "gpu");
    let claims = claimsOf(pods);
    assert.equal(claims.size, 10, "10 sessions hold a pod");
    for (const [session, held] of claims) assert.equal(held.length, 1, `${session} holds one pod: ${held}`);
    const claimedPods = [...claims.values()].flat();
    assert.equal(new Set(claimedPods).size, 10, "no pod is claimed twice");
    assert.deepEqual([...claims.keys()].sort(), sessionNames.slice(0, 10), "the first 10 sessions created");
    for (const pod of pods.filter((p) => claimedPods.includes(p.metadata?.name ?? ""))) {
      assert.equal(pod.metadata?.labels?.["trickle-relay.io/pool-state"], "allocated");
      assert.equal(pod.metadata?.ownerReferences?.[0]?.kind, "RelaySession", "the session owns its pod now");
    }
    const statusAllocations = pending.filter((s) => s.status?.allocation?.podName);
    for (const s of statusAllocations) {
      assert.deepEqual(
        claims.get(s.metadata.name ?? ""),
        [s.status!.allocation!.podName],
        "status names the pod",
      );
      assert.ok(s.status!.allocation!.allocationTime, "status has the allocation time");
    }
    const table = await kubectl.ok(["get", "rlp", "gpu", "-n", ns]);
    assert.match(table, /NAME\s+READY\s+ALLOCATED\s+DESIRED\s+AGE/);
    assert.match(table, /gpu\s+0\s+10\s+10\s/);

    // Five sessions end; their pods go, the pool refills, and s-10 … s-14 are next, in that order.
    for (const session of sessionNames.slice(0, 5)) await kubelet.exit(claims.get(session)![0]!);
    await waitFor("s-10 … s-14 allocated from the refill", 60_000, async () => {
      claims = claimsOf(await kubectl.pods(ns, "gpu"));
      return claims.size === 10 && sessionNames.slice(10, 15).every((s) => claims.has(s));
    });
    for (const session of sessionNames.slice(15)) assert.ok(!claims.has(session), `${session} still waits`);
    const ended = (await kubectl.sessions(ns)).filter((s) =>
      sessionNames.slice(0, 5).includes(s.metadata.name!),
    );
    for (const s of ended) assert.equal(s.status?.phase, "Succeeded", `${s.metadata.name} Succeeded`);
    pods = await kubectl.pods(ns, "gpu");
    assert.equal(new Set([...claimsOf(pods).values()].flat()).size, 10, "still no pod twice");
    // Kubernetes Events a user reads with kubectl: allocation on the session, exhaustion and refill on the pool.
    await waitFor("Events", 30_000, async () => {
      const events = await kubectl.ok(["get", "events", "-n", ns, "-o", "json"]);
      const seen = (
        JSON.parse(events) as { items: Array<{ reason: string; involvedObject: { kind: string } }> }
      ).items;
      const has = (kind: string, reason: string) =>
        seen.some((e) => e.involvedObject.kind === kind && e.reason === reason);
      return (
        has("RelaySession", "Allocated") && has("RelayPool", "PoolExhausted") && has("RelayPool", "Refill")
      );
    });
    const metrics = await op.metrics();
    assert.match(
      metrics,
      /trickle_relay_pool_pods\{namespace="pool-burst",pool="gpu",state="allocated"\} 10/,
    );
    assert.match(
      metrics,
      /trickle_relay_pool_allocation_seconds_count\{namespace="pool-burst",pool="gpu"\} 15/,
    );
    assert.match(metrics, /trickle_relay_pool_exhausted_total\{namespace="pool-burst",pool="gpu"\} [1-9]/);
  });

  test("operator SIGKILLed mid-allocation and restarted: no pod twice, no session lost", async (t) => {
    const ns = "pool-kill";
    await setUp(ns);
    const first = await operator(ns, "first");
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 20 }));
    await waitPoolReady(ns, "gpu", 20);
    // Sessions arrive one after another (as from a gateway), so that the kill lands while the
    // operator is still handing out pods: some claimed, some not yet, one possibly in flight.
    const sessionNames = names("k", 30);
    const creating = createOneByOne(ns, sessionNames);
    await waitFor("3 claims", 30_000, async () => (await kubectl.leaseClaims(ns, "gpu")) >= 3, 20);
    await first.kill("SIGKILL");
    const atKill = await kubectl.leaseClaims(ns, "gpu");
    t.diagnostic(`claims when the first operator was killed: ${atKill} of 20`);
    assert.ok(atKill < 20, `killed mid-allocation (${atKill} of 20 claimed)`);
    await creating;

    await operator(ns, "second");
    const claims = await waitFor("20 allocated after the restart", 60_000, async () => {
      const current = claimsOf(await kubectl.pods(ns, "gpu"));
      return current.size === 20 ? current : undefined;
    });
    for (const [session, held] of claims) assert.equal(held.length, 1, `${session} holds one pod: ${held}`);
    assert.equal(new Set([...claims.values()].flat()).size, 20, "no pod claimed twice");
    assert.deepEqual([...claims.keys()].sort(), sessionNames.slice(0, 20), "first come, first served");
    const sessions = await waitFor("every session allocated or waiting", 30_000, async () => {
      const all = await kubectl.sessions(ns);
      const waiting = all.filter((s) => readyReason(s) === "PoolExhausted").length;
      const allocated = all.filter((s) => s.status?.allocation?.podName).length;
      return waiting === 10 && allocated === 20 ? all : undefined;
    });
    assert.equal(sessions.length, 30, "no session lost");
  });

  test("two replicas with leader election: the leader is SIGKILLed mid-allocation, the standby finishes it", async (t) => {
    const ns = "pool-election";
    await setUp(ns);
    const args = [
      "--leader-elect",
      ...["--leader-election-namespace", ns, "--leader-election-id", "pool-lease"],
      ...["--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "1"],
      ...["--namespace", ns],
    ];
    const replica = async (id: string) => {
      const op = await startOperator({
        name: id,
        kubeconfigPath: cp.kubeconfigPath,
        args,
        env: { POD_NAME: id },
      });
      operators.push(op);
      await op.waitReady(60_000);
      return op;
    };
    const [a, b] = await Promise.all([replica("replica-a"), replica("replica-b")]);
    const leader = await waitFor("a leader", 30_000, async () => {
      for (const op of [a, b]) if ((await op.metric("trickle_relay_operator_leader")) === 1) return op;
      return undefined;
    });
    const standby = leader === a ? b : a;
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 15 }));
    await waitPoolReady(ns, "gpu", 15);
    const creating = createOneByOne(ns, names("e", 20));
    await waitFor("3 claims", 30_000, async () => (await kubectl.leaseClaims(ns, "gpu")) >= 3, 20);
    await leader.kill("SIGKILL");
    const atKill = await kubectl.leaseClaims(ns, "gpu");
    t.diagnostic(`claims when the leader was killed: ${atKill} of 15`);
    assert.ok(atKill < 15, `killed mid-allocation (${atKill} of 15 claimed)`);
    await creating;

    await waitFor(
      "the standby leads",
      30_000,
      async () => (await standby.metric("trickle_relay_operator_leader")) === 1,
    );
    const claims = await waitFor("15 allocated by the new leader", 60_000, async () => {
      const current = claimsOf(await kubectl.pods(ns, "gpu"));
      return current.size === 15 ? current : undefined;
    });
    for (const [session, held] of claims) assert.equal(held.length, 1, `${session} holds one pod: ${held}`);
    assert.equal(new Set([...claims.values()].flat()).size, 15, "no pod claimed twice");
    assert.deepEqual([...claims.keys()].sort(), names("e", 20).slice(0, 15), "first come, first served");
    await waitFor("the other 5 wait", 30_000, async () => {
      const all = await kubectl.sessions(ns);
      return all.filter((s) => readyReason(s) === "PoolExhausted").length === 5;
    });
  });

  test("kubectl scale up and down spares allocated pods; the buffer autoscaler keeps idle pods", async () => {
    const ns = "pool-scale";
    await setUp(ns);
    await operator(ns);
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 2 }));
    await waitPoolReady(ns, "gpu", 2);
    await kubectl.ok(["scale", "rlp/gpu", "-n", ns, "--replicas=6"]);
    await waitPoolReady(ns, "gpu", 6);

    await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", names("a", 3)));
    await waitFor("3 allocated", 30_000, async () => claimsOf(await kubectl.pods(ns, "gpu")).size === 3);
    const allocatedBefore = [...claimsOf(await kubectl.pods(ns, "gpu")).values()].flat().sort();

    await kubectl.ok(["scale", "rlp/gpu", "-n", ns, "--replicas=1"]);
    const pods = await waitFor("idle pods gone", 30_000, async () => {
      const current = (await kubectl.pods(ns, "gpu")).filter((p) => !p.metadata?.deletionTimestamp);
      return current.length === 3 ? current : undefined;
    });
    assert.deepEqual(
      pods.map((p) => p.metadata?.name).sort(),
      allocatedBefore,
      "only the allocated pods remain",
    );
    const status = (await kubectl.pool(ns, "gpu")).status!;
    assert.equal(status.allocatedReplicas, 3);
    assert.equal(status.readyReplicas, 0);

    // Buffer policy: allocated + 2 idle, at most 8.
    await kubectl.ok([
      "patch",
      "rlp/gpu",
      "-n",
      ns,
      "--type",
      "merge",
      "-p",
      JSON.stringify({ spec: { autoscale: { bufferSize: 2, maxReplicas: 8 } } }),
    ]);
    await waitPoolReady(ns, "gpu", 2);
    await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", names("b", 4)));
    await waitFor("7 allocated, 1 idle (max 8)", 60_000, async () => {
      const s = (await kubectl.pool(ns, "gpu")).status;
      return s?.allocatedReplicas === 7 && s.readyReplicas === 1 && s.desiredReplicas === 8;
    });
  });

  test("crashes: an idle pod is replaced; an allocated one restarts its session on a new warm pod", async () => {
    const ns = "pool-crash";
    const kubelet = await setUp(ns);
    await operator(ns);
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 2 }));
    await waitPoolReady(ns, "gpu", 2);
    const idle = (await kubectl.pods(ns, "gpu")).map((p) => p.metadata!);
    await kubelet.exit(idle[0]!.name!, 1);
    await waitFor("the crashed idle pod replaced", 30_000, async () => {
      const pods = await kubectl.pods(ns, "gpu");
      const live = pods.filter((p) => p.status?.phase === "Running" && !p.metadata?.deletionTimestamp);
      return live.length === 2 && !pods.some((p) => p.metadata?.uid === idle[0]!.uid);
    });
    await waitPoolReady(ns, "gpu", 2);

    await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", ["c"]));
    const first = await waitFor(
      "allocated",
      30_000,
      async () => claimsOf(await kubectl.pods(ns, "gpu")).get("c")?.[0],
    );
    await kubelet.exit(first, 1);
    const second = await waitFor("restarted on another warm pod", 60_000, async () => {
      const held = claimsOf(await kubectl.pods(ns, "gpu")).get("c");
      return held?.length === 1 && held[0] !== first ? held[0] : undefined;
    });
    const pod = (await kubectl.pods(ns, "gpu")).find((p) => p.metadata?.name === second)!;
    assert.equal(pod.metadata?.labels?.["trickle-relay.io/attempt"], "1", "the new pod serves attempt 1");
    const session = (await kubectl.sessions(ns)).find((s) => s.metadata.name === "c")!;
    assert.equal(session.status?.restarts, 1, "one restart counted against the budget");
  });

  test("onExhausted: cold starts a per-session pod from the pool's template", async () => {
    const ns = "pool-cold";
    await setUp(ns);
    await operator(ns);
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 0 }));
    await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", ["cold"], "cold"));
    const pod = await waitFor("a cold pod", 30_000, async () => {
      const out = await kubectl.ok(["get", "pods", "-n", ns, "-o", "json"]);
      return (JSON.parse(out) as { items: V1Pod[] }).items.find((p) => p.metadata?.name === "cold-relay-0");
    });
    const args = pod.spec!.containers[0]!.args!;
    assert.deepEqual(args.slice(0, 3), ["run", "--session", `${ns}/cold`]);
    assert.deepEqual(
      args.slice(3),
      ["--pool-comfystream", "http://127.0.0.1:9", "--pool-offer-timeout", "300"],
      "the pool's ComfyStream and its offer timeout",
    );
    assert.equal(pod.metadata?.labels?.["trickle-relay.io/pool"], undefined, "not a pool pod");
  });

  test("crds/examples/pool-gpu.yaml is accepted by the apiserver", async () => {
    await kubectl.ok(["create", "namespace", "pool-example"]);
    const out = await kubectl.ok([
      "apply",
      "--dry-run=server",
      "-n",
      "pool-example",
      "-f",
      join(repoRoot, "crds/examples/pool-gpu.yaml"),
    ]);
    assert.match(out, /relaypool.trickle-relay.io\/gpu created \(server dry run\)/);
    assert.match(out, /relaysession.trickle-relay.io\/pooled created \(server dry run\)/);
    const bad = await cp.kubectl(["apply", "--dry-run=server", "-n", "pool-example", "-f", "-"], {
      input: pooledSessionsYaml("pool-example", "gpu", ["both"]).replace(
        "  poolRef:",
        '  comfystream: {url: "http://127.0.0.1:9"}\n  poolRef:',
      ),
    });
    assert.notEqual(bad.code, 0, "comfystream and poolRef together are refused");
  });

  test("a pool whose pods would all use one ComfyStream URL gets a SharedComfyStream Warning", async () => {
    const ns = "pool-shared";
    await setUp(ns);
    await operator(ns);
    // Two pods, one server by URL (not on the pod's loopback): ComfyStream serves one peer at a time.
    await kubectl.ok(
      ["apply", "-f", "-"],
      poolYaml(ns, "shared", {
        replicas: 2,
        template: { comfystream: { url: "http://comfystream.example.internal:8889" } },
      }),
    );
    // The same on the pods' own loopback (each pod its own server) is fine.
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "own", { replicas: 2 }));
    const warnings = async () =>
      (
        JSON.parse(await kubectl.ok(["get", "events", "-n", ns, "-o", "json"])) as {
          items: Array<{ reason: string; type: string; message: string; involvedObject: { name: string } }>;
        }
      ).items.filter((e) => e.reason === "SharedComfyStream");
    const shared = await waitFor("the Warning", 30_000, async () => (await warnings())[0]);
    assert.equal(shared.type, "Warning");
    assert.equal(shared.involvedObject.name, "shared");
    assert.match(shared.message, /comfystream\.example\.internal.*one peer at a time.*sidecar/);
    await waitFor("both pools reconciled", 30_000, async () => {
      const own = await kubectl.pool(ns, "own");
      return own.status?.replicas === 2;
    });
    assert.deepEqual(
      (await warnings()).map((e) => e.involvedObject.name),
      ["shared"],
      "no Warning for the pool whose pods use their own loopback",
    );
  });

  test("kubectl wait --for=condition=Ready works for a pooled session", async () => {
    const ns = "pool-wait";
    await setUp(ns);
    await operator(ns);
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 1 }));
    await waitPoolReady(ns, "gpu", 1);
    await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", ["w"]));
    const waiting = cp.kubectl(["wait", "--for=condition=Ready", "rls/w", "-n", ns, "--timeout=60s"]);
    await waitFor("allocated", 30_000, async () => claimsOf(await kubectl.pods(ns, "gpu")).has("w"));
    // The relay in the pod started the pipeline and reports media flowing (played by the test).
    const custom = kc.makeApiClient(CustomObjectsApi);
    await custom.patchNamespacedCustomObjectStatus(
      {
        group: "trickle-relay.io",
        version: "v1alpha1",
        namespace: ns,
        plural: "relaysessions",
        name: "w",
        body: {
          status: {
            relay: { lastUpdateTime: new Date().toISOString(), webrtc: { connectionState: "connected" } },
          },
        },
        fieldManager: "relay-pod",
      },
      mergePatch,
    );
    const result = await waiting;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /condition met/);
  });
  test("deleting a pool removes its idle pods and leaves the allocated one with its session", async () => {
    const ns = "pool-delete";
    await setUp(ns);
    await operator(ns);
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 3 }));
    await waitPoolReady(ns, "gpu", 3);
    await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", ["keep"]));
    const held = await waitFor(
      "allocated",
      30_000,
      async () => claimsOf(await kubectl.pods(ns, "gpu")).get("keep")?.[0],
    );
    await kubectl.ok(["delete", "rlp", "gpu", "-n", ns]);
    const left = await waitFor("the idle pods garbage-collected", 60_000, async () => {
      const pods = (await kubectl.pods(ns, "gpu")).filter((p) => !p.metadata?.deletionTimestamp);
      return pods.length === 1 ? pods : undefined;
    });
    assert.equal(left[0]!.metadata?.name, held, "the session's pod stays");
    const session = (await kubectl.sessions(ns)).find((s) => s.metadata.name === "keep");
    assert.equal(session?.status?.allocation?.podName, held, "the session keeps its pod");
  });

  // Last: it removes the RelayPool CRD from the shared control plane.
  test("without the RelayPool CRD (operator upgraded first) sessions still run; pooled ones wait", async () => {
    for (const op of operators) await op.stop();
    await kubectl.ok(["delete", "crd", "relaypools.trickle-relay.io"]);
    const ns = "no-pool-crd";
    await kubectl.ok(["create", "namespace", ns]);
    const op = await operator(ns);
    assert.ok(op.logged(/RelayPool API is not served/).length > 0, "the operator says why pools are off");
    await kubectl.ok(
      ["apply", "-f", "-"],
      [
        "apiVersion: trickle-relay.io/v1alpha1",
        "kind: RelaySession",
        `metadata: {name: plain, namespace: ${ns}}`,
        "spec:",
        '  trickle: {inputUrl: "http://127.0.0.1:9/live/plain"}',
        '  comfystream: {url: "http://127.0.0.1:9"}',
      ].join("\n"),
    );
    await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", ["pooled"]));
    await waitFor("the plain session's pod", 30_000, async () => {
      const result = await cp.kubectl(["get", "pod", "plain-relay-0", "-n", ns]);
      return result.code === 0;
    });
    await waitFor("the pooled session waits for its pool", 30_000, async () => {
      const pooled = (await kubectl.sessions(ns)).find((s) => s.metadata.name === "pooled");
      return pooled && readyReason(pooled) === "PoolNotFound";
    });
  });
});
