import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { createLogger } from "../log.js";
import { TrickleServer } from "../trickle/server.js";
import { TricklePublisher } from "../trickle/publisher.js";
import { TrickleSubscriber } from "../trickle/subscriber.js";
import { resolveFfmpeg } from "../media/ffmpeg.js";
import { RelaySession } from "../session/relay-session.js";
import { buildSessionConfig } from "../session/config.js";
import { iceAddressesFromEnv } from "../webrtc/ice-config.js";
import type { SessionStatus } from "../session/types.js";
import { startTsStandin, type TsStandin } from "../../../test/peers/ts-standin/standin.js";
import { SegmentedPublisher } from "./segmented-publisher.js";
import { addSessionOptions, sessionInputFromOptions } from "./run.js";
import { formatBytes } from "./trickle-client.js";
import { onShutdownSignal, parseHttpUrl, parsePositiveNumber } from "./options.js";

export function registerDemo(program: Command): void {
  const command = program
    .command("demo")
    .description(
      "One command, everything local: a trickle server, a synthetic input (ffmpeg test pattern with a " +
        "running clock), a stand-in ComfyStream peer (or --comfystream URL), one relay session. Shows live " +
        "progress, writes the output segments to a folder and prints a summary.",
    )
    .option("--duration <seconds>", "how long the synthetic input runs", parsePositiveNumber, 20)
    .option("--out <dir>", "folder for the output segments", "demo-output")
    .option("--comfystream <url>", "use this ComfyStream server instead of the stand-in peer", parseHttpUrl)
    .option("--filter <ffmpeg-filter>", "what the stand-in peer does to frames", "negate");
  addSessionOptions(command);
  command.action(async (opts) => {
    const logger = createLogger("trickle-relay-demo", {
      level: process.env.TRICKLE_RELAY_LOG_LEVEL ?? "warn",
    });
    const code = await runDemo(opts, logger);
    // Everything is closed by now; a WebRTC library socket must not keep a finished demo alive.
    logger.flush();
    process.exit(code);
  });
}

async function runDemo(
  opts: Record<string, unknown>,
  logger: ReturnType<typeof createLogger>,
): Promise<number> {
  const say = (line: string) => process.stderr.write(`${line}\n`);
  const ffmpeg = await resolveFfmpeg({ logger });
  const sessionInput = sessionInputFromOptions(opts);
  const iceAddresses = sessionInput.iceAddresses?.length
    ? sessionInput.iceAddresses
    : iceAddressesFromEnv().length > 0
      ? iceAddressesFromEnv()
      : [process.env.TRICKLE_RELAY_NETNS === "1" ? "127.0.0.2" : "127.0.0.1"];
  const width = sessionInput.width ?? 512;
  const height = sessionInput.height ?? 512;
  const frameRate = sessionInput.frameRate ?? 30;
  const duration = opts.duration as number;
  const outDir = resolve(opts.out as string);
  mkdirSync(outDir, { recursive: true });

  const trickle = new TrickleServer({
    channels: [
      { name: "demo", mimeType: "video/MP2T" },
      { name: "demo-out", mimeType: "video/MP2T" },
      { name: "demo-control", mimeType: "application/json" },
      { name: "demo-events", mimeType: "application/json" },
    ],
    logger,
  });
  const { url: trickleBase } = await trickle.listen(0, "127.0.0.1");
  let standin: TsStandin | undefined;
  let comfystreamUrl = opts.comfystream as string | undefined;
  if (!comfystreamUrl) {
    standin = await startTsStandin({
      host: "127.0.0.1",
      port: 0,
      iceAddresses,
      filter: opts.filter as string,
      ffmpegPath: ffmpeg.path,
      logger,
    });
    comfystreamUrl = standin.url;
  }
  say(`trickle server   ${trickleBase}  (channels demo, demo-out, demo-control, demo-events)`);
  say(
    `ComfyStream      ${comfystreamUrl}${standin ? `  (stand-in peer, filter "${opts.filter as string}")` : ""}`,
  );
  say(`input            ffmpeg testsrc ${width}x${height} @ ${frameRate} fps for ${duration} s`);
  say(`output segments  ${outDir}`);

  // Output reader: every processed segment into the folder.
  const outputSubscriber = new TrickleSubscriber(`${trickleBase}demo-out`, { startSeq: 0, logger });
  let outputSegments = 0;
  let outputBytes = 0;
  const outputDone = (async () => {
    for await (const segment of outputSubscriber) {
      const file = createWriteStream(resolve(outDir, `${segment.seq}.ts`));
      for await (const chunk of segment.body) {
        outputBytes += chunk.length;
        file.write(chunk);
      }
      await new Promise((r) => file.end(r));
      outputSegments++;
    }
  })().catch((err: unknown) => logger.warn({ err: (err as Error).message }, "output reader stopped"));

  const session = new RelaySession(
    buildSessionConfig({
      ...sessionInput,
      iceAddresses,
      id: "demo",
      inputUrl: `${trickleBase}demo`,
      outputUrl: `${trickleBase}demo-out`,
      controlUrl: `${trickleBase}demo-control`,
      eventsUrl: `${trickleBase}demo-events`,
      comfystreamUrl,
    }),
    { logger },
  );
  await session.start();

  // Synthetic input: a test pattern with a running clock, encoded live and cut at keyframes.
  const source = spawn(
    ffmpeg.path,
    [
      "-hide_banner",
      "-loglevel",
      "error",
      "-re",
      "-f",
      "lavfi",
      "-i",
      `testsrc=size=${width}x${height}:rate=${frameRate}`,
      "-t",
      String(duration),
      "-c:v",
      "libx264",
      "-preset",
      "veryfast",
      "-g",
      String(Math.round(frameRate)),
      "-f",
      "mpegts",
      "pipe:1",
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const inputPublisher = new TricklePublisher(`${trickleBase}demo`, { contentType: "video/MP2T", logger });
  await inputPublisher.start();
  const segmented = new SegmentedPublisher(inputPublisher, {
    mpegTs: true,
    segmentDurationSec: 1,
    segmentBytes: 0,
  });

  let interrupted = false;
  onShutdownSignal(() => {
    interrupted = true;
    source.kill("SIGTERM");
  });

  const started = Date.now();
  const progress = setInterval(() => writeProgress(session.status(), started, outputSegments), 1000);
  const controlPublisher = new TricklePublisher(`${trickleBase}demo-control`, {
    contentType: "application/json",
    logger,
  });
  const promptTimer = setTimeout(
    () => void sendDemoPromptUpdate(controlPublisher, logger),
    Math.min(5, duration / 2) * 1000,
  );

  await pumpSource(source, segmented);
  await segmented.end();
  await inputPublisher.close(); // end of the input stream: the session completes and closes its output
  await Promise.race([session.whenEnded(), new Promise((r) => setTimeout(r, 15_000))]);
  if (!isEnded(session.status())) await session.stop();
  clearInterval(progress);
  clearTimeout(promptTimer);
  await Promise.race([outputDone, new Promise((r) => setTimeout(r, 5000))]);
  outputSubscriber.close();
  await controlPublisher.close();
  await standin?.close();
  await trickle.close();

  const final = session.status();
  process.stderr.write("\n");
  say(interrupted ? "demo interrupted" : "demo finished");
  say(
    `  session state    ${final.state}${final.lastError ? ` (last error: ${final.lastError.reason}: ${final.lastError.message})` : ""}`,
  );
  say(
    `  frames           in ${final.frames.in}, sent ${final.frames.sent}, returned ${final.frames.returned}, out ${final.frames.out}, dropped ${final.frames.dropped}`,
  );
  say(
    `  segments         in ${final.segments.in}, out ${final.segments.out}; ${outputSegments} written to ${outDir} (${formatBytes(outputBytes)})`,
  );
  say(
    `  latency via peer p50 ${final.latencyMs.p50 ?? "-"} ms, p95 ${final.latencyMs.p95 ?? "-"} ms (${final.latencyMs.samples} frames)`,
  );
  say(`  reconnects       ${final.reconnects}; prompts generation ${final.promptsGeneration}`);
  say(`  play it:         ffplay ${outDir}/0.ts   (or: cat ${outDir}/*.ts | ffplay -)`);
  return final.state === "completed" && outputSegments > 0 ? 0 : 1;
}

async function pumpSource(source: ChildProcess, segmented: SegmentedPublisher): Promise<void> {
  for await (const chunk of source.stdout! as AsyncIterable<Buffer>) await segmented.push(chunk);
}

/** Halfway a prompt update goes through the control channel, as a gateway would send it. */
async function sendDemoPromptUpdate(
  control: TricklePublisher,
  logger: ReturnType<typeof createLogger>,
): Promise<void> {
  try {
    await control.start();
    const workflow = {
      "1": { inputs: { images: ["2", 0] }, class_type: "SaveTensor" },
      "2": { inputs: {}, class_type: "LoadTensor" },
    };
    await control.writeSegment(Buffer.from(JSON.stringify({ prompts: [workflow] })));
  } catch (err) {
    logger.warn({ err: (err as Error).message }, "demo prompt update not sent");
  }
}

function isEnded(status: SessionStatus): boolean {
  return status.state === "completed" || status.state === "failed" || status.state === "stopped";
}

function writeProgress(status: SessionStatus, started: number, outputSegments: number): void {
  const t = Math.round((Date.now() - started) / 1000);
  const q = status.queues;
  const line =
    `t=${t}s ${status.state}/${status.webrtcState} | fps in ${status.fps.input} out ${status.fps.output} | ` +
    `latency p50 ${status.latencyMs.p50 ?? "-"} p95 ${status.latencyMs.p95 ?? "-"} ms | ` +
    `queues ${q.decodedFrames.size}/${q.processedFrames.size}/${q.outputSegments.size} | ` +
    `frames in ${status.frames.in} out ${status.frames.out} | segments out ${outputSegments}`;
  if (process.stderr.isTTY)
    process.stderr.write(
      `\r${line.padEnd(process.stderr.columns ?? 120).slice(0, (process.stderr.columns ?? 200) - 1)}`,
    );
  else process.stderr.write(`${line}\n`);
}
