/**
 * Soak (issue 17 part 1): N relay sessions in this process (as `serve` runs them) through the TS
 * stand-in ComfyStream for M minutes, live 512x512@30 input, sampling every 10 s: RSS, V8 heap, open
 * file descriptors, ffmpeg child processes, event-loop delay, and each session's latency and
 * frame counts. At the end a pass/fail "flat" verdict: RSS and open FDs at the end within ±10 % of
 * their value at minute 5 (or half-way, in a run shorter than 10 min), and after the sessions stop
 * no ffmpeg child left. A benchmark, not a test:
 *
 *   npm run soak -- --minutes 30 --sessions 6 [--out bench-results/soak.json]
 *
 * The trickle server, the stand-ins and the inputs run in a helper process (soak-infra.ts), so the
 * figures are the relay's own.
 */
import { fork } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { RelaySession } from "../../relay-pod/src/session/relay-session.js";
import { buildSessionConfig } from "../../relay-pod/src/session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import type { SessionStatus } from "../../relay-pod/src/session/types.js";
import { machineInfo, round, writeResults } from "./results.js";
import type { SoakInfraInfo } from "./soak-infra.js";

const HELP = `Usage: npm run soak -- [options]

Runs N relay sessions through the stand-in ComfyStream for M minutes and samples memory, file
descriptors, ffmpeg processes, event-loop delay and latency every 10 s; ends with a pass/fail
"flat" line (RSS and FDs within ±10 % between minute 5 and the end; no ffmpeg left after stop).

Options:
  --minutes M     run length (default 30)
  --sessions N    concurrent sessions (default 6)
  --interval S    seconds between samples (default 10)
  --out FILE      results (default bench-results/soak.json, and .md beside it)
  -h, --help      this text
`;

interface Sample {
  atSec: number;
  rssMb: number;
  heapUsedMb: number;
  openFds: number;
  ffmpegProcesses: number;
  eventLoopDelayMs: { p50: number; p99: number; max: number };
  sessionsRunning: number;
  framesOut: number;
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
  droppedFrames: number;
  reconnects: number;
}

const SESSION_STATES_OK = new Set(["running", "degraded", "connecting"]);

function openFds(): number {
  return readdirSync("/proc/self/fd").length;
}

/** ffmpeg processes whose parent is this process (the sessions' transcoders and muxers). */
function ffmpegChildren(): number {
  let count = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === process.pid && comm.startsWith("ffmpeg")) count++;
    } catch {
      // the process ended while we looked
    }
  }
  return count;
}

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function startInfra(sessions: number, seconds: number) {
  const child = fork(
    fileURLToPath(new URL("./soak-infra.js", import.meta.url)),
    ["--infra", String(sessions), "--seconds", String(seconds)],
    { stdio: ["ignore", "inherit", "inherit", "ipc"] },
  );
  const info = await new Promise<SoakInfraInfo>((ok, fail) => {
    child.once("message", (m) => ok(m as SoakInfraInfo));
    child.once("exit", (code) => fail(new Error(`soak infra exited ${code}`)));
  });
  return {
    ...info,
    startInputs: () => child.send("start-inputs"),
    stop: async () => {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      minutes: { type: "string", default: "30" },
      sessions: { type: "string", default: "6" },
      interval: { type: "string", default: "10" },
      out: { type: "string", default: "bench-results/soak.json" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const minutes = Number(values.minutes);
  const sessionCount = Number(values.sessions);
  const intervalSec = Number(values.interval);
  if (!(minutes > 0 && sessionCount > 0 && intervalSec > 0))
    throw new Error("--minutes, --sessions and --interval must be positive");
  const runSec = minutes * 60;

  const infra = await startInfra(sessionCount, runSec + 60);
  const sessions = Array.from({ length: sessionCount }, (_, i) => {
    const session = new RelaySession(
      buildSessionConfig({
        id: `soak${i}`,
        inputUrl: `${infra.trickleBase}soak${i}`,
        outputUrl: `${infra.trickleBase}soak${i}-out`,
        comfystreamUrl: infra.standins[i]!,
        prompts: [PASSTHROUGH_WORKFLOW],
        width: 512,
        height: 512,
        frameRate: 30,
        iceAddresses: ["127.0.0.2"],
        // A soak sees the whole run; a quiet input is reported, not ended.
        inputStall: { endAfterSec: 0 },
      }),
    );
    return session;
  });
  await Promise.all(sessions.map((s) => s.start()));
  infra.startInputs();

  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const started = performance.now();
  const samples: Sample[] = [];
  const take = (): Sample => {
    const statuses: SessionStatus[] = sessions.map((s) => s.status());
    const memory = process.memoryUsage();
    const sample: Sample = {
      atSec: Math.round((performance.now() - started) / 1000),
      rssMb: round(memory.rss / 2 ** 20),
      heapUsedMb: round(memory.heapUsed / 2 ** 20),
      openFds: openFds(),
      ffmpegProcesses: ffmpegChildren(),
      eventLoopDelayMs: {
        p50: round(loopDelay.percentile(50) / 1e6),
        p99: round(loopDelay.percentile(99) / 1e6),
        max: round(loopDelay.max / 1e6),
      },
      sessionsRunning: statuses.filter((s) => SESSION_STATES_OK.has(s.state)).length,
      framesOut: statuses.reduce((sum, s) => sum + s.frames.out, 0),
      latencyP50Ms: median(statuses.map((s) => s.latencyMs.p50).filter((v): v is number => v !== null)),
      latencyP95Ms: median(statuses.map((s) => s.latencyMs.p95).filter((v): v is number => v !== null)),
      droppedFrames: statuses.reduce((sum, s) => sum + s.frames.dropped, 0),
      reconnects: statuses.reduce((sum, s) => sum + s.reconnects, 0),
    };
    loopDelay.reset();
    process.stderr.write(
      `soak ${sample.atSec}s: RSS ${sample.rssMb} MB, heap ${sample.heapUsedMb} MB, FDs ${sample.openFds}, ` +
        `ffmpeg ${sample.ffmpegProcesses}, loop p99 ${sample.eventLoopDelayMs.p99} ms, ` +
        `sessions ${sample.sessionsRunning}/${sessionCount}, frames out ${sample.framesOut}, latency p50 ${sample.latencyP50Ms} ms\n`,
    );
    return sample;
  };
  while (performance.now() - started < runSec * 1000) {
    await sleep(Math.min(intervalSec * 1000, runSec * 1000 - (performance.now() - started)));
    samples.push(take());
  }
  const finalStatuses = sessions.map((s) => s.status());
  await Promise.all(sessions.map((s) => s.stop()));
  await sleep(2000);
  const ffmpegAfterStop = ffmpegChildren();
  const fdsAfterStop = openFds();
  await infra.stop();
  loopDelay.disable();

  // Baseline: minute 5, or half-way through a run shorter than 10 minutes.
  const baselineSec = minutes >= 10 ? 300 : runSec / 2;
  const baseline = samples.find((s) => s.atSec >= baselineSec) ?? samples[0]!;
  const last = samples.at(-1)!;
  const within = (value: number, reference: number) => Math.abs(value - reference) <= reference * 0.1;
  const rssFlat = within(last.rssMb, baseline.rssMb);
  const fdsFlat = within(last.openFds, baseline.openFds);
  const sessionsHeld = samples.every((s) => s.sessionsRunning === sessionCount);
  const pass = rssFlat && fdsFlat && ffmpegAfterStop === 0 && sessionsHeld;
  const flatLine =
    `${pass ? "PASS" : "FAIL"} flat: RSS ${baseline.rssMb} → ${last.rssMb} MB (${rssFlat ? "within" : "outside"} ±10 %), ` +
    `FDs ${baseline.openFds} → ${last.openFds} (${fdsFlat ? "within" : "outside"} ±10 %) between ${baseline.atSec} s and ${last.atSec} s; ` +
    `ffmpeg left after stop: ${ffmpegAfterStop}; all ${sessionCount} sessions running at every sample: ${sessionsHeld ? "yes" : "no"}`;

  const machine = machineInfo();
  const command = `npm run soak -- --minutes ${minutes} --sessions ${sessionCount}`;
  const report = {
    benchmark: "soak",
    command,
    date: new Date().toISOString(),
    machine,
    pass,
    flatLine,
    baselineAtSec: baseline.atSec,
    ffmpegAfterStop,
    fdsAfterStop,
    samples,
    finalSessions: finalStatuses.map((s) => ({
      id: s.id,
      state: s.state,
      frames: s.frames,
      segments: s.segments,
      reconnects: s.reconnects,
      latencyMs: s.latencyMs,
      peerOutages: s.peerOutages,
    })),
  };
  const markdown = [
    `# Soak: ${sessionCount} sessions × ${minutes} min (${report.date})`,
    "",
    `Command: \`${command}\`. Machine: ${machine.cpu} (${machine.cores} cores, ${machine.memoryGiB} GiB), Node ${machine.node}.`,
    "Sessions in one process (as `serve` runs them), 512x512@30 live test pattern, transcode, passthrough TS stand-in; trickle server, stand-ins and inputs in a helper process.",
    "",
    `**${flatLine}**`,
    "",
    "| t (s) | RSS MB | heap MB | FDs | ffmpeg | loop delay p50/p99/max ms | sessions | frames out | latency p50/p95 ms | dropped | reconnects |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...samples.map(
      (s) =>
        `| ${s.atSec} | ${s.rssMb} | ${s.heapUsedMb} | ${s.openFds} | ${s.ffmpegProcesses} | ${s.eventLoopDelayMs.p50}/${s.eventLoopDelayMs.p99}/${s.eventLoopDelayMs.max} | ${s.sessionsRunning} | ${s.framesOut} | ${s.latencyP50Ms}/${s.latencyP95Ms} | ${s.droppedFrames} | ${s.reconnects} |`,
    ),
    "",
  ].join("\n");
  writeResults(values.out!, report, markdown);
  process.stdout.write(`${flatLine}\n`);
  process.exitCode = pass ? 0 : 1;
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(2);
});
