/**
 * N 512x512 transcode sessions in one `trickle-relay serve` (the standalone service's form: one Node
 * process, an ffmpeg per session), against N passthrough stand-ins, each input streamed live. What a
 * session costs there: the service's CPU and memory (Node and the ffmpegs) divided by N, next to the
 * process-per-session figures of `--sessions-only` (the relay pod's form). Frames and end-to-end
 * latency per session are measured as there (the output channel from outside, the status for drops).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import { makeInputSegments } from "../session/relay-harness.js";
import {
  drainOutput,
  endToEndLatencies,
  latencySummary,
  publishLive,
  type PesArrival,
} from "./live-input.js";
import { startBenchServe } from "./startup-bench.js";
import { round } from "./results.js";
import type { Infra } from "./relay-bench.js";

const CLOCK_TICKS = 100;

export interface ServeSessionsDeps {
  startInfra(sessions: number): Promise<Infra>;
  processCpu(pid: number): { ticks: number };
  processMemory(pid: number, field: "VmRSS" | "Pss"): { node: number; ffmpeg: number; total: number };
  machineCpu(): { busy: number; total: number };
}

interface SessionView {
  webrtc_state?: string;
  frames?: { in: number; sent: number; returned: number; out: number; dropped: number };
}

export async function measureSessionsInOneServe(
  sessions: number,
  seconds: number,
  bFrames: number,
  deps: ServeSessionsDeps,
  nodeFlags: string[] = [],
) {
  const { segments } = await makeInputSegments({ seconds, size: "512x512", bFrames });
  const infra = await deps.startInfra(sessions);
  const service = await startBenchServe({
    extraArgs: ["--max-sessions", String(sessions)],
    nodeFlags,
  });
  const { api } = service;
  try {
    const rssIdle = deps.processMemory(service.pid, "VmRSS").node;
    const ids: string[] = [];
    for (let i = 0; i < sessions; i++) {
      const reply = (await fetch(`${api}/session/start`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          input_stream_url: `${infra.trickleBase}bench${i}`,
          comfystream_url: infra.standins[i],
          prompts: [PASSTHROUGH_WORKFLOW],
          width: 512,
          height: 512,
        }),
      }).then((r) => r.json())) as { session_id?: string; error?: string };
      if (!reply.session_id) throw new Error(`session start refused: ${reply.error}`);
      ids.push(reply.session_id);
    }
    const view = async (id: string) =>
      ((await (await fetch(`${api}/session/${id}/status`)).json()) as { session?: SessionView }).session;
    for (let wait = 0; wait < 300; wait++) {
      const states = await Promise.all(ids.map(async (id) => (await view(id))?.webrtc_state));
      if (states.every((s) => s === "connected")) break;
      await sleep(100);
    }
    const outputs = ids.map((_, i) =>
      drainOutput(`${infra.trickleBase}bench${i}-out`, { recordArrivals: true }),
    );
    const machineBefore = deps.machineCpu();
    const inputs = ids.map((): PesArrival[] => []);
    const publishing = ids.map((_, i) =>
      publishLive(`${infra.trickleBase}bench${i}`, segments, {
        onFrame: (pts, at) => pts !== undefined && inputs[i]!.push({ pts, at }),
      }),
    );
    await sleep(3000);
    const before = deps.processCpu(service.pid);
    const sampledAt = performance.now();
    await sleep(Math.max(1000, (seconds - 5) * 1000));
    const after = deps.processCpu(service.pid);
    const rss = deps.processMemory(service.pid, "VmRSS");
    const pss = deps.processMemory(service.pid, "Pss");
    const elapsed = (performance.now() - sampledAt) / 1000;
    const machineAfter = deps.machineCpu();
    await Promise.all(publishing);
    await sleep(1500); // the last frames through
    const finals = await Promise.all(ids.map(view));
    for (const o of outputs) o.close();
    const cpuPercent = ((after.ticks - before.ticks) / CLOCK_TICKS / elapsed) * 100;
    const perSession = finals.map((status, i) => ({
      frames: status?.frames,
      endToEndMs: latencySummary(endToEndLatencies(inputs[i]!, outputs[i]!.arrivals)),
      noDrops:
        status?.frames !== undefined &&
        status.frames.dropped === 0 &&
        status.frames.out >= status.frames.in * 0.98,
    }));
    const per = (mb: { node: number; ffmpeg: number; total: number }) => ({
      node: round(mb.node / sessions),
      ffmpeg: round(mb.ffmpeg / sessions),
      total: round(mb.total / sessions),
    });
    return {
      form: "one `trickle-relay serve`, an ffmpeg per session",
      size: "512x512",
      inputBFrames: bFrames,
      sessions,
      seconds,
      serviceRssIdleMb: rssIdle,
      serviceMb: { rss, pss },
      perSessionMb: { rss: per(rss), pss: per(pss) },
      cpuPercentOfOneCore: { service: round(cpuPercent), perSession: round(cpuPercent / sessions) },
      machineCpuPercent: round(
        ((machineAfter.busy - machineBefore.busy) / (machineAfter.total - machineBefore.total)) * 100,
      ),
      allWithoutDrops: perSession.every((s) => s.noDrops),
      perSession,
    };
  } finally {
    await service.stop();
    await infra.stop();
  }
}
