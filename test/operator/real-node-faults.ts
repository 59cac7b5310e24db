/**
 * Shared setup of the real-node fault suites (real-node-node-lost.test.ts,
 * real-node-sidecar-oom.test.ts): the real kubelet 1.20.2 with the operator in cluster from its
 * chart, a trickle server with a live paced input, the TS stand-in ComfyStream in the test process,
 * and kubectl helpers. Two files rather than one: each fault takes a minute or two of real
 * Kubernetes timers, and a test file may run 300 s at most (test/infra/run-tests.sh).
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { V1Pod } from "@kubernetes/client-node";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import type { RelaySession, RelaySessionInput } from "../../crds/src/index.js";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import type { ControlPlaneOptions } from "../infra/apiserver.js";
import { makeInputSegments, publishPaced, startPeer, waitFor, type Peer } from "../session/relay-harness.js";
import { OPERATOR_NAMESPACE, startE2eCluster, type E2eCluster, type NodeChoice } from "./e2e-node.js";

export const NAMESPACE = "default";
const SESSION_LABEL = "trickle-relay.io/session";
/** kubectl polls: every second, not waitFor's 50 ms (each poll is a process). */
export const POLL_MS = 1000;

export interface FaultCluster {
  cluster: E2eCluster;
  trickleBase: string;
  peer: Peer;
  kubectl: E2eCluster["cp"]["kubectl"];
  getJson<T>(args: string[]): Promise<T | undefined>;
  getSession(name: string): Promise<RelaySession>;
  getPod(name: string): Promise<V1Pod | undefined>;
  sessionPods(name: string): Promise<V1Pod[]>;
  /** crds/examples/basic.yaml as `name`, output on channel `output`, patched, applied, Ready. */
  applySession(name: string, output: string, patch?: (doc: RelaySessionInput) => void): Promise<void>;
  /** Operator log, the pod's description and the node's, for a failure message. */
  context(pod: string): Promise<string>;
  /**
   * Output from the session's current pod: status.relay written after `since` (so by that pod)
   * with output fps > 5 and segmentsOut growing between two reports.
   */
  outputFlowsSince(name: string, since: number): Promise<void>;
  /** Deletes the session; it, its pods and their containers must be gone (no stuck finalizer). */
  deleteAndCheckGone(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startFaultCluster(options: {
  choice: NodeChoice;
  outputs: string[];
  inputSeconds: number;
  controlPlane?: ControlPlaneOptions;
  chartValues?: Record<string, unknown>;
  extendedResources?: Record<string, string>;
}): Promise<FaultCluster> {
  const repoRoot = process.cwd();
  const stops: Array<() => Promise<unknown> | unknown> = [];
  const stop = async () => {
    for (const step of stops.reverse()) await Promise.resolve(step()).catch(() => undefined);
  };
  try {
    const channels = ["demo-stream", ...options.outputs];
    // autocreate, as a gateway that re-creates an -out channel: the replaced pod's relay ends its
    // output stream on SIGTERM (which removes the channel here) before the next pod publishes.
    const trickle = new TrickleServer({
      channels: channels.map((name) => ({ name, mimeType: "video/MP2T" })),
      autocreate: true,
    });
    const trickleBase = (await trickle.listen(0, "127.0.0.1")).url;
    stops.push(() => trickle.close());
    const peer = await startPeer("ts");
    stops.push(() => peer.stop());
    // The input is made while the cluster starts (both take tens of seconds on this machine).
    const [input, cluster] = await Promise.all([
      makeInputSegments({ seconds: options.inputSeconds, size: "320x240", frameRate: 15 }),
      startE2eCluster({
        choice: options.choice,
        crdsDir: join(repoRoot, "crds"),
        controlPlane: options.controlPlane,
        chartValues: options.chartValues,
        extendedResources: options.extendedResources,
      }).then((started) => {
        stops.push(async () => {
          const leftovers = await started.stop();
          if (leftovers) console.log(`# real node teardown leftovers: ${JSON.stringify(leftovers)}`);
        });
        return started;
      }),
    ]);
    const abortInput = new AbortController();
    publishPaced(`${trickleBase}demo-stream`, input.segments, { signal: abortInput.signal }).catch(
      () => undefined,
    );
    stops.push(() => abortInput.abort());

    const kubectl = cluster.cp.kubectl;
    const getJson = async <T>(args: string[]): Promise<T | undefined> => {
      const result = await kubectl(["get", ...args, "-o", "json"]);
      return result.code === 0 ? (JSON.parse(result.stdout) as T) : undefined;
    };
    const sessionPods = async (name: string) =>
      (await getJson<{ items: V1Pod[] }>(["pods", "-n", NAMESPACE, "-l", `${SESSION_LABEL}=${name}`]))
        ?.items ?? [];
    const context = async (pod: string) => {
      const described = await kubectl(["describe", "pod", pod, "-n", NAMESPACE]);
      const node = await kubectl(["describe", "node", cluster.realNode?.nodeName ?? ""]);
      const session = await kubectl(["get", "rls", "-n", NAMESPACE, "-o", "jsonpath={.items[*].status}"]);
      // From Docker, not `kubectl logs`: a frozen kubelet serves no logs.
      const operatorIds = await cluster.realNode?.docker([
        "ps",
        "-q",
        "--filter",
        `label=io.kubernetes.pod.namespace=${OPERATOR_NAMESPACE}`,
        "--filter",
        "label=io.kubernetes.docker.type=container",
      ]);
      const operatorId = operatorIds?.stdout.trim().split("\n")[0];
      const operatorLog = operatorId
        ? await cluster
            .realNode!.docker(["logs", "--tail", "40", operatorId])
            .then((r) => r.stdout + r.stderr)
        : await cluster.operatorLog();
      return (
        `\n--- sessions' status ---\n${session.stdout.slice(-3000)}` +
        `\n--- operator log (tail) ---\n${operatorLog.slice(-5000)}` +
        `\n--- describe ${pod} ---\n${described.stdout.slice(-2500)}\n--- node ---\n${node.stdout.slice(0, 2500)}`
      );
    };
    return {
      cluster,
      trickleBase,
      peer,
      kubectl,
      getJson,
      getSession: async (name) => (await getJson<RelaySession>(["rls", name, "-n", NAMESPACE]))!,
      getPod: (name) => getJson<V1Pod>(["pod", name, "-n", NAMESPACE]),
      sessionPods,
      context,
      async applySession(name, output, patch) {
        const doc = parseYaml(
          await readFile(join(repoRoot, "crds/examples/basic.yaml"), "utf8"),
        ) as RelaySessionInput;
        doc.metadata.name = name;
        doc.spec.trickle = { inputUrl: `${trickleBase}demo-stream`, outputUrl: `${trickleBase}${output}` };
        doc.spec.comfystream = { url: peer.url };
        patch?.(doc);
        const applied = await kubectl(["apply", "-n", NAMESPACE, "-f", "-"], { input: stringifyYaml(doc) });
        assert.equal(applied.code, 0, applied.stderr);
        const wait = await kubectl(
          ["wait", "-n", NAMESPACE, "--for=condition=Ready", `rls/${name}`, "--timeout=120s"],
          { timeoutMs: 130_000 },
        );
        assert.equal(wait.code, 0, `${wait.stderr}${await context(`${name}-relay-0`)}`);
      },
      async outputFlowsSince(name, since) {
        let first: number | undefined;
        await waitFor(
          async () => {
            const relay = (await getJson<RelaySession>(["rls", name, "-n", NAMESPACE]))?.status?.relay;
            if (!relay?.lastUpdateTime || Date.parse(relay.lastUpdateTime) < since) return false;
            if ((relay.outputFps ?? 0) <= 5) return false;
            first ??= relay.segmentsOut ?? 0;
            return (relay.segmentsOut ?? 0) > first + 1;
          },
          45_000,
          `output from ${name}'s current pod (status.relay: fps > 5, segmentsOut growing)`,
          POLL_MS,
        ).catch(async (err: Error) => {
          const status = (await getJson<RelaySession>(["rls", name, "-n", NAMESPACE]))?.status;
          throw new Error(`${err.message}; status: ${JSON.stringify(status)}`);
        });
      },
      async deleteAndCheckGone(name) {
        assert.equal((await kubectl(["delete", "rls", name, "-n", NAMESPACE, "--wait=false"])).code, 0);
        await waitFor(
          async () => (await getJson(["rls", name, "-n", NAMESPACE])) === undefined,
          60_000,
          `rls/${name} gone (no finalizer left holding it)`,
          POLL_MS,
        );
        await waitFor(
          async () => (await sessionPods(name)).length === 0,
          60_000,
          `no pod of ${name} left`,
          POLL_MS,
        );
        const node = cluster.realNode!;
        await waitFor(
          async () =>
            (
              await node.docker(["ps", "-q", "--filter", `label=io.kubernetes.pod.namespace=${NAMESPACE}`])
            ).stdout.trim() === "",
          60_000,
          `no container of ${name} left on the node`,
          POLL_MS,
        );
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
