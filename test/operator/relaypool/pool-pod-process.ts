/**
 * `trickle-relay run --pool-pod` as a real process, the way the pool-pod tests drive it: the relay's
 * log collected, its readiness endpoint and metrics read, and it killed at the end; and the pool and
 * pod objects it runs for, on a real apiserver.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import {
  CoordinationV1Api,
  CoreV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Lease,
  type V1Pod,
} from "@kubernetes/client-node";
import { claimLeaseName, type RelayPool, type RelaySession } from "../../../crds/src/index.js";
import {
  claimPodPatch,
  claimedLease,
  desiredPoolPod,
  freedLease,
  idleClaimLease,
  unclaimedPoolPod,
  type ClaimStamp,
} from "../../../operator/src/relaysession/desired-pool-pod.js";
import { repoRoot } from "../operator-harness.js";
import { poolYaml, type PoolKubectl } from "./pool-harness.js";

export interface PoolPodProcessOptions {
  comfystreamUrl: string;
  readyPort: number;
  warmupSeconds: number;
  kubeconfig: string;
  namespace: string;
  podName: string;
  /** More CLI arguments (ICE addresses, size, --pool-recycle …). */
  args?: string[];
  env?: Record<string, string>;
}

export interface PoolPodProcess {
  /** What the relay wrote so far (JSON log lines), stdout and stderr. */
  output(): string;
  /**
   * Resolves once the relay has logged a line matching `pattern`; rejects (with the log's tail) after
   * `timeoutMs`. The relay logs asynchronously (pino, sync: false), so a line can arrive after a state
   * the test saw on another channel (readiness, the apiserver).
   */
  logged(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** The readiness endpoint's status code, 0 while it does not answer. */
  readyz(): Promise<number>;
  metrics(): Promise<string>;
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>;
  /** The exit code, undefined while it runs. */
  exitCode(): number | null | undefined;
  kill(signal?: NodeJS.Signals): void;
}

export function startPoolPodProcess(options: PoolPodProcessOptions): PoolPodProcess {
  const relay = spawn(
    process.execPath,
    [
      join(repoRoot, "dist/relay-pod/src/cli.js"),
      ...["run", "--pool-pod", "--pool-comfystream", options.comfystreamUrl],
      ...["--warmup-seconds", String(options.warmupSeconds), "--ready-port", String(options.readyPort)],
      ...(options.args ?? []),
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        KUBECONFIG: options.kubeconfig,
        POD_NAMESPACE: options.namespace,
        POD_NAME: options.podName,
        TRICKLE_RELAY_LOG_JSON: "1",
        ...options.env,
      },
    },
  );
  let output = "";
  relay.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  relay.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    relay.once("exit", (code) => {
      exitCode = code;
      resolve(code);
    }),
  );
  const base = `http://127.0.0.1:${options.readyPort}`;
  return {
    output: () => output,
    logged: async (pattern, timeoutMs = 5_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!pattern.test(output)) {
        if (Date.now() > deadline) {
          throw new Error(`the relay did not log ${pattern} within ${timeoutMs} ms:\n${output.slice(-3000)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    readyz: async () => {
      try {
        return (await fetch(`${base}/readyz`)).status;
      } catch {
        return 0;
      }
    },
    metrics: async () => (await fetch(`${base}/metrics`)).text(),
    exited,
    exitCode: () => exitCode,
    kill: (signal = "SIGKILL") => relay.kill(signal),
  };
}

/** A kubeconfig pointing at a closed port: enough for a pool pod that only idles. */
export const UNREACHABLE_KUBECONFIG = [
  "apiVersion: v1",
  "kind: Config",
  "clusters: [{name: none, cluster: {server: 'https://127.0.0.1:9'}}]",
  "users: [{name: none, user: {token: none}}]",
  "contexts: [{name: none, context: {cluster: none, user: none}}]",
  "current-context: none",
].join("\n");

/**
 * A namespace with a one-pod pool `gpu` (`spec` added to the pool's) and that pod created as the
 * operator would create it, but run by the test (startPoolPodProcess) instead of a kubelet.
 */
export async function poolWithOnePod(
  kubectl: PoolKubectl,
  kc: KubeConfig,
  namespace: string,
  spec: Record<string, unknown> = {},
): Promise<{ pool: RelayPool; core: CoreV1Api; podName: string }> {
  await kubectl.ok(["create", "namespace", namespace]);
  await kubectl.ok(["apply", "-f", "-"], poolYaml(namespace, "gpu", { replicas: 1, ...spec }));
  const pool = (await kubectl.pool(namespace, "gpu")) as RelayPool;
  const core = kc.makeApiClient(CoreV1Api);
  const created = await createPoolPod(kc, pool, 0);
  return { pool, core, podName: created.metadata!.name! };
}

/** Pool pod number `index` and its claim Lease, created as the operator creates them. */
export async function createPoolPod(kc: KubeConfig, pool: RelayPool, index: number): Promise<V1Pod> {
  const namespace = pool.metadata.namespace ?? "default";
  const pod = await kc.makeApiClient(CoreV1Api).createNamespacedPod({
    namespace,
    body: desiredPoolPod(pool, index, { relayImage: "trickle-relay/relay:test" }),
  });
  await kc
    .makeApiClient(CoordinationV1Api)
    .createNamespacedLease({ namespace, body: idleClaimLease(pool, pod) });
  return pod;
}

/**
 * The operator's claim of pool pod `podName` for `session`, written the way the allocator writes it:
 * the claim Lease updated with the resourceVersion just read, then the claim's labels patched on the pod.
 */
export async function claimAsOperator(
  kc: KubeConfig,
  namespace: string,
  podName: string,
  session: RelaySession,
  stamp: ClaimStamp = { at: new Date(), waitedSeconds: 0, attempt: 0 },
): Promise<V1Lease> {
  const leases = kc.makeApiClient(CoordinationV1Api);
  const name = claimLeaseName(podName);
  const lease = await leases.readNamespacedLease({ namespace, name });
  const written = await leases.replaceNamespacedLease({
    namespace,
    name,
    body: claimedLease(lease, session, stamp),
  });
  await kc
    .makeApiClient(CoreV1Api)
    .patchNamespacedPod(
      { namespace, name: podName, body: claimPodPatch(session, stamp) },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  return written;
}

/** The operator giving a recycled pod back to its pool: the Lease freed, then the pod's labels. */
export async function unclaimAsOperator(kc: KubeConfig, pool: RelayPool, podName: string): Promise<V1Pod> {
  const namespace = pool.metadata.namespace ?? "default";
  const leases = kc.makeApiClient(CoordinationV1Api);
  const name = claimLeaseName(podName);
  const lease = await leases.readNamespacedLease({ namespace, name });
  await leases.replaceNamespacedLease({ namespace, name, body: freedLease(lease) });
  const core = kc.makeApiClient(CoreV1Api);
  const pod = await core.readNamespacedPod({ namespace, name: podName });
  return core.replaceNamespacedPod({ namespace, name: podName, body: unclaimedPoolPod(pod, pool) });
}
