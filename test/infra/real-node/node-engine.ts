/**
 * The real test node's own Docker engine: a second dockerd, separate from the one that builds the
 * images (test/infra/images/docker-engine.sh, on /var/run/docker.sock in the host's network
 * namespace), with its own socket, exec root and pid file, started inside the node's loopback-only
 * network namespace: hostNetwork containers live in dockerd's namespace, and the kubelet probes
 * them there. Flags as in specs/kubernetes-operator.md §4.3b (no iptables, no bridge, vfs).
 *
 * Its data root is kept between runs (under the node cache) so that the images copied in from the
 * build engine (`docker save | docker load`, ~1 min for the relay image) are copied only when their
 * ID changed. Leftover containers of an earlier run that died are removed at start.
 */
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import {
  run,
  runChecked,
  sleep,
  startDaemon,
  waitForDaemon,
  type Daemon,
  type RunResult,
} from "./process.js";

/** Debian's docker.io client speaks the 20.10 engine's API; a newer client on PATH may want buildx. */
export const DOCKER_CLIENT = existsSync("/usr/bin/docker") ? "/usr/bin/docker" : "docker";
/** The engine build-images.sh builds into. */
export const BUILD_ENGINE_HOST = "unix:///var/run/docker.sock";

export interface NodeEngineOptions {
  /** Short path (unix socket names are limited to 108 bytes) for the socket, exec root and pid file. */
  runDir: string;
  /** Persistent image store. */
  dataRoot: string;
  logDir: string;
  /** `nsenter --net=<path>` prefix for the daemon, or [] to run in this process's namespace. */
  netnsPrefix: string[];
}

export interface NodeEngine {
  /** unix:///…/docker.sock */
  host: string;
  socketPath: string;
  daemon: Daemon;
  docker(args: string[], options?: { input?: string; timeoutMs?: number }): Promise<RunResult>;
  /** Image ID, or undefined when the image is not there. */
  imageId(ref: string, host?: string): Promise<string | undefined>;
  /**
   * Copies `ref` from the build engine unless an image with the same ID is here already; returns
   * whether it copied. Throws when the build engine lacks it.
   */
  copyImageFrom(sourceHost: string, ref: string): Promise<boolean>;
  /** IDs of all containers (only the running ones with `running: true`). */
  containerIds(options?: { running?: boolean }): Promise<string[]>;
  /** Force-removes every container (with its anonymous volumes). */
  removeAllContainers(): Promise<void>;
  stop(): Promise<void>;
}

export async function startNodeEngine(options: NodeEngineOptions): Promise<NodeEngine> {
  await mkdir(options.runDir, { recursive: true });
  await mkdir(options.dataRoot, { recursive: true });
  const socketPath = join(options.runDir, "docker.sock");
  const host = `unix://${socketPath}`;
  const daemon = startDaemon(
    "dockerd",
    [
      ...options.netnsPrefix,
      "dockerd",
      `--host=${host}`,
      `--data-root=${options.dataRoot}`,
      `--exec-root=${join(options.runDir, "exec")}`,
      `--pidfile=${join(options.runDir, "docker.pid")}`,
      "--iptables=false",
      "--ip-masq=false",
      "--bridge=none",
      "--storage-driver=vfs",
      // The kubelet's cgroup driver; cgroup v1 here.
      "--exec-opt=native.cgroupdriver=cgroupfs",
    ],
    options.logDir,
  );
  const docker = (args: string[], runOptions: { input?: string; timeoutMs?: number } = {}) =>
    run(DOCKER_CLIENT, ["-H", host, ...args], runOptions);
  const imageId = async (ref: string, from = host) => {
    const result = await run(DOCKER_CLIENT, ["-H", from, "image", "inspect", "-f", "{{.Id}}", ref]);
    return result.code === 0 ? result.stdout.trim() : undefined;
  };
  const containerIds = async (options: { running?: boolean } = {}) =>
    (await runChecked(DOCKER_CLIENT, ["-H", host, "ps", "-q", ...(options.running ? [] : ["-a"])]))
      .split("\n")
      .filter((id) => id !== "");
  // The kubelet may be removing some of them at the same moment ("removal … already in progress"):
  // retry until none is left, for a bounded time.
  const removeAllContainers = async () => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const ids = await containerIds();
      if (ids.length === 0) return;
      const removed = await run(DOCKER_CLIENT, ["-H", host, "rm", "-f", "-v", ...ids], {
        timeoutMs: 120_000,
      });
      if (removed.code === 0) continue;
      if (Date.now() > deadline) throw new Error(`docker rm -f ${ids.join(" ")}: ${removed.stderr.trim()}`);
      await sleep(1000);
    }
  };
  const engine: NodeEngine = {
    host,
    socketPath,
    daemon,
    docker,
    imageId,
    async copyImageFrom(sourceHost, ref) {
      const sourceId = await imageId(ref, sourceHost);
      if (!sourceId)
        throw new Error(
          `image ${ref} is not in the build engine (${sourceHost}); run test/infra/images/build-images.sh`,
        );
      if ((await imageId(ref)) === sourceId) return false;
      // A shell pipe: the image (hundreds of MB) streams from one engine to the other.
      await runChecked(
        "bash",
        [
          "-o",
          "pipefail",
          "-c",
          `"${DOCKER_CLIENT}" -H "${sourceHost}" save "${ref}" | "${DOCKER_CLIENT}" -H "${host}" load -q`,
        ],
        { timeoutMs: 600_000 },
      );
      return true;
    },
    containerIds,
    removeAllContainers,
    async stop() {
      if (daemon.running()) await removeAllContainers().catch(() => undefined);
      await daemon.stop(30_000);
    },
  };
  try {
    await waitForDaemon(
      daemon,
      "answering on its socket",
      60_000,
      async () => (await docker(["info", "--format", "{{.ID}}"], { timeoutMs: 10_000 })).code === 0,
    );
    await removeAllContainers();
  } catch (err) {
    await daemon.stop(5_000);
    throw err;
  }
  return engine;
}
