import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync, readdirSync, rmSync } from "node:fs";
import { readFile, readdir } from "node:fs/promises";
import { availableParallelism, loadavg } from "node:os";
import { resolve } from "node:path";
import type { Logger } from "../common/log.js";
import { TrickleServer } from "../trickle/server.js";
import { TricklePublisher } from "../trickle/publisher.js";
import { TrickleSubscriber } from "../trickle/subscriber.js";
import { resolveFfmpeg } from "../media/ffmpeg.js";
import { RelaySession } from "../session/relay-session.js";
import type { PeerHandover } from "../session/peer-handover.js";
import { buildSessionConfig, type SessionConfigInput } from "../session/config.js";
import { iceAddressesFromEnv } from "../webrtc/ice-config.js";
import type { SessionStatus } from "../session/types.js";
import { startTsStandin, type TsStandin } from "./standin-peer/standin.js";
import { SegmentedPublisher } from "../session/segmented-publisher.js";
import { onShutdownSignal } from "../common/cli-options.js";
import type { ProgressLine } from "../common/progress-line.js";
import { DemoTimeline, FrameStartScanner } from "./measure.js";
import { summaryLines } from "./summary.js";
import { BEEP_TONE_SOURCE, FLASH_FILTER, measureAvSync, type AvSyncFigures } from "./av-sync.js";
import { segmentFileName } from "../trickle/segment-files.js";

/** The synthetic input's keyframe interval; it is cut into input segments at each keyframe. */
const INPUT_KEYFRAME_INTERVAL_SEC = 1;

/** How long the input waits for the relay to reach the peer; after that it starts anyway. */
const PEER_CONNECT_WAIT_MS = 30_000;

/** Segment files of an earlier run (any number of digits), which must not mix with this run's. */
const SEGMENT_FILE = /^\d+\.ts$/;

/** What the demo command hands over: its own flags and the session flags it shares with `run`. */
export interface DemoOptions {
  /** How long the synthetic input runs, in seconds. */
  duration: number;
  /** Folder for the output segments. */
  out: string;
  /** A ComfyStream server to use instead of the stand-in peer. */
  comfystream?: string;
  /** The ffmpeg filter the stand-in peer applies to frames. */
  filter: string;
  session: Omit<SessionConfigInput, "id" | "inputUrl" | "comfystreamUrl">;
  /** A warm pool pod's warm-up: the session leaves its ComfyStream connection here at the end. */
  handover?: PeerHandover;
}

export async function runDemo(opts: DemoOptions, logger: Logger, progress: ProgressLine): Promise<number> {
  const say = (line: string) => progress.print(line);
  const ffmpeg = await resolveFfmpeg({ logger });
  const sessionInput = opts.session;
  const iceAddresses = sessionInput.iceAddresses?.length
    ? sessionInput.iceAddresses
    : iceAddressesFromEnv().length > 0
      ? iceAddressesFromEnv()
      : [process.env.TRICKLE_RELAY_NETNS === "1" ? "127.0.0.2" : "127.0.0.1"];
  const width = sessionInput.width ?? 512;
  const height = sessionInput.height ?? 512;
  const frameRate = sessionInput.frameRate ?? 30;
  const duration = opts.duration;
  const outDir = resolve(opts.out);
  mkdirSync(outDir, { recursive: true });
  for (const name of readdirSync(outDir)) if (SEGMENT_FILE.test(name)) rmSync(resolve(outDir, name));
  const timeline = new DemoTimeline();

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
  let comfystreamUrl = opts.comfystream;
  if (!comfystreamUrl) {
    standin = await startTsStandin({
      host: "127.0.0.1",
      port: 0,
      iceAddresses,
      filter: opts.filter,
      ffmpegPath: ffmpeg.path,
      logger,
    });
    comfystreamUrl = standin.url;
  }
  say(`trickle server   ${trickleBase}  (channels demo, demo-out, demo-control, demo-events)`);
  say(`ComfyStream      ${comfystreamUrl}${standin ? `  (stand-in peer, filter "${opts.filter}")` : ""}`);
  say(
    `input            ffmpeg testsrc ${width}x${height} @ ${frameRate} fps for ${duration} s ` +
      "(x264 zerolatency: no B-frames, a keyframe every 1 s) with a 440 Hz tone in AAC; " +
      "a flash and a beep every second",
  );
  say(`output segments  ${outDir}`);

  // Output reader: every processed segment into the folder.
  const outputSubscriber = new TrickleSubscriber(`${trickleBase}demo-out`, { startSeq: 0, logger });
  let outputSegments = 0;
  let outputBytes = 0;
  let firstSegmentFile: string | undefined;
  const outputDone = (async () => {
    for await (const segment of outputSubscriber) {
      const name = segmentFileName(segment.seq);
      firstSegmentFile ??= name;
      const file = createWriteStream(resolve(outDir, name));
      timeline.outputSegment();
      const frames = new FrameStartScanner((frame) => timeline.outputFrame(frame, performance.now()));
      for await (const chunk of segment.body) {
        frames.push(chunk);
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
    { logger, ...(opts.handover ? { handover: opts.handover } : {}) },
  );
  await session.start();
  // The relay drops input segments that arrive before it has reached the peer; starting the input
  // once it has keeps the first second of the demo's video.
  await untilConnected(session, PEER_CONNECT_WAIT_MS);

  // Synthetic input: a test pattern with a running clock and a tone, encoded as a live encoder would (zerolatency:
  // no B-frames to reorder, no lookahead held back and flushed in a burst at the end) and cut at
  // keyframes.
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
      // Sound: a tone that beeps, and a white flash in the picture, at every whole second, so
      // lip-sync can be measured on the output (av-sync.ts).
      ...["-re", "-f", "lavfi", "-i", BEEP_TONE_SOURCE],
      "-t",
      String(duration),
      ...["-vf", FLASH_FILTER],
      ...["-c:a", "aac", "-b:a", "128k", "-ac", "2"],
      "-c:v",
      "libx264",
      "-preset",
      "veryfast",
      "-tune",
      "zerolatency",
      "-g",
      String(Math.round(frameRate * INPUT_KEYFRAME_INTERVAL_SEC)),
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
    segmentDurationSec: INPUT_KEYFRAME_INTERVAL_SEC,
    segmentBytes: 0,
  });

  let interrupted = false;
  onShutdownSignal(() => {
    interrupted = true;
    source.kill("SIGTERM");
  });

  const started = Date.now();
  const progressTimer = setInterval(
    () => progress.update(progressText(session.status(), started, outputSegments)),
    1000,
  );
  const controlPublisher = new TricklePublisher(`${trickleBase}demo-control`, {
    contentType: "application/json",
    logger,
  });
  const promptTimer = setTimeout(
    () => void sendDemoPromptUpdate(controlPublisher, session.config.prompts, logger),
    Math.min(5, duration / 2) * 1000,
  );

  const inputFrames = new FrameStartScanner((frame) => timeline.inputFrame(frame.pts, performance.now()));
  await pumpSource(source, segmented, inputFrames);
  await segmented.end();
  await inputPublisher.close(); // end of the input stream: the session completes and closes its output
  await Promise.race([session.whenEnded(), new Promise((r) => setTimeout(r, 15_000))]);
  if (!isEnded(session.status())) await session.stop();
  clearInterval(progressTimer);
  clearTimeout(promptTimer);
  await Promise.race([outputDone, new Promise((r) => setTimeout(r, 5000))]);
  outputSubscriber.close();
  await controlPublisher.close();
  await standin?.close();
  await trickle.close();

  const final = session.status();
  const avSync = await measureOutputAvSync(ffmpeg.path, outDir, logger);
  progress.finish();
  say("");
  say(interrupted ? "demo interrupted" : "demo finished");
  for (const line of summaryLines(final, timeline.measurements(), {
    outDir,
    outputSegmentsWritten: outputSegments,
    outputBytes,
    inputKeyframeIntervalSec: INPUT_KEYFRAME_INTERVAL_SEC,
    segmentDurationSec: session.config.segmentDurationSec,
    interrupted,
    standin: standin !== undefined,
    loadAverage: loadavg()[0]!,
    cpus: availableParallelism(),
    avSync,
  }))
    say(`  ${line}`);
  const first = resolve(outDir, firstSegmentFile ?? segmentFileName(0));
  say(`  play it:         ffplay ${first}   (or: cat ${outDir}/*.ts | ffplay -)`);
  return final.state === "completed" && outputSegments > 0 ? 0 : 1;
}

/** Lip-sync of what came out (flash vs beep), or undefined when it cannot be measured. */
async function measureOutputAvSync(
  ffmpegPath: string,
  outDir: string,
  logger: Logger,
): Promise<AvSyncFigures | undefined> {
  try {
    const files = (await readdir(outDir)).filter((name) => name.endsWith(".ts")).sort();
    if (files.length === 0) return undefined;
    const output = Buffer.concat(await Promise.all(files.map((name) => readFile(resolve(outDir, name)))));
    return await measureAvSync(ffmpegPath, output);
  } catch (err) {
    logger.warn({ err: (err as Error).message }, "A/V offset not measured");
    return undefined;
  }
}

async function pumpSource(
  source: ChildProcess,
  segmented: SegmentedPublisher,
  frames: FrameStartScanner,
): Promise<void> {
  for await (const chunk of source.stdout! as AsyncIterable<Buffer>) {
    frames.push(chunk);
    await segmented.push(chunk);
  }
}

/**
 * Halfway a prompt update goes through the control channel, as a gateway would send it: the
 * session's own workflow again, so that the update shows without changing what --prompts asked for.
 */
async function sendDemoPromptUpdate(
  control: TricklePublisher,
  prompts: unknown,
  logger: Logger,
): Promise<void> {
  try {
    await control.start();
    await control.writeSegment(Buffer.from(JSON.stringify({ prompts })));
  } catch (err) {
    logger.warn({ err: (err as Error).message }, "demo prompt update not sent");
  }
}

async function untilConnected(session: RelaySession, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const status = session.status();
    if (status.webrtcState === "connected" || isEnded(status)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function isEnded(status: SessionStatus): boolean {
  return status.state === "completed" || status.state === "failed" || status.state === "stopped";
}

function progressText(status: SessionStatus, started: number, outputSegments: number): string {
  const t = Math.round((Date.now() - started) / 1000);
  const q = status.queues;
  return (
    `t=${t}s ${status.state}/${status.webrtcState} | fps in ${status.fps.input} out ${status.fps.output} | ` +
    `peer latency p50 ${status.latencyMs.p50 ?? "-"} p95 ${status.latencyMs.p95 ?? "-"} ms | ` +
    `queues ${q.decodedFrames.size}/${q.processedFrames.size}/${q.outputSegments.size} | ` +
    `frames in ${status.frames.in} out ${status.frames.out} | segments out ${outputSegments}`
  );
}
