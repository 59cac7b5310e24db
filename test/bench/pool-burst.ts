// One burst of bench:pool (test/bench/pool-bench.ts): N pooled RelaySessions created at once against a
// pool of Ready warm pods, measured until a watch of the claim Leases has seen every claim. What it records per
// allocation, all on this machine's clock:
//   sent / returned   just before the create call / when it returned (the bench);
//   allocated-at      the claim's stamp, taken by the operator just before it sends the claim;
//   waited            the operator's first sight of the session → that stamp (on the claim);
//   written           the claim's write as the operator's client saw it (its "allocated" log line);
//   seen              when a Lease watch saw the claim written, as the relay in the pod sees it;
//   pod labels seen   when a pod watch saw the claim's labels on the pod (written right after).
// And what the machine did meanwhile: CPU per process, the operator's event-loop delay, and the
// apiserver's and etcd's own histograms.
import type { CustomObjectsApi } from "@kubernetes/client-node";
import { ANNOTATION_ALLOCATED_AT } from "../../crds/src/index.js";
import type { ControlPlane } from "../infra/apiserver.js";
import { waitFor, type OperatorProcess } from "../operator/operator-harness.js";
import { createPooledSession, type PoolKubectl } from "../operator/relaypool/pool-harness.js";
import {
  cpuSeconds,
  findPid,
  histogramDelta,
  scrapeControlPlane,
  type HistogramDelta,
} from "./control-plane-metrics.js";
import { round } from "./results.js";

export interface BurstContext {
  cp: ControlPlane;
  op: OperatorProcess;
  kubectl: PoolKubectl;
  /** Creates sessions over one connection pool, as a gateway's long-lived client does. */
  custom: CustomObjectsApi;
  namespace: string;
  sessions: number;
  /** Session name → when the bench's Lease watch first saw a pod claimed for it (ms since the epoch). */
  claimSeen: ReadonlyMap<string, number>;
  /** Session name → when the bench's pod watch first saw the claim's labels on a pod. */
  podLabelsSeen: ReadonlyMap<string, number>;
  /** Session name → when a session watch first saw its status.allocation. */
  allocationSeen: ReadonlyMap<string, number>;
}

/** Per allocation, ms. */
export interface BurstSamples {
  fromSent: number[];
  fromReturned: number[];
  watchDelay: number[];
  operatorSide: number[];
  claimWrite: number[];
  seenFromReturned: number[];
  /** The claim seen → the session's status.allocation seen. */
  statusAfterClaim: number[];
  /** The claim seen → its labels seen on the pod. */
  podLabelsAfterClaim: number[];
}

export interface BurstResult {
  samples: BurstSamples;
  sessionsWithTwoPods: number;
  wallSeconds: number;
  cpuSeconds: Record<string, number>;
  operatorLoopLagMs: { p50: number; p99: number; max: number };
  /** The operator's work queues from the first create to the last claim seen (wall time per key). */
  operatorWork: { poolReconciles: number; poolReconcileMs: number; sessionReconciles: number };
  controlPlane: {
    requests: HistogramDelta[];
    flowControlWait: HistogramDelta[];
    etcdRequests: HistogramDelta[];
    walFsync: HistogramDelta[];
    backendCommit: HistogramDelta[];
  };
}

/** A work queue's handler count or summed seconds between two scrapes of the operator's /metrics. */
function workDelta(before: string, after: string, queue: string, stat: "count" | "sum"): number {
  const read = (text: string) =>
    Number(
      new RegExp(
        `^(?:trickle_relay_)?operator_workqueue_work_duration_seconds_${stat}\\{name="${queue}"\\} (\\S+)`,
        "m",
      ).exec(text)?.[1] ?? 0,
    );
  return read(after) - read(before);
}

export async function runBurst(ctx: BurstContext, burst: number): Promise<BurstResult> {
  const { cp, op, namespace } = ctx;
  const names = Array.from({ length: ctx.sessions }, (_, i) => `b${burst}-${String(i).padStart(3, "0")}`);
  const scrapeBefore = await scrapeControlPlane(cp);
  // CPU used during the burst by each process on the machine that takes part in it (2 cores).
  const processes: Record<string, number | undefined> = {
    "kube-apiserver": findPid(`--secure-port=${cp.port} `),
    etcd: findPid(`--listen-client-urls=${cp.etcdUrl} `),
    operator: op.child.pid,
    bench: process.pid,
  };
  const cpuBefore = Object.fromEntries(
    Object.entries(processes).map(([name, pid]) => [name, pid ? cpuSeconds(pid) : NaN]),
  );
  const childCpuBefore = cpuSeconds(process.pid, "waited-for children");
  const operatorBefore = await op.metrics(); // prom-client's event-loop delay figures restart at each scrape
  const burstStart = performance.now();
  const sent = new Map<string, number>();
  const returned = new Map<string, number>();
  await Promise.all(
    names.map(async (name) => {
      sent.set(name, Date.now());
      await createPooledSession(ctx.custom, namespace, name);
      returned.set(name, Date.now());
    }),
  );
  // Done when the Lease watch has seen every claim: polling the apiserver (a kubectl process every
  // 250 ms, as the first sessions' bench did) used a third of a core during the burst it measures.
  await waitFor(
    "all claims seen on the Lease watch",
    120_000,
    async () => names.every((name) => ctx.claimSeen.has(name)),
    5,
  );
  const wallSeconds = round((performance.now() - burstStart) / 1000, 2);
  const cpu: Record<string, number> = Object.fromEntries(
    Object.entries(processes).map(([name, pid]) => [
      name,
      pid ? round(cpuSeconds(pid) - cpuBefore[name]!, 2) : NaN,
    ]),
  );
  cpu["bench's kubectl runs"] = round(cpuSeconds(process.pid, "waited-for children") - childCpuBefore, 2);
  const operatorMetrics = await op.metrics(); // one scrape: each one restarts the delay figures
  const lagMs = (stat: string) =>
    round(
      Number(new RegExp(`^nodejs_eventloop_lag_${stat}_seconds (\\S+)`, "m").exec(operatorMetrics)?.[1]) *
        1000,
    );
  const operatorLoopLagMs = { p50: lagMs("p50"), p99: lagMs("p99"), max: lagMs("max") };
  const operatorWork = {
    poolReconciles: workDelta(operatorBefore, operatorMetrics, "relaypools", "count"),
    poolReconcileMs: round(workDelta(operatorBefore, operatorMetrics, "relaypools", "sum") * 1000),
    sessionReconciles: workDelta(operatorBefore, operatorMetrics, "relaysessions", "count"),
  };

  const ours = new Set(names);
  // The claims' labels on the pods, the session controller's status.allocation writes and the
  // Allocated Events trail the claims.
  await waitFor(
    "every session's status.allocation",
    60_000,
    async () => names.every((name) => ctx.allocationSeen.has(name) && ctx.podLabelsSeen.has(name)),
    20,
  );
  const claims = (await ctx.kubectl.pods(namespace, "gpu")).filter((pod) => {
    const session = pod.metadata?.labels?.["trickle-relay.io/session"];
    return session && ours.has(session) && pod.metadata?.annotations?.[ANNOTATION_ALLOCATED_AT];
  });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const scrapeAfter = await scrapeControlPlane(cp);
  const delta = (from: "apiserver" | "etcd", name: string, keep: string[]) =>
    histogramDelta(scrapeBefore[from], scrapeAfter[from], name, keep);

  const samples: BurstSamples = {
    fromSent: [],
    fromReturned: [],
    watchDelay: [],
    operatorSide: [],
    claimWrite: [],
    seenFromReturned: [],
    statusAfterClaim: [],
    podLabelsAfterClaim: [],
  };
  const podsPerSession = new Map<string, number>();
  for (const pod of claims) {
    const session = pod.metadata!.labels!["trickle-relay.io/session"]!;
    podsPerSession.set(session, (podsPerSession.get(session) ?? 0) + 1);
    const at = Date.parse(pod.metadata!.annotations![ANNOTATION_ALLOCATED_AT]!);
    const waitedMs = Number(pod.metadata!.annotations!["trickle-relay.io/allocation-waited-seconds"]) * 1000;
    samples.fromSent.push(at - sent.get(session)!);
    samples.fromReturned.push(at - returned.get(session)!);
    samples.seenFromReturned.push(ctx.claimSeen.get(session)! - returned.get(session)!);
    samples.statusAfterClaim.push(ctx.allocationSeen.get(session)! - ctx.claimSeen.get(session)!);
    samples.podLabelsAfterClaim.push(ctx.podLabelsSeen.get(session)! - ctx.claimSeen.get(session)!);
    samples.operatorSide.push(round(waitedMs));
    samples.watchDelay.push(round(at - waitedMs - returned.get(session)!));
  }
  // The operator's own clock on each claim's write (sent → answered), from its "allocated" log lines.
  for (const line of op.logged("allocated warm pod")) {
    if (ours.has(String(line.session)) && Number.isFinite(Number(line.writeMs)))
      samples.claimWrite.push(Number(line.writeMs));
  }
  return {
    samples,
    sessionsWithTwoPods: [...podsPerSession.values()].filter((n) => n > 1).length,
    wallSeconds,
    cpuSeconds: cpu,
    operatorLoopLagMs,
    operatorWork,
    controlPlane: {
      requests: delta("apiserver", "apiserver_request_duration_seconds", [
        "verb",
        "resource",
        "subresource",
      ]).filter((row) => !row.labels.startsWith('verb="WATCH"')),
      flowControlWait: delta("apiserver", "apiserver_flowcontrol_request_wait_duration_seconds", [
        "priority_level",
        "execute",
      ]),
      etcdRequests: delta("apiserver", "etcd_request_duration_seconds", ["operation", "type"]),
      walFsync: delta("etcd", "etcd_disk_wal_fsync_duration_seconds", []),
      backendCommit: delta("etcd", "etcd_disk_backend_commit_duration_seconds", []),
    },
  };
}

/** Every claimed pod of the last burst deleted with its session, the pool refilled and Ready again. */
export async function resetPool(
  ctx: BurstContext,
  poolSize: number,
  startKubelet: () => { stop(): void },
): Promise<void> {
  await ctx.kubectl.ok(["delete", "rls", "--all", "-n", ctx.namespace, "--wait=false"]);
  const kubelet = startKubelet();
  try {
    await waitFor(
      "pool refilled",
      300_000,
      async () => {
        const pool = await ctx.kubectl.pool(ctx.namespace, "gpu");
        const pods = await ctx.kubectl.pods(ctx.namespace, "gpu");
        return (
          pool.status?.readyReplicas === poolSize &&
          pool.status.allocatedReplicas === 0 &&
          pods.length === poolSize &&
          pods.every((pod) => !pod.metadata?.labels?.["trickle-relay.io/session"])
        );
      },
      500,
    );
  } finally {
    kubelet.stop();
  }
}
