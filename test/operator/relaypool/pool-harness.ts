/**
 * Helpers for the RelayPool tests on a real kube-apiserver: manifests, kubectl reads of what a user
 * looks at, and a stand-in kubelet ("FakePoolKubelet", named as such) for the apiserver-only tests.
 *
 * The stand-in plays only what a kubelet reports: a pool pod it sees is Running and, after
 * `warmupMs`, Ready (the pod's readiness probe passing once the relay's warm-up is done); `exit()`
 * ends a pod's containers like a relay that finished its session. Without a scheduler, an unbound
 * pod is deleted at once, as the apiserver does for pods that never reached a node.
 */
import assert from "node:assert/strict";
import {
  CoreV1Api,
  type CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Pod,
} from "@kubernetes/client-node";
import { LABEL_POOL, type RelayPool, type RelaySession } from "../../../crds/src/index.js";
import type { ControlPlane } from "../../infra/apiserver.js";

const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

export function poolYaml(namespace: string, name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({
    apiVersion: "trickle-relay.io/v1alpha1",
    kind: "RelayPool",
    metadata: { name, namespace },
    spec: { template: { comfystream: { url: "http://127.0.0.1:9" } }, ...spec },
  });
}

/** Creates one RelaySession of `pool` through the API (one request, for latency measurements). */
export async function createPooledSession(
  custom: CustomObjectsApi,
  namespace: string,
  name: string,
  options: { pool?: string; inputUrl?: string } = {},
): Promise<RelaySession> {
  return (await custom.createNamespacedCustomObject({
    group: "trickle-relay.io",
    version: "v1alpha1",
    namespace,
    plural: "relaysessions",
    body: {
      apiVersion: "trickle-relay.io/v1alpha1",
      kind: "RelaySession",
      metadata: { name },
      spec: {
        trickle: { inputUrl: options.inputUrl ?? `http://127.0.0.1:9/live/${name}` },
        poolRef: { name: options.pool ?? "gpu" },
      },
    },
  })) as RelaySession;
}

/** Pooled sessions, in one multi-document manifest (kubectl creates them in this order). */
export function pooledSessionsYaml(
  namespace: string,
  pool: string,
  names: string[],
  onExhausted: "wait" | "cold" = "wait",
): string {
  return names
    .map((name) =>
      [
        "apiVersion: trickle-relay.io/v1alpha1",
        "kind: RelaySession",
        `metadata: {name: ${name}, namespace: ${namespace}}`,
        "spec:",
        `  trickle: {inputUrl: "http://127.0.0.1:9/live/${name}"}`,
        `  poolRef: {name: ${pool}, onExhausted: ${onExhausted}}`,
      ].join("\n"),
    )
    .join("\n---\n");
}

export class PoolKubectl {
  constructor(private readonly cp: ControlPlane) {}

  async ok(args: string[], input?: string): Promise<string> {
    const result = await this.cp.kubectl(args, { input });
    assert.equal(result.code, 0, `kubectl ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  }

  async sessions(namespace: string): Promise<RelaySession[]> {
    return (
      JSON.parse(await this.ok(["get", "rls", "-n", namespace, "-o", "json"])) as { items: RelaySession[] }
    ).items;
  }

  async pool(namespace: string, name: string): Promise<RelayPool> {
    return JSON.parse(await this.ok(["get", "rlp", name, "-n", namespace, "-o", "json"])) as RelayPool;
  }

  /**
   * How many pods of `pool` are claimed for a session, from their claim Leases (the claim itself; the
   * pods' labels follow a moment later).
   */
  async leaseClaims(namespace: string, pool: string): Promise<number> {
    const out = await this.ok([
      "get",
      "leases",
      "-n",
      namespace,
      "-l",
      `${LABEL_POOL}=${pool}`,
      "-o",
      "json",
    ]);
    const leases = (JSON.parse(out) as { items: Array<{ spec?: { holderIdentity?: string } }> }).items;
    return leases.filter((lease) => (lease.spec?.holderIdentity ?? "").includes("/")).length;
  }

  async pods(namespace: string, pool: string): Promise<V1Pod[]> {
    const out = await this.ok(["get", "pods", "-n", namespace, "-l", `${LABEL_POOL}=${pool}`, "-o", "json"]);
    return (JSON.parse(out) as { items: V1Pod[] }).items;
  }
}

/** Session name → the pod claimed for it (label trickle-relay.io/session), from the pods. */
export function claimsOf(pods: readonly V1Pod[]): Map<string, string[]> {
  const claims = new Map<string, string[]>();
  for (const pod of pods) {
    const session = pod.metadata?.labels?.["trickle-relay.io/session"];
    if (!session || pod.metadata?.deletionTimestamp) continue;
    claims.set(session, [...(claims.get(session) ?? []), pod.metadata?.name ?? ""]);
  }
  return claims;
}

export function readyReason(session: RelaySession): string | undefined {
  return session.status?.conditions?.find((c) => c.type === "Ready")?.reason;
}

/** Stand-in kubelet for pool pods (see the file comment). Stops by itself after `lifetimeMs`. */
export class FakePoolKubelet {
  private readonly core: CoreV1Api;
  private readonly seen = new Map<string, number>();
  private readonly ready = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    kubeConfig: KubeConfig,
    private readonly namespace: string,
    private readonly warmupMs = 200,
    lifetimeMs = 10 * 60_000,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    setTimeout(() => this.stop(), lifetimeMs).unref();
  }

  start(): this {
    const tick = async () => {
      if (this.stopped) return;
      try {
        await this.sync();
      } catch {
        // the next tick retries
      }
      if (!this.stopped) this.timer = setTimeout(() => void tick(), 100);
    };
    void tick();
    return this;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async sync(): Promise<void> {
    const pods = (await this.core.listNamespacedPod({ namespace: this.namespace, labelSelector: LABEL_POOL }))
      .items;
    const now = Date.now();
    for (const pod of pods) {
      const uid = pod.metadata?.uid ?? "";
      if (
        pod.metadata?.deletionTimestamp ||
        pod.status?.phase === "Succeeded" ||
        pod.status?.phase === "Failed"
      )
        continue;
      const first = this.seen.get(uid);
      if (first === undefined) {
        this.seen.set(uid, now);
        await this.setStatus(pod, false);
      } else if (!this.ready.has(uid) && now - first >= this.warmupMs) {
        this.ready.add(uid);
        await this.setStatus(pod, true);
      }
    }
  }

  private async setStatus(pod: V1Pod, ready: boolean): Promise<void> {
    const now = new Date().toISOString();
    await this.core.patchNamespacedPodStatus(
      {
        namespace: this.namespace,
        name: pod.metadata?.name ?? "",
        body: {
          status: {
            phase: "Running",
            startTime: now,
            conditions: [
              { type: "PodScheduled", status: "True", lastTransitionTime: now },
              { type: "Ready", status: ready ? "True" : "False", lastTransitionTime: now },
            ],
          },
        },
      },
      mergePatch,
    );
  }

  /** The relay in `podName` ends (exit 0: its session's input ended). */
  async exit(podName: string, exitCode = 0): Promise<void> {
    const now = new Date(Math.ceil(Date.now() / 1000) * 1000).toISOString();
    await this.core.patchNamespacedPodStatus(
      {
        namespace: this.namespace,
        name: podName,
        body: {
          status: {
            phase: exitCode === 0 ? "Succeeded" : "Failed",
            conditions: [
              { type: "PodScheduled", status: "True", lastTransitionTime: now },
              { type: "Ready", status: "False", lastTransitionTime: now },
            ],
            containerStatuses: [
              {
                name: "relay",
                image: "trickle-relay/relay:faults",
                imageID: "",
                ready: false,
                restartCount: 0,
                state: {
                  terminated: { exitCode, reason: exitCode === 0 ? "Completed" : "Error", finishedAt: now },
                },
              },
            ],
          },
        },
      },
      mergePatch,
    );
  }
}
