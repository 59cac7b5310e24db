/**
 * GPU capacity check (run through test/bench/gpu-check.sh, `npm run bench:gpu`): N concurrent
 * `trickle-relay run --encoder nvenc` sessions, each a real relay process with its ffmpeg, against
 * one passthrough stand-in peer per session (ComfyStream serves one peer), fed 512x512 @ 30 fps test
 * pattern at real-time pace. Ramps 1, 2, 4, … up to --max-sessions and prints, per step: sessions
 * that ran without drops, the forward hop (input frame complete → sent over WebRTC: NVDEC decode,
 * scale, NVENC encode, pacing), and GPU memory per session from
 * `nvidia-smi --query-compute-apps` (the relays' ffmpeg processes). Sessions per GPU is the largest
 * step in which every session kept up (all sessions share the first GPU: h264_nvenc's default).
 *
 * NOT RUN HERE: written on a machine without a GPU; it has never produced a figure. On a machine
 * without one, gpu-check.sh stops before this file with a message saying so.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { startTsStandin, type TsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { makeInputSegments } from "../session/relay-harness.js";
import { drainOutput, publishLive } from "./live-input.js";
import { machineInfo, round, writeResults } from "./results.js";

const CLI = fileURLToPath(new URL("../../relay-pod/src/cli.js", import.meta.url));
const ICE = "127.0.0.2";
const run = promisify(execFile);

interface Summary {
  state: string;
  encoder: string | null;
  decoder: string | null;
  codecReason: string;
  frames: { in: number; sent: number; out: number; dropped: number };
  hopLatencyMs: { forward: { p50: number | null; p95: number | null } };
}

interface Step {
  sessions: number;
  keptUp: number;
  forwardHopMs: { p50: number | null; p95: number | null; worstP95: number | null };
  gpuMemoryMiBPerSession: number | null;
  gpuMemoryMiBTotal: number | null;
  encoders: string[];
  failures: string[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      "max-sessions": { type: "string", default: "16" },
      seconds: { type: "string", default: "20" },
      encoder: { type: "string", default: "nvenc" },
      out: { type: "string", default: "bench-results/gpu.json" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      "npm run bench:gpu [-- --max-sessions N (16) --seconds S (20) --encoder nvenc|x264 --out FILE]\n",
    );
    return;
  }
  const maxSessions = Number(values["max-sessions"]);
  const seconds = Number(values.seconds);
  const { segments } = await makeInputSegments({ seconds, size: "512x512", bFrames: 0 });
  const steps: Step[] = [];
  for (let n = 1; n <= maxSessions; n = n * 2 > maxSessions && n < maxSessions ? maxSessions : n * 2) {
    const step = await runStep(n, segments, values.encoder!, seconds);
    steps.push(step);
    process.stderr.write(`${describeStep(step)}\n`);
    if (step.keptUp < n) break;
  }
  const best = steps.filter((s) => s.keptUp === s.sessions).at(-1);
  const gpu = await nvidiaSmi(["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]);
  const report = {
    machine: { ...machineInfo(), gpu: gpu.trim().split("\n") },
    command: `npm run bench:gpu -- --max-sessions ${maxSessions} --seconds ${seconds} --encoder ${values.encoder}`,
    date: new Date().toISOString(),
    sessionsPerGpu: best?.sessions ?? 0,
    steps,
  };
  const lines = [
    "# GPU sessions (bench:gpu)",
    "",
    `${report.date}, ${report.machine.gpu.join("; ")}; \`${report.command}\``,
    "",
    "| sessions | kept up | forward hop p50 / p95 ms (worst p95) | GPU MiB per session | encoder |",
    "|---|---|---|---|---|",
    ...steps.map(
      (s) =>
        `| ${s.sessions} | ${s.keptUp} | ${s.forwardHopMs.p50} / ${s.forwardHopMs.p95} (${s.forwardHopMs.worstP95}) | ` +
        `${s.gpuMemoryMiBPerSession ?? "n/a"} | ${s.encoders.join(", ")} |`,
    ),
    "",
    `Sessions per GPU: ${report.sessionsPerGpu}`,
    "",
  ];
  // --encoder x264 is the CPU baseline (and checks this harness on a machine without a GPU).
  const label =
    values.encoder === "nvenc" ? "sessions per GPU" : `sessions kept up with ${values.encoder} (CPU)`;
  lines[lines.length - 2] = `${label}: ${report.sessionsPerGpu}`;
  process.stdout.write(`\n${label}: ${report.sessionsPerGpu}\n`);
  writeResults(values.out!, report, lines.join("\n"));
}

async function runStep(
  sessions: number,
  segments: Buffer[],
  encoder: string,
  seconds: number,
): Promise<Step> {
  const trickle = new TrickleServer({ autocreate: true });
  const { url } = await trickle.listen(0, "127.0.0.1");
  const standins: TsStandin[] = [];
  for (let i = 0; i < sessions; i++) {
    trickle.createChannel(`gpu${i}`, "video/MP2T");
    trickle.createChannel(`gpu${i}-out`, "video/MP2T");
    standins.push(
      await startTsStandin({ host: "127.0.0.1", port: 0, iceAddresses: [ICE], mode: "passthrough" }),
    );
  }
  const relays = standins.map((standin, i) => startRelay(`gpu${i}`, `${url}gpu${i}`, standin.url, encoder));
  const failures: string[] = [];
  await Promise.race([Promise.all(relays.map((r) => r.connected)), sleep(60_000)]);
  const outputs = relays.map((_, i) => drainOutput(`${url}gpu${i}-out`));
  const publishing = relays.map((_, i) => publishLive(`${url}gpu${i}`, segments));
  await sleep(Math.min(5000, (seconds * 1000) / 2));
  const memory = await gpuMemoryOf(relays.map((r) => r.child.pid!));
  await Promise.all(publishing);
  const finals = await Promise.all(relays.map((r) => r.finished.catch((err: Error) => err)));
  for (const o of outputs) o.close();
  await Promise.all(standins.map((s) => s.close()));
  await trickle.close();

  const ok: Summary[] = [];
  finals.forEach((final, i) => {
    if (final instanceof Error) failures.push(`gpu${i}: ${final.message}`);
    else if (final.encoder !== encoder)
      failures.push(`gpu${i}: encoder ${final.encoder} (${final.codecReason})`);
    else ok.push(final);
  });
  const keptUp = ok.filter((s) => s.frames.dropped === 0 && s.frames.out >= s.frames.in * 0.98).length;
  const p50s = ok.map((s) => s.hopLatencyMs.forward.p50).filter((v): v is number => v !== null);
  const p95s = ok.map((s) => s.hopLatencyMs.forward.p95).filter((v): v is number => v !== null);
  const median = (values: number[]) =>
    values.length === 0 ? null : round([...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!);
  return {
    sessions,
    keptUp,
    forwardHopMs: {
      p50: median(p50s),
      p95: median(p95s),
      worstP95: p95s.length ? round(Math.max(...p95s)) : null,
    },
    gpuMemoryMiBPerSession: memory === null ? null : round(memory / sessions),
    gpuMemoryMiBTotal: memory,
    encoders: [...new Set(ok.map((s) => `${s.encoder}/${s.decoder}`))],
    failures,
  };
}

function describeStep(step: Step): string {
  return (
    `${step.sessions} session(s): ${step.keptUp} kept up, forward hop p50 ${step.forwardHopMs.p50} ms ` +
    `p95 ${step.forwardHopMs.p95} ms, GPU memory ${step.gpuMemoryMiBPerSession ?? "n/a"} MiB/session` +
    (step.failures.length ? `; ${step.failures.join("; ")}` : "")
  );
}

function startRelay(
  id: string,
  input: string,
  comfystream: string,
  encoder: string,
): { child: ChildProcess; connected: Promise<void>; finished: Promise<Summary> } {
  const child = spawn(
    process.execPath,
    [
      ...[CLI, "run", "--id", id, "--input", input, "--comfystream", comfystream, "--ice-address", ICE],
      ...["--width", "512", "--height", "512", "--frame-rate", "30", "--status-interval", "1"],
      ...["--encoder", encoder],
    ],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, TRICKLE_RELAY_LOG_JSON: "1" } },
  );
  let last: Summary | undefined;
  let stderrTail = "";
  let onConnected!: () => void;
  const connected = new Promise<void>((resolve) => (onConnected = resolve));
  createInterface({ input: child.stderr! }).on("line", (line) => {
    stderrTail = line;
    let entry: { msg?: string; status?: Summary };
    try {
      entry = JSON.parse(line) as { msg?: string; status?: Summary };
    } catch {
      return;
    }
    if (entry.msg === "connected to ComfyStream") onConnected();
    if (entry.status && "frames" in entry.status) last = entry.status;
  });
  const finished = new Promise<Summary>((resolve, reject) => {
    child.once("exit", (code) => {
      onConnected();
      if (code === 0 && last) resolve(last);
      else reject(new Error(`relay exited ${code}: ${stderrTail.slice(0, 300)}`));
    });
  });
  return { child, connected, finished };
}

/** MiB of GPU memory held by the relays' process trees (their ffmpeg), or null if none is listed. */
async function gpuMemoryOf(relayPids: number[]): Promise<number | null> {
  const ours = new Set(relayPids.flatMap((pid) => [pid, ...descendants(pid)]));
  const text = await nvidiaSmi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]);
  let total = 0;
  let found = false;
  for (const line of text.split("\n")) {
    const [pid, used] = line.split(",").map((s) => Number(s.trim()));
    if (pid !== undefined && ours.has(pid) && Number.isFinite(used)) {
      total += used!;
      found = true;
    }
  }
  return found ? total : null;
}

function descendants(pid: number): number[] {
  const result: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) result.push(Number(entry), ...descendants(Number(entry)));
    } catch {
      // gone
    }
  }
  return result;
}

async function nvidiaSmi(args: string[]): Promise<string> {
  try {
    return (await run("nvidia-smi", args)).stdout;
  } catch (err) {
    return `nvidia-smi failed: ${(err as Error).message.split("\n")[0]}`;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
