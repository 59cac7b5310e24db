/**
 * Audio benchmark (issue 13): the same 512x512 session with a beeping AAC tone and a flashing picture,
 * run with `--audio none`, `passthrough` and `comfystream` one after the other (order alternating per
 * round, so drift on this shared machine falls on all three), through the stand-in peer (which echoes
 * audio as aiortc stamps it). Per mode: the relay's CPU (its process and its ffmpeg children, from
 * /proc over the steady part), the extra CPU over `none` of the same round, video latency through the
 * peer and the relay's hops (its status), audio frames, and lip-sync measured on the output as a viewer
 * would judge it (flash vs beep, demo/av-sync.ts).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { measureAvSync } from "../../relay-pod/src/demo/av-sync.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { FFMPEG, makeInputSegments } from "../session/relay-harness.js";
import { publishLive } from "./live-input.js";
import type { Infra, Relay } from "./relay-bench.js";

export type AudioBenchMode = "none" | "passthrough" | "comfystream";

export interface AudioModeFigures {
  mode: AudioBenchMode;
  round: number;
  cpuPercentOfOneCore: number;
  /** This mode's CPU minus `none`'s in the same round (null for none). */
  extraCpuPercentOfOneCore: number | null;
  videoLatencyMs: { p50: number | null; p95: number | null };
  forwardHopMs: { p50: number | null; p95: number | null };
  audio: { framesIn: number; framesOut: number; dropped: number; codecOut: string | null };
  avSync: { pairs: number; p50AbsMs: number | null; p95AbsMs: number | null };
}

interface AudioStatus {
  frames: { in: number; out: number; dropped: number };
  latencyMs: { p50: number | null; p95: number | null };
  hopLatencyMs: { forward: { p50: number | null; p95: number | null } };
  audio?: { frames: { in: number; out: number; dropped: number }; codecOut: string | null };
}

/** Collects an output channel's bytes, from its first segment. */
function collectOutput(url: string): { bytes(): Buffer; close(): void } {
  const subscriber = new TrickleSubscriber(url, { startSeq: 0 });
  const parts: Buffer[] = [];
  void (async () => {
    for await (const segment of subscriber) for await (const chunk of segment.body) parts.push(chunk);
  })().catch(() => undefined);
  return { bytes: () => Buffer.concat(parts), close: () => subscriber.close() };
}

export async function measureAudio(
  options: { seconds: number; rounds: number },
  bench: {
    startInfra(sessions: number): Promise<Infra>;
    startRelay(
      index: number,
      infra: Infra,
      width: number,
      height: number,
      mode: "transcode",
      extraArgs: string[],
    ): Relay;
    processCpu(pid: number): { ticks: number };
  },
): Promise<AudioModeFigures[]> {
  const { segments } = await makeInputSegments({
    seconds: options.seconds,
    size: "512x512",
    bFrames: 0,
    audio: "aac",
    beepFlash: true,
  });
  const figures: AudioModeFigures[] = [];
  for (let round = 1; round <= options.rounds; round++) {
    const order: AudioBenchMode[] =
      round % 2 === 1 ? ["none", "passthrough", "comfystream"] : ["comfystream", "passthrough", "none"];
    const roundFigures: AudioModeFigures[] = [];
    for (const mode of order) {
      process.stderr.write(`audio ${mode} (round ${round}), ${options.seconds} s ... `);
      const infra = await bench.startInfra(1);
      const relay = bench.startRelay(0, infra, 512, 512, "transcode", ["--audio", mode]);
      await relay.connected;
      const output = collectOutput(`${infra.trickleBase}bench0-out`);
      const publishing = publishLive(`${infra.trickleBase}bench0`, segments);
      await sleep(3000);
      const before = bench.processCpu(relay.child.pid!);
      const sampledAt = performance.now();
      await sleep(Math.max(1000, (options.seconds - 5) * 1000));
      const after = bench.processCpu(relay.child.pid!);
      const elapsed = (performance.now() - sampledAt) / 1000;
      await publishing;
      const status = (await relay.finished) as unknown as AudioStatus;
      await sleep(500);
      output.close();
      await infra.stop();
      const sync = await measureAvSync(FFMPEG, output.bytes()).catch(() => undefined);
      const cpu = Math.round(((after.ticks - before.ticks) / 100 / elapsed) * 1000) / 10;
      const result: AudioModeFigures = {
        mode,
        round,
        cpuPercentOfOneCore: cpu,
        extraCpuPercentOfOneCore: null,
        videoLatencyMs: status.latencyMs,
        forwardHopMs: status.hopLatencyMs.forward,
        audio: {
          framesIn: status.audio?.frames.in ?? 0,
          framesOut: status.audio?.frames.out ?? 0,
          dropped: status.audio?.frames.dropped ?? 0,
          codecOut: status.audio?.codecOut ?? null,
        },
        avSync: {
          pairs: sync?.offsetsMs.length ?? 0,
          p50AbsMs: mode === "none" ? null : (sync?.p50AbsMs ?? null),
          p95AbsMs: mode === "none" ? null : (sync?.p95AbsMs ?? null),
        },
      };
      process.stderr.write(`CPU ${cpu} %, A/V p95 ${result.avSync.p95AbsMs} ms\n`);
      roundFigures.push(result);
    }
    const none = roundFigures.find((f) => f.mode === "none")!;
    for (const f of roundFigures) {
      if (f.mode !== "none") {
        f.extraCpuPercentOfOneCore = Math.round((f.cpuPercentOfOneCore - none.cpuPercentOfOneCore) * 10) / 10;
      }
    }
    figures.push(...roundFigures);
  }
  return figures;
}

export function audioMarkdown(report: {
  command: string;
  date: string;
  machine: unknown;
  figures: AudioModeFigures[];
}): string {
  const rows = report.figures.map(
    (f) =>
      `| ${f.round} | ${f.mode} | ${f.cpuPercentOfOneCore} | ${f.extraCpuPercentOfOneCore ?? "—"} | ` +
      `${f.videoLatencyMs.p50} / ${f.videoLatencyMs.p95} | ${f.forwardHopMs.p50} / ${f.forwardHopMs.p95} | ` +
      `${f.audio.framesIn}/${f.audio.framesOut}/${f.audio.dropped} (${f.audio.codecOut ?? "none"}) | ` +
      `${f.avSync.pairs ? `${f.avSync.p50AbsMs} / ${f.avSync.p95AbsMs} (${f.avSync.pairs})` : "—"} |`,
  );
  return (
    `# Relay audio benchmark (${report.date})\n\n` +
    `Machine: ${JSON.stringify(report.machine)}. Command: \`${report.command}\`.\n\n` +
    "One 512x512@30 transcode session, AAC 48 kHz stereo tone beeping with a white flash every second, " +
    "through the stand-in peer (echoes audio). CPU = the relay process and its ffmpeg children, % of one " +
    "core over the steady part; extra = minus `none` in the same round. Goals: extra ≤ 2 % (passthrough), " +
    "≤ 5 % (comfystream); A/V ≤ 20 / 40 ms.\n\n" +
    "| round | audio | CPU % | extra CPU % | video through peer p50/p95 ms | forward hop p50/p95 ms | audio in/out/dropped | beep − flash |abs| p50 / p95 ms (pairs) |\n" +
    "|---|---|---|---|---|---|---|---|\n" +
    rows.join("\n") +
    "\n"
  );
}
