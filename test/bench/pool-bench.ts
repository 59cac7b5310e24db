// Pool allocation benchmark on a real kube-apiserver + etcd, with the real operator binary:
//
//   npm run bench:pool [-- --pool 100 --sessions 100 --rss-pods 1000 --out bench-results/pool.json]
//
// 1. A RelayPool of --pool pods; a stand-in kubelet (FakePoolKubelet: no containers run) reports
//    every pod Running and Ready, as a warm pod's readiness probe would once its warm-up is done.
// 2. --sessions pooled RelaySessions are created concurrently (all creates in flight at once).
//    Allocation latency of each = the claim's timestamp on the pod (trickle-relay.io/allocated-at,
//    written by the operator, same machine and clock) minus the moment just before its create call,
//    and minus the moment its create call returned; p50/p95/max of both.
// 3. Operator RSS with --rss-pods pool pods (the pool scaled up; pods need not be Ready).
//
// Apply → first output frame warm vs cold is not measured here (it needs relay pods running real
// pipelines: see the README's "Warm pools" and the report of issue 14).
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CustomObjectsApi, KubeConfig, Watch, type V1Pod } from "@kubernetes/client-node";
import { ANNOTATION_ALLOCATED_AT } from "../../crds/src/index.js";
import { withRequestTimeout } from "../../operator/src/kube/client.js";
import { startControlPlane } from "../infra/apiserver.js";
import { repoRoot, startOperator, waitFor } from "../operator/operator-harness.js";
import {
  createPooledSession,
  FakePoolKubelet,
  PoolKubectl,
  poolYaml,
} from "../operator/relaypool/pool-harness.js";
import {
  cpuSeconds,
  findPid,
  histogramDelta,
  scrapeControlPlane,
  type HistogramDelta,
} from "./control-plane-metrics.js";
import { machineInfo, round, writeResults } from "./results.js";

const HELP = `bench:pool — allocation latency from a warm RelayPool on a real kube-apiserver

  --pool N        pods in the pool (default 100)
  --sessions N    pooled RelaySessions created concurrently (default 100; ≤ --pool)
  --rss-pods N    pool size for the operator RSS figure (default 1000; 0 skips it)
  --etcd-data disk|tmpfs
                  where etcd keeps its data (default disk; tmpfs shows how much is this disk's fsync)
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
      "etcd-data": { type: "string", default: "disk" },
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
    args: ["--no-leader-elect", "--namespace", ns],
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
    // When a client watching the pods (as the relay in the pod does) sees each claim written: the
    // allocation as done, where the claim's own stamp is taken just before its write is sent.
    const claimSeen = new Map<string, number>();
    const podWatch = await new Watch(kc).watch(
      `/api/v1/namespaces/${ns}/pods`,
      {},
      (_type, pod: V1Pod) => {
        const session = pod.metadata?.labels?.["trickle-relay.io/session"];
        if (session && !claimSeen.has(session)) claimSeen.set(session, Date.now());
      },
      () => undefined,
    );
    // One connection pool for all creates, as a gateway's long-lived client has (client-node alone
    // opens a new TLS connection per call).
    const custom = withRequestTimeout(kc, 60_000).makeApiClient(CustomObjectsApi);
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
    await op.metrics(); // prom-client's event-loop delay figures restart at each scrape
    const burstStart = performance.now();
    const sent = new Map<string, number>();
    const returned = new Map<string, number>();
    await Promise.all(
      Array.from({ length: sessionCount }, async (_, i) => {
        const name = `b-${String(i).padStart(3, "0")}`;
        sent.set(name, Date.now());
        await createPooledSession(custom, ns, name);
        returned.set(name, Date.now());
      }),
    );
    // Done when the pod watch has seen every claim: polling the apiserver (a kubectl process every
    // 250 ms, as before) used a third of a core during the burst it measures.
    await waitFor("all claims seen on the pod watch", 120_000, async () => claimSeen.size >= sessionCount, 5);
    const burstSeconds = (performance.now() - burstStart) / 1000;
    const cpuDuringBurst = Object.fromEntries(
      Object.entries(processes).map(([name, pid]) => [
        name,
        pid ? round(cpuSeconds(pid) - cpuBefore[name]!, 2) : NaN,
      ]),
    );
    cpuDuringBurst["bench's kubectl runs"] = round(
      cpuSeconds(process.pid, "waited-for children") - childCpuBefore,
      2,
    );
    const operatorMetrics = await op.metrics(); // one scrape: each one restarts the delay figures
    const lagMs = (stat: string) =>
      round(
        Number(new RegExp(`^nodejs_eventloop_lag_${stat}_seconds (\\S+)`, "m").exec(operatorMetrics)?.[1]) *
          1000,
      );
    const operatorLoopLagMs = { p50: lagMs("p50"), p99: lagMs("p99"), max: lagMs("max") };
    const claims = (await kubectl.pods(ns, "gpu")).filter(
      (p) => p.metadata?.annotations?.[ANNOTATION_ALLOCATED_AT],
    );
    // The session controller's status.allocation writes and the Allocated Events trail the claims.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const scrapeAfter = await scrapeControlPlane(cp);
    const controlPlane = {
      requests: histogramDelta(
        scrapeBefore.apiserver,
        scrapeAfter.apiserver,
        "apiserver_request_duration_seconds",
        ["verb", "resource", "subresource"],
      ).filter((row) => !row.labels.startsWith('verb="WATCH"')),
      flowControlWait: histogramDelta(
        scrapeBefore.apiserver,
        scrapeAfter.apiserver,
        "apiserver_flowcontrol_request_wait_duration_seconds",
        ["priority_level", "execute"],
      ),
      etcdRequests: histogramDelta(
        scrapeBefore.apiserver,
        scrapeAfter.apiserver,
        "etcd_request_duration_seconds",
        ["operation", "type"],
      ),
      walFsync: histogramDelta(
        scrapeBefore.etcd,
        scrapeAfter.etcd,
        "etcd_disk_wal_fsync_duration_seconds",
        [],
      ),
      backendCommit: histogramDelta(
        scrapeBefore.etcd,
        scrapeAfter.etcd,
        "etcd_disk_backend_commit_duration_seconds",
        [],
      ),
    };
    const fromSent: number[] = [];
    const operatorSide: number[] = [];
    const seenFromReturned: number[] = [];
    /** Create call's response → the operator's watch event for that session (same clock). */
    const watchDelay: number[] = [];
    const fromReturned: number[] = [];
    const podsPerSession = new Map<string, number>();
    for (const pod of claims) {
      const session = pod.metadata!.labels!["trickle-relay.io/session"]!;
      podsPerSession.set(session, (podsPerSession.get(session) ?? 0) + 1);
      const at = Date.parse(pod.metadata!.annotations![ANNOTATION_ALLOCATED_AT]!);
      fromSent.push(at - sent.get(session)!);
      fromReturned.push(at - returned.get(session)!);
      seenFromReturned.push(claimSeen.get(session)! - returned.get(session)!);
      const waitedMs =
        Number(pod.metadata!.annotations!["trickle-relay.io/allocation-waited-seconds"]) * 1000;
      operatorSide.push(waitedMs);
      watchDelay.push(at - waitedMs - returned.get(session)!);
    }
    watchDelay.sort((a, b) => a - b);
    fromSent.sort((a, b) => a - b);
    fromReturned.sort((a, b) => a - b);
    podWatch.abort();
    seenFromReturned.sort((a, b) => a - b);
    operatorSide.sort((a, b) => a - b);
    // The operator's own clock on each claim's write (sent → answered), from its "allocated" log lines.
    const claimWrite = op
      .logged("allocated warm pod")
      .map((line) => Number(line.writeMs))
      .filter((ms) => Number.isFinite(ms))
      .sort((x, y) => x - y);
    const duplicates = [...podsPerSession.values()].filter((n) => n > 1).length;
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

    const report = {
      date: startedAt.toISOString(),
      command: `npm run bench:pool -- ${process.argv.slice(2).join(" ")}`.trim(),
      machine: machineInfo(),
      /** 1-minute load average at the start and the end: other work on the machine skews the figures. */
      loadAverage: { start: round(loadAtStart, 2), end: round(loadavg()[0]!, 2) },
      pool: poolSize,
      sessions: sessionCount,
      poolReadySeconds: round(poolReadySeconds, 2),
      allocationMs: {
        fromBeforeCreate: {
          p50: percentile(fromSent, 50),
          p95: percentile(fromSent, 95),
          max: fromSent.at(-1),
        },
        fromCreateReturned: {
          p50: percentile(fromReturned, 50),
          p95: percentile(fromReturned, 95),
          max: fromReturned.at(-1),
        },
      },
      claimSeenOnWatchMs: {
        p50: percentile(seenFromReturned, 50),
        p95: percentile(seenFromReturned, 95),
        max: seenFromReturned.at(-1),
      },
      operatorSideMs: {
        p50: round(percentile(operatorSide, 50)),
        p95: round(percentile(operatorSide, 95)),
        max: round(operatorSide.at(-1) ?? NaN),
      },
      claimWriteMs: {
        p50: percentile(claimWrite, 50),
        p95: percentile(claimWrite, 95),
        max: claimWrite.at(-1),
      },
      watchDelayMs: {
        p50: round(percentile(watchDelay, 50)),
        p95: round(percentile(watchDelay, 95)),
        max: round(watchDelay.at(-1) ?? NaN),
      },
      sessionsWithTwoPods: duplicates,
      etcdData,
      /** CPU seconds per process from the first create until every claim was in (includes the 250 ms polls). */
      /** The operator's event-loop delay during the burst (prom-client, 10 ms resolution). */
      operatorLoopLagMs,
      cpuDuringBurst: { wallSeconds: round(burstSeconds, 2), ...cpuDuringBurst },
      /** From the burst's first create until every claim was seen: the control plane's own histograms. */
      controlPlane,
      operatorRssMb: {
        idle: rssIdle,
        afterAllocation: rssAfterAllocation,
        ...(rssBig ? { withPoolPods: rssBig } : {}),
      },
    };
    const a = report.allocationMs;
    const md = [
      `# Pool benchmark (${report.date})`,
      "",
      `Machine: ${report.machine.cpu}, ${report.machine.cores} cores, ${report.machine.memoryGiB} GiB, Node ${report.machine.node}; ` +
        `kube-apiserver 1.20 and etcd on the same machine (etcd data on ${etcdData === "tmpfs" ? "**tmpfs: no disk fsync cost, not a production setup**" : "the machine's disk"}); the operator binary with --no-leader-elect; ` +
        "pods played by a stand-in kubelet (Running + Ready, no containers). " +
        `1-minute load average ${report.loadAverage.start} at the start, ${report.loadAverage.end} at the end. ` +
        `Command: \`${report.command}\`.`,
      "",
      "| figure | value |",
      "|---|---|",
      `| pool of ${poolSize}: apply → all Ready (stand-in kubelet) | ${report.poolReadySeconds} s |`,
      `| allocation p50 / p95 / max (claim stamp), ${sessionCount} concurrent creates, from just before the create call | ${a.fromBeforeCreate.p50} / ${a.fromBeforeCreate.p95} / ${a.fromBeforeCreate.max} ms |`,
      `| **same, from the create call's response** (the issue's figure) | **${a.fromCreateReturned.p50} / ${a.fromCreateReturned.p95} / ${a.fromCreateReturned.max} ms** |`,
      `| parts of it: create call's response → the operator's watch event of the session | ${report.watchDelayMs.p50} / ${report.watchDelayMs.p95} / ${report.watchDelayMs.max} ms |`,
      `| parts of it: the operator's watch event → the claim sent (its stamp) | ${report.operatorSideMs.p50} / ${report.operatorSideMs.p95} / ${report.operatorSideMs.max} ms |`,
      `| the claim's write as the operator's client saw it (sent → answered) | ${report.claimWriteMs.p50} / ${report.claimWriteMs.p95} / ${report.claimWriteMs.max} ms |`,
      `| create call's response → the claim seen on a pod watch (written and delivered) | ${report.claimSeenOnWatchMs.p50} / ${report.claimSeenOnWatchMs.p95} / ${report.claimSeenOnWatchMs.max} ms |`,
      `| sessions given two pods | ${duplicates} |`,
      `| operator RSS idle / after the allocations | ${rssIdle} / ${rssAfterAllocation} MB |`,
      ...(rssBig
        ? [
            `| operator RSS with ${rssBig.pods} pool pods (scaled up in ${rssBig.seconds} s) | ${rssBig.rssMb} MB |`,
          ]
        : []),
      "",
      "The control plane between the burst's first create and the last claim (its own histograms: " +
        "handler time, not client-side queueing; p95 is a histogram bucket's upper bound):",
      "",
      `CPU seconds used in those ${round(burstSeconds, 2)} s (2 cores): ` +
        Object.entries(cpuDuringBurst)
          .map(([name, seconds]) => `${name} ${seconds}`)
          .join(", ") +
        `. The operator's event-loop delay meanwhile p50 / p99 / max ${operatorLoopLagMs.p50} / ${operatorLoopLagMs.p99} / ${operatorLoopLagMs.max} ms.`,
      "",
      "| what | count | mean ms | p95 ≤ ms |",
      "|---|---|---|---|",
      ...controlPlane.requests.slice(0, 8).map((r) => row(`apiserver ${r.labels}`, r)),
      ...controlPlane.flowControlWait.map((r) => row(`apiserver flow control wait ${r.labels}`, r)),
      ...controlPlane.etcdRequests.slice(0, 6).map((r) => row(`apiserver → etcd ${r.labels}`, r)),
      ...controlPlane.walFsync.map((r) => row("etcd WAL fsync", r)),
      ...controlPlane.backendCommit.map((r) => row("etcd backend commit", r)),
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

function row(what: string, r: HistogramDelta): string {
  return `| ${what.replaceAll('"', "")} | ${r.count} | ${r.meanMs} | ${r.p95UpperMs} |`;
}

await main();
