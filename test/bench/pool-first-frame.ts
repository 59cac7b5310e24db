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
import { join } from "node:path";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { startControlPlane } from "../infra/apiserver.js";
import { startLocalKubelet } from "../infra/local-kubelet.js";
import { repoRoot, startOperator, waitFor } from "../operator/operator-harness.js";
import { PoolKubectl } from "../operator/relaypool/pool-harness.js";
import { makeInputSegments, publishPaced, startPeer } from "../session/relay-harness.js";
import { machineInfo, round, writeResults } from "./results.js";

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
  const peer = await startPeer("ts");
  const kubelet = await startLocalKubelet({
    kubeConfig: kc,
    commands: { "trickle-relay": [process.execPath, join(repoRoot, "dist/relay-pod/src/cli.js")] },
    extraEnv: { TRICKLE_RELAY_ICE_ADDRESSES: "127.0.0.2", TRICKLE_RELAY_LOG_JSON: "1" },
    inheritEnv: ["PATH", "FFMPEG_BIN", "FFPROBE_BIN"],
  });
  const op = await startOperator({ kubeconfigPath: cp.kubeconfigPath, args: ["--no-leader-elect"] });
  const abort = new AbortController();
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
        if (kind === "warm") {
          // The pool pod's readiness endpoint (the local kubelet runs no probes).
          await waitFor(
            "a warm pool pod",
            300_000,
            async () => {
              const response = await fetch("http://127.0.0.1:8892/readyz").catch(() => undefined);
              return response?.status === 200;
            },
            200,
          );
        }
        const name = `${kind}-${r}`;
        void publishPaced(`${base}${name}`, segments, { signal: abort.signal }).catch(() => undefined);
        const first = firstOutputByte(`${base}${name}-out`, 120_000);
        const source = kind === "warm" ? "poolRef: {name: warm}" : `comfystream: {url: "${peer.url}"}`;
        const t0 = performance.now();
        await kubectl.ok(["apply", "-f", "-"], sessionYaml(name, `${base}${name}`, source));
        const at = await first;
        if (at === undefined) throw new Error(`${name}: no output within 120 s`);
        (kind === "warm" ? warmMs : coldMs).push(round(at - t0, 0));
        process.stderr.write(`${name}: first output byte ${round(at - t0, 0)} ms after apply\n`);
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
  };
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
  ].join("\n");
  writeResults(values.out!, report, md);
  process.stdout.write(md);
}

await main();
