/**
 * The operator end to end on a real node where one can run (kubelet 1.20.2 + dockershim + Docker +
 * kube-scheduler, test/infra/real-node/), else on the local kubelet harness — the suite's name and
 * its first output line say which ("node: real kubelet 1.20.2" / "node: local harness (…)").
 *
 * On the real node everything a user deploys is real: the Helm chart's operator Deployment runs the
 * operator image (its probes, ServiceAccount token and in-cluster config included), the relay pods
 * run the relay image as the operator writes them (securityContext, emptyDir /tmp, token volume,
 * resources), scheduled by the real scheduler, under a restricted PodSecurityPolicy on the session
 * namespace. A trickle server with a live ffmpeg input and the TS stand-in ComfyStream peer run in
 * the test process, on the same loopback-only network. Driven with kubectl and `docker kill`.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import type { RelaySession, RelaySessionInput } from "../../crds/src/index.js";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { needsLoopbackNamespace } from "../infra/netns.js";
import {
  collectOutput,
  makeInputSegments,
  publishPaced,
  startPeer,
  waitFor,
  type Peer,
} from "../session/relay-harness.js";
import {
  chooseNode,
  OPERATOR_IMAGE,
  OPERATOR_NAMESPACE,
  startE2eCluster,
  type E2eCluster,
} from "./e2e-node.js";
import { RESTRICTED_PSP_NAME, installRestrictedPsp, PSP_ADMISSION_ARGS } from "./restricted-psp.js";
import { buildStandinComfyStreamImage, STANDIN_COMFYSTREAM_IMAGE } from "./standin-comfystream-image.js";

const choice = await chooseNode();
console.log(`# ${choice.line} (test/operator/real-node-e2e.test.ts)`);
const real = choice.kind === "real";
const onlyReal = real ? false : `needs the real node (${choice.line})`;
const repoRoot = process.cwd();
const namespace = "default";
const channels = ["demo-stream", "demo-stream-out", "sidecar-out", "hungry-out"];

describe(`operator end to end on a node: ${choice.label}`, { skip: needsLoopbackNamespace }, () => {
  let cluster: E2eCluster;
  let trickle: TrickleServer;
  let trickleBase: string;
  let peer: Peer;
  const abortInput = new AbortController();
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  const kubectl = (args: string[], options?: { input?: string; timeoutMs?: number }) =>
    cluster.cp.kubectl(args, options);

  async function getSession(name: string): Promise<RelaySession> {
    const result = await kubectl(["get", "rls", name, "-n", namespace, "-o", "json"]);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout) as RelaySession;
  }

  async function getPod(name: string): Promise<V1Pod | undefined> {
    const result = await kubectl(["get", "pod", name, "-n", namespace, "-o", "json"]);
    return result.code === 0 ? (JSON.parse(result.stdout) as V1Pod) : undefined;
  }

  /** crds/examples/FILE with its name and URLs pointed at the local trickle server and peers. */
  async function example(file: string, patch: (doc: RelaySessionInput) => void): Promise<string> {
    const doc = parseYaml(await readFile(join(repoRoot, "crds/examples", file), "utf8")) as RelaySessionInput;
    doc.spec.trickle = { inputUrl: `${trickleBase}demo-stream`, outputUrl: `${trickleBase}demo-stream-out` };
    doc.spec.comfystream = { url: peer.url };
    patch(doc);
    return stringifyYaml(doc);
  }

  async function failureContext(pod: string): Promise<string> {
    const describe = await kubectl(["describe", "pod", pod, "-n", namespace]);
    const relayLog = await cluster.containerLog(namespace, pod, "relay").catch((err: Error) => err.message);
    return (
      `\n--- operator log (tail) ---\n${(await cluster.operatorLog()).slice(-3000)}` +
      `\n--- ${pod} relay log (tail) ---\n${relayLog.slice(-3000)}\n--- describe ---\n${describe.stdout.slice(-3000)}`
    );
  }

  before(async () => {
    trickle = new TrickleServer({ channels: channels.map((name) => ({ name, mimeType: "video/MP2T" })) });
    trickleBase = (await trickle.listen(0, "127.0.0.1")).url;
    cleanups.push(() => trickle.close());
    peer = await startPeer("ts");
    cleanups.push(() => peer.stop());
    const { segments } = await makeInputSegments({ seconds: 240, size: "320x240" });
    publishPaced(`${trickleBase}demo-stream`, segments, { signal: abortInput.signal }).catch(() => undefined);
    cleanups.push(() => abortInput.abort());

    cluster = await startE2eCluster({
      choice,
      crdsDir: join(repoRoot, "crds"),
      controlPlane: real ? { extraApiserverArgs: PSP_ADMISSION_ARGS } : {},
      beforeNode: real ? (cp) => installRestrictedPsp(cp, namespace) : undefined,
      extendedResources: { "nvidia.com/gpu": "1" },
      harnessCommands: { "trickle-relay": [process.execPath, join(repoRoot, "dist/relay-pod/src/cli.js")] },
      harnessEnv: { TRICKLE_RELAY_ICE_ADDRESSES: "127.0.0.2", TRICKLE_RELAY_LOG_JSON: "1" },
    });
    cleanups.push(async () => {
      const leftovers = await cluster.stop();
      if (leftovers) console.log(`# real node teardown leftovers: ${JSON.stringify(leftovers)}`);
    });
    if (cluster.realNode) {
      console.log(`# real node start steps (ms): ${JSON.stringify(cluster.realNode.timings)}`);
      await buildStandinComfyStreamImage(cluster.realNode);
    }
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  });

  test(
    "the chart's operator Deployment runs the operator image in cluster, its probes passing",
    { skip: onlyReal },
    async () => {
      const result = await kubectl(["get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "json"]);
      assert.equal(result.code, 0, result.stderr);
      const pods = (JSON.parse(result.stdout) as { items: V1Pod[] }).items;
      assert.equal(pods.length, 1);
      const pod = pods[0]!;
      const container = pod.spec!.containers[0]!;
      assert.equal(container.image, OPERATOR_IMAGE);
      assert.equal(container.readinessProbe?.httpGet?.path, "/readyz");
      assert.equal(container.livenessProbe?.httpGet?.path, "/healthz");
      const status = pod.status!.containerStatuses![0]!;
      // Ready only once the kubelet's readiness probe passed; a failing liveness probe would restart it.
      assert.equal(status.ready, true);
      assert.equal(status.restartCount, 0);
      assert.equal(pod.metadata?.annotations?.["kubernetes.io/psp"], RESTRICTED_PSP_NAME);
    },
  );

  test("kubectl apply of crds/examples/basic.yaml → a relay pod bound by the node's scheduler", async () => {
    const applied = await kubectl(["apply", "-n", namespace, "-f", "-"], {
      input: await example("basic.yaml", () => {}),
    });
    assert.equal(applied.code, 0, applied.stderr);
    await waitFor(
      async () => !!(await getPod("basic-relay-0"))?.spec?.nodeName,
      60_000,
      "basic-relay-0 bound to a node",
    );
    const pod = (await getPod("basic-relay-0"))!;
    if (real) {
      assert.equal(pod.spec!.nodeName, cluster.realNode!.nodeName);
      const events = await kubectl([
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=basic-relay-0",
      ]);
      assert.match(events.stdout, /Scheduled/);
    }
  });

  test("the relay runs: `kubectl wait --for=condition=Ready rls/basic`, WebRTC connected, fps", async () => {
    const wait = await kubectl(
      ["wait", "-n", namespace, "--for=condition=Ready", "rls/basic", "--timeout=150s"],
      {
        timeoutMs: 160_000,
      },
    );
    assert.equal(wait.code, 0, `${wait.stderr}${await failureContext("basic-relay-0")}`);
    await waitFor(
      async () => ((await getSession("basic")).status?.relay?.inputFps ?? 0) > 10,
      30_000,
      "input fps > 10 in status.relay",
    );
    const row = (await kubectl(["get", "rls", "basic", "-n", namespace])).stdout.trim().split("\n")[1];
    assert.match(row!, /^basic\s+Running\s+connected\s+\d+/);
    // The relay container's probes pass (startup and liveness on /healthz, readiness on /readyz,
    // relay-pod/src/kube/pod-endpoints.ts): on a real kubelet the pod is Ready only once /readyz is 200.
    const podReady = await kubectl(
      ["wait", "-n", namespace, "--for=condition=Ready", "pod/basic-relay-0", "--timeout=90s"],
      { timeoutMs: 100_000 },
    );
    assert.equal(podReady.code, 0, `${podReady.stderr}${await failureContext("basic-relay-0")}`);
  });

  test(
    "the relay container runs as the pod spec says (uid, read-only root, no capabilities, token, /tmp)",
    { skip: onlyReal },
    async () => {
      const node = cluster.realNode!;
      const id = await node.containerId(namespace, "basic-relay-0", "relay");
      assert.ok(id);
      const inspect = JSON.parse((await node.docker(["inspect", id])).stdout)[0] as {
        Config: { User: string };
        State: { Pid: number };
        HostConfig: { ReadonlyRootfs: boolean; CapDrop: string[]; SecurityOpt: string[] };
        Mounts: Array<{ Destination: string }>;
      };
      // runAsNonRoot is verified by the kubelet against the image's numeric USER.
      assert.match(inspect.Config.User, /^10001/);
      assert.equal(inspect.HostConfig.ReadonlyRootfs, true);
      assert.deepEqual(inspect.HostConfig.CapDrop, ["ALL"]);
      assert.ok(
        inspect.HostConfig.SecurityOpt.includes("no-new-privileges"),
        inspect.HostConfig.SecurityOpt.join(","),
      );
      // seccompProfile RuntimeDefault: dockershim leaves Docker's default profile on (no option at
      // all), so the kernel's view of the relay process is the proof: a seccomp filter (mode 2), no
      // capabilities, no_new_privs, uid 10001.
      const status = await readFile(`/proc/${inspect.State.Pid}/status`, "utf8");
      const field = (name: string) => status.match(new RegExp(`^${name}:\\s*(.*)$`, "m"))?.[1]?.trim();
      assert.equal(field("Seccomp"), "2");
      assert.equal(field("NoNewPrivs"), "1");
      assert.equal(field("CapEff"), "0000000000000000");
      assert.match(field("Uid") ?? "", /^10001\s/);
      const destinations = inspect.Mounts.map((m) => m.Destination);
      assert.ok(destinations.includes("/tmp"), destinations.join(","));
      assert.ok(
        destinations.includes("/var/run/secrets/kubernetes.io/serviceaccount"),
        destinations.join(","),
      );
      const pod = (await getPod("basic-relay-0"))!;
      assert.equal(pod.metadata?.annotations?.["kubernetes.io/psp"], RESTRICTED_PSP_NAME);
    },
  );

  test("a spec.prompts edit reaches ComfyStream live, without a pod restart", async () => {
    const before = await peer.promptUpdates();
    const prompts = structuredClone((await getSession("basic")).spec.prompts ?? []);
    (prompts[0]!["2"] as { inputs: Record<string, unknown> }).inputs.edited = true;
    const patched = await kubectl([
      "patch",
      "rls",
      "basic",
      "-n",
      namespace,
      "--type=merge",
      "-p",
      JSON.stringify({ spec: { prompts } }),
    ]);
    assert.equal(patched.code, 0, patched.stderr);
    const generation = (await getSession("basic")).metadata!.generation!;
    await waitFor(async () => (await peer.promptUpdates()) > before, 30_000, "the prompt update at the peer");
    await waitFor(
      async () => (await getSession("basic")).status?.relay?.appliedPromptsGeneration === generation,
      30_000,
      "status.relay.appliedPromptsGeneration = the new generation",
    );
    assert.equal((await getSession("basic")).status?.restarts ?? 0, 0);
  });

  test("the relay container killed → pod Failed → re-created, the restart counted in the session", async () => {
    await cluster.killContainer(namespace, "basic-relay-0", "relay");
    await waitFor(
      async () => (await getPod("basic-relay-0"))?.status?.phase === "Failed",
      60_000,
      "basic-relay-0 Failed",
    );
    await waitFor(
      async () => {
        const session = await getSession("basic");
        return session.status?.restarts === 1 && session.status?.phase === "Running";
      },
      150_000,
      "session Running again with restarts = 1",
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}${await failureContext("basic-relay-1")}`);
    });
    assert.equal((await getSession("basic")).status?.podName, "basic-relay-1");
  });

  test("kubectl delete rls/basic → the output channel ends and the pod is gone", async () => {
    const output = collectOutput(`${trickleBase}demo-stream-out`);
    cleanups.push(() => output.close());
    await waitFor(() => output.segments.length > 0, 30_000, "output segments flowing");
    const deleted = await kubectl(["delete", "rls", "basic", "-n", namespace, "--wait=false"]);
    assert.equal(deleted.code, 0, deleted.stderr);
    const closed = await Promise.race([
      output.done,
      new Promise((resolve) => setTimeout(() => resolve("timeout"), 60_000)),
    ]);
    assert.deepEqual(closed, { closedByServer: true }, "the relay ended its output stream");
    await waitFor(
      async () => (await getPod("basic-relay-1")) === undefined,
      90_000,
      "pod basic-relay-1 gone",
    );
    if (real) {
      await waitFor(
        async () => (await cluster.realNode!.containerId(namespace, "basic-relay-1", "relay")) === undefined,
        30_000,
        "no relay container left on the node",
      );
    }
  });

  test(
    "sidecar mode: the stand-in ComfyStream image runs next to the relay in the session pod",
    { skip: onlyReal },
    async () => {
      const yaml = await example("basic.yaml", (doc) => {
        doc.metadata.name = "sidecar";
        doc.spec.trickle.outputUrl = `${trickleBase}sidecar-out`;
        doc.spec.comfystream = {
          sidecar: {
            image: STANDIN_COMFYSTREAM_IMAGE,
            imagePullPolicy: "Never",
            port: 8889,
            args: ["--mode", "passthrough"],
          },
        };
      });
      const applied = await kubectl(["apply", "-n", namespace, "-f", "-"], { input: yaml });
      assert.equal(applied.code, 0, applied.stderr);
      const wait = await kubectl(
        ["wait", "-n", namespace, "--for=condition=Ready", "rls/sidecar", "--timeout=150s"],
        {
          timeoutMs: 160_000,
        },
      );
      assert.equal(wait.code, 0, `${wait.stderr}${await failureContext("sidecar-relay-0")}`);
      await waitFor(
        async () => ((await getSession("sidecar")).status?.relay?.outputFps ?? 0) > 5,
        60_000,
        "output fps > 5",
      );
      // Both containers ready: the relay's once its readiness probe (/readyz, every 5 s) saw it connected.
      const readiness = async () =>
        JSON.stringify(
          (await getPod("sidecar-relay-0"))?.status?.containerStatuses?.map((c) => [c.name, c.ready]).sort(),
        );
      await waitFor(
        async () =>
          (await readiness()) ===
          JSON.stringify([
            ["comfystream", true],
            ["relay", true],
          ]),
        30_000,
        `both containers ready: ${await readiness()}`,
      );
      assert.equal((await kubectl(["delete", "rls", "sidecar", "-n", namespace])).code, 0);
    },
  );

  test(
    "a relay over its memory limit is OOM-killed and the session says so",
    { skip: onlyReal },
    async () => {
      const yaml = await example("basic.yaml", (doc) => {
        doc.metadata.name = "hungry";
        doc.spec.trickle.outputUrl = `${trickleBase}hungry-out`;
        doc.spec.lifetime = { maxRestarts: 0 };
        doc.spec.pod = { resources: { limits: { memory: "48Mi" } } };
      });
      assert.equal((await kubectl(["apply", "-n", namespace, "-f", "-"], { input: yaml })).code, 0);
      await waitFor(
        async () => (await getSession("hungry")).status?.phase === "Failed",
        120_000,
        "hungry Failed",
      ).catch(async (err: Error) => {
        throw new Error(`${err.message}${await failureContext("hungry-relay-0")}`);
      });
      const terminated = (await getPod("hungry-relay-0"))?.status?.containerStatuses?.find(
        (c) => c.name === "relay",
      )?.state?.terminated;
      assert.equal(terminated?.reason, "OOMKilled");
      const ready = (await getSession("hungry")).status?.conditions?.find((c) => c.type === "Ready");
      assert.equal(ready?.status, "False");
      assert.match(ready?.message ?? "", /OOMKilled/);
      assert.equal((await kubectl(["delete", "rls", "hungry", "-n", namespace])).code, 0);
    },
  );

  test(
    "the restricted PodSecurityPolicy is enforced on the session namespace",
    { skip: onlyReal },
    async () => {
      const privileged = {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: "root-pod", namespace },
        spec: {
          containers: [{ name: "c", image: "trickle-relay/relay:unused", securityContext: { runAsUser: 0 } }],
        },
      };
      // Even the cluster admin, who may use every policy: the restricted one is the only one there is.
      const result = await kubectl(["create", "-f", "-"], { input: JSON.stringify(privileged) });
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /PodSecurityPolicy: unable to admit pod.*root UID is forbidden/);
    },
  );
});
