/**
 * Start-up figure of the relay benchmark (issue 12, "first frame fast"): how long from starting a
 * relay (`trickle-relay run`, as a pod starts it) until its first output frame can be read from the
 * output channel, while the input already flows live and the peer is warm. The clock starts at the
 * process spawn, so Node's own start-up counts, as it does for a pod.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { TsDemuxer } from "../../relay-pod/src/media/ts-demux.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { makeInputSegments } from "../session/relay-harness.js";
import { publishLive } from "./live-input.js";
import { round } from "./results.js";
import type { Infra, Relay } from "./relay-bench.js";

export interface StartUpFigures {
  runs: number;
  /** From spawn to "connected to ComfyStream" in the relay's log, ms. */
  connectedMs: { p50: number | null; max: number | null };
  /** From spawn to the first output frame read back, ms. */
  firstOutputFrameMs: { p50: number | null; max: number | null };
  each: Array<{ connectedMs: number | null; firstOutputFrameMs: number | null }>;
}

export interface StartUpDeps {
  startInfra(sessions: number): Promise<Infra>;
  startRelay(index: number, infra: Infra, width: number, height: number, mode: "transcode"): Relay;
}

/** `runs` relays started one after another, each a second or two into a live input. */
export async function measureStartUp(runs: number, deps: StartUpDeps): Promise<StartUpFigures> {
  process.stderr.write(`start-up: ${runs} runs, relay started 2-3 s into a live 512x512@30 input ... `);
  const { segments } = await makeInputSegments({ seconds: 8, size: "512x512", bFrames: 0 });
  const each: StartUpFigures["each"] = [];
  for (let run = 0; run < runs; run++) {
    const infra = await deps.startInfra(1);
    const publishing = publishLive(`${infra.trickleBase}bench0`, segments);
    // Start at a different point of the input's 1 s GOP each run.
    await sleep(2000 + (run * 1000) / runs);
    let firstOutputAt: number | undefined;
    const output = new TrickleSubscriber(`${infra.trickleBase}bench0-out`, { startSeq: 0 });
    void (async () => {
      for await (const segment of output) {
        const demuxer = new TsDemuxer({ onAccessUnit: () => (firstOutputAt ??= performance.now()) });
        for await (const chunk of segment.body) demuxer.push(chunk);
        demuxer.flush();
      }
    })().catch(() => undefined);
    const spawnedAt = performance.now();
    const relay = deps.startRelay(0, infra, 512, 512, "transcode");
    let connectedAt: number | undefined;
    void relay.connected.then(() => (connectedAt = performance.now()));
    const deadline = spawnedAt + 10_000;
    while (firstOutputAt === undefined && performance.now() < deadline) await sleep(10);
    each.push({
      connectedMs: connectedAt === undefined ? null : round(connectedAt - spawnedAt),
      firstOutputFrameMs: firstOutputAt === undefined ? null : round(firstOutputAt - spawnedAt),
    });
    relay.child.kill("SIGTERM");
    await relay.finished.catch(() => undefined);
    output.close();
    await publishing.catch(() => undefined);
    await infra.stop();
  }
  const figures = (values: Array<number | null>) => {
    const known = values.filter((v): v is number => v !== null).sort((a, b) => a - b);
    return known.length === 0
      ? { p50: null, max: null }
      : { p50: known[Math.floor((known.length - 1) / 2)]!, max: known.at(-1)! };
  };
  const result = {
    runs,
    connectedMs: figures(each.map((e) => e.connectedMs)),
    firstOutputFrameMs: figures(each.map((e) => e.firstOutputFrameMs)),
    each,
  };
  process.stderr.write(
    `connected p50 ${result.connectedMs.p50} ms, first output frame p50 ${result.firstOutputFrameMs.p50} ms ` +
      `(max ${result.firstOutputFrameMs.max})\n`,
  );
  return result;
}
