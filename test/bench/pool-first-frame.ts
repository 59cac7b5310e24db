// RelaySession apply → first output frame, from a warm pool pod and from a cold per-session pod,
// side by side in one run (issue 14):
//
//   npm run bench:pool:first-frame [-- --rounds 3 --out bench-results/pool-first-frame.json]
//
// Real kube-apiserver + etcd, the operator binary, relay pods run as local processes by the local
// kubelet harness (real relay, real ffmpeg, real WebRTC to the TS stand-in ComfyStream peer on
// loopback), a real trickle server with a live input published in real time from before the apply.
// Each round: a warm session (spec.poolRef; the pool's pod warmed up through the stand-in first),
// then a cold one (spec.comfystream.url). The clock runs from just before `kubectl apply` to the
// first byte of the first output segment.
//
// Limits of the stand-in: its warm-up costs nothing, unlike a real model load (minutes), and the
// local kubelet pulls no image, so the cold figure here is the floor of a cold start: process
// start, the relay's start-up and the offer. The local kubelet runs no probes; the bench waits for
// the pool pod's own /readyz instead (the readiness probe's endpoint).
//
// For the warm rounds it also prints where the time went (WARM_PHASES): kubectl, the operator's
// claim, the relay's claim watch, the session's start, the WebRTC connection, the first output byte.
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { ANNOTATION_ALLOCATED_AT, ANNOTATION_ALLOCATION_WAITED_SECONDS } from "../../crds/src/index.js";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { startControlPlane } from "../infra/apiserver.js";
import { startLocalKubelet } from "../infra/local-kubelet.js";
import { repoRoot, startOperator, waitFor } from "../operator/operator-harness.js";
import { PoolKubectl } from "../operator/relaypool/pool-harness.js";
import { makeInputSegments, publishPaced, startPeer } from "../session/relay-harness.js";
import { machineInfo, round, writeResults } from "./results.js";

/**
 * Where a warm session's time goes, each a moment in ms after the clock started (just before
 * `kubectl apply`), all on this machine's wall clock: the bench's own, the claim's annotations
 * (written by the operator) and the relay's JSON log lines in the claimed pod.
 */
const WARM_PHASES = [
  ["applied", "kubectl apply returned"],
  ["operatorSaw", "the operator saw the session (claim stamp − allocation-waited-seconds)"],
  ["claimSent", "the claim sent (allocated-at stamp)"],
  ["relaySawClaim", 'the relay saw the claim on its claim Lease watch ("claimed: starting the session")'],
  ["sessionStarting", 'RelaySession read, pipeline starting ("starting relay session")'],
  ["transcoderStarted", 'ffmpeg started ("transcoder started")'],
  ["peerConnected", "connected to ComfyStream (WebRTC)"],
  ["firstOutputByte", "first output byte on the trickle output channel"],
] as const;
type WarmPhase = (typeof WARM_PHASES)[number][0];
type WarmParts = Partial<Record<WarmPhase, number>>;

/** The first relay log line with `msg` at or after `from` (epoch ms). */
function loggedAt(log: string, msg: string, from: number): number | undefined {
  for (const line of log.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const entry = JSON.parse(line) as { msg?: string; time?: number };
      if (entry.msg === msg && typeof entry.time === "number" && entry.time >= from) return entry.time;
    } catch {
      // not a log line
    }
  }
  return undefined;
}

const NS = "default";

/** Resolves with the time of the first output byte on `url`, or undefined after `timeoutMs`. */
function firstOutputByte(url: string, timeoutMs: number): Promise<number | undefined> {
  const subscriber = new TrickleSubscriber(url, { startSeq: 0 });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      subscriber.close();
      resolve(undefined);
    }, timeoutMs);
    void (async () => {
      try {
        for await (const segment of subscriber) {
          for await (const chunk of segment.body) {
            if (chunk.length > 0) {
              clearTimeout(timer);
              resolve(performance.now());
              subscriber.close();
              return;
            }
          }
        }
      } catch {
        // closed
      }
    })();
  });
}

function sessionYaml(name: string, input: string, source: string): string {
  return [
    "apiVersion: trickle-relay.io/v1alpha1",
    "kind: RelaySession",
    `metadata: {name: ${name}, namespace: ${NS}}`,
    "spec:",
    `  trickle: {inputUrl: "${input}"}`,
    `  ${source}`,
    "  width: 320",
    "  height: 240",
  ].join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: "string", default: "3" },
      out: { type: "string", default: "bench-results/pool-first-frame.json" },
    },
  });
  const rounds = Number(values.rounds);
  const startedAt = new Date();
  // The controller manager's garbage collector removes a deleted session's pod, as in a cluster.
  const cp = await startControlPlane({ controllerManager: true, crdPaths: [join(repoRoot, "crds")] });
  const kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  const kubectl = new PoolKubectl(cp);
  const channels = Array.from({ length: rounds }, (_, i) => [
    `warm-${i}`,
    `warm-${i}-out`,
    `cold-${i}`,
    `cold-${i}-out`,
  ]).flat();
  const trickle = new TrickleServer({ channels: channels.map((name) => ({ name, mimeType: "video/MP2T" })) });
  const { url: base } = await trickle.listen(0, "127.0.0.1");
  // One ComfyStream for the pool's pod and one for the cold pods, as each has its own in production
  // (a sidecar): ComfyStream serves one peer, and a peer's close stops its pipeline for everyone, so
  // a cold session ending on the pool's server would stop the warm pod's kept connection.
  const peer = await startPeer("ts");
  const coldPeer = await startPeer("ts");
  const kubelet = await startLocalKubelet({
    kubeConfig: kc,
    commands: { "trickle-relay": [process.execPath, join(repoRoot, "dist/relay-pod/src/cli.js")] },
    extraEnv: { TRICKLE_RELAY_ICE_ADDRESSES: "127.0.0.2", TRICKLE_RELAY_LOG_JSON: "1" },
    inheritEnv: ["PATH", "FFMPEG_BIN", "FFPROBE_BIN"],
  });
  const op = await startOperator({ kubeconfigPath: cp.kubeconfigPath, args: ["--no-leader-elect"] });
  const core = kc.makeApiClient(CoreV1Api);
  const loadAtStart = loadavg();
  const warmParts: WarmParts[] = [];
  const abort = new AbortController();
  /** The warm session `name`'s moments (WARM_PHASES), read from its claimed pod before it goes. */
  const warmBreakdown = async (name: string, wall0: number, own: WarmParts): Promise<WarmParts> => {
    const pod = (
      await core.listNamespacedPod({ namespace: NS, labelSelector: `trickle-relay.io/session=${name}` })
    ).items[0];
    const annotations = pod?.metadata?.annotations ?? {};
    const claimSent = Date.parse(annotations[ANNOTATION_ALLOCATED_AT] ?? "");
    const waited = Number(annotations[ANNOTATION_ALLOCATION_WAITED_SECONDS]);
    const log = await kubelet.logs(NS, pod?.metadata?.name ?? "", "relay");
    const relaySawClaim = loggedAt(log, "claimed: starting the session", wall0);
    const from = relaySawClaim ?? wall0;
    const moments: WarmParts = {
      ...own,
      operatorSaw: claimSent - waited * 1000 - wall0,
      claimSent: claimSent - wall0,
      relaySawClaim: relaySawClaim === undefined ? NaN : relaySawClaim - wall0,
      sessionStarting: (loggedAt(log, "starting relay session", from) ?? NaN) - wall0,
      transcoderStarted: (loggedAt(log, "transcoder started", from) ?? NaN) - wall0,
      peerConnected: (loggedAt(log, "connected to ComfyStream", from) ?? NaN) - wall0,
    };
    return Object.fromEntries(WARM_PHASES.map(([key]) => [key, round(moments[key] ?? NaN, 0)])) as WarmParts;
  };
  const warmMs: number[] = [];
  const coldMs: number[] = [];
  try {
    await op.waitReady(60_000);
    const { segments } = await makeInputSegments({ seconds: 40, size: "320x240", bFrames: 0 });
    const pool = {
      apiVersion: "trickle-relay.io/v1alpha1",
      kind: "RelayPool",
      metadata: { name: "warm", namespace: NS },
      spec: {
        replicas: 1,
        template: { comfystream: { url: peer.url }, width: 320, height: 240, warmup: { durationSeconds: 2 } },
      },
    };
    await kubectl.ok(["apply", "-f", "-"], JSON.stringify(pool));
    for (let r = 0; r < rounds; r++) {
      for (const kind of ["warm", "cold"] as const) {
        // The pool pod's readiness endpoint (the local kubelet runs no probes); before a cold round
        // too, so that the refilled pod's warm-up (a stream through the same stand-in) is over.
        {
          await waitFor(
            "a warm pool pod",
            300_000,
            async () => {
              // Body "ready": a per-session pod's endpoints share the port here (one network) and
              // answer 200 too while their session runs.
              const response = await fetch("http://127.0.0.1:8892/readyz").catch(() => undefined);
              return response?.status === 200 && (await response.text()) === "ready";
            },
            200,
          );
        }
        const name = `${kind}-${r}`;
        void publishPaced(`${base}${name}`, segments, { signal: abort.signal }).catch(() => undefined);
        const first = firstOutputByte(`${base}${name}-out`, 120_000);
        const source = kind === "warm" ? "poolRef: {name: warm}" : `comfystream: {url: "${coldPeer.url}"}`;
        const wall0 = Date.now();
        const t0 = performance.now();
        await kubectl.ok(["apply", "-f", "-"], sessionYaml(name, `${base}${name}`, source));
        const applied = performance.now();
        const at = await first;
        if (at === undefined) throw new Error(`${name}: no output within 120 s`);
        (kind === "warm" ? warmMs : coldMs).push(round(at - t0, 0));
        process.stderr.write(`${name}: first output byte ${round(at - t0, 0)} ms after apply\n`);
        if (kind === "warm") {
          const parts = await warmBreakdown(name, wall0, { applied: applied - t0, firstOutputByte: at - t0 });
          warmParts.push(parts);
          process.stderr.write(`${name}: ${JSON.stringify(parts)}\n`);
        }
        // One peer at a time (like ComfyStream): the session ends before the next one starts.
        await kubectl.ok(["delete", "rls", name, "-n", NS, "--wait=true"]);
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    }
  } finally {
    abort.abort();
    await op.stop();
    await kubelet.stop();
    await peer.stop();
    await coldPeer.stop();
    await trickle.close();
    await cp.stop();
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
  const report = {
    date: startedAt.toISOString(),
    command: `npm run bench:pool:first-frame -- ${process.argv.slice(2).join(" ")}`.trim(),
    machine: machineInfo(),
    applyToFirstOutputMs: { warm: warmMs, cold: coldMs },
    medianMs: { warm: median(warmMs), cold: median(coldMs) },
    coldOverWarm: round(median(coldMs) / median(warmMs), 2),
    /** 1-, 5- and 15-minute load averages at the start and the end: other work skews the figures. */
    loadAverage: { start: loadAtStart.map((l) => round(l, 2)), end: loadavg().map((l) => round(l, 2)) },
    /** Warm rounds: each moment in ms after the clock started (WARM_PHASES). */
    warmBreakdownMs: warmParts,
  };
  const medianOf = (key: WarmPhase) => median(warmParts.map((p) => p[key] ?? NaN));
  const md = [
    `# Pool benchmark: apply → first output frame, warm vs cold (${report.date})`,
    "",
    `Machine: ${report.machine.cpu}, ${report.machine.cores} cores, ${report.machine.memoryGiB} GiB, Node ${report.machine.node}. ` +
      "Real kube-apiserver 1.20, the operator binary, relay pods as local processes (local kubelet harness: no image pull, " +
      "no probes), the TS stand-in ComfyStream (its warm-up costs nothing: a real model's does). " +
      `Command: \`${report.command}\`.`,
    "",
    "| | each round (ms) | median (ms) |",
    "|---|---|---|",
    `| warm pool pod (spec.poolRef) | ${warmMs.join(", ")} | ${report.medianMs.warm} |`,
    `| cold per-session pod | ${coldMs.join(", ")} | ${report.medianMs.cold} |`,
    `| cold / warm | | ${report.coldOverWarm}× |`,
    "",
    `1-minute load average ${report.loadAverage.start[0]} at the start, ${report.loadAverage.end[0]} at the end ` +
      `(5-minute ${report.loadAverage.start[1]} / ${report.loadAverage.end[1]}).`,
    "",
    "Where a warm session's time goes: the moment each step was done, in ms after the clock started " +
      "(just before `kubectl apply`), per round and median, and the step's own share of the median " +
      "(from the bench's clock, the claim's annotations and the claimed relay's log lines; one machine, one clock):",
    "",
    `| step | ${warmParts.map((_, i) => `round ${i + 1}`).join(" | ")} | median | step's share |`,
    `|---|${warmParts.map(() => "---|").join("")}---|---|`,
    ...WARM_PHASES.map(([key, label], i) => {
      const previous = i === 0 ? 0 : medianOf(WARM_PHASES[i - 1]![0]);
      return `| ${label} | ${warmParts.map((p) => p[key]).join(" | ")} | ${medianOf(key)} | ${round(medianOf(key) - previous, 0)} |`;
    }),
    "",
  ].join("\n");
  writeResults(values.out!, report, md);
  process.stdout.write(md);
}

await main();
