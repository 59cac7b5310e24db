/**
 * Start-up figure of the relay benchmark (issue 12, "first frame fast"): how long from starting a
 * relay (`trickle-relay run`, as a pod starts it) until its first output frame can be read from the
 * output channel, while the input already flows live and the peer is warm. The clock starts at the
 * process spawn, so Node's own start-up counts, as it does for a pod. The same through the
 * standalone service: from `POST /session/start` on a running `trickle-relay serve` (its modules
 * loaded, as a warm pool pod's are) to the first output frame.
 */
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { makeInputSegments } from "../session/relay-harness.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import { publishLive } from "./live-input.js";
import { FrameStartScanner } from "../../relay-pod/src/demo/measure.js";
import { round } from "./results.js";
import type { Infra, Relay } from "./relay-bench.js";

export interface StartUpFigures {
  runs: number;
  /** From spawn to "connected to ComfyStream" in the relay's log, ms. */
  connectedMs: { p50: number | null; max: number | null };
  /** From spawn to the first output frame starting to arrive, ms. */
  firstOutputFrameMs: { p50: number | null; max: number | null };
  each: Array<{ connectedMs: number | null; firstOutputFrameMs: number | null }>;
  /** From `POST /session/start` on a running `serve` to the first output frame starting to arrive, ms. */
  fromSessionStartMs?: { p50: number | null; max: number | null; each: Array<number | null> };
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
    const output = watchFirstOutputFrame(`${infra.trickleBase}bench0-out`);
    const spawnedAt = performance.now();
    const relay = deps.startRelay(0, infra, 512, 512, "transcode");
    let connectedAt: number | undefined;
    void relay.connected.then(() => (connectedAt = performance.now()));
    const deadline = spawnedAt + 10_000;
    while (output.firstAt === undefined && performance.now() < deadline) await sleep(10);
    const firstOutputAt = output.firstAt;
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
  const fromSessionStart = await measureFromSessionStart(runs, segments, deps);
  const result = {
    runs,
    connectedMs: figures(each.map((e) => e.connectedMs)),
    firstOutputFrameMs: figures(each.map((e) => e.firstOutputFrameMs)),
    each,
    fromSessionStartMs: { ...figures(fromSessionStart), each: fromSessionStart },
  };
  process.stderr.write(
    `connected p50 ${result.connectedMs.p50} ms, first output frame p50 ${result.firstOutputFrameMs.p50} ms ` +
      `(max ${result.firstOutputFrameMs.max}); from POST /session/start on a running service p50 ` +
      `${result.fromSessionStartMs.p50} ms (max ${result.fromSessionStartMs.max})\n`,
  );
  return result;
}

function figures(values: Array<number | null>): { p50: number | null; max: number | null } {
  const known = values.filter((v): v is number => v !== null).sort((a, b) => a - b);
  return known.length === 0
    ? { p50: null, max: null }
    : { p50: known[Math.floor((known.length - 1) / 2)]!, max: known.at(-1)! };
}

/** When the first video PES of an output channel starts to arrive. */
function watchFirstOutputFrame(url: string): { readonly firstAt: number | undefined; close(): void } {
  let firstAt: number | undefined;
  const subscriber = new TrickleSubscriber(url, { startSeq: 0 });
  void (async () => {
    for await (const segment of subscriber) {
      const scanner = new FrameStartScanner(() => (firstAt ??= performance.now()));
      for await (const chunk of segment.body) scanner.push(chunk);
    }
  })().catch(() => undefined);
  return {
    get firstAt() {
      return firstAt;
    },
    close: () => subscriber.close(),
  };
}

/**
 * `runs` sessions started one after another through `POST /session/start` on one running
 * `trickle-relay serve`, each into a live input a second or two old, with a fresh warm stand-in.
 */
async function measureFromSessionStart(
  runs: number,
  segments: Buffer[],
  deps: StartUpDeps,
): Promise<Array<number | null>> {
  const service = await startBenchServe();
  const { api } = service;
  const each: Array<number | null> = [];
  try {
    for (let run = 0; run < runs; run++) {
      const infra = await deps.startInfra(1);
      try {
        const publishing = publishLive(`${infra.trickleBase}bench0`, segments);
        await sleep(2000 + (run * 1000) / runs);
        const output = watchFirstOutputFrame(`${infra.trickleBase}bench0-out`);
        const startedAt = performance.now();
        const reply = (await fetch(`${api}/session/start`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            input_stream_url: `${infra.trickleBase}bench0`,
            comfystream_url: infra.standins[0],
            prompts: [PASSTHROUGH_WORKFLOW],
            width: 512,
            height: 512,
          }),
        }).then((r) => r.json())) as { session_id?: string; error?: string };
        if (!reply.session_id) throw new Error(`session start refused: ${reply.error}`);
        while (output.firstAt === undefined && performance.now() < startedAt + 10_000) await sleep(10);
        each.push(output.firstAt === undefined ? null : round(output.firstAt - startedAt));
        await fetch(`${api}/session/${reply.session_id}`, { method: "DELETE" });
        output.close();
        await publishing.catch(() => undefined);
      } finally {
        await infra.stop();
      }
    }
  } finally {
    await service.stop();
  }
  return each;
}

/**
 * A `trickle-relay serve` on a free loopback port for a benchmark (ICE on 127.0.0.2, no start rate
 * limit, `extraArgs` after), once its /health answers (or 10 s have passed: a service that does not
 * come up fails the bench's first request).
 */
export async function startBenchServe(
  options: { extraArgs?: string[]; nodeFlags?: string[] } = {},
): Promise<{ api: string; pid: number; stop(): Promise<void> }> {
  const port = await freePort();
  const cli = fileURLToPath(new URL("../../relay-pod/src/cli.js", import.meta.url));
  const service = spawn(
    process.execPath,
    [
      ...(options.nodeFlags ?? []),
      cli,
      "serve",
      ...["--host", "127.0.0.1", "--port", String(port), "--ice-address", "127.0.0.2", "--start-rate", "0"],
      ...(options.extraArgs ?? []),
    ],
    // Its log would drown the bench's own lines.
    { stdio: ["ignore", "ignore", "ignore"] },
  );
  const stop = async () => {
    service.kill("SIGTERM");
    await new Promise((resolve) => service.once("exit", resolve));
  };
  const api = `http://127.0.0.1:${port}`;
  for (let wait = 0; wait < 100; wait++) {
    const up = await fetch(`${api}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (up) break;
    await sleep(100);
  }
  return { api, pid: service.pid!, stop };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
