/**
 * Relay benchmark: what one relay session adds in latency, CPU and memory, and how many sessions this
 * machine carries without dropping frames.
 *
 *   npm run bench:relay [-- --seconds 20 --max-sessions 8 --out bench-results/relay.json]
 *
 * Must run inside the loopback-only network namespace (WebRTC): `npm run bench:relay` does that as root.
 * Each relay session is a real `trickle-relay run` process (with its ffmpeg); a helper process holds
 * the trickle server and one passthrough stand-in peer per session (ComfyStream serves one peer), so
 * the relay's own CPU and memory can be read from /proc. Input is pre-encoded test pattern, streamed
 * to the trickle server frame by frame at real-time pace.
 *
 *   npm run bench:relay -- --real-comfystream [--before 92bb95a] [--seconds 30]
 *
 * The same relay against the real ComfyStream server instead: see real-comfystream-bench.ts.
 */
import { fork, spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { machineInfo, round, writeResults } from "./results.js";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { createInterface } from "node:readline";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { startTsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { makeInputSegments } from "../session/relay-harness.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import {
  drainOutput,
  endToEndLatencies,
  latencySummary,
  publishLive,
  type PesArrival,
} from "./live-input.js";
import { measurePeerFloor, type PeerFloor } from "./peer-floor.js";
import type { StartUpFigures } from "./startup-bench.js";

/** The relay measured: this build's, or another build's given with --relay-cli (side-by-side runs). */
let CLI = fileURLToPath(new URL("../../relay-pod/src/cli.js", import.meta.url));
/** Extra node flags for every relay process (--relay-node-flags, e.g. a CPU profile of the relay). */
let RELAY_NODE_FLAGS: string[] = [];
/** Where each relay's stdout goes (--relay-stdout PREFIX: PREFIX<index>.txt; e.g. V8's --trace-deopt). */
let RELAY_STDOUT: string | undefined;
const ICE = "127.0.0.2";
const CLOCK_TICKS = 100; // USER_HZ on Linux

interface SessionResult {
  frames: { in: number; sent: number; returned: number; out: number; dropped: number };
  forwardHopMs: { p50: number | null; p95: number | null };
  returnHopMs: { p50: number | null; p95: number | null };
  peerMs: { p50: number | null; p95: number | null };
  relayAddedP50Ms: number | null;
  /** Measured from outside: a PTS handed to the input publisher → its PES starting in the output. */
  endToEndMs: { p50: number | null; p95: number | null; max: number | null };
  cpuPercentOfOneCore: number;
  rssMb: { node: number; ffmpeg: number; total: number };
  /** Proportional set size: shared pages (the node and ffmpeg binaries, libraries) split between the processes using them. */
  pssMb: { node: number; ffmpeg: number; total: number };
  noDrops: boolean;
}

interface ScenarioResult {
  size: string;
  mode: "transcode" | "passthrough";
  inputBFrames: number;
  sessions: number;
  seconds: number;
  perSession: SessionResult[];
  allWithoutDrops: boolean;
  machineCpuPercent: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: "string" },
      "max-sessions": { type: "string", default: "12" },
      "startup-runs": { type: "string", default: "5" },
      "startup-only": { type: "boolean", default: false },
      starvation: { type: "boolean", default: false },
      "hog-nice": { type: "string", default: "10" },
      "sessions-only": { type: "string" },
      "in-one-serve": { type: "boolean", default: false },
      "b-frames": { type: "string", default: "2" },
      "relay-cli": { type: "string" },
      "relay-node-flags": { type: "string" },
      "relay-stdout": { type: "string" },
      mode: { type: "string", default: "transcode" },
      out: { type: "string" },
      infra: { type: "string" },
      "real-comfystream": { type: "boolean", default: false },
      peer: { type: "string", default: "standin" },
      before: { type: "string" },
      after: { type: "string" },
      workflows: { type: "string", default: "passthrough,slowBlur" },
      "peer-window": { type: "string" },
      repeat: { type: "string", default: "1" },
      audio: { type: "boolean", default: false },
      rounds: { type: "string", default: "2" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      "npm run bench:relay [-- --seconds N --max-sessions N --startup-runs N --out FILE]\n" +
        "Relay latency (forward hop, return hop, total minus peer time), CPU and RSS per session at\n" +
        "512x512 and 1280x720 @ 30 fps through the passthrough stand-in, start → first output frame\n" +
        "with the input already flowing (N runs, default 5), and the most concurrent 512x512 sessions\n" +
        "without drops. Writes JSON and Markdown (default bench-results/relay.json).\n" +
        "--startup-only: just the start-up runs, printed as JSON; --sessions-only N [--b-frames 2]: just N\n" +
        "concurrent 512x512 sessions (input with that many B-frames), printed as JSON; --relay-cli PATH: measure another build's relay (its\n" +
        "dist/relay-pod/src/cli.js), for side-by-side runs; --mode passthrough: --sessions-only without ffmpeg;\n" +
        "--relay-node-flags='FLAGS': node flags for each relay process (e.g. --relay-node-flags='--cpu-prof --cpu-prof-dir=/tmp/prof');\n" +
        "--relay-stdout PREFIX: each relay's stdout into PREFIX<index>.txt (e.g. with --relay-node-flags=--trace-deopt).\n" +
        "--sessions-only N --in-one-serve: the N sessions in one `trickle-relay serve` (the standalone service)\n" +
        "instead of a relay process each (the relay pod's form): its CPU and memory per session, printed as JSON.\n" +
        "--starvation [--seconds 30] [--hog-nice 10]: one 512x512 transcode session while a `nice`d busy\n" +
        "loop runs on every core; frames in, out (counted on the output channel), dropped by policy,\n" +
        "not returned by the peer, and unexplained losses (should be 0). Default output\n" +
        "bench-results/relay-starvation.json.\n" +
        "\n" +
        "npm run bench:relay -- --peer real (or --real-comfystream) [--before GIT-REF] [--after GIT-REF]\n" +
        "                       [--workflows passthrough,slowBlur] [--peer-window N] [--seconds N (default 30)]\n" +
        "                       [--b-frames N (input B-frames, default 2; 0 = a WHIP/browser-like input)]\n" +
        "                       [--repeat N] [--out FILE]\n" +
        "One relay session per workflow through the real ComfyStream server (../shared/peers/comfystream,\n" +
        "a fresh server per run), 512x512 @ 30 fps live input, measured from outside the relay: returned\n" +
        "fps, end-to-end latency per frame (p50/p95/max and its trend), output segments and IDR interval.\n" +
        "--before REF also runs the relay built from that commit (a temporary git worktree) right before\n" +
        "the current build (dist/, or --after REF built the same way); --peer-window N goes to the\n" +
        "latter only. --repeat N runs N before/after pairs per workflow (order alternating).\n" +
        "Needs the peer set up (npm test's setup does it as root).\n" +
        "Default output bench-results/relay-real-comfystream.json.\n" +
        "\n" +
        "npm run bench:relay -- --audio [--seconds 60] [--rounds 2] [--out FILE]\n" +
        "One 512x512 session with a beeping AAC tone and flashing picture per --audio mode (none,\n" +
        "passthrough, comfystream; order alternating per round): relay CPU and its extra over none,\n" +
        "video latency, audio frames, lip-sync measured on the output. Default output\n" +
        "bench-results/relay-audio.json.\n",
    );
    return;
  }
  if (values.infra) return runInfra(Number(values.infra));
  if (process.env.TRICKLE_RELAY_NETNS !== "1") {
    throw new Error("run this inside the loopback-only namespace: npm run bench:relay (as root)");
  }
  if (values.peer !== "standin" && values.peer !== "real") {
    throw new Error(`--peer must be standin (default) or real, got ${values.peer}`);
  }
  if (values["real-comfystream"] || values.peer === "real") {
    // Loaded only here: the stand-in benchmark needs none of the real server's helpers.
    const { runRealComfyStreamBench } = await import("./real-comfystream-bench.js");
    return runRealComfyStreamBench({
      seconds: Number(values.seconds ?? 30),
      before: values.before,
      after: values.after,
      workflows: values.workflows!.split(",").map((w) => w.trim()),
      out: values.out ?? "bench-results/relay-real-comfystream.json",
      repeat: Number(values.repeat),
      peerWindow: values["peer-window"] === undefined ? undefined : Number(values["peer-window"]),
      bFrames: Number(values["b-frames"]),
    });
  }
  if (values["relay-cli"]) CLI = values["relay-cli"];
  RELAY_STDOUT = values["relay-stdout"];
  if (values["relay-node-flags"]) RELAY_NODE_FLAGS = values["relay-node-flags"].split(/\s+/).filter(Boolean);
  if (values["sessions-only"] && values["in-one-serve"]) {
    const { measureSessionsInOneServe } = await import("./serve-sessions-bench.js");
    const result = await measureSessionsInOneServe(
      Number(values["sessions-only"]),
      Number(values.seconds ?? 15),
      Number(values["b-frames"]),
      { startInfra, processCpu, processMemory, machineCpu },
      RELAY_NODE_FLAGS,
    );
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  if (values["sessions-only"]) {
    if (values.mode !== "transcode" && values.mode !== "passthrough") {
      throw new Error(`--mode must be transcode or passthrough, got ${values.mode}`);
    }
    const result = await runScenario(
      "512x512",
      Number(values["sessions-only"]),
      Number(values.seconds ?? 15),
      Number(values["b-frames"]),
      values.mode,
    );
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  if (values.starvation) {
    const { measureStarvation } = await import("./starvation-bench.js");
    const figures = await measureStarvation(
      { seconds: Number(values.seconds ?? 30), hogNice: Number(values["hog-nice"]) },
      { startInfra, startRelay },
    );
    const report = {
      benchmark: "relay starvation",
      command: `npm run bench:relay -- --starvation --seconds ${figures.seconds} --hog-nice ${figures.hogNice}`,
      date: new Date().toISOString(),
      machine: machineInfo(),
      ...figures,
    };
    const markdown =
      `# Relay under CPU starvation\n\n${report.command}, ${report.date}\n\n` +
      `${figures.hogs} busy loops at nice ${figures.hogNice} for the whole ${figures.seconds} s input (512x512 transcode, ` +
      `B-frame input).\n\n| published | out (counted) | dropped by policy | not returned by peer | unexplained |\n` +
      `|---|---|---|---|---|\n| ${figures.inputFramesPublished} | ${figures.outputFramesCounted} | ` +
      `${figures.status.dropped} | ${figures.notReturnedByPeer} | ${figures.unexplainedLosses} |\n\n` +
      `Status: ${JSON.stringify(figures.status)}; forward hop ${JSON.stringify(figures.forwardHopMs)} ms.\n`;
    writeResults(values.out ?? "bench-results/relay-starvation.json", report, markdown);
    process.stdout.write(markdown);
    return;
  }
  if (values.audio) {
    const { measureAudio, audioMarkdown } = await import("./audio-bench.js");
    const seconds = Number(values.seconds ?? 60);
    const rounds = Number(values.rounds);
    const figures = await measureAudio({ seconds, rounds }, { startInfra, startRelay, processCpu });
    const report = {
      benchmark: "relay audio",
      command: `npm run bench:relay -- --audio --seconds ${seconds} --rounds ${rounds}`,
      date: new Date().toISOString(),
      machine: machineInfo(),
      figures,
    };
    const markdown = audioMarkdown(report);
    writeResults(values.out ?? "bench-results/relay-audio.json", report, markdown);
    process.stdout.write(markdown);
    return;
  }
  if (values["startup-only"]) {
    const { measureStartUp } = await import("./startup-bench.js");
    const figures = await measureStartUp(Number(values["startup-runs"]), { startInfra, startRelay });
    process.stdout.write(`${JSON.stringify(figures, null, 1)}\n`);
    return;
  }
  const seconds = Number(values.seconds ?? 20);
  // The stand-in's own round trip, no relay in between: what the end-to-end figures sit on.
  process.stderr.write(`the stand-in's own round trip (no relay), ${seconds} s ... `);
  const floor = await measureStandinFloor(seconds);
  process.stderr.write(
    `latency p50/p95/max ${floor.latencyMs.p50}/${floor.latencyMs.p95}/${floor.latencyMs.max} ms\n`,
  );
  const scenarios: ScenarioResult[] = [];
  for (const size of ["512x512", "1280x720"]) {
    scenarios.push(await runScenario(size, 1, seconds));
  }
  // Input without B-frames (WHIP and browser encoders): the transcoder's decoder need not reorder.
  scenarios.push(await runScenario("512x512", 1, seconds, 0));
  // The same input sent as is: no ffmpeg at all.
  scenarios.push(await runScenario("512x512", 1, seconds, 0, "passthrough"));
  // Start-up: the relay started while its input already flows and its peer is warm.
  const { measureStartUp } = await import("./startup-bench.js");
  const startUp = await measureStartUp(Number(values["startup-runs"]), { startInfra, startRelay });
  let maxSessions = 1;
  for (let n = 2; n <= Number(values["max-sessions"]); n++) {
    const result = await runScenario("512x512", n, Math.min(seconds, 15));
    scenarios.push(result);
    if (!result.allWithoutDrops) break;
    maxSessions = n;
  }
  const report = {
    benchmark: "relay",
    command: "npm run bench:relay",
    date: new Date().toISOString(),
    machine: machineInfo(),
    method:
      "each session = one `trickle-relay run` process + its ffmpeg; passthrough TypeScript stand-in peer per session " +
      "in a helper process; input streamed frame by frame at real-time pace; figures from the session's own status after the run; " +
      "CPU and RSS from /proc for the relay process and its ffmpeg, sampled over the steady part of the run",
    targets: {
      issue: 12,
      endToEndMs: { p50: 150, p95: 200, max: 300 },
      forwardHopMs: { p50: 20, p95: 60 },
      endToEndOverFloorP50Ms: 20,
      sessions: 10,
      cpuPercentOfOneCore: 12,
      memoryMbPerSession: 100,
      firstOutputFrameMs: 1000,
      at: "512x512@30",
    },
    standinFloor: floor,
    maxConcurrentSessionsWithoutDrops512: maxSessions,
    startUp,
    scenarios,
  };
  writeResults(values.out ?? "bench-results/relay.json", report, toMarkdown(report));
}

async function measureStandinFloor(seconds: number): Promise<PeerFloor> {
  const infra = await startInfra(1);
  try {
    return await measurePeerFloor({
      comfystreamUrl: infra.standins[0]!,
      prompts: [PASSTHROUGH_WORKFLOW],
      seconds,
      iceAddress: ICE,
    });
  } finally {
    await infra.stop();
  }
}

async function runScenario(
  size: string,
  sessions: number,
  seconds: number,
  inputBFrames = 2,
  mode: "transcode" | "passthrough" = "transcode",
): Promise<ScenarioResult> {
  process.stderr.write(
    `scenario ${size} ${mode} x ${sessions} session(s), input B-frames ${inputBFrames}, ${seconds} s ... `,
  );
  const [width, height] = size.split("x").map(Number) as [number, number];
  const { segments } = await makeInputSegments({ seconds, size, bFrames: inputBFrames });
  const infra = await startInfra(sessions);
  const relays = Array.from({ length: sessions }, (_, i) => startRelay(i, infra, width, height, mode));
  await Promise.all(relays.map((r) => r.connected));
  const outputs = relays.map((_, i) =>
    drainOutput(`${infra.trickleBase}bench${i}-out`, { recordArrivals: true }),
  );

  const machineBefore = machineCpu();
  const inputs = relays.map((): PesArrival[] => []);
  const publishing = relays.map((_, i) =>
    publishLive(`${infra.trickleBase}bench${i}`, segments, {
      onFrame: (pts, at) => pts !== undefined && inputs[i]!.push({ pts, at }),
    }),
  );
  await sleep(3000);
  const before = relays.map((r) => processCpu(r.child.pid!));
  const sampledAt = performance.now();
  await sleep(Math.max(1000, (seconds - 5) * 1000));
  const after = relays.map((r) => processCpu(r.child.pid!));
  const rss = relays.map((r) => processMemory(r.child.pid!, "VmRSS"));
  const pss = relays.map((r) => processMemory(r.child.pid!, "Pss"));
  const elapsed = (performance.now() - sampledAt) / 1000;
  const machineAfter = machineCpu();
  await Promise.all(publishing);
  const finals = await Promise.all(relays.map((r) => r.finished));
  for (const o of outputs) o.close();
  await infra.stop();

  const perSession = finals.map((status, i): SessionResult => {
    const cpu = ((after[i]!.ticks - before[i]!.ticks) / CLOCK_TICKS / elapsed) * 100;
    const fwd = status.hopLatencyMs.forward;
    const ret = status.hopLatencyMs.return;
    return {
      frames: status.frames,
      forwardHopMs: fwd,
      returnHopMs: ret,
      peerMs: { p50: status.latencyMs.p50, p95: status.latencyMs.p95 },
      relayAddedP50Ms: fwd.p50 !== null && ret.p50 !== null ? round(fwd.p50 + ret.p50) : null,
      endToEndMs: latencySummary(endToEndLatencies(inputs[i]!, outputs[i]!.arrivals)),
      cpuPercentOfOneCore: round(cpu),
      rssMb: rss[i]!,
      pssMb: pss[i]!,
      noDrops: status.frames.dropped === 0 && status.frames.out >= status.frames.in * 0.98,
    };
  });
  const machineCpuPercent = round(
    ((machineAfter.busy - machineBefore.busy) / (machineAfter.total - machineBefore.total)) * 100,
  );
  const result = {
    size,
    mode,
    inputBFrames,
    sessions,
    seconds,
    perSession,
    allWithoutDrops: perSession.every((s) => s.noDrops),
    machineCpuPercent,
  };
  const first = perSession[0]!;
  process.stderr.write(
    `end-to-end p50/p95/max ${first.endToEndMs.p50}/${first.endToEndMs.p95}/${first.endToEndMs.max} ms, ` +
      `relay-added p50 ${first.relayAddedP50Ms} ms, CPU ${first.cpuPercentOfOneCore} %, RSS ${first.rssMb.total} MB, ` +
      `${result.allWithoutDrops ? "no drops" : "DROPS"}, machine CPU ${machineCpuPercent} %\n`,
  );
  return result;
}

export interface Infra {
  trickleBase: string;
  standins: string[];
  stop(): Promise<void>;
}

export async function startInfra(sessions: number): Promise<Infra> {
  const child = fork(fileURLToPath(import.meta.url), ["--infra", String(sessions)], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const info = await new Promise<{ trickleBase: string; standins: string[] }>((ok, fail) => {
    child.once("message", (m) => ok(m as { trickleBase: string; standins: string[] }));
    child.once("exit", (code) => fail(new Error(`infra process exited ${code}`)));
  });
  return {
    ...info,
    stop: async () => {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    },
  };
}

async function runInfra(sessions: number): Promise<void> {
  const trickle = new TrickleServer({ autocreate: true });
  const { url } = await trickle.listen(0, "127.0.0.1");
  for (let i = 0; i < sessions; i++) {
    trickle.createChannel(`bench${i}`, "video/MP2T");
    trickle.createChannel(`bench${i}-out`, "video/MP2T");
  }
  const standins = await Promise.all(
    Array.from({ length: sessions }, () =>
      startTsStandin({ host: "127.0.0.1", port: 0, iceAddresses: [ICE], mode: "passthrough" }),
    ),
  );
  process.once("SIGTERM", async () => {
    await Promise.all(standins.map((s) => s.close()));
    await trickle.close();
    process.exit(0);
  });
  process.send!({ trickleBase: url, standins: standins.map((s) => s.url) });
}

export interface Relay {
  child: ChildProcess;
  connected: Promise<void>;
  finished: Promise<StatusSummary>;
}

interface StatusSummary {
  state: string;
  webrtc: string;
  frames: SessionResult["frames"];
  latencyMs: { p50: number | null; p95: number | null };
  hopLatencyMs: {
    forward: { p50: number | null; p95: number | null };
    return: { p50: number | null; p95: number | null };
  };
}

export function startRelay(
  index: number,
  infra: Infra,
  width: number,
  height: number,
  mode: "transcode" | "passthrough",
  extraArgs: string[] = [],
): Relay {
  const child = spawn(
    process.execPath,
    [
      ...RELAY_NODE_FLAGS,
      CLI,
      "run",
      ...["--id", `bench${index}`, "--input", `${infra.trickleBase}bench${index}`],
      ...["--comfystream", infra.standins[index]!, "--ice-address", ICE],
      ...[
        "--width",
        String(width),
        "--height",
        String(height),
        "--frame-rate",
        "30",
        "--status-interval",
        "1",
        "--mode",
        mode,
      ],
      ...extraArgs,
    ],
    {
      stdio: ["ignore", RELAY_STDOUT ? "pipe" : "ignore", "pipe"],
      env: { ...process.env, TRICKLE_RELAY_LOG_JSON: "1" },
    },
  );
  if (RELAY_STDOUT) child.stdout!.pipe(createWriteStream(`${RELAY_STDOUT}${index}.txt`));
  let last: StatusSummary | undefined;
  let onConnected: () => void;
  const connected = new Promise<void>((r) => (onConnected = r));
  createInterface({ input: child.stderr! }).on("line", (line) => {
    let entry: { msg?: string; status?: StatusSummary };
    try {
      entry = JSON.parse(line);
    } catch {
      return;
    }
    if (entry.msg === "connected to ComfyStream") onConnected();
    if (entry.status && "frames" in entry.status) last = entry.status;
  });
  const finished = new Promise<StatusSummary>((ok, fail) => {
    child.once("exit", (code) =>
      last ? ok(last) : fail(new Error(`relay ${index} exited ${code} without a status`)),
    );
  });
  return { child, connected, finished };
}

function childPids(pid: number): number[] {
  const pids: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim();
      if (text) pids.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    // process gone
  }
  return pids;
}

export function processCpu(pid: number): { ticks: number } {
  let ticks = 0;
  for (const p of [pid, ...childPids(pid)]) {
    try {
      const fields = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ");
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch {
      // gone
    }
  }
  return { ticks };
}

/** A process's and its children's (ffmpeg's) memory: VmRSS from status, or Pss from smaps_rollup. */
export function processMemory(
  pid: number,
  field: "VmRSS" | "Pss",
): { node: number; ffmpeg: number; total: number } {
  const file = field === "VmRSS" ? "status" : "smaps_rollup";
  const rssOf = (p: number) => {
    try {
      const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
        readFileSync(`/proc/${p}/${file}`, "utf8"),
      );
      return match ? Number(match[1]) / 1024 : 0;
    } catch {
      return 0;
    }
  };
  const node = rssOf(pid);
  const ffmpeg = childPids(pid).reduce((sum, p) => sum + rssOf(p), 0);
  return { node: round(node), ffmpeg: round(ffmpeg), total: round(node + ffmpeg) };
}

export function machineCpu(): { busy: number; total: number } {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3]! + (fields[4] ?? 0);
  return { busy: total - idle, total };
}

function toMarkdown(report: {
  date: string;
  machine: Record<string, unknown>;
  standinFloor: PeerFloor;
  maxConcurrentSessionsWithoutDrops512: number;
  startUp: StartUpFigures;
  scenarios: ScenarioResult[];
}): string {
  const mean = (values: number[]) => round(values.reduce((a, b) => a + b, 0) / values.length);
  const rows = report.scenarios.map((s) => {
    const p = s.perSession[0]!;
    const e2e = p.endToEndMs;
    return (
      `| ${s.size} | ${s.mode} | ${s.inputBFrames} | ${s.sessions} | ${e2e.p50} / ${e2e.p95} / ${e2e.max} | ` +
      `${p.forwardHopMs.p50} / ${p.forwardHopMs.p95} | ${p.returnHopMs.p50} / ${p.returnHopMs.p95} | ` +
      `${p.peerMs.p50} / ${p.peerMs.p95} | ${mean(s.perSession.map((x) => x.cpuPercentOfOneCore))} | ` +
      `${p.rssMb.total} (${p.rssMb.node} + ${p.rssMb.ffmpeg}) | ${mean(s.perSession.map((x) => x.pssMb.total))} | ` +
      `${p.frames.in}/${p.frames.out}/${p.frames.dropped} | ${s.allWithoutDrops ? "yes" : "no"} | ${s.machineCpuPercent} |`
    );
  });
  const floor = report.standinFloor.latencyMs;
  return [
    `# Relay benchmark (${report.date})`,
    "",
    `Machine: ${JSON.stringify(report.machine)}. Command: \`npm run bench:relay\`.`,
    `Most concurrent 512x512@30 sessions without drops: **${report.maxConcurrentSessionsWithoutDrops512}**.`,
    `Start → first output frame (relay process started into a live input, peer warm; ${report.startUp.runs} runs): ` +
      `p50 **${report.startUp.firstOutputFrameMs.p50} ms**, max ${report.startUp.firstOutputFrameMs.max} ms; ` +
      `of which start → connected to the peer p50 ${report.startUp.connectedMs.p50} ms. ` +
      `From \`POST /session/start\` on a running \`serve\` (modules loaded): p50 **${report.startUp.fromSessionStartMs?.p50} ms**, ` +
      `max ${report.startUp.fromSessionStartMs?.max} ms.`,
    "",
    `The stand-in's own round trip (no relay, same frames at 30 fps, matched by RTP timestamp): ` +
      `p50 ${floor.p50} / p95 ${floor.p95} / max ${floor.max} ms.`,
    "",
    "Latency in ms. End-to-end is measured from outside: a PTS handed to the input publisher → its PES starting in the " +
      "output channel (whole run, start included; with B-frames it includes the input's reordering). Forward hop: a frame " +
      "displayable from the input → sent to the peer; return hop: back from the peer → written to the output (the session's " +
      "own status). CPU (mean per session, relay process + its ffmpeg) and PSS (mean per session: shared binaries and " +
      "libraries split between the processes using them) are sampled over the steady part; RSS and the other figures are " +
      "for the first session.",
    "",
    "| size | mode | input B-frames | sessions | end-to-end p50 / p95 / max | forward hop p50 / p95 | return hop p50 / p95 | through peer p50 / p95 | CPU % of a core | RSS MB (node + ffmpeg) | PSS MB | frames in/out/dropped | all without drops | machine CPU % |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...rows,
    "",
  ].join("\n");
}

await main();
