import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { InvalidArgumentError, Option, type Command } from "commander";
import { createLogger, type Logger } from "../common/log.js";
import type { RelaySession } from "../session/relay-session.js";
import { EXIT_CODES } from "../session/exit-codes.js";
import {
  DEFAULT_BITRATE_KBPS,
  DEFAULT_KEYFRAME_INTERVAL_SEC,
  DEFAULT_PEER_WINDOW_FRAMES,
  PEER_WINDOW_LIMITS,
  buildSessionConfig,
  type SessionConfigInput,
} from "../session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../session/default-workflow.js";
import type {
  AudioMode,
  AudioOutputCodecChoice,
  EncoderPreference,
  RelayMode,
  SessionStatus,
} from "../session/types.js";
import {
  AUDIO_MODES,
  AUDIO_OUTPUT_CODECS,
  INPUT_STALL_LIMITS,
  INPUT_STALL_POLICIES,
  VIDEO_ENCODER_PREFERENCES,
} from "../../../crds/src/index.js";
import {
  InputStallSettingError,
  inputStallPolicyFrom,
  type InputStallPolicy,
} from "../session/input-stall.js";
import {
  collect,
  onShutdownSignal,
  parseBitrateKbps,
  parseDimension,
  parseKeyframeInterval,
  parseHttpUrl,
  parsePositiveInteger,
  parsePositiveNumber,
} from "../common/cli-options.js";

function parseNonNegativeInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0)
    throw new InvalidArgumentError(`expected a whole number ≥ 0, got "${value}"`);
  return n;
}

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
    .addOption(
      new Option(
        "--encoder <encoder>",
        "H.264 encoder (transcode mode): auto (NVENC if a one-frame test encode on a GPU works, else x264), nvenc (or the session fails), x264 (no probe)",
      )
        .choices(VIDEO_ENCODER_PREFERENCES)
        .default("auto"),
    )
    .addOption(
      new Option(
        "--audio <mode>",
        "the input's audio (AAC, LATM or Opus): comfystream (sent to ComfyStream as Opus, what comes back goes out), passthrough (remuxed into the output unchanged, in sync by PTS), none (video only), auto (comfystream when the workflow has a LoadAudioTensor node, else passthrough)",
      )
        .choices(AUDIO_MODES)
        .default("auto"),
    )
    .addOption(
      new Option(
        "--audio-codec <codec>",
        "the output's audio codec: auto (the input's in passthrough, AAC for audio back from ComfyStream), aac or opus (passthrough re-encodes when the input's differs)",
      )
        .choices(AUDIO_OUTPUT_CODECS)
        .default("auto"),
    )
    .option(
      "--bitrate <kbps>",
      "target bitrate of the H.264 sent to ComfyStream, kbit/s (transcode mode)",
      parseBitrateKbps,
      DEFAULT_BITRATE_KBPS,
    )
    .option(
      "--keyframe-interval <seconds>",
      "keyframe interval of the H.264 sent to ComfyStream (transcode mode)",
      parseKeyframeInterval,
      DEFAULT_KEYFRAME_INTERVAL_SEC,
    )
    .option(
      "--segment-duration <seconds>",
      "shortest output segment (cut at the next IDR)",
      parsePositiveNumber,
      1,
    )
    .option(
      "--peer-window <frames>",
      `most frames in flight to ComfyStream (sent, not back yet; ${PEER_WINDOW_LIMITS.min}-${PEER_WINDOW_LIMITS.max}); more are dropped as peer-limited`,
      parsePeerWindow,
      DEFAULT_PEER_WINDOW_FRAMES,
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
    .option("--insecure", "do not verify trickle servers' TLS certificates", false)
    .option(
      "--input-stall <seconds>",
      `seconds without a new input segment before the status says "input stalled" (${INPUT_STALL_LIMITS.statusAfter.minimum}-${INPUT_STALL_LIMITS.statusAfter.maximum}; default ${INPUT_STALL_LIMITS.statusAfter.default})`,
      parseWholeSeconds,
    )
    .addOption(
      new Option(
        "--input-stall-policy <policy>",
        `what a stalled input leads to: end (the session fails with InputStalled after --input-stall-end) or wait (for ever; default ${INPUT_STALL_LIMITS.policy})`,
      ).choices(INPUT_STALL_POLICIES),
    )
    .option(
      "--input-stall-end <seconds>",
      `with policy end: seconds of silence before the session ends (at least --input-stall; ${INPUT_STALL_LIMITS.endAfter.minimum}-${INPUT_STALL_LIMITS.endAfter.maximum}; default ${INPUT_STALL_LIMITS.endAfter.default})`,
      parseWholeSeconds,
    )
    .hook("preAction", (_parent, action) => {
      // Checked before anything starts, as a usage error: the flags contradicting each other.
      try {
        inputStallFromOptions(action.opts());
      } catch (err) {
        if (!(err instanceof InputStallSettingError)) throw err;
        action.error(`error: ${err.message}`, { exitCode: EXIT_CODES.configError });
      }
    });
}

function parseWholeSeconds(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n))
    throw new InvalidArgumentError(`expected a whole number of seconds, got "${value}"`);
  return n;
}

/** --input-stall, --input-stall-policy and --input-stall-end as the session's stall policy. */
function inputStallFromOptions(opts: Record<string, unknown>): InputStallPolicy {
  return inputStallPolicyFrom(
    {
      statusAfterSec: opts.inputStall as number | undefined,
      policy: opts.inputStallPolicy as string | undefined,
      endAfterSec: opts.inputStallEnd as number | undefined,
    },
    { statusAfterSec: "--input-stall", policy: "--input-stall-policy", endAfterSec: "--input-stall-end" },
  );
}

/** Options that describe the session itself, which the RelaySession's spec gives with --session. */
const SPEC_OPTIONS = [
  "input",
  "comfystream",
  "output",
  "control",
  "events",
  "width",
  "height",
  "frameRate",
  "prompts",
  "mode",
  "bitrate",
  "keyframeInterval",
  "encoder",
  "audio",
  "audioCodec",
  "segmentDuration",
  "inputStall",
  "inputStallPolicy",
  "inputStallEnd",
  "id",
] as const;

export function registerRun(program: Command): void {
  const command = program
    .command("run")
    .description(
      "Run one relay session in the foreground: trickle input → ComfyStream (WebRTC) → trickle output. " +
        "SIGTERM or Ctrl-C stops it gracefully.",
    )
    .usage("(--input URL --comfystream URL | --session NAMESPACE/NAME) [options]")
    .option(
      "--session <namespace/name>",
      "run the RelaySession NAMESPACE/NAME (the relay pod's form): read it with the kube config " +
        "($KUBECONFIG, else in-cluster), follow its spec.prompts edits, write status.relay",
    )
    .option("--input <url>", "trickle input channel URL", parseHttpUrl)
    .option("--comfystream <url>", "ComfyStream server base URL (POST {url}/offer)", parseHttpUrl)
    .option("--output <url>", "trickle output channel URL (default: input URL + -out)", parseHttpUrl)
    .option("--control <url>", "trickle control channel URL (prompt updates)", parseHttpUrl)
    .option("--events <url>", "trickle events channel URL (status every 10 s)", parseHttpUrl)
    .option("--id <id>", "session id used in logs and metrics (default: random)")
    .option(
      "--pool-pod",
      "be a warm RelayPool pod: warm up, answer the readiness probe, wait for the operator to claim this " +
        "pod ($POD_NAMESPACE/$POD_NAME) for a session, then run it",
    )
    .option(
      "--pool-comfystream <url>",
      "the pool's ComfyStream, for a RelaySession whose spec names a pool (spec.poolRef) instead",
      parseHttpUrl,
    )
    .option(
      "--pool-offer-timeout <seconds>",
      "how long the pool's ComfyStream may take to answer an offer (with --pool-comfystream; default 300)",
      parsePositiveInteger,
    )
    .option(
      "--warmup-seconds <seconds>",
      "--pool-pod: length of the synthetic warm-up stream through ComfyStream (0: only wait until it answers)",
      parseNonNegativeInteger,
      3,
    )
    .option(
      "--pool-recycle",
      "--pool-pod of a RelayPool with spec.recycle: after a clean end of the session, check ComfyStream " +
        "(warm up again if it stopped answering) and go back to idle instead of exiting",
    )
    .option(
      "--ready-port <port>",
      "--session and --pool-pod: port of the pod's /healthz, /readyz and /metrics (0: none)",
      parseNonNegativeInteger,
      8892,
    );
  addSessionOptions(command);
  command.addOption(
    new Option("--status-interval <seconds>", "log a status line this often")
      .default(10)
      .argParser(parsePositiveNumber),
  );
  command.addHelpText(
    "after",
    `
Two forms:
  trickle-relay run --input URL --comfystream URL [--output URL] [--prompts FILE] ...
      The session is described by the options.
  trickle-relay run --session NAMESPACE/NAME
      The session is described by the spec of a RelaySession (how the operator runs its pods).
      Its spec.prompts edits reach ComfyStream live; status.relay is written at most once a second
      and on state changes. Only pod-side options combine with it: --ice-address, --queue-*,
      --insecure, --status-interval, --pool-comfystream (for a session that names a RelayPool).
  trickle-relay run --pool-pod --pool-comfystream URL [--warmup-seconds N] [--pool-recycle]
      A warm RelayPool pod (how the operator runs pool pods): warms up, answers /readyz on
      --ready-port once warm, waits until the operator claims the pod for a session, then runs
      that session as --session does. With --pool-recycle a cleanly ended session is followed by
      a ComfyStream health check and the next claim instead of the exit.

Exit codes: 0 the input ended (or the session was stopped: SIGTERM/SIGINT, RelaySession deleted),
1 the session failed, 2 bad options or (with --session) the RelaySession is missing, unreadable
or its spec unusable.`,
  );
  // Usage errors exit 2 like the configuration errors found later (1 means the session failed).
  command.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT_CODES.configError));
  command.action(async (opts) => {
    const logger = createLogger("trickle-relay");
    if (opts.poolPod) {
      if (opts.poolComfystream === undefined)
        command.error("error: --pool-pod needs --pool-comfystream URL", { exitCode: EXIT_CODES.configError });
      const { runPoolPod } = await import("./pool-pod.js");
      process.exitCode = await runPoolPod({
        comfystreamUrl: opts.poolComfystream as string,
        ...(opts.poolOfferTimeout ? { offerTimeoutSeconds: opts.poolOfferTimeout as number } : {}),
        warmupSeconds: opts.warmupSeconds as number,
        warmupTimeoutMs: 900_000,
        recycle: opts.poolRecycle === true,
        readyPort: opts.readyPort as number,
        session: sessionInputFromOptions(opts),
        logger,
      });
      setTimeout(() => process.exit(), 3000).unref();
      return;
    }
    if (opts.session !== undefined) {
      process.exitCode = await runResourceForm(command, opts, logger);
      // A leftover keep-alive socket or timer must not keep a finished pod running.
      setTimeout(() => process.exit(), 3000).unref();
      return;
    }
    if (opts.input === undefined || opts.comfystream === undefined) {
      command.error(
        "error: give --input URL and --comfystream URL, or --session NAMESPACE/NAME (see --help)",
        { exitCode: EXIT_CODES.configError },
      );
    }
    // Loaded here, not at the top: `--help` and the other commands need none of werift.
    const { RelaySession } = await import("../session/relay-session.js");
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

/** `run --session NS/NAME`: everything about the session comes from the RelaySession. */
async function runResourceForm(
  command: Command,
  opts: Record<string, unknown>,
  logger: Logger,
): Promise<number> {
  const given = SPEC_OPTIONS.filter((name) => command.getOptionValueSource(name) === "cli");
  if (given.length > 0) {
    const flags = given.map((name) => `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
    command.error(
      `error: ${flags.join(", ")} cannot be combined with --session (the RelaySession's spec sets ${given.length === 1 ? "it" : "them"})`,
      { exitCode: EXIT_CODES.configError },
    );
  }
  // Loaded only here: the Kubernetes client is large and the other commands do not need it.
  const { parseSessionRef, SessionResourceError } = await import("../kube/session-resource.js");
  const { runSessionFromResource } = await import("../kube/resource-session.js");
  let ref;
  try {
    ref = parseSessionRef(opts.session as string);
  } catch (err) {
    if (!(err instanceof SessionResourceError)) throw err;
    command.error(`error: --session: ${err.message}`, { exitCode: EXIT_CODES.configError });
  }
  const podOptions = sessionInputFromOptions(opts);
  return runSessionFromResource(ref, {
    logger,
    settings: {
      iceAddresses: podOptions.iceAddresses ?? [],
      insecureTls: podOptions.insecureTls ?? false,
      ...(opts.poolComfystream ? { comfystreamUrl: opts.poolComfystream as string } : {}),
      ...(opts.poolOfferTimeout ? { offerTimeoutSeconds: opts.poolOfferTimeout as number } : {}),
      ...(podOptions.queueCapacities ? { queueCapacities: podOptions.queueCapacities } : {}),
    },
    logStatus: (status) => logger.info({ status: summary(status) }, "status"),
    statusLogIntervalMs: (opts.statusInterval as number) * 1000,
    ...((opts.readyPort as number) > 0 ? { endpointsPort: opts.readyPort as number } : {}),
    onShutdown: (stop) =>
      onShutdownSignal(async (signal) => {
        logger.info({ signal }, "stopping");
        await stop();
      }),
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
    encoder: status.encoder,
    decoder: status.decoder,
    codecReason: status.codecReason,
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
    bitrateKbps: opts.bitrate as number,
    keyframeIntervalSec: opts.keyframeInterval as number,
    encoder: opts.encoder as EncoderPreference,
    audio: opts.audio as AudioMode,
    audioCodec: opts.audioCodec as AudioOutputCodecChoice,
    segmentDurationSec: opts.segmentDuration as number,
    peerWindowFrames: opts.peerWindow as number,
    iceAddresses: opts.iceAddress as string[],
    insecureTls: opts.insecure as boolean,
    inputStall: inputStallFromOptions(opts),
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

function parsePeerWindow(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < PEER_WINDOW_LIMITS.min || n > PEER_WINDOW_LIMITS.max) {
    throw new InvalidArgumentError(
      `expected a whole number of frames from ${PEER_WINDOW_LIMITS.min} to ${PEER_WINDOW_LIMITS.max}, got "${value}"`,
    );
  }
  return n;
}
