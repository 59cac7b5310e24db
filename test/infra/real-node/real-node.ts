/**
 * A real Kubernetes node for tests: kubelet 1.20.2 with its built-in dockershim, a Docker engine of
 * its own and kube-scheduler, joined to the test control plane of test/infra/apiserver.ts (started
 * with `realNodeControlPlaneOptions()`: Node,RBAC authorization, ServiceAccount admission and the
 * controller manager's node, ReplicaSet and token controllers). Pods are scheduled by the real
 * scheduler, their containers run in Docker under the securityContext, resources, probes, volumes
 * and ServiceAccount token the kubelet gives them. It is the setup of specs/kubernetes-operator.md
 * §4.3b, built by node-assets.sh (three kubelet patches: see there).
 *
 *   const cp = await startControlPlane(realNodeControlPlaneOptions({ crdPaths: [...] }));
 *   const node = await startRealNode({ controlPlane: cp, images: ["trickle-relay/relay:0.1.0"] });
 *   try { … kubectl apply …; await node.docker(["kill", id]); } finally { await node.stop(); await cp.stop(); }
 *
 * Everything runs inside the loopback-only network namespace of test/infra/run-tests.sh, which gets
 * a name and two stand-ins (node-network.ts): a kube-proxy stand-in for the `kubernetes` Service
 * and a veth address for WebRTC. Every pod shares that namespace (no pod network; patched in the
 * kubelet, the API's pod spec is untouched). Images come from the engine build-images.sh fills
 * (/var/run/docker.sock), copied into the node's engine.
 *
 * `realNodeAvailability()` says whether it can run here, and why not; suites then fall back to the
 * local harness (test/infra/local-kubelet.ts) and say so. stop() removes every container, mount,
 * cgroup, pod log folder and process it made, and reports what it could not remove.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ControlPlane, ControlPlaneOptions } from "../apiserver.js";
import { freePorts } from "../apiserver.js";
import { inLoopbackOnlyNamespace } from "../netns.js";
import {
  mountsUnder,
  podLogEntries,
  removeKubepodsCgroups,
  removeNewPodLogs,
  unmountAll,
} from "./host-cleanup.js";
import { NODE_NAME, NODE_USER, PAUSE_IMAGE, kubeletArgs, schedulerArgs } from "./kubelet-args.js";
import { BUILD_ENGINE_HOST, DOCKER_CLIENT, startNodeEngine, type NodeEngine } from "./node-engine.js";
import { setUpNodeNetwork, type NodeNetwork } from "./node-network.js";
import {
  run,
  runChecked,
  sleep,
  startDaemon,
  waitForDaemon,
  type Daemon,
  type RunResult,
} from "./process.js";

/** What suites print (and CI greps) when they ran on this node. */
export const REAL_NODE_LABEL = "real kubelet 1.20.2";
export { NODE_NAME } from "./kubelet-args.js";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = findRepoRoot(here);
const assetsScript = join(repoRoot, "test/infra/real-node/node-assets.sh");
const cacheRoot =
  process.env.TRICKLE_RELAY_NODE_CACHE ??
  join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "trickle-relay/real-node");

function findRepoRoot(from: string): string {
  for (let dir = from; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "test/infra"))) return dir;
  }
  throw new Error(`no repository root above ${from}`);
}

/** Control-plane options a real node needs, merged into `options`. */
export function realNodeControlPlaneOptions(options: ControlPlaneOptions = {}): ControlPlaneOptions {
  return { ...options, forRealNode: true, users: [...(options.users ?? []), NODE_USER] };
}

export type RealNodeAvailability =
  { assetsDir: string; reason?: undefined } | { assetsDir?: undefined; reason: string };

/**
 * Whether a real node can start here: root, the loopback-only namespace, dockerd installed, the node
 * binaries built (node-assets.sh; never built here, run-tests.sh does it), and `images` present in
 * the build engine. Otherwise the reason, for the suite's fallback line.
 */
export async function realNodeAvailability(images: string[]): Promise<RealNodeAvailability> {
  if (process.getuid?.() !== 0) return { reason: "not root" };
  if (!inLoopbackOnlyNamespace) return { reason: "not in the loopback-only namespace of run-tests.sh" };
  if ((await run("bash", ["-c", "command -v dockerd"])).code !== 0) return { reason: "no dockerd installed" };
  const assets = await run("bash", [assetsScript, "--check"]);
  if (assets.code !== 0)
    return { reason: `node binaries not built (${assets.stderr.trim().split("\n").pop()})` };
  for (const image of images) {
    const found = await run(DOCKER_CLIENT, [
      "-H",
      BUILD_ENGINE_HOST,
      "image",
      "inspect",
      "-f",
      "{{.Id}}",
      image,
    ]);
    if (found.code !== 0) {
      return {
        reason: `image ${image} not in the build engine (${BUILD_ENGINE_HOST}; test/infra/images/build-images.sh)`,
      };
    }
  }
  return { assetsDir: assets.stdout.trim() };
}

export interface RealNodeOptions {
  controlPlane: ControlPlane;
  /** Image references to copy from the build engine into the node's engine. */
  images: string[];
  /** From realNodeAvailability(); default: looked up again. */
  assetsDir?: string;
  /** Extended resources to advertise on the Node, e.g. {"nvidia.com/gpu": "1"} (no device plugin). */
  extendedResources?: Record<string, string>;
  /** Keep kubelet/dockerd/scheduler logs here; default a temp folder removed on stop. */
  logDir?: string;
}

export interface Leftovers {
  containers: string[];
  mounts: string[];
  cgroups: string[];
  processes: string[];
}

export interface RealNode {
  label: typeof REAL_NODE_LABEL;
  nodeName: string;
  engine: NodeEngine;
  logDir: string;
  /** How long each start step took (ms). */
  timings: Record<string, number>;
  /** `docker -H <node engine> …` */
  docker(args: string[], options?: { input?: string; timeoutMs?: number }): Promise<RunResult>;
  /** The Docker ID of a pod's running container (by the kubelet's container labels). */
  containerId(namespace: string, pod: string, container: string): Promise<string | undefined>;
  /**
   * Fault injection: signals the kubelet process, e.g. SIGSTOP so that the node stops reporting
   * (its containers keep running, as on a partitioned node) and SIGCONT to bring it back.
   */
  signalKubelet(signal: "SIGSTOP" | "SIGCONT"): void;
  /** Stops everything; resolves with what could not be removed (all empty on a clean teardown). */
  stop(): Promise<Leftovers>;
}

export async function startRealNode(options: RealNodeOptions): Promise<RealNode> {
  const cp = options.controlPlane;
  const assetsDir = options.assetsDir ?? (await runChecked("bash", [assetsScript, "--check"])).trim();
  const timings: Record<string, number> = {};
  const timed = async <T>(step: string, body: () => Promise<T>): Promise<T> => {
    const started = Date.now();
    try {
      return await body();
    } finally {
      timings[step] = Date.now() - started;
    }
  };
  await mkdir(cacheRoot, { recursive: true });
  const lock = await takeNodeLock(join(cacheRoot, "node.lock"));
  // Short: the dockershim and containerd sockets live below it (108-byte socket path limit).
  const workDir = await mkdtemp("/tmp/trn-");
  const logDir = options.logDir ?? join(workDir, "logs");
  await mkdir(logDir, { recursive: true });
  const podLogsBefore = await podLogEntries();

  let network: NodeNetwork | undefined;
  let engine: NodeEngine | undefined;
  let scheduler: Daemon | undefined;
  let kubelet: Daemon | undefined;
  const kubectl = cp.kubectl;

  const stop = async (): Promise<Leftovers> => {
    if (kubelet?.running()) kubelet.child.kill("SIGCONT"); // a test that stopped it may have failed
    // No new pods get bound, then the kubelet tears down what runs (volumes unmounted by itself).
    await scheduler?.stop();
    if (kubelet?.running()) {
      await kubectl(["delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false"]);
      const deadline = Date.now() + 30_000;
      while (
        Date.now() < deadline &&
        engine &&
        (await engine.containerIds({ running: true }).catch(() => [])).length > 0
      ) {
        await sleep(500);
      }
    }
    await kubelet?.stop(10_000);
    const containers = engine
      ? await engine
          .removeAllContainers()
          .then(() => engine!.containerIds())
          .catch((err: Error) => [err.message])
      : [];
    await engine?.stop();
    await unmountAll(workDir);
    const cgroupsLeft = await removeKubepodsCgroups();
    await removeNewPodLogs(podLogsBefore);
    await network?.stop();
    const mounts = await mountsUnder(workDir);
    const processes = (await run("pgrep", ["-af", workDir])).stdout
      .split("\n")
      .filter((line) => line.trim() !== "");
    if (mounts.length === 0) await rm(workDir, { recursive: true, force: true });
    lock.release();
    return { containers, mounts, cgroups: cgroupsLeft, processes };
  };

  try {
    network = await timed("network", () => setUpNodeNetwork(cp.port));
    const netnsPrefix = network.netnsPrefix;
    const dockerEngine = await timed("dockerd", () =>
      startNodeEngine({
        runDir: join(workDir, "docker"),
        dataRoot: join(cacheRoot, "docker-data"),
        logDir,
        netnsPrefix,
      }),
    );
    engine = dockerEngine;
    await timed("images", async () => {
      await ensurePauseImage(dockerEngine, join(assetsDir, "pause"));
      let copied = false;
      for (const image of options.images)
        copied = (await dockerEngine.copyImageFrom(BUILD_ENGINE_HOST, image)) || copied;
      // Images replaced by newer builds are left untagged; on vfs each one is a full copy per layer.
      if (copied) await dockerEngine.docker(["image", "prune", "-f"], { timeoutMs: 120_000 });
    });
    // Stale kubepods cgroups of a run that died would hold the kubelet's QoS setup; they are empty.
    await removeKubepodsCgroups();

    scheduler = startDaemon(
      "kube-scheduler",
      [...netnsPrefix, join(assetsDir, "kube-scheduler"), ...schedulerArgs(cp.kubeconfigPath)],
      logDir,
    );

    const nodeToken = await cp.createUserToken(NODE_USER.name, NODE_USER.groups);
    const kubeconfig = join(workDir, "kubelet.kubeconfig");
    await writeFile(kubeconfig, kubeconfigFor(cp, await readFile(cp.caFile!, "utf8"), nodeToken), {
      mode: 0o600,
    });
    const [kubeletPort, healthzPort] = await freePorts(2);
    const paths = {
      kubeconfig,
      rootDir: join(workDir, "kubelet"),
      certDir: join(workDir, "kubelet-pki"),
      volumePluginDir: join(workDir, "volume-plugins"),
      dockershimRoot: join(workDir, "dockershim"),
      dockerHost: dockerEngine.host,
      dockershimSocket: join(workDir, "dockershim.sock"),
    };
    for (const dir of [paths.rootDir, paths.certDir, paths.volumePluginDir, paths.dockershimRoot])
      await mkdir(dir, { recursive: true });
    const kubeletDaemon = startDaemon(
      "kubelet",
      [
        ...netnsPrefix,
        join(assetsDir, "kubelet"),
        ...kubeletArgs(paths, { kubelet: kubeletPort!, healthz: healthzPort! }),
      ],
      logDir,
    );
    kubelet = kubeletDaemon;
    await timed("kubelet", () =>
      waitForDaemon(kubeletDaemon, `node ${NODE_NAME} Ready and schedulable`, 120_000, async () => {
        const result = await kubectl(["get", "node", NODE_NAME, "-o", "json"]);
        if (result.code !== 0) return false;
        const node = JSON.parse(result.stdout) as {
          spec?: { taints?: Array<{ key: string }> };
          status?: { conditions?: Array<{ type: string; status: string }> };
        };
        const ready = node.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
        const tainted = node.spec?.taints?.some((t) => t.key.startsWith("node.kubernetes.io/"));
        return !!ready && !tainted;
      }),
    );
    if (options.extendedResources) await advertise(cp, options.extendedResources);
    // ServiceAccount admission rejects pods until the token controller gave the account a secret.
    await timed("serviceaccount", () =>
      waitForDaemon(kubeletDaemon, "ServiceAccount default/default with a token secret", 60_000, async () => {
        const result = await kubectl([
          "get",
          "serviceaccount",
          "default",
          "-n",
          "default",
          "-o",
          "jsonpath={.secrets[0].name}",
        ]);
        return result.code === 0 && result.stdout.trim() !== "";
      }),
    );
  } catch (err) {
    const leftovers = await stop().catch(() => undefined);
    const note = leftovers ? ` (teardown left: ${JSON.stringify(leftovers)})` : "";
    throw new Error(`${(err as Error).message}${note}`);
  }

  const dockerEngine = engine!;
  let stopped: Promise<Leftovers> | undefined;
  return {
    label: REAL_NODE_LABEL,
    nodeName: NODE_NAME,
    engine: dockerEngine,
    logDir,
    timings,
    docker: dockerEngine.docker,
    async containerId(namespace, pod, container) {
      const result = await dockerEngine.docker([
        "ps",
        "-q",
        "--filter",
        `label=io.kubernetes.pod.namespace=${namespace}`,
        "--filter",
        `label=io.kubernetes.pod.name=${pod}`,
        "--filter",
        `label=io.kubernetes.container.name=${container}`,
      ]);
      return result.stdout.trim().split("\n")[0] || undefined;
    },
    signalKubelet(signal) {
      // setpriv and nsenter exec the kubelet in place: the child's pid is the kubelet's.
      if (!kubelet?.running() || !kubelet.child.kill(signal))
        throw new Error(`kubelet not running (${signal})`);
    },
    stop: () => (stopped ??= stop()),
  };
}

/** The pause binary as `k8s.gcr.io/pause:3.2`, imported again only when the binary changed. */
async function ensurePauseImage(engine: NodeEngine, pauseBinary: string): Promise<void> {
  const digest = createHash("sha256")
    .update(await readFile(pauseBinary))
    .digest("hex")
    .slice(0, 16);
  const label = await engine.docker([
    "image",
    "inspect",
    "-f",
    '{{index .Config.Labels "trickle-relay.pause"}}',
    PAUSE_IMAGE,
  ]);
  if (label.code === 0 && label.stdout.trim() === digest) return;
  await runChecked("bash", [
    "-o",
    "pipefail",
    "-c",
    `tar -C "${dirname(pauseBinary)}" -c pause | "${DOCKER_CLIENT}" -H "${engine.host}" import ` +
      `--change 'ENTRYPOINT ["/pause"]' --change 'LABEL trickle-relay.pause=${digest}' - ${PAUSE_IMAGE}`,
  ]);
}

/** Extended resources on the Node's status capacity, as a cluster admin would without a device plugin. */
async function advertise(cp: ControlPlane, resources: Record<string, string>): Promise<void> {
  const patch = JSON.stringify(
    Object.entries(resources).map(([name, value]) => ({
      op: "add",
      path: `/status/capacity/${name.replace(/~/g, "~0").replace(/\//g, "~1")}`,
      value,
    })),
  );
  const ca = await readFile(cp.caFile!, "utf8");
  const status = await new Promise<number>((done, failed) => {
    const req = httpsRequest(
      `${cp.server}/api/v1/nodes/${NODE_NAME}/status`,
      {
        method: "PATCH",
        ca,
        timeout: 10_000,
        headers: { authorization: `Bearer ${cp.token}`, "content-type": "application/json-patch+json" },
      },
      (res) => {
        res.resume();
        done(res.statusCode ?? 0);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", failed);
    req.end(patch);
  });
  if (status !== 200)
    throw new Error(`advertising ${Object.keys(resources).join(", ")} on the node: HTTP ${status}`);
}

function kubeconfigFor(cp: ControlPlane, caPem: string, token: string): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: "test",
        cluster: { server: cp.server, "certificate-authority-data": Buffer.from(caPem).toString("base64") },
      },
    ],
    users: [{ name: "node", user: { token } }],
    contexts: [{ name: "node", context: { cluster: "test", user: "node" } }],
    "current-context": "node",
  });
}

/**
 * One real node at a time on a machine: the kubelet writes /var/log/pods and the kubepods cgroups
 * whatever its --root-dir. A `flock` child holds the lock while this process lives (its stdin is
 * ours: when we die, `cat` reads EOF and exits, releasing it). A second suite waits its turn.
 */
async function takeNodeLock(path: string, waitSeconds = 900): Promise<{ release(): void }> {
  const holder: ChildProcess = spawn(
    "flock",
    ["--wait", String(waitSeconds), path, "-c", "echo locked; exec cat"],
    {
      stdio: ["pipe", "pipe", "ignore"],
    },
  );
  const locked = await new Promise<boolean>((done) => {
    holder.stdout!.once("data", () => done(true));
    holder.once("exit", () => done(false));
    holder.once("error", () => done(false));
  });
  if (!locked) throw new Error(`another real test node held the lock ${path} for ${waitSeconds} s`);
  return { release: () => holder.stdin?.end() };
}
