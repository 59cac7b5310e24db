/**
 * What watching a session's page costs the relay: CPU of the relay process and its children (the
 * session's ffmpeg, and the thumbnail decoders that run only while someone watches), with the page
 * open and without, in alternating windows on the same running session.
 *
 *   npm run bench:ui [-- --window 15 --rounds 3 --viewers 1 --out bench-results/ui-watch.json]
 *
 * A "viewer" does what the page does: holds the session's event stream open and fetches each new
 * input and output thumbnail the ticks announce. The browser's own CPU is not the relay's and is
 * not counted. The session is real (test/ui/ui-harness.ts: trickle input at 30 fps, 320x240,
 * transcoded, the TypeScript stand-in ComfyStream over WebRTC).
 */
import { readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { startUiScenario, type UiScenario } from "../ui/ui-harness.js";
import { machineInfo, round, writeResults } from "./results.js";

const CLOCK_TICKS_PER_SECOND = 100;
const WARM_UP_MS = 3000;

/** CPU seconds (user + system) of each process in our tree: this one and its descendants. */
function treeCpu(): Map<number, number> {
  const parents = new Map<number, number>();
  const cpu = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue;
    }
    // Fields after the command name (which may hold spaces) in parentheses.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    parents.set(Number(entry), Number(fields[1]));
    cpu.set(Number(entry), (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND);
  }
  const inTree = (pid: number): boolean => {
    for (
      let p: number | undefined = pid, hops = 0;
      p !== undefined && hops < 64;
      p = parents.get(p), hops++
    ) {
      if (p === process.pid) return true;
      if (p <= 1) return false;
    }
    return false;
  };
  return new Map([...cpu].filter(([pid]) => inTree(pid)));
}

/** Cores used by our tree over `seconds`: processes that lived through it, and ones born in it. */
async function coresOver(seconds: number): Promise<number> {
  const before = treeCpu();
  const started = performance.now();
  await sleep(seconds * 1000);
  const after = treeCpu();
  const elapsed = (performance.now() - started) / 1000;
  let used = 0;
  for (const [pid, total] of after) used += total - (before.get(pid) ?? 0);
  return used / elapsed;
}

/** One page watching: the event stream, and each new thumbnail fetched once. */
function watch(scenario: UiScenario): {
  stop: () => void;
  thumbnailsFetched: () => number;
  ticks: () => number;
} {
  const controller = new AbortController();
  let fetched = 0;
  let ticks = 0;
  const seen = { input: null as number | null, output: null as number | null };
  const base = `${scenario.baseUrl}/ui/api/sessions/${scenario.sessionId}`;
  void (async () => {
    const res = await fetch(`${base}/events`, { signal: controller.signal });
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of res.body!) {
      buffered += decoder.decode(chunk as Uint8Array, { stream: true });
      let end: number;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const data = /^data: (.*)$/m.exec(event)?.[1];
        if (!data) continue;
        ticks++;
        const thumbnails = (JSON.parse(data) as { thumbnails: typeof seen }).thumbnails;
        for (const side of ["input", "output"] as const) {
          if (thumbnails[side] === null || thumbnails[side] === seen[side]) continue;
          seen[side] = thumbnails[side];
          const image = await fetch(`${base}/thumbnails/${side}`, { signal: controller.signal });
          await image.arrayBuffer();
          fetched++;
        }
      }
    }
  })().catch(() => undefined);
  return { stop: () => controller.abort(), thumbnailsFetched: () => fetched, ticks: () => ticks };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      window: { type: "string" },
      rounds: { type: "string" },
      viewers: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    process.stdout.write(
      "npm run bench:ui [-- --window SECONDS --rounds N --viewers N --out FILE.json]\n" +
        "CPU of the relay (process tree) with a session page watched vs not, alternating windows.\n",
    );
    return;
  }
  const windowSec = Number(values.window ?? 15);
  const rounds = Number(values.rounds ?? 3);
  const viewers = Number(values.viewers ?? 1);
  const seconds = Math.ceil(((windowSec * 2 + 20) * rounds + 30) * 1.1);
  const scenario = await startUiScenario({ seconds });
  try {
    await sleep(3000); // past the start-up burst
    const windows: {
      round: number;
      unwatched: number;
      watched: number;
      thumbnails: number;
      ticks: number;
    }[] = [];
    for (let round = 1; round <= rounds; round++) {
      const unwatched = await coresOver(windowSec);
      const watchers = Array.from({ length: viewers }, () => watch(scenario));
      // Steady state: the thumbnail decoders' start (~0.06 CPU-s each, once per watch) is left out.
      await sleep(WARM_UP_MS);
      const watched = await coresOver(windowSec);
      const thumbnails = watchers.reduce((n, w) => n + w.thumbnailsFetched(), 0);
      const ticks = watchers.reduce((n, w) => n + w.ticks(), 0);
      for (const w of watchers) w.stop();
      windows.push({ round, unwatched: round4(unwatched), watched: round4(watched), thumbnails, ticks });
      process.stderr.write(
        `round ${round}: unwatched ${unwatched.toFixed(3)} cores, watched ${watched.toFixed(3)} cores, ${thumbnails} thumbnails, ${ticks} events\n`,
      );
      // The decoders idle out 15 s after the last viewer: wait for that, so the next unwatched window
      // is really unwatched.
      await sleep(17_000);
    }
    const extras = windows.map((w) => w.watched - w.unwatched).sort((a, b) => a - b);
    const median = extras[Math.floor(extras.length / 2)]!;
    const status = scenario.sessions.get(scenario.sessionId)!.status();
    const report = {
      date: new Date().toISOString(),
      command: `npm run bench:ui -- --window ${windowSec} --rounds ${rounds} --viewers ${viewers}`,
      machine: machineInfo(),
      session: {
        size: "320x240",
        inputFps: status.fps.input,
        outputFps: status.fps.output,
        mode: status.mode,
      },
      viewers,
      windowSec,
      windows,
      extraCoresPerWatchedSessionMedian: round4(median / 1),
      extraCoresPerViewerMedian: round4(median / viewers),
      goalCores: 0.02,
    };
    const markdown = [
      "# Session page: extra CPU while watched",
      "",
      `${report.date}, \`${report.command}\`, ${report.machine.cpu} (${report.machine.cores} cores, shared with other work), Node ${report.machine.node}.`,
      "",
      "CPU of the relay's process tree (Node and its ffmpeg children) in alternating windows on one running session " +
        `(${report.session.size}, ${round(report.session.inputFps)} fps in), without and with ${viewers} viewer(s) ` +
        "holding the event stream open and fetching each new thumbnail; each watched window starts " +
        `${WARM_UP_MS / 1000} s after the viewers, so the thumbnail decoders' start (about 0.06 CPU-s each, ` +
        "once per watch) is not in it. The machine was shared with other work: see the unwatched column.",
      "",
      "| round | unwatched (cores) | watched (cores) | extra | thumbnails fetched | events |",
      "|---|---|---|---|---|---|",
      ...windows.map(
        (w) =>
          `| ${w.round} | ${w.unwatched} | ${w.watched} | ${round4(w.watched - w.unwatched)} | ${w.thumbnails} | ${w.ticks} |`,
      ),
      "",
      `Median extra: **${report.extraCoresPerWatchedSessionMedian} cores** per watched session (goal ≤ ${report.goalCores}).`,
      "",
    ].join("\n");
    writeResults(values.out ?? "bench-results/ui-watch.json", report, markdown);
  } finally {
    await scenario.stop();
  }
}

function round4(n: number): number {
  return round(n, 4);
}

await main();
process.exit(0);
