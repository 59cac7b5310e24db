/**
 * Starvation run (issue 12): one 512x512 transcode session while CPU hogs (`nice`d busy loops, one
 * per core) run for the whole input. What it checks is the loss accounting, not speed: every input
 * frame must come out, be counted as dropped by policy, or be one the peer never returned (sent −
 * returned); anything else is an unexplained loss. Frames out are counted from outside, on the
 * output channel, not taken from the relay's own status.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { cpus } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { makeInputSegments } from "../session/relay-harness.js";
import { publishLive, videoPesStarts } from "./live-input.js";
import type { Infra, Relay } from "./relay-bench.js";

export interface StarvationFigures {
  seconds: number;
  hogs: number;
  hogNice: number;
  inputFramesPublished: number;
  outputFramesCounted: number;
  status: { in: number; sent: number; returned: number; out: number; dropped: number };
  notReturnedByPeer: number;
  unexplainedLosses: number;
  forwardHopMs: { p50: number | null; p95: number | null };
}

/** Counts the video frames (PES starts) written to an output channel, from its first segment. */
function countOutputFrames(url: string): { count(): number; close(): void } {
  const subscriber = new TrickleSubscriber(url, { startSeq: 0 });
  let frames = 0;
  void (async () => {
    for await (const segment of subscriber) {
      const parts: Buffer[] = [];
      for await (const chunk of segment.body) parts.push(chunk);
      const data = Buffer.concat(parts);
      const starts = videoPesStarts(data);
      // videoPesStarts answers [0] when there is none; a segment always starts with a frame.
      if (data.length > 0) frames += starts.length;
    }
  })().catch(() => undefined);
  return { count: () => frames, close: () => subscriber.close() };
}

function startHogs(count: number, niceness: number): ChildProcess[] {
  return Array.from({ length: count }, () =>
    spawn("nice", ["-n", String(niceness), process.execPath, "-e", "for (;;) {}"], { stdio: "ignore" }),
  );
}

export async function measureStarvation(
  options: { seconds: number; hogNice: number },
  bench: {
    startInfra(sessions: number): Promise<Infra>;
    startRelay(index: number, infra: Infra, width: number, height: number, mode: "transcode"): Relay;
  },
): Promise<StarvationFigures> {
  const { segments } = await makeInputSegments({ seconds: options.seconds, size: "512x512", bFrames: 2 });
  const infra = await bench.startInfra(1);
  const relay = bench.startRelay(0, infra, 512, 512, "transcode");
  await relay.connected;
  const output = countOutputFrames(`${infra.trickleBase}bench0-out`);
  const hogCount = cpus().length;
  const hogs = startHogs(hogCount, options.hogNice);
  let published = 0;
  try {
    await publishLive(`${infra.trickleBase}bench0`, segments, { onFrame: () => published++ });
  } finally {
    for (const hog of hogs) hog.kill("SIGKILL");
  }
  const final = await relay.finished;
  await sleep(1000); // the last segment's bytes reach the counter
  output.close();
  await infra.stop();
  const counted = output.count();
  const notReturned = final.frames.sent - final.frames.returned;
  return {
    seconds: options.seconds,
    hogs: hogCount,
    hogNice: options.hogNice,
    inputFramesPublished: published,
    outputFramesCounted: counted,
    status: final.frames,
    notReturnedByPeer: notReturned,
    unexplainedLosses: Math.max(0, published - counted - final.frames.dropped - notReturned),
    forwardHopMs: final.hopLatencyMs.forward,
  };
}
