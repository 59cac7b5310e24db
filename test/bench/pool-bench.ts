// Pool allocation benchmark on a real kube-apiserver + etcd, with the real operator binary:
//
//   npm run bench:pool [-- --pool 100 --sessions 100 --bursts 3 --rss-pods 1000 --etcd-data disk
//                         --out bench-results/pool.json]
//
// 1. A RelayPool of --pool pods; a stand-in kubelet (FakePoolKubelet: no containers run) reports
//    every pod Running and Ready, as a warm pod's readiness probe would once its warm-up is done.
// 2. --bursts times: --sessions pooled RelaySessions are created concurrently (all creates in
//    flight at once; test/bench/pool-burst.ts). Allocation latency of each = from its create call's
//    response until a pod watch sees the claim written (the pod is the session's then), with the
//    parts in between; then the sessions are deleted and the pool refilled for the next burst.
// 3. Operator RSS with --rss-pods pool pods (the pool scaled up; pods need not be Ready).
//
// Apply → first output frame warm vs cold is not measured here (it needs relay pods running real
// pipelines: see the README's "Warm pools" and the report of issue 14).
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CustomObjectsApi, KubeConfig, Watch, type V1Lease, type V1Pod } from "@kubernetes/client-node";
import type { RelaySession } from "../../crds/src/index.js";
import { withRequestTimeout } from "../../operator/src/kube/client.js";
import { startControlPlane } from "../infra/apiserver.js";
import { repoRoot, startOperator, waitFor } from "../operator/operator-harness.js";
import { FakePoolKubelet, PoolKubectl, poolYaml } from "../operator/relaypool/pool-harness.js";
import type { HistogramDelta } from "./control-plane-metrics.js";
import { resetPool, runBurst, type BurstContext, type BurstResult, type BurstSamples } from "./pool-burst.js";
import { machineInfo, round, writeResults } from "./results.js";

const HELP = `bench:pool — allocation latency from a warm RelayPool on a real kube-apiserver

  --pool N        pods in the pool (default 100)
  --sessions N    pooled RelaySessions created concurrently (default 100; ≤ --pool)
  --rss-pods N    pool size for the operator RSS figure (default 1000; 0 skips it)
  --bursts N      bursts, the pool deleted and refilled in between (default 3: one burst on a
                  shared machine says little)
  --etcd-data disk|tmpfs
                  where etcd keeps its data (default disk; tmpfs shows how much is this disk's fsync)
  --pool-batch MS the operator's --pool-batch (default: the operator's default; 0 to compare)
  --operator-node-flags="FLAGS"
                  Node flags for the operator process, space-separated (e.g. "--cpu-prof
                  --cpu-prof-dir=/tmp/operator-profile" to see where its CPU goes in the bursts)
  --out FILE      results JSON (default bench-results/pool.json; .md beside it)
`;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return round(kb / 1024);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      pool: { type: "string", default: "100" },
      sessions: { type: "string", default: "100" },
      "rss-pods": { type: "string", default: "1000" },
      bursts: { type: "string", default: "3" },
      "etcd-data": { type: "string", default: "disk" },
      "operator-node-flags": { type: "string", default: "" },
      "pool-batch": { type: "string" },
      out: { type: "string", default: "bench-results/pool.json" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const poolSize = Number(values.pool);
  const sessionCount = Math.min(Number(values.sessions), poolSize);
  const rssPods = Number(values["rss-pods"]);
  const burstCount = Math.max(1, Number(values.bursts));
  const startedAt = new Date();
  const loadAtStart = loadavg()[0]!;
  const etcdData = values["etcd-data"] === "tmpfs" ? "tmpfs" : "disk";
  const cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds")], etcdData });
  const kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  const kubectl = new PoolKubectl(cp);
  const ns = "bench-pool";
  const kubelet = new FakePoolKubelet(kc, ns, 0);
  const op = await startOperator({
    kubeconfigPath: cp.kubeconfigPath,
    args: [
      ...["--no-leader-elect", "--namespace", ns],
      ...(values["pool-batch"] !== undefined ? ["--pool-batch", values["pool-batch"]] : []),
    ],
    nodeFlags: values["operator-node-flags"].split(" ").filter(Boolean),
  });
  try {
    await op.waitReady(60_000);
    await kubectl.ok(["create", "namespace", ns]);
    kubelet.start();
    const rssIdle = rssMb(op.child.pid!);
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: poolSize }));
    const poolUp = performance.now();
    await waitFor(
      "pool ready",
      300_000,
      async () => (await kubectl.pool(ns, "gpu")).status?.readyReplicas === poolSize,
      250,
    );
    const poolReadySeconds = (performance.now() - poolUp) / 1000;

    // Nothing changes pod states during the allocations: the stand-in kubelet's polling would only load the apiserver.
    kubelet.stop();
    // When a client watching the claim Leases (as the relay in the pod does) sees each claim
    // written: the allocation as done, where the claim's own stamp is taken just before its write is sent.
    const claimSeen = new Map<string, number>();
    const leaseWatch = await new Watch(kc).watch(
      `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`,
      {},
      (_type, lease: V1Lease) => {
        const session = lease.spec?.holderIdentity?.split("/")[1];
        if (session && !claimSeen.has(session)) claimSeen.set(session, Date.now());
      },
      () => undefined,
    );
    // When the claim's labels reach the pod (the session controller's view), right after.
    const podLabelsSeen = new Map<string, number>();
    const podWatch = await new Watch(kc).watch(
      `/api/v1/namespaces/${ns}/pods`,
      {},
      (_type, pod: V1Pod) => {
        const session = pod.metadata?.labels?.["trickle-relay.io/session"];
        if (session && !podLabelsSeen.has(session)) podLabelsSeen.set(session, Date.now());
      },
      () => undefined,
    );
    // When the session's status names its pod (what `kubectl get rls` shows): it follows the claim,
    // held back while claims are in flight (operator/src/kube/write-priority.ts).
    const allocationSeen = new Map<string, number>();
    const sessionWatch = await new Watch(kc).watch(
      `/apis/trickle-relay.io/v1alpha1/namespaces/${ns}/relaysessions`,
      {},
      (_type, session: RelaySession) => {
        const name = session.metadata?.name ?? "";
        if (session.status?.allocation?.podName && !allocationSeen.has(name))
          allocationSeen.set(name, Date.now());
      },
      () => undefined,
    );
    const ctx: BurstContext = {
      cp,
      op,
      kubectl,
      // One connection pool for all creates, as a gateway's long-lived client has (client-node alone
      // opens a new TLS connection per call).
      custom: withRequestTimeout(kc, 60_000).makeApiClient(CustomObjectsApi),
      namespace: ns,
      sessions: sessionCount,
      claimSeen,
      podLabelsSeen,
      allocationSeen,
    };
    const bursts: BurstResult[] = [];
    /** Operator RSS after each burst: growing from burst to burst would be a leak. */
    const rssAfterBurst: number[] = [];
    for (let burst = 0; burst < burstCount; burst++) {
      if (burst > 0) await resetPool(ctx, poolSize, () => new FakePoolKubelet(kc, ns, 0).start());
      bursts.push(await runBurst(ctx, burst));
      rssAfterBurst.push(rssMb(op.child.pid!));
    }
    podWatch.abort();
    leaseWatch.abort();
    sessionWatch.abort();
    const rssAfterAllocation = rssMb(op.child.pid!);

    let rssBig: { pods: number; seconds: number; rssMb: number } | undefined;
    if (rssPods > 0) {
      // The stand-in kubelet is stopped: the new pods stay warming, which is all RSS needs.
      await kubectl.ok(["scale", "rlp/gpu", "-n", ns, `--replicas=${rssPods}`]);
      const t0 = performance.now();
      await waitFor(
        `${rssPods} pool pods`,
        900_000,
        async () => (await kubectl.pool(ns, "gpu")).status?.replicas === rssPods,
        1000,
      );
      await new Promise((resolve) => setTimeout(resolve, 5000));
      rssBig = {
        pods: rssPods,
        seconds: round((performance.now() - t0) / 1000),
        rssMb: rssMb(op.child.pid!),
      };
    }

    // All bursts' allocations together (burstCount × sessionCount), and each burst on its own.
    const pooled = (key: keyof BurstSamples) => stats(bursts.flatMap((b) => b.samples[key]));
    const figures = (samples: (key: keyof BurstSamples) => Stats) => ({
      fromBeforeCreate: samples("fromSent"),
      fromCreateReturned: samples("fromReturned"),
      watchDelay: samples("watchDelay"),
      operatorSide: samples("operatorSide"),
      claimWrite: samples("claimWrite"),
      claimSeenOnWatch: samples("seenFromReturned"),
      statusAfterClaim: samples("statusAfterClaim"),
      podLabelsAfterClaim: samples("podLabelsAfterClaim"),
    });
    const report = {
      date: startedAt.toISOString(),
      command: `npm run bench:pool -- ${process.argv.slice(2).join(" ")}`.trim(),
      machine: machineInfo(),
      /** 1-minute load average at the start and the end: other work on the machine skews the figures. */
      loadAverage: { start: round(loadAtStart, 2), end: round(loadavg()[0]!, 2) },
      pool: poolSize,
      sessions: sessionCount,
      bursts: burstCount,
      etcdData,
      poolReadySeconds: round(poolReadySeconds, 2),
      /** ms, over all bursts' allocations. */
      allocationMs: figures(pooled),
      sessionsWithTwoPods: bursts.reduce((sum, b) => sum + b.sessionsWithTwoPods, 0),
      perBurst: bursts.map((b, i) => ({
        allocationMs: figures((key) => stats(b.samples[key])),
        wallSeconds: b.wallSeconds,
        /** CPU seconds per process from the first create until every claim was seen. */
        cpuSeconds: b.cpuSeconds,
        /** The operator's event-loop delay during the burst (prom-client, 10 ms resolution). */
        operatorLoopLagMs: b.operatorLoopLagMs,
        operatorWork: b.operatorWork,
        /** The control plane's own histograms, from the first create until 1 s after the last status.allocation. */
        controlPlane: b.controlPlane,
        operatorRssMb: rssAfterBurst[i],
      })),
      operatorRssMb: {
        idle: rssIdle,
        afterAllocation: rssAfterAllocation,
        ...(rssBig ? { withPoolPods: rssBig } : {}),
      },
    };
    const a = report.allocationMs;
    const triple = (x: Stats) => `${x.p50} / ${x.p95} / ${x.max}`;
    const allocations = burstCount * sessionCount;
    const md = [
      `# Pool benchmark (${report.date})`,
      "",
      `Machine: ${report.machine.cpu}, ${report.machine.cores} cores, ${report.machine.memoryGiB} GiB, Node ${report.machine.node}; ` +
        `kube-apiserver 1.20 and etcd on the same machine (etcd data on ${etcdData === "tmpfs" ? "**tmpfs: no disk fsync cost, not a production setup**" : "the machine's disk"}); the operator binary with --no-leader-elect; ` +
        "pods played by a stand-in kubelet (Running + Ready, no containers). " +
        `1-minute load average ${report.loadAverage.start} at the start, ${report.loadAverage.end} at the end. ` +
        `Command: \`${report.command}\`.`,
      "",
      `${burstCount} burst(s) of ${sessionCount} pooled sessions created at once against the pool of ${poolSize} Ready pods ` +
        `(deleted and refilled between bursts); p50 / p95 / max over all ${allocations} allocations:`,
      "",
      "| figure | value |",
      "|---|---|",
      `| pool of ${poolSize}: apply → all Ready (stand-in kubelet) | ${report.poolReadySeconds} s |`,
      `| **create call's response → the claim seen on a watch of the claim Leases** (written and delivered: when the relay in the pod starts the session) | **${triple(a.claimSeenOnWatch)} ms** |`,
      `| create call's response → the claim's stamp (taken just before it is sent; the earlier sessions' figure) | ${triple(a.fromCreateReturned)} ms |`,
      `| parts: create call's response → the operator's watch event of the session | ${triple(a.watchDelay)} ms |`,
      `| parts: the operator's watch event → the claim sent (the pool's next round, at most one per --pool-batch ms, and a free one of 128 claim slots) | ${triple(a.operatorSide)} ms |`,
      `| parts: the claim's write as the operator's client saw it (sent → answered) | ${triple(a.claimWrite)} ms |`,
      `| the claim seen → its labels seen on the pod (a background write after the claim: the session controller's view) | ${triple(a.podLabelsAfterClaim)} ms |`,
      `| the claim seen → the session's status.allocation seen on a session watch (held back while claims are in flight) | ${triple(a.statusAfterClaim)} ms |`,
      `| from just before the create call → the claim's stamp (the ${sessionCount} creates themselves take a while) | ${triple(a.fromBeforeCreate)} ms |`,
      `| sessions given two pods | ${report.sessionsWithTwoPods} |`,
      `| operator RSS idle / after the first burst / after the last | ${rssIdle} / ${rssAfterBurst[0]} / ${rssAfterAllocation} MB |`,
      ...(rssBig
        ? [
            `| operator RSS with ${rssBig.pods} pool pods (scaled up in ${rssBig.seconds} s, after the bursts) | ${rssBig.rssMb} MB |`,
          ]
        : []),
      "",
      "Each burst (p95 ms; claim seen / claim stamp / watch event / slot wait / claim write), with what " +
        "the machine did meanwhile (CPU seconds of each process from the first create to the last claim " +
        "seen; the operator's event-loop delay p99; its pool reconciles and their summed wall time, and its " +
        "session reconciles) and the operator's RSS after it:",
      "",
      "| burst | claim seen | claim stamp | watch event | slot wait | claim write | wall s | CPU s | loop delay p99 ms | pool reconciles (ms) | session reconciles | RSS MB |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
      ...report.perBurst.map((b, i) => {
        const f = b.allocationMs;
        const cpu = Object.entries(b.cpuSeconds)
          .filter(([, seconds]) => seconds > 0)
          .map(([name, seconds]) => `${name} ${seconds}`)
          .join(", ");
        return `| ${i + 1} | ${f.claimSeenOnWatch.p95} | ${f.fromCreateReturned.p95} | ${f.watchDelay.p95} | ${f.operatorSide.p95} | ${f.claimWrite.p95} | ${b.wallSeconds} | ${cpu} | ${b.operatorLoopLagMs.p99} | ${b.operatorWork.poolReconciles} (${b.operatorWork.poolReconcileMs}) | ${b.operatorWork.sessionReconciles} | ${b.operatorRssMb} |`;
      }),
      "",
      "The control plane in the last burst, from its first create until 1 s after its last session status.allocation (its own " +
        "histograms: handler time, not client-side queueing; p95 is a histogram bucket's upper bound):",
      "",
      "| what | count | mean ms | p95 ≤ ms |",
      "|---|---|---|---|",
      ...controlPlaneRows(bursts.at(-1)!.controlPlane),
      "",
    ].join("\n");
    writeResults(values.out!, report, md);
    process.stdout.write(md);
  } finally {
    kubelet.stop();
    await op.stop();
    await cp.stop();
  }
}

interface Stats {
  p50: number;
  p95: number;
  max: number;
}

function stats(values: number[]): Stats {
  const sorted = [...values].sort((x, y) => x - y);
  return {
    p50: round(percentile(sorted, 50)),
    p95: round(percentile(sorted, 95)),
    max: round(sorted.at(-1) ?? NaN),
  };
}

function controlPlaneRows(cp: BurstResult["controlPlane"]): string[] {
  return [
    ...cp.requests.slice(0, 6).map((r) => row(`apiserver ${r.labels}`, r)),
    ...cp.flowControlWait.map((r) => row(`apiserver flow control wait ${r.labels}`, r)),
    ...cp.etcdRequests.slice(0, 4).map((r) => row(`apiserver → etcd ${r.labels}`, r)),
    ...cp.walFsync.map((r) => row("etcd WAL fsync", r)),
    ...cp.backendCommit.map((r) => row("etcd backend commit", r)),
  ];
}

function row(what: string, r: HistogramDelta): string {
  return `| ${what.replaceAll('"', "")} | ${r.count} | ${r.meanMs} | ${r.p95UpperMs} |`;
}

await main();
