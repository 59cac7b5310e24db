/**
 * The node an operator end-to-end suite runs its relay pods on, and the operator with it: either the
 * real test node (test/infra/real-node/: kubelet 1.20.2 + Docker + kube-scheduler; the operator runs
 * in cluster from its image, installed by the Helm chart, so its Deployment, probes and
 * ServiceAccount are real too) or, when that cannot run here, the local kubelet harness
 * (test/infra/local-kubelet.ts; the operator binary out of cluster with the chart ServiceAccount's
 * token). `label` says which, for the suite's name and CI's log ("real kubelet 1.20.2" or
 * "local harness").
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { installChart, type InstalledChart } from "../charts/helm.js";
import { startControlPlane, type ControlPlane, type ControlPlaneOptions } from "../infra/apiserver.js";
import { startLocalKubelet, type LocalKubelet } from "../infra/local-kubelet.js";
import {
  REAL_NODE_LABEL,
  realNodeAvailability,
  realNodeControlPlaneOptions,
  startRealNode,
  type Leftovers,
  type RealNode,
} from "../infra/real-node/real-node.js";
import { startOperator, type OperatorProcess } from "./operator-harness.js";

export const LOCAL_HARNESS_LABEL = "local harness";
const version = (JSON.parse(readFileSync("package.json", "utf8")) as { version: string }).version;
export const RELAY_IMAGE = `trickle-relay/relay:${version}`;
export const OPERATOR_IMAGE = `trickle-relay/operator:${version}`;
export const OPERATOR_NAMESPACE = "trickle-relay-system";
const RELEASE = "trickle-relay";

export type NodeChoice =
  | { kind: "real"; label: typeof REAL_NODE_LABEL; assetsDir: string; line: string }
  | { kind: "harness"; label: typeof LOCAL_HARNESS_LABEL; line: string };

/** Which node a suite runs on here; `line` is what it prints ("node: real kubelet 1.20.2", …). */
export async function chooseNode(): Promise<NodeChoice> {
  // TRICKLE_RELAY_NODE=harness runs the suite on the harness even where a real node could run.
  const availability =
    process.env.TRICKLE_RELAY_NODE === "harness"
      ? { reason: "TRICKLE_RELAY_NODE=harness" }
      : await realNodeAvailability([RELAY_IMAGE, OPERATOR_IMAGE]);
  if (availability.assetsDir) {
    return {
      kind: "real",
      label: REAL_NODE_LABEL,
      assetsDir: availability.assetsDir,
      line: `node: ${REAL_NODE_LABEL}`,
    };
  }
  return {
    kind: "harness",
    label: LOCAL_HARNESS_LABEL,
    line: `node: ${LOCAL_HARNESS_LABEL} (no real kubelet: ${availability.reason})`,
  };
}

export interface E2eCluster {
  cp: ControlPlane;
  label: string;
  chart: InstalledChart;
  /** The real node (undefined on the harness). */
  realNode?: RealNode;
  /** The harness (undefined on the real node). */
  harness?: LocalKubelet;
  /** Kills a pod's container the way its node would see a crash (docker kill / SIGKILL). */
  killContainer(namespace: string, pod: string, container: string): Promise<void>;
  containerLog(namespace: string, pod: string, container: string): Promise<string>;
  operatorLog(): Promise<string>;
  /** Stops node, operator and control plane; the real node's leftovers (all empty when clean). */
  stop(): Promise<Leftovers | undefined>;
}

export interface E2eClusterOptions {
  choice: NodeChoice;
  crdsDir: string;
  /** Extra control-plane options (e.g. extraApiserverArgs). */
  controlPlane?: ControlPlaneOptions;
  /** Runs after the control plane is up and before any pod exists (PodSecurityPolicies, RBAC). */
  beforeNode?: (cp: ControlPlane) => Promise<void>;
  /** More images for the real node (copied from the build engine). */
  extraImages?: string[];
  extendedResources?: Record<string, string>;
  /** Real node only: more Helm values (top-level keys replace the suite's). */
  chartValues?: Record<string, unknown>;
  /** Harness only: environment of every container, and the command map of test/infra/local-kubelet.ts. */
  harnessEnv?: Record<string, string>;
  harnessCommands?: Record<string, string[]>;
}

export async function startE2eCluster(options: E2eClusterOptions): Promise<E2eCluster> {
  const { choice } = options;
  const cpOptions: ControlPlaneOptions = { ...options.controlPlane, crdPaths: [options.crdsDir] };
  const cp = await startControlPlane(
    choice.kind === "real"
      ? realNodeControlPlaneOptions(cpOptions)
      : { ...cpOptions, controllerManager: true },
  );
  const stops: Array<() => Promise<unknown>> = [() => cp.stop()];
  const stopAll = async () => {
    let leftovers: Leftovers | undefined;
    for (const stop of stops.reverse()) {
      const result = await stop().catch(() => undefined);
      if (result && typeof result === "object" && "cgroups" in result) leftovers = result as Leftovers;
    }
    return leftovers;
  };
  try {
    await options.beforeNode?.(cp);
    if (choice.kind === "real") {
      const node = await startRealNode({
        controlPlane: cp,
        images: [RELAY_IMAGE, OPERATOR_IMAGE, ...(options.extraImages ?? [])],
        assetsDir: choice.assetsDir,
        extendedResources: options.extendedResources,
      });
      stops.push(() => node.stop());
      // The chart as a user installs it: the operator's Deployment runs its image on the node.
      const chart = await installChart(cp, {
        release: RELEASE,
        namespace: OPERATOR_NAMESPACE,
        values: { crds: { install: false }, image: { pullPolicy: "Never" }, ...options.chartValues },
      });
      const rollout = await cp.kubectl(
        ["rollout", "status", "-n", OPERATOR_NAMESPACE, `deployment/${RELEASE}`, "--timeout=180s"],
        { timeoutMs: 190_000 },
      );
      if (rollout.code !== 0) {
        const pods = await cp.kubectl(["describe", "pods", "-n", OPERATOR_NAMESPACE]);
        throw new Error(
          `the operator Deployment did not roll out: ${rollout.stderr}\n${pods.stdout.slice(-3000)}`,
        );
      }
      return {
        cp,
        label: choice.label,
        chart,
        realNode: node,
        async killContainer(namespace, pod, container) {
          const id = await node.containerId(namespace, pod, container);
          if (!id) throw new Error(`no running container ${container} of ${namespace}/${pod} on the node`);
          const killed = await node.docker(["kill", id]);
          if (killed.code !== 0) throw new Error(`docker kill ${id}: ${killed.stderr}`);
        },
        containerLog: async (namespace, pod, container) =>
          (await cp.kubectl(["logs", "-n", namespace, pod, "-c", container])).stdout,
        operatorLog: async () =>
          (await cp.kubectl(["logs", "-n", OPERATOR_NAMESPACE, `deployment/${RELEASE}`, "--tail=200"]))
            .stdout,
        stop: stopAll,
      };
    }

    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(cp.kubeconfigPath);
    const harness = await startLocalKubelet({
      kubeConfig,
      commands: options.harnessCommands ?? {},
      extraEnv: options.harnessEnv ?? {},
      inheritEnv: ["PATH", "FFMPEG_BIN", "FFPROBE_BIN"],
      gpus: Number(options.extendedResources?.["nvidia.com/gpu"] ?? 0),
    });
    stops.push(() => harness.stop());
    // The chart's Deployment never starts here (no scheduler runs its ReplicaSet); the operator
    // runs out of cluster with exactly its ServiceAccount's permissions.
    const chart = await installChart(cp, {
      release: RELEASE,
      namespace: OPERATOR_NAMESPACE,
      values: { crds: { install: false } },
    });
    const operator: OperatorProcess = await startOperator({
      kubeconfigPath: chart.serviceAccountKubeconfig,
      args: ["--no-leader-elect", "--relay-image", RELAY_IMAGE],
      metrics: false,
      name: "operator",
    });
    stops.push(() => operator.stop());
    await operator.waitReady(30_000);
    return {
      cp,
      label: choice.label,
      chart,
      harness,
      async killContainer(namespace, pod, container) {
        harness.killContainer(namespace, pod, container, "SIGKILL");
      },
      containerLog: (namespace, pod, container) => harness.logs(namespace, pod, container),
      operatorLog: async () => operator.output().slice(-6000),
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

export const crdsDir = (repoRoot: string) => join(repoRoot, "crds");
