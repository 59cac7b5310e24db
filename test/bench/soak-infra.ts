/**
 * What a soak run's sessions talk to, in a process of its own so that the soak process measures
 * only the relay: a trickle server, one TS stand-in ComfyStream per session (passthrough), one live
 * synthetic input per session (ffmpeg -re test pattern, cut at keyframes into trickle segments)
 * and a reader that drains each output channel. Started by soak.ts with `--infra N --seconds S`;
 * answers with the URLs over IPC and stops on SIGTERM.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { parseArgs } from "node:util";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { SegmentedPublisher } from "../../relay-pod/src/session/segmented-publisher.js";
import { startTsStandin, type TsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { resolveFfmpeg } from "../../relay-pod/src/media/ffmpeg-binary.js";
import { drainOutput } from "./live-input.js";

export interface SoakInfraInfo {
  trickleBase: string;
  standins: string[];
}

const SIZE = "512x512";

/** A live encoder: test pattern at real time, H.264 without B-frames, 1 s GOP, into trickle. */
function startInput(
  ffmpegPath: string,
  url: string,
  seconds: number,
): { child: ChildProcess; done: Promise<void> } {
  const child = spawn(
    ffmpegPath,
    [
      "-hide_banner",
      "-loglevel",
      "error",
      "-re",
      "-f",
      "lavfi",
      "-i",
      `testsrc=size=${SIZE}:rate=30`,
      "-t",
      String(seconds),
      "-c:v",
      "libx264",
      "-preset",
      "ultrafast",
      "-tune",
      "zerolatency",
      "-g",
      "30",
      "-pix_fmt",
      "yuv420p",
      "-f",
      "mpegts",
      "pipe:1",
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const publisher = new TricklePublisher(url, { contentType: "video/MP2T" });
  const segmented = new SegmentedPublisher(publisher, {
    mpegTs: true,
    segmentDurationSec: 1,
    segmentBytes: 0,
  });
  const done = (async () => {
    for await (const chunk of child.stdout! as AsyncIterable<Buffer>) await segmented.push(chunk);
    await segmented.end();
    await publisher.close();
  })().catch((err: unknown) => {
    process.stderr.write(`soak input ${url}: ${(err as Error).message}\n`);
  });
  return { child, done };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { infra: { type: "string" }, seconds: { type: "string" } },
  });
  const sessions = Number(values.infra);
  const seconds = Number(values.seconds);
  const trickle = new TrickleServer({ autocreate: true });
  const { url } = await trickle.listen(0, "127.0.0.1");
  const standins: TsStandin[] = [];
  for (let i = 0; i < sessions; i++) {
    trickle.createChannel(`soak${i}`, "video/MP2T");
    trickle.createChannel(`soak${i}-out`, "video/MP2T");
    standins.push(
      await startTsStandin({ host: "127.0.0.1", port: 0, iceAddresses: ["127.0.0.2"], mode: "passthrough" }),
    );
  }
  const outputs = Array.from({ length: sessions }, (_, i) => drainOutput(`${url}soak${i}-out`));
  const ffmpeg = await resolveFfmpeg({});
  const inputs: Array<{ child: ChildProcess; done: Promise<void> }> = [];
  process.on("message", (message) => {
    if (message === "start-inputs") {
      for (let i = 0; i < sessions; i++) inputs.push(startInput(ffmpeg.path, `${url}soak${i}`, seconds));
    }
  });
  process.once("SIGTERM", async () => {
    for (const input of inputs) input.child.kill("SIGKILL");
    for (const output of outputs) output.close();
    await Promise.all(standins.map((s) => s.close()));
    await trickle.close();
    process.exit(0);
  });
  process.send!({ trickleBase: url, standins: standins.map((s) => s.url) } satisfies SoakInfraInfo);
}

await main();
