/**
 * The relay through the real ComfyStream server (`npm run bench:relay -- --real-comfystream`): per
 * workflow, one `trickle-relay run` session with a live 512x512@30 input, measured from outside the
 * relay so that any two builds are measured the same way:
 *
 * - returned fps: output frames arriving over the steady part of the input (its first 5 s left out);
 * - end-to-end latency per frame: the moment a PTS was handed to the input publisher to the moment a
 *   PES with that PTS starts in the output channel (the relay keeps the input's PTS), p50/p95/max and
 *   the p50 of the input's first and last third (did it grow?);
 * - the output's segments and IDRs (which segments start with one, the longest stretch without).
 *
 * `--before REF` builds that commit in a temporary git worktree and runs it right before the current
 * build (or `--after REF`'s, built the same way), per workflow, so both see the same machine. Each
 * run gets a fresh server: the real one notices a gone client only after ~30 s and may refuse the
 * next offer (test/peers/real-comfystream.ts).
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { isIdrAccessUnit } from "../../relay-pod/src/media/h264.js";
import { TsDemuxer } from "../../relay-pod/src/media/ts-demux.js";
import { PTS_CLOCK_HZ } from "../../relay-pod/src/media/ts-packet.js";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import {
  REAL_WORKFLOWS,
  realComfyStreamUnavailable,
  startRealComfyStream,
  type RealComfyStream,
} from "../peers/real-comfystream.js";
import { makeInputSegments } from "../session/relay-harness.js";
import { publishLive } from "./live-input.js";
import { FrameStartScanner } from "../../relay-pod/src/demo/measure.js";
import { measurePeerFloor, type PeerFloor } from "./peer-floor.js";
import { machineInfo, round, writeResults } from "./results.js";

const REPO = path.resolve(import.meta.dirname, "../../..");
const CURRENT_CLI = fileURLToPath(new URL("../../relay-pod/src/cli.js", import.meta.url));
const ICE = "127.0.0.2";
const SIZE = 512;
const FPS = 30;
/** Left out of the returned-fps window: the pipeline filling up. */
const WARM_UP_MS = 5000;
/** How long the relay may take to connect (the server warms its workflow up inside /offer). */
const CONNECT_TIMEOUT_MS = 120_000;
/**
 * The relay sends each frame at its PTS plus up to 31 ticks (frame-matcher.ts), and a frame it no
 * longer tracks comes out with that PTS; frames are 3000 ticks apart at 30 fps.
 */
const PTS_JITTER_TICKS = 32;
/** How long the relay may take to end by itself once the input ended (its drain is a few s). */
const END_TIMEOUT_MS = 45_000;

type WorkflowName = keyof typeof REAL_WORKFLOWS;

interface Build {
  label: "before" | "after";
  ref: string;
  cli: string;
  note?: string;
  extraArgs?: string[];
}

interface Stats {
  p50: number | null;
  p95: number | null;
  max: number | null;
}

export interface RunResult {
  workflow: WorkflowName;
  repetition: number;
  build: string;
  ref: string;
  loadAverageAtStart: number[];
  machineCpuBusyPercent: number;
  startUpMs: { serverHealthy: number; relayConnected: number; firstOutputFrame: number | null };
  /**
   * `outputPtsOffByJitter`: output frames whose PTS is an input PTS plus the relay's RTP timestamp
   * jitter (the relay had stopped tracking the frame and extrapolated its PTS); matched all the same.
   */
  frames: {
    in: number;
    out: number;
    missing: number;
    outputNotInInput: number;
    outputPtsOffByJitter: number;
  };
  returnedFps: number;
  latencyMs: Stats & {
    /** When the slowest frame was published, seconds into the input. */
    maxAtInputS: number | null;
    firstThirdP50: number | null;
    lastThirdP50: number | null;
    /** Share of each third's input frames that came back. */
    returnedShareByThird: number[];
    /** The input's last 5 frames (null: not returned): what the end of the stream costs. */
    lastFrames: (number | null)[];
  };
  output: {
    segments: number;
    segmentsStartingWithIdr: number;
    segmentDurationS: { median: number | null; max: number | null };
    idrs: number;
    idrIntervalS: { median: number | null; max: number | null };
    /** The longest PTS stretch of output without an IDR, the tail after the last one included. */
    longestWithoutIdrS: number | null;
    /** The same in seconds of arrival: how long a late subscriber could have waited for an IDR. */
    longestWithoutIdrWallS: number | null;
  };
  /** Per 5 s of input: frames published, frames of them returned, their latency p50. */
  timeline: { fromS: number; in: number; returned: number; latencyP50Ms: number | null }[];
  /** The relay's own view, from the status it logs when it ends (fields its version has). */
  relayStatus: Record<string, unknown> | null;
  relayExit: string;
  relayEndedAfterInputMs: number;
  /** Warnings the relay logged, by message, with how often. */
  relayWarnings: Record<string, number>;
}

export async function runRealComfyStreamBench(options: {
  seconds: number;
  before: string | undefined;
  workflows: string[];
  out: string;
  /** Build "after" from this commit (a temporary worktree) instead of using dist/. */
  after?: string | undefined;
  /** Before/after pairs per workflow. */
  repeat: number;
  /** Passed to the "after" build only (the old one has no such option). */
  peerWindow?: number | undefined;
  /** B-frames in the input (default 2, as RTMP encoders often send; WHIP/browser input has none). */
  bFrames?: number;
}): Promise<void> {
  const bFrames = options.bFrames ?? 2;
  if (!Number.isInteger(bFrames) || bFrames < 0) throw new Error("--b-frames must be a whole number ≥ 0");
  const unavailable = realComfyStreamUnavailable();
  if (unavailable) throw new Error(`cannot run the real-ComfyStream benchmark: ${unavailable}`);
  if (!(options.seconds >= 5)) throw new Error("--seconds must be a number, at least 5");
  if (!Number.isInteger(options.repeat) || options.repeat < 1)
    throw new Error("--repeat must be a whole number, at least 1");
  for (const w of options.workflows) {
    if (!(w in REAL_WORKFLOWS))
      throw new Error(`unknown workflow ${w} (known: ${Object.keys(REAL_WORKFLOWS).join(", ")})`);
  }
  const cleanup = new Cleanup();
  try {
    const after: Build = options.after
      ? worktreeBuild("after", options.after, cleanup)
      : {
          label: "after",
          ref: git(["rev-parse", "--short", "HEAD"]),
          cli: CURRENT_CLI,
          note: git(["status", "--porcelain", "--", "relay-pod"])
            ? "the current build (dist/), with uncommitted changes under relay-pod/"
            : "the current build (dist/)",
        };
    if (options.peerWindow !== undefined) {
      after.extraArgs = ["--peer-window", String(options.peerWindow)];
      after.note += `, --peer-window ${options.peerWindow}`;
    }
    const builds = options.before ? [worktreeBuild("before", options.before, cleanup), after] : [after];
    const tmp = mkdtempSync(path.join(tmpdir(), "relay-real-bench-"));
    cleanup.files.add(() => rmSync(tmp, { recursive: true, force: true }));
    const { segments } = await makeInputSegments({
      seconds: options.seconds,
      size: `${SIZE}x${SIZE}`,
      bFrames,
    });
    const loadAtStart = loadavg().map((l) => round(l, 2));
    const runs: RunResult[] = [];
    const floors: Record<string, PeerFloor> = {};
    for (const workflow of options.workflows as WorkflowName[]) {
      const prompts = path.join(tmp, `${workflow}.json`);
      writeFileSync(prompts, JSON.stringify(REAL_WORKFLOWS[workflow]));
      // The peer alone first, on a fresh server of its own: the floor the relay's figures sit on.
      process.stderr.write(`${workflow} / the peer's own round trip (no relay) ... `);
      const floorServer = await startRealComfyStream();
      try {
        floors[workflow] = await measurePeerFloor({
          comfystreamUrl: floorServer.url,
          prompts: [REAL_WORKFLOWS[workflow]],
          seconds: options.seconds,
          iceAddress: ICE,
        });
      } finally {
        await floorServer.stop();
      }
      const floor = floors[workflow]!;
      process.stderr.write(
        `${floor.returnedFps} fps back, latency p50 ${floor.latencyMs.p50} / p95 ${floor.latencyMs.p95} ms\n`,
      );
      for (let repetition = 1; repetition <= options.repeat; repetition++) {
        // Alternating the order, so that neither build always runs on the machine the other left.
        const order = repetition % 2 === 1 ? builds : [...builds].reverse();
        for (const build of order) {
          process.stderr.write(`${workflow} / ${build.label} (${build.ref}) #${repetition} ... `);
          const started = performance.now();
          const result = await measureRun(build, workflow, prompts, segments, cleanup);
          result.repetition = repetition;
          runs.push(result);
          process.stderr.write(
            `${result.returnedFps} fps back, latency p50 ${result.latencyMs.p50} / p95 ${result.latencyMs.p95} ms ` +
              `(first → last third ${result.latencyMs.firstThirdP50} → ${result.latencyMs.lastThirdP50}), ` +
              `${result.output.segments} segments, ${result.output.idrs} IDRs; ` +
              `${Math.round((performance.now() - started) / 1000)} s in all, the relay ended ` +
              `${round(result.relayEndedAfterInputMs / 1000)} s after the input\n`,
          );
        }
      }
    }
    const report = {
      benchmark: "relay-real-comfystream",
      command:
        "npm run bench:relay -- --real-comfystream" +
        (options.before ? ` --before ${options.before}` : "") +
        (options.after ? ` --after ${options.after}` : "") +
        (options.peerWindow !== undefined ? ` --peer-window ${options.peerWindow}` : "") +
        ` --seconds ${options.seconds} --workflows ${options.workflows.join(",")} --repeat ${options.repeat}` +
        (bFrames !== 2 ? ` --b-frames ${bFrames}` : ""),
      date: new Date().toISOString(),
      machine: machineInfo(),
      loadAverageAtStart: loadAtStart,
      loadAverageAtEnd: loadavg().map((l) => round(l, 2)),
      input: `${options.seconds} s testsrc2 ${SIZE}x${SIZE}@${FPS}, H.264 (${bFrames} B-frames, 1 s GOP) in MPEG-TS, published frame by frame at real-time pace`,
      method:
        "per workflow and build: a fresh real ComfyStream server, one `trickle-relay run` process (transcode, 512x512@30, defaults otherwise); " +
        "the input is published once the relay logged 'connected to ComfyStream'; latency = a PTS handed to the input publisher → a PES with " +
        "that PTS starting in the output channel; returned fps = output frames arriving between 5 s after the input started and its end; " +
        "IDRs by NAL type in the output's access units",
      builds: builds.map(({ label, ref, note }) => ({ label, ref, note })),
      floorMethod:
        "the peer's own round trip, same run: a werift client sends H.264 baseline 512x512@30 straight to a fresh server " +
        "and matches returned frames by RTP timestamp (test/bench/peer-floor.ts); relay-added = relay end-to-end − floor",
      floors,
      runs,
    };
    const floorLines = Object.entries(floors).map(([workflow, floor]) => {
      const relayP50s = runs
        .filter((r) => r.workflow === workflow && r.build === "after")
        .map((r) => r.latencyMs.p50)
        .filter((v): v is number => v !== null);
      const relayP50 = relayP50s.length
        ? relayP50s.sort((a, b) => a - b)[Math.floor(relayP50s.length / 2)]!
        : null;
      const added = relayP50 !== null && floor.latencyMs.p50 !== null ? relayP50 - floor.latencyMs.p50 : null;
      return (
        `| ${workflow} | ${floor.returnedFps} | ${floor.latencyMs.p50} / ${floor.latencyMs.p95} / ${floor.latencyMs.max} | ` +
        `${relayP50 ?? "–"} | ${added === null ? "–" : Math.round(added)} |`
      );
    });
    const floorTable =
      "\n## The peer's own floor (no relay), same run\n\n" +
      "| workflow | fps back | latency p50 / p95 / max ms | relay end-to-end p50 ms (after) | relay-added p50 ms |\n" +
      "|---|---|---|---|---|\n" +
      floorLines.join("\n") +
      "\n";
    writeResults(options.out, report, toMarkdown(report) + floorTable);
  } finally {
    await cleanup.run();
  }
}

async function measureRun(
  build: Build,
  workflow: WorkflowName,
  promptsFile: string,
  segments: Buffer[],
  cleanup: Cleanup,
): Promise<RunResult> {
  const loadAverageAtStart = loadavg().map((l) => round(l, 2));
  const trickle = new TrickleServer({ autocreate: true });
  const { url: base } = await trickle.listen(0, "127.0.0.1");
  const name = `real-${workflow}-${build.label}`;
  // The old relay needs its output channel to exist (issue 10 item 1), as go-livepeer provides it.
  trickle.createChannel(name, "video/MP2T");
  trickle.createChannel(`${name}-out`, "video/MP2T");
  let server: RealComfyStream | undefined;
  let relay: RelayProcess | undefined;
  let output: OutputWatcher | undefined;
  try {
    const serverStart = performance.now();
    server = await startRealComfyStream();
    const stopServer = server.stop;
    cleanup.servers.add(stopServer);
    const serverHealthy = performance.now() - serverStart;

    output = new OutputWatcher(`${base}${name}-out`);
    const relayStart = performance.now();
    relay = startRelay(build, name, `${base}${name}`, server.url, promptsFile);
    cleanup.relays.add(relay.kill);
    await relay.connected(CONNECT_TIMEOUT_MS, server);
    const relayConnected = performance.now() - relayStart;

    const inputFrames: { pts: number; at: number }[] = [];
    const cpuBefore = machineCpu();
    const publishStart = performance.now();
    await publishLive(`${base}${name}`, segments, {
      frameRate: FPS,
      onFrame: (pts, at) => pts !== undefined && inputFrames.push({ pts, at }),
    });
    const publishEnd = performance.now();
    const cpuAfter = machineCpu();
    const relayExit = await relay.end(END_TIMEOUT_MS);
    const relayEnded = performance.now() - publishEnd;
    await output.finish(5000);
    cleanup.relays.delete(relay.kill);
    await stopServer();
    cleanup.servers.delete(stopServer);

    return {
      workflow,
      repetition: 1,
      build: build.label,
      ref: build.ref,
      loadAverageAtStart,
      machineCpuBusyPercent: round(
        ((cpuAfter.busy - cpuBefore.busy) / Math.max(1, cpuAfter.total - cpuBefore.total)) * 100,
      ),
      ...analyse(inputFrames, output, publishStart, publishEnd),
      startUpMs: {
        serverHealthy: Math.round(serverHealthy),
        relayConnected: Math.round(relayConnected),
        firstOutputFrame:
          output.arrivals.length > 0 ? Math.round(output.arrivals[0]!.at - publishStart) : null,
      },
      relayStatus: relay.finalStatus(),
      relayExit,
      relayEndedAfterInputMs: Math.round(relayEnded),
      relayWarnings: Object.fromEntries(relay.warnings),
    };
  } catch (err) {
    const tail = server ? `\nComfyStream log tail:\n${server.logTail()}` : "";
    throw new Error(`${workflow} / ${build.label}: ${(err as Error).message}${tail}`);
  } finally {
    relay?.kill();
    output?.close();
    await server?.stop();
    await trickle.close();
  }
}

function analyse(
  inputFrames: { pts: number; at: number }[],
  output: OutputWatcher,
  publishStart: number,
  publishEnd: number,
): Pick<RunResult, "frames" | "returnedFps" | "latencyMs" | "output" | "timeline"> {
  const sentAt = new Map<number, number>();
  for (const f of inputFrames) if (!sentAt.has(f.pts)) sentAt.set(f.pts, f.at);
  const inputPts = [...sentAt.keys()].sort((a, b) => a - b);
  const arrivedAt = new Map<number, number>();
  for (const a of output.arrivals) if (!arrivedAt.has(a.pts)) arrivedAt.set(a.pts, a.at);
  const matched: { sent: number; latency: number }[] = [];
  let offByJitter = 0;
  for (const [pts, at] of arrivedAt) {
    const nearest = nearestPts(inputPts, pts);
    if (nearest === undefined || Math.abs(nearest - pts) > PTS_JITTER_TICKS) continue;
    if (nearest !== pts) offByJitter++;
    matched.push({ sent: sentAt.get(nearest)!, latency: at - sentAt.get(nearest)! });
  }
  const latencies = matched.map((m) => m.latency);
  const worst = matched.reduce<{ sent: number; latency: number } | undefined>(
    (w, m) => (w === undefined || m.latency > w.latency ? m : w),
    undefined,
  );

  const duration = publishEnd - publishStart;
  const latencyBySent = new Map(matched.map((m) => [m.sent, m.latency]));
  const lastFrames = inputFrames.slice(-5).map((f) => latencyBySent.get(f.at) ?? null);
  const third = (i: number) => (t: number) =>
    t >= publishStart + (i * duration) / 3 && t < publishStart + ((i + 1) * duration) / 3;
  const latencyInThird = (i: number) => matched.filter((m) => third(i)(m.sent)).map((m) => m.latency);
  const inputInThird = (i: number) => inputFrames.filter((f) => third(i)(f.at)).length;

  const steadyFrom = publishStart + Math.min(WARM_UP_MS, duration / 3);
  const steadyArrivals = output.arrivals.filter((a) => a.at >= steadyFrom && a.at <= publishEnd).length;

  const timeline: RunResult["timeline"] = [];
  for (let from = 0; from < duration; from += 5000) {
    const inBucket = (t: number) => t >= publishStart + from && t < publishStart + from + 5000;
    const back = matched.filter((m) => inBucket(m.sent)).map((m) => m.latency);
    if (!inputFrames.some((f) => inBucket(f.at))) continue;
    timeline.push({
      fromS: from / 1000,
      in: inputFrames.filter((f) => inBucket(f.at)).length,
      returned: back.length,
      latencyP50Ms: roundOrNull(percentile(back, 50)),
    });
  }

  const idrPts = output.accessUnits.filter((au) => au.idr).map((au) => au.pts);
  const idrIntervals = idrPts.slice(1).map((pts, i) => (pts - idrPts[i]!) / PTS_CLOCK_HZ);
  let longestWithoutIdr: number | null = null;
  let lastIdr = output.accessUnits[0]?.pts;
  // The same in wall-clock time (a slow peer returns a little PTS over a long time).
  let longestWithoutIdrWall: number | null = null;
  let lastIdrAt = arrivedAt.get(output.accessUnits[0]?.pts ?? -1);
  for (const au of output.accessUnits) {
    // Measured up to each frame (an IDR included), so gaps between IDRs and the tail both count.
    longestWithoutIdr = Math.max(longestWithoutIdr ?? 0, (au.pts - lastIdr!) / PTS_CLOCK_HZ);
    if (au.idr) lastIdr = au.pts;
    const at = arrivedAt.get(au.pts);
    if (at === undefined || lastIdrAt === undefined) continue;
    longestWithoutIdrWall = Math.max(longestWithoutIdrWall ?? 0, (at - lastIdrAt) / 1000);
    if (au.idr) lastIdrAt = at;
  }
  const segmentStarts = output.segments.filter((s) => s.firstPts !== undefined).map((s) => s.firstPts!);
  const segmentDurations = segmentStarts.slice(1).map((pts, i) => (pts - segmentStarts[i]!) / PTS_CLOCK_HZ);

  return {
    frames: {
      in: inputFrames.length,
      out: matched.length,
      missing: inputFrames.length - matched.length,
      outputNotInInput: arrivedAt.size - matched.length,
      outputPtsOffByJitter: offByJitter,
    },
    returnedFps: round(steadyArrivals / ((publishEnd - steadyFrom) / 1000)),
    latencyMs: {
      p50: roundOrNull(percentile(latencies, 50)),
      p95: roundOrNull(percentile(latencies, 95)),
      max: roundOrNull(worst?.latency ?? null),
      maxAtInputS: worst ? round((worst.sent - publishStart) / 1000) : null,
      firstThirdP50: roundOrNull(percentile(latencyInThird(0), 50)),
      lastThirdP50: roundOrNull(percentile(latencyInThird(2), 50)),
      returnedShareByThird: [0, 1, 2].map((i) =>
        round(latencyInThird(i).length / Math.max(1, inputInThird(i)), 2),
      ),
      lastFrames: lastFrames.map((l) => roundOrNull(l)),
    },
    output: {
      segments: output.segments.length,
      segmentsStartingWithIdr: output.segments.filter((s) => s.startsWithIdr).length,
      segmentDurationS: {
        median: roundOrNull(percentile(segmentDurations, 50), 2),
        max: roundOrNull(segmentDurations.length > 0 ? Math.max(...segmentDurations) : null, 2),
      },
      idrs: idrPts.length,
      idrIntervalS: {
        median: roundOrNull(percentile(idrIntervals, 50), 2),
        max: roundOrNull(idrIntervals.length > 0 ? Math.max(...idrIntervals) : null, 2),
      },
      longestWithoutIdrS: roundOrNull(longestWithoutIdr, 2),
      longestWithoutIdrWallS: roundOrNull(longestWithoutIdrWall, 2),
    },
    timeline,
  };
}

/**
 * Reads the relay's output channel from seq 0: when each video PES starts (its PTS, on the
 * packet's arrival, so a frame is timed when its first bytes arrive rather than when the next one
 * completes it), and, per finished segment, its access units and whether each is an IDR.
 */
class OutputWatcher {
  readonly arrivals: { pts: number; at: number }[] = [];
  readonly accessUnits: { pts: number; idr: boolean }[] = [];
  readonly segments: { seq: number; firstPts: number | undefined; startsWithIdr: boolean }[] = [];
  private readonly subscriber: TrickleSubscriber;
  private readonly done: Promise<void>;

  constructor(url: string) {
    this.subscriber = new TrickleSubscriber(url, { startSeq: 0 });
    this.done = this.read().catch(() => undefined);
  }

  private async read(): Promise<void> {
    for await (const segment of this.subscriber) {
      const chunks: Buffer[] = [];
      const scanner = new FrameStartScanner(({ pts }) => this.arrivals.push({ pts, at: performance.now() }));
      for await (const chunk of segment.body) {
        chunks.push(chunk);
        scanner.push(chunk);
      }
      const units: { pts: number; idr: boolean }[] = [];
      const demuxer = new TsDemuxer({
        onAccessUnit: (au) =>
          au.pts !== undefined && units.push({ pts: au.pts, idr: isIdrAccessUnit(au.data) }),
      });
      demuxer.push(Buffer.concat(chunks));
      demuxer.flush();
      this.accessUnits.push(...units);
      this.segments.push({
        seq: segment.seq,
        firstPts: units[0]?.pts,
        startsWithIdr: units[0]?.idr ?? false,
      });
    }
  }

  /** Waits for the output channel's end (the relay closes it), at most `timeoutMs`. */
  async finish(timeoutMs: number): Promise<void> {
    await Promise.race([this.done, deadline(timeoutMs)]);
    this.close();
  }

  close(): void {
    this.subscriber.close();
  }
}

interface RelayProcess {
  connected(timeoutMs: number, server: RealComfyStream): Promise<void>;
  /** Waits for the relay to end by itself; stops it after `timeoutMs`. Says how it ended. */
  end(timeoutMs: number): Promise<string>;
  finalStatus(): Record<string, unknown> | null;
  warnings: Map<string, number>;
  /** Kills the relay's process group (it and its ffmpeg), if still there. */
  kill(): void;
}

function startRelay(
  build: Build,
  id: string,
  input: string,
  comfystream: string,
  prompts: string,
): RelayProcess {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      ...[
        build.cli,
        "run",
        ...(build.extraArgs ?? []),
        "--id",
        id,
        "--input",
        input,
        "--comfystream",
        comfystream,
        "--prompts",
        prompts,
      ],
      ...["--ice-address", ICE, "--width", String(SIZE), "--height", String(SIZE)],
      ...["--frame-rate", String(FPS), "--status-interval", "1"],
    ],
    // Its own process group, so that its ffmpeg children go with it.
    {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, TRICKLE_RELAY_LOG_JSON: "1" },
      detached: true,
    },
  );
  const warnings = new Map<string, number>();
  const tail: string[] = [];
  let ended: Record<string, unknown> | null = null;
  let onConnected: () => void = () => undefined;
  const connected = new Promise<void>((resolve) => (onConnected = resolve));
  const exited = new Promise<string>((resolve) =>
    child.once("exit", (code, signal) => resolve(signal ? `signal ${signal}` : `exit code ${code}`)),
  );
  createInterface({ input: child.stderr! }).on("line", (line) => {
    let entry: { level?: number; msg?: string; status?: Record<string, unknown> };
    try {
      entry = JSON.parse(line);
    } catch {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      return;
    }
    if (entry.msg === "connected to ComfyStream") onConnected();
    if (entry.msg === "relay session ended" && entry.status) ended = entry.status;
    if ((entry.level ?? 0) >= 40 && entry.msg) warnings.set(entry.msg, (warnings.get(entry.msg) ?? 0) + 1);
  });
  const kill = () => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // gone
    }
  };
  return {
    warnings,
    kill,
    finalStatus: () => (ended ? pickStatus(ended) : null),
    connected: async (timeoutMs, server) => {
      const timeout = deadline(timeoutMs).then(() => "timeout");
      const how = await Promise.race([connected.then(() => "connected"), exited, timeout]);
      if (how === "connected") return;
      throw new Error(
        `the relay did not connect to ComfyStream (${how}); relay stderr:\n${tail.join("\n")}\n` +
          `ComfyStream log tail:\n${server.logTail()}`,
      );
    },
    end: async (timeoutMs) => {
      const how = await Promise.race([exited, deadline(timeoutMs).then(() => undefined)]);
      if (how !== undefined) {
        kill(); // a leftover ffmpeg, if any
        return how;
      }
      process.kill(-child.pid!, "SIGTERM");
      const stopped = await Promise.race([exited, deadline(5000).then(() => undefined)]);
      kill();
      return `did not end within ${timeoutMs / 1000} s of the input's end; SIGTERM → ${stopped ?? "SIGKILL"}`;
    },
  };
}

/** The status fields this benchmark reports (each build logs those its version has). */
function pickStatus(status: Record<string, unknown>): Record<string, unknown> {
  const keys = [
    "state",
    "frames",
    "segments",
    "fps",
    "latencyMs",
    "hopLatencyMs",
    "peerWindow",
    "outputKeyframes",
    "lastError",
  ];
  return Object.fromEntries(keys.filter((k) => k in status).map((k) => [k, status[k]]));
}

/** Checks `ref` out in a temporary worktree and builds it with this checkout's node_modules. */
function worktreeBuild(label: Build["label"], ref: string, cleanup: Cleanup): Build {
  const dir = mkdtempSync(path.join(tmpdir(), `relay-${label}-`));
  const remove = () => {
    try {
      execFileSync("git", ["-C", REPO, "worktree", "remove", "--force", dir], { stdio: "ignore" });
    } catch {
      // not registered (add failed)
    }
    rmSync(dir, { recursive: true, force: true });
  };
  cleanup.files.add(remove);
  process.stderr.write(`building ${ref} in ${dir} ... `);
  execFileSync("git", ["-C", REPO, "worktree", "add", "--detach", dir, ref], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  symlinkSync(path.join(REPO, "node_modules"), path.join(dir, "node_modules"));
  execFileSync(process.execPath, [path.join(REPO, "node_modules/typescript/bin/tsc"), "-p", dir], {
    stdio: "inherit",
  });
  process.stderr.write("done\n");
  return {
    label,
    ref: execFileSync("git", ["-C", dir, "rev-parse", "--short", "HEAD"]).toString().trim(),
    cli: path.join(dir, "dist/relay-pod/src/cli.js"),
    note: `built from ${ref} in a temporary git worktree`,
  };
}

function git(args: string[]): string {
  return execFileSync("git", ["-C", REPO, ...args])
    .toString()
    .trim();
}

/**
 * What must go when the benchmark ends, however it ends (SIGINT/SIGTERM included): the relays'
 * process groups first, then the servers, then the worktree and temporary files.
 */
class Cleanup {
  readonly relays = new Set<() => void>();
  readonly servers = new Set<() => Promise<void>>();
  readonly files = new Set<() => void>();
  private readonly onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`\n${signal}: stopping the relay and the server, removing temporary files\n`);
    void this.run().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };

  constructor() {
    process.once("SIGINT", this.onSignal);
    process.once("SIGTERM", this.onSignal);
  }

  async run(): Promise<void> {
    for (const kill of this.relays) kill();
    this.relays.clear();
    for (const stop of this.servers) await stop().catch(() => undefined);
    this.servers.clear();
    for (const remove of [...this.files].reverse()) remove();
    this.files.clear();
    process.off("SIGINT", this.onSignal);
    process.off("SIGTERM", this.onSignal);
  }
}

/** The input PTS nearest to `pts` (`sorted` ascending). */
function nearestPts(sorted: number[], pts: number): number | undefined {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < pts) lo = mid + 1;
    else hi = mid;
  }
  const after = sorted[lo];
  const before = sorted[lo - 1];
  if (before !== undefined && (after === undefined || pts - before < after - pts)) return before;
  return after;
}

/** A timeout for a race that does not keep the process alive once the race is over. */
function deadline(ms: number): Promise<void> {
  return sleep(ms, undefined, { ref: false });
}

function machineCpu(): { busy: number; total: number } {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3]! + (fields[4] ?? 0);
  return { busy: total - idle, total };
}

function percentile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function roundOrNull(value: number | null, digits = 0): number | null {
  return value === null ? null : round(value, digits);
}

function toMarkdown(report: {
  command: string;
  date: string;
  machine: Record<string, unknown>;
  loadAverageAtStart: number[];
  loadAverageAtEnd: number[];
  input: string;
  method: string;
  builds: { label: string; ref: string; note?: string }[];
  runs: RunResult[];
}): string {
  const sec = (ms: number | null) => (ms === null ? "–" : String(round(ms / 1000, 1)));
  const rows = report.runs.map((r) => {
    const o = r.output;
    const peerLimited = (r.relayStatus?.frames as { peerLimited?: number } | undefined)?.peerLimited;
    return (
      `| ${r.workflow} | ${r.repetition} | ${r.build} (${r.ref}) | ${r.returnedFps} | ` +
      `${r.latencyMs.p50} / ${r.latencyMs.p95} / ${r.latencyMs.max}` +
      `${r.latencyMs.maxAtInputS !== null ? ` (at ${r.latencyMs.maxAtInputS} s)` : ""} | ${r.latencyMs.firstThirdP50} → ${r.latencyMs.lastThirdP50} | ` +
      `${o.idrs} | ${o.idrIntervalS.median ?? "–"} / ${o.longestWithoutIdrS ?? "–"} / ${o.longestWithoutIdrWallS ?? "–"} | ` +
      `${o.segments} (${o.segmentsStartingWithIdr}) | ${r.frames.in} → ${r.frames.out}` +
      `${peerLimited !== undefined ? ` (${peerLimited} peer-limited)` : ""}` +
      `${r.frames.outputPtsOffByJitter > 0 ? ` (${r.frames.outputPtsOffByJitter} with an extrapolated PTS)` : ""} | ` +
      `${sec(r.startUpMs.serverHealthy)} / ${sec(r.startUpMs.relayConnected)} / ${sec(r.startUpMs.firstOutputFrame)} | ` +
      `${r.loadAverageAtStart[0]} / ${r.machineCpuBusyPercent} |`
    );
  });
  const buckets = Math.max(...report.runs.map((r) => r.timeline.length));
  const timelineRows = report.runs.map(
    (r) =>
      `| ${r.workflow} | ${r.repetition} | ${r.build} | ` +
      r.timeline.map((b) => `${b.latencyP50Ms ?? "–"} (${b.returned}/${b.in})`).join(" | ") +
      " |",
  );
  const relayNotes = report.runs.map((r) => {
    const status = r.relayStatus ?? {};
    const keyframes = status.outputKeyframes as { source?: string; reason?: string } | undefined;
    const warnings = Object.entries(r.relayWarnings)
      .map(([msg, n]) => `"${msg}" ×${n}`)
      .join(", ");
    return (
      `- ${r.workflow} #${r.repetition} / ${r.build}: ended ${r.relayExit}; its status: frames ${JSON.stringify(status.frames ?? null)}, ` +
      `segments ${JSON.stringify(status.segments ?? null)}, ` +
      `latency through ComfyStream ${JSON.stringify(status.latencyMs ?? null)}, ` +
      `hops (input → sent, back → output) ${JSON.stringify(status.hopLatencyMs ?? null)}` +
      (keyframes
        ? `, output keyframes from ${keyframes.source}${keyframes.reason ? ` (${keyframes.reason})` : ""}`
        : "") +
      `; warnings: ${warnings || "none"}.`
    );
  });
  return [
    `# The relay through the real ComfyStream server (${report.date})`,
    "",
    `Command: \`${report.command}\`. Machine: ${JSON.stringify(report.machine)}.`,
    `Load average (1/5/15 min) at the start ${report.loadAverageAtStart.join(" / ")}, at the end ${report.loadAverageAtEnd.join(" / ")}.`,
    "The machine has 2 cores and is shared with other work, and the real ComfyStream runs its workflow on the",
    "same CPU as the relay: figures move between runs. Before and after of one workflow ran back to back",
    "(# = repetition; the order alternates between repetitions).",
    "",
    `Builds: ${report.builds.map((b) => `${b.label} = ${b.ref} (${b.note})`).join("; ")}.`,
    `Input: ${report.input}.`,
    `Method: ${report.method}.`,
    "",
    "| workflow | # | relay | returned fps | latency p50 / p95 / max (ms) | latency p50, first → last third (ms) | output IDRs | IDR interval median / longest stretch without, PTS / wall clock (s) | output segments (starting with an IDR) | frames in → out | start-up: server healthy / relay connected / first frame back (s) | load 1 min / machine CPU busy % |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...rows,
    "",
    "Latency p50 in ms per 5 s of input (frames returned / published):",
    "",
    `| workflow | # | relay | ${Array.from({ length: buckets }, (_, i) => `${i * 5}–${i * 5 + 5} s`).join(" | ")} |`,
    `|---|---|---|${"---|".repeat(buckets)}`,
    ...timelineRows,
    "",
    "The relay's own view (the status it logs when it ends):",
    "",
    ...relayNotes,
    "",
  ].join("\n");
}
