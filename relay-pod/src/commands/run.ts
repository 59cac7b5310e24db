import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { Option, type Command } from "commander";
import { createLogger, type Logger } from "../log.js";
import { RelaySession } from "../session/relay-session.js";
import { buildSessionConfig, type SessionConfigInput } from "../session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../session/default-workflow.js";
import type { RelayMode, SessionStatus } from "../session/types.js";
import {
  collect,
  onShutdownSignal,
  parseDimension,
  parseHttpUrl,
  parsePositiveInteger,
  parsePositiveNumber,
} from "./options.js";

/** Options shared by `run` and `demo`: what shapes one relay session. */
export function addSessionOptions(command: Command): Command {
  return command
    .option("--width <px>", "width of the frames sent to ComfyStream", parseDimension, 512)
    .option("--height <px>", "height of the frames sent to ComfyStream", parseDimension, 512)
    .option("--frame-rate <fps>", "highest frame rate sent to ComfyStream", parsePositiveNumber, 30)
    .option("--prompts <file>", "JSON file with the ComfyUI API-format workflow(s) (default: passthrough)")
    .addOption(
      new Option(
        "--mode <mode>",
        "transcode (ffmpeg: any input, scaled and rate-capped) or passthrough (input H.264 sent as is: lower latency and memory, no scaling)",
      )
        .choices(["transcode", "passthrough"])
        .default("transcode"),
    )
    .option(
      "--segment-duration <seconds>",
      "shortest output segment (cut at the next IDR)",
      parsePositiveNumber,
      1,
    )
    .option(
      "--ice-address <addr>",
      "address to gather WebRTC candidates on (repeatable; default $TRICKLE_RELAY_ICE_ADDRESSES)",
      collect,
      [],
    )
    .option("--queue-decoded-frames <n>", "capacity of the decoded-frames queue", parsePositiveInteger, 100)
    .option(
      "--queue-processed-frames <n>",
      "capacity of the processed-frames queue",
      parsePositiveInteger,
      100,
    )
    .option("--queue-output-segments <n>", "capacity of the output-segments queue", parsePositiveInteger, 50)
    .option("--insecure", "do not verify trickle servers' TLS certificates", false);
}

export function registerRun(program: Command): void {
  const command = program
    .command("run")
    .description(
      "Run one relay session in the foreground: trickle input → ComfyStream (WebRTC) → trickle output. " +
        "SIGTERM or Ctrl-C stops it gracefully.",
    )
    .requiredOption("--input <url>", "trickle input channel URL", parseHttpUrl)
    .requiredOption("--comfystream <url>", "ComfyStream server base URL (POST {url}/offer)", parseHttpUrl)
    .option("--output <url>", "trickle output channel URL (default: input URL + -out)", parseHttpUrl)
    .option("--control <url>", "trickle control channel URL (prompt updates)", parseHttpUrl)
    .option("--events <url>", "trickle events channel URL (status every 10 s)", parseHttpUrl)
    .option("--id <id>", "session id used in logs and metrics (default: random)");
  addSessionOptions(command);
  command.addOption(
    new Option("--status-interval <seconds>", "log a status line this often")
      .default(10)
      .argParser(parsePositiveNumber),
  );
  command.action(async (opts) => {
    const logger = createLogger("trickle-relay");
    const session = new RelaySession(
      buildSessionConfig({
        ...sessionInputFromOptions(opts),
        id: (opts.id as string | undefined) ?? randomUUID(),
        inputUrl: opts.input as string,
        comfystreamUrl: opts.comfystream as string,
        outputUrl: opts.output as string | undefined,
        controlUrl: opts.control as string | undefined,
        eventsUrl: opts.events as string | undefined,
      }),
      { logger },
    );
    const exitCode = await runToEnd(session, logger, (opts.statusInterval as number) * 1000);
    process.exitCode = exitCode;
  });
}

/** Runs a session until it ends; returns the process exit code (0 completed/stopped, 1 failed). */
export async function runToEnd(
  session: RelaySession,
  logger: Logger,
  statusIntervalMs: number,
): Promise<number> {
  onShutdownSignal(async (signal) => {
    logger.info({ signal }, "stopping");
    await session.stop();
  });
  const timer = setInterval(
    () => logger.info({ status: summary(session.status()) }, "status"),
    statusIntervalMs,
  );
  timer.unref();
  try {
    await session.start();
  } catch (err) {
    logger.error({ err: (err as Error).message }, "relay session could not start");
  }
  await session.whenEnded();
  clearInterval(timer);
  const final = session.status();
  if (final.state === "failed") {
    process.stderr.write(`relay session failed: ${final.lastError?.reason}: ${final.lastError?.message}\n`);
    return 1;
  }
  return 0;
}

export function summary(status: SessionStatus): Record<string, unknown> {
  return {
    state: status.state,
    webrtc: status.webrtcState,
    fpsIn: status.fps.input,
    fpsOut: status.fps.output,
    frames: status.frames,
    segments: status.segments,
    latencyMs: status.latencyMs,
    hopLatencyMs: status.hopLatencyMs,
    queues: {
      decoded: status.queues.decodedFrames.size,
      processed: status.queues.processedFrames.size,
      segments: status.queues.outputSegments.size,
    },
    reconnects: status.reconnects,
  };
}

export function sessionInputFromOptions(
  opts: Record<string, unknown>,
): Omit<SessionConfigInput, "id" | "inputUrl" | "comfystreamUrl"> {
  return {
    prompts: opts.prompts ? readPromptsFile(opts.prompts as string) : [PASSTHROUGH_WORKFLOW],
    mode: opts.mode as RelayMode,
    width: opts.width as number,
    height: opts.height as number,
    frameRate: opts.frameRate as number,
    segmentDurationSec: opts.segmentDuration as number,
    iceAddresses: opts.iceAddress as string[],
    insecureTls: opts.insecure as boolean,
    queueCapacities: {
      decodedFrames: opts.queueDecodedFrames as number,
      processedFrames: opts.queueProcessedFrames as number,
      outputSegments: opts.queueOutputSegments as number,
    },
  };
}

function readPromptsFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`cannot read the prompts file ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`the prompts file ${path} is not JSON: ${(err as Error).message}`);
  }
}
