/**
 * The operator end to end, as a user meets it: a real kube-apiserver + etcd + controller manager
 * (garbage collection), the operator binary out of cluster (`--kubeconfig`) with the token of the Helm
 * chart's ServiceAccount (so the chart's RBAC is proven sufficient), the local kubelet test
 * harness running the relay pods it creates as local processes (with their ServiceAccount tokens, so
 * the per-session RBAC is real), a real trickle server with a live ffmpeg input, and the TS stand-in
 * ComfyStream peer over real WebRTC. Everything is driven with kubectl, like a user would.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import type { V1Pod } from "@kubernetes/client-node";
import type { RelaySession, RelaySessionInput } from "../../crds/src/index.js";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { installChart, type InstalledChart } from "../charts/helm.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../infra/apiserver.js";
import { startLocalKubelet, type LocalKubelet } from "../infra/local-kubelet.js";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { startOperator, type OperatorProcess } from "./operator-harness.js";
import {
  collectOutput,
  makeInputSegments,
  publishPaced,
  startPeer,
  waitFor,
  type Peer,
} from "../session/relay-harness.js";

const assets = await resolveEnvtestAssets();
// This suite always runs the relay pods on the harness; real-node-e2e.test.ts runs a real kubelet.
console.log("# node: local harness (test/operator/e2e.test.ts)");
const skip = assets.skipReason || needsLoopbackNamespace;
const repoRoot = process.cwd();
const namespace = "default";

describe("operator end to end (real apiserver, local kubelet, real relay and WebRTC)", { skip }, () => {
  let cp: ControlPlane;
  let kubelet: LocalKubelet;
  let operator: OperatorProcess;
  let trickle: TrickleServer;
  let trickleBase: string;
  let peer: Peer;
  let chart: InstalledChart;
  const abortInput = new AbortController();
  const cleanups: Array<() => Promise<unknown> | unknown> = [];

  async function getSession(name: string): Promise<RelaySession> {
    const result = await cp.kubectl(["get", "rls", name, "-n", namespace, "-o", "json"]);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout) as RelaySession;
  }

  async function getPod(name: string): Promise<V1Pod | undefined> {
    const result = await cp.kubectl(["get", "pod", name, "-n", namespace, "-o", "json"]);
    return result.code === 0 ? (JSON.parse(result.stdout) as V1Pod) : undefined;
  }

  /** The example from the repo, its URLs pointed at the local trickle server and stand-in peer. */
  async function localExample(
    file: string,
    patch: (doc: RelaySessionInput) => void = () => undefined,
  ): Promise<string> {
    const doc = parseYaml(await readFile(join(repoRoot, "crds/examples", file), "utf8")) as RelaySessionInput;
    patch(doc);
    return stringifyYaml(doc);
  }

  /** What a user would look at when a step fails: the operator's log and the relay pod's. */
  async function failureContext(pod = "basic-relay-0"): Promise<string> {
    const relayLog = await kubelet.logs(namespace, pod, "relay").catch((err: Error) => err.message);
    return (
      `\n--- operator log (tail) ---\n${operator.output().slice(-3000)}` +
      `\n--- ${pod} relay log (tail) ---\n${relayLog.slice(-3000)}`
    );
  }

  before(async () => {
    cp = await startControlPlane({ controllerManager: true, crdPaths: [join(repoRoot, "crds")] });
    cleanups.push(() => cp.stop());
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(cp.kubeconfigPath);

    // Channels exist up front, as on an orchestrator (a publisher's GET /next on a missing one is a 404).
    trickle = new TrickleServer({
      channels: ["demo-stream", "demo-stream-out", "fragile-out"].map((name) => ({
        name,
        mimeType: "video/MP2T",
      })),
    });
    const { url } = await trickle.listen(0, "127.0.0.1");
    trickleBase = url;
    cleanups.push(() => trickle.close());
    peer = await startPeer("ts");
    cleanups.push(() => peer.stop());

    // A live input for the whole test: 3 minutes of 1 s GOPs at a small size, published in real time.
    const { segments } = await makeInputSegments({ seconds: 180, size: "320x240" });
    const publishing = publishPaced(`${trickleBase}demo-stream`, segments, { signal: abortInput.signal });
    publishing.catch(() => undefined);
    cleanups.push(() => abortInput.abort());

    kubelet = await startLocalKubelet({
      kubeConfig,
      commands: { "trickle-relay": [process.execPath, join(repoRoot, "dist/relay-pod/src/cli.js")] },
      extraEnv: { TRICKLE_RELAY_ICE_ADDRESSES: "127.0.0.2", TRICKLE_RELAY_LOG_JSON: "1" },
      inheritEnv: ["PATH", "FFMPEG_BIN", "FFPROBE_BIN"],
    });
    cleanups.push(() => kubelet.stop());

    // The operator runs with exactly the Helm chart's permissions: the chart is installed (its
    // Deployment never starts: no scheduler runs its ReplicaSet here) and its ServiceAccount's token
    // is what the out-of-cluster operator uses.
    chart = await installChart(cp, {
      release: "trickle-relay",
      namespace: "trickle-relay-system",
      values: { crds: { install: false } },
    });

    operator = await startOperator({
      kubeconfigPath: chart.serviceAccountKubeconfig,
      args: ["--no-leader-elect", "--relay-image", "trickle-relay/relay:e2e"],
      metrics: false,
      name: "operator",
    });
    cleanups.push(() => operator.stop());
    await operator.waitReady(30_000);
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  });

  test("the operator runs as the chart's ServiceAccount, which may not read Secrets", async () => {
    const canI = await cp.kubectl(["auth", "can-i", "get", "secrets", "-n", namespace, "--as", chart.user]);
    assert.equal(canI.stdout.trim(), "no");
    const canCreatePods = await cp.kubectl([
      "auth",
      "can-i",
      "create",
      "pods",
      "-n",
      namespace,
      "--as",
      chart.user,
    ]);
    assert.equal(canCreatePods.stdout.trim(), "yes");
  });

  test("an invalid RelaySession is rejected at apply time with a message naming the field", async () => {
    const yaml = await localExample("basic.yaml", (doc) => {
      doc.metadata.name = "too-small";
      doc.spec.width = 100;
    });
    const result = await cp.kubectl(["apply", "-n", namespace, "-f", "-"], { input: yaml });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /spec\.width/);
    assert.match(result.stderr, /multiple of 8|greater than or equal to 64/);
  });

  test("kubectl apply of crds/examples/basic.yaml → a relay pod with the expected spec", async () => {
    const yaml = await localExample("basic.yaml", (doc) => {
      doc.spec.trickle.inputUrl = `${trickleBase}demo-stream`;
      doc.spec.comfystream!.url = peer.url;
    });
    const applied = await cp.kubectl(["apply", "-n", namespace, "-f", "-"], { input: yaml });
    assert.equal(applied.code, 0, applied.stderr);
    await waitFor(async () => (await getPod("basic-relay-0")) !== undefined, 30_000, "pod basic-relay-0");
    const session = await getSession("basic");
    const pod = (await getPod("basic-relay-0"))!;
    const metadata = pod.metadata!;
    const spec = pod.spec!;
    assert.deepEqual(
      metadata.ownerReferences?.map((o) => [o.kind, o.name, o.uid, o.controller]),
      [["RelaySession", "basic", session.metadata!.uid, true]],
    );
    assert.equal(metadata.labels?.["trickle-relay.io/session"], "basic");
    assert.equal(spec.restartPolicy, "Never");
    assert.equal(spec.serviceAccountName, "basic-relay");
    const relay = spec.containers.find((c) => c.name === "relay")!;
    assert.equal(relay.image, "trickle-relay/relay:e2e");
    assert.deepEqual(relay.command, ["trickle-relay"]);
    assert.deepEqual(relay.args, ["run", "--session", `${namespace}/basic`]);
  });

  test("the relay runs: Ready, `kubectl get rls` shows Running, WebRTC connected and fps", async () => {
    const wait = await cp.kubectl(
      ["wait", "-n", namespace, "--for=condition=Ready", "rls/basic", "--timeout=90s"],
      { timeoutMs: 100_000 },
    );
    assert.equal(wait.code, 0, `${wait.stderr}${await failureContext()}`);
    await waitFor(
      async () => ((await getSession("basic")).status?.relay?.inputFps ?? 0) > 10,
      20_000,
      "input fps > 10 in status.relay",
    );
    const table = await cp.kubectl(["get", "rls", "basic", "-n", namespace]);
    const [header, row] = table.stdout.trim().split("\n");
    assert.match(header!, /PHASE\s+WEBRTC\s+FPS\s+QUEUE\s+RESTARTS\s+AGE/);
    assert.match(row!, /^basic\s+Running\s+connected\s+\d+/);
    const session = await getSession("basic");
    assert.equal(session.status?.observedGeneration, session.metadata?.generation);
    assert.equal(session.status?.podName, "basic-relay-0");
    assert.equal(session.status?.conditions?.[0]?.type, "Ready");
  });

  test("a spec.prompts edit reaches ComfyStream live, without a pod restart", async () => {
    const before = await peer.promptUpdates();
    // The same workflow with a changed node input: a real edit a user would make.
    const prompts = structuredClone((await getSession("basic")).spec.prompts ?? []);
    (prompts[0]!["2"] as { inputs: Record<string, unknown> }).inputs.edited = true;
    const result = await cp.kubectl([
      "patch",
      "rls",
      "basic",
      "-n",
      namespace,
      "--type=merge",
      "-p",
      JSON.stringify({ spec: { prompts } }),
    ]);
    assert.equal(result.code, 0, result.stderr);
    const generation = (await getSession("basic")).metadata!.generation!;
    await waitFor(async () => (await peer.promptUpdates()) > before, 20_000, "the prompt update at the peer");
    await waitFor(
      async () => (await getSession("basic")).status?.relay?.appliedPromptsGeneration === generation,
      20_000,
      "status.relay.appliedPromptsGeneration = the new generation",
    );
    const session = await getSession("basic");
    assert.equal(session.status?.podName, "basic-relay-0");
    assert.equal(session.status?.restarts ?? 0, 0);
  });

  test("the relay process killed → pod Failed → re-created within the budget, restarts counted", async () => {
    kubelet.killContainer(namespace, "basic-relay-0", "relay");
    await waitFor(
      async () => (await getPod("basic-relay-0"))?.status?.phase === "Failed",
      20_000,
      "pod basic-relay-0 Failed",
    );
    await waitFor(async () => (await getPod("basic-relay-1")) !== undefined, 60_000, "pod basic-relay-1");
    await waitFor(
      async () => {
        const session = await getSession("basic");
        return session.status?.restarts === 1 && session.status?.phase === "Running";
      },
      90_000,
      "session Running again with restarts = 1",
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}${await failureContext("basic-relay-1")}`);
    });
  });

  test("the restart budget exhausted → Failed, with the reason in the Ready condition", async () => {
    const yaml = await localExample("basic.yaml", (doc) => {
      doc.metadata.name = "fragile";
      doc.spec.trickle.inputUrl = `${trickleBase}demo-stream`;
      doc.spec.trickle.outputUrl = `${trickleBase}fragile-out`;
      doc.spec.comfystream!.url = peer.url;
      doc.spec.lifetime = { maxRestarts: 1 };
    });
    assert.equal((await cp.kubectl(["apply", "-n", namespace, "-f", "-"], { input: yaml })).code, 0);
    for (const attempt of [0, 1]) {
      const pod = `fragile-relay-${attempt}`;
      await waitFor(
        () => kubelet.pods().some((p) => p.name === pod && p.phase === "Running"),
        60_000,
        `${pod} running`,
      );
      kubelet.killContainer(namespace, pod, "relay");
    }
    await waitFor(
      async () => (await getSession("fragile")).status?.phase === "Failed",
      60_000,
      "fragile Failed",
    );
    const session = await getSession("fragile");
    const ready = session.status?.conditions?.find((c) => c.type === "Ready");
    assert.equal(ready?.status, "False");
    assert.match(ready?.reason ?? "", /RestartBudgetExhausted/);
    assert.match(ready?.message ?? "", /1/);
    assert.equal(await getPod("fragile-relay-2"), undefined);
    assert.equal((await cp.kubectl(["delete", "rls", "fragile", "-n", namespace])).code, 0);
  });

  test("deleting the RelaySession → its pod is garbage-collected and the output channel closed", async () => {
    const output = collectOutput(`${trickleBase}demo-stream-out`);
    cleanups.push(() => output.close());
    await waitFor(() => output.segments.length > 0, 20_000, "output segments flowing");
    const deleted = await cp.kubectl(["delete", "rls", "basic", "-n", namespace, "--wait=false"]);
    assert.equal(deleted.code, 0, deleted.stderr);
    const closed = await Promise.race([
      output.done,
      new Promise((resolve) => setTimeout(() => resolve("timeout"), 60_000)),
    ]);
    assert.deepEqual(closed, { closedByServer: true }, "the relay ended its output stream");
    await waitFor(async () => (await getPod("basic-relay-1")) === undefined, 60_000, "pod gone");
    const leftovers = await cp.kubectl([
      "get",
      "pods,serviceaccounts,roles,rolebindings",
      "-n",
      namespace,
      "-l",
      "trickle-relay.io/session=basic",
      "-o",
      "name",
    ]);
    await waitFor(
      async () =>
        (await cp.kubectl(["get", "serviceaccount", "basic-relay", "-n", namespace, "-o", "name"])).code !==
        0,
      60_000,
      `per-session ServiceAccount garbage-collected (${leftovers.stdout})`,
    );
  });
});
