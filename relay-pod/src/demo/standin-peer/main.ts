#!/usr/bin/env node
/** CLI of the TypeScript ComfyStream stand-in: `node dist/relay-pod/src/demo/standin-peer/main.js --help`. */
import { parseArgs } from "node:util";
import pino from "pino";
import { parseIceAddresses } from "../../webrtc/ice-config.js";
import { installFaultInjection } from "./fault-injection.js";
import { startTsStandin } from "./standin.js";

const HELP = `ts-standin — a stand-in ComfyStream server (WebRTC, werift + ffmpeg) for relay tests

Usage: node dist/relay-pod/src/demo/standin-peer/main.js [options]

Serves ComfyStream's routes (also under /live): GET / and /health ("OK"), POST /offer
{prompts, offer, resolution} → {sdp, type:"answer"}, POST /prompt, GET /streams/stats,
GET /stream/{id}/stats; plus GET /stats (stand-in counters: frames in/out, prompts, peers).
The "control" data channel answers get_nodes, update_prompts, update_resolution,
pause_prompts, resume_prompts and stop_prompts like ComfyStream main.

Options:
  --host ADDR          listen address (default 127.0.0.1)
  --port N             listen port (default 8889; 0 = any free port)
  --ice-address ADDR   gather ICE host candidates only on ADDR (repeatable or comma-separated;
                       default $TRICKLE_RELAY_ICE_ADDRESSES; tests use 127.0.0.2)
  --mode MODE          filter: decode, apply --filter, re-encode H.264 (PLI → IDR) (default)
                       passthrough: return the received RTP payload unchanged, re-stamped
  --filter VF          ffmpeg -vf applied while a workflow is loaded (default negate)
  --max-fps N          processing-rate cap in filter mode; newer frames evict older ones (default 0 = none)
  --comfystream-queue with --max-fps: queue like the real ComfyStream instead: a one-slot workflow
                       input, but every frame received waits for an output, so each frame evicted
                       from the slot delays every later one for good
  --ignore-pli         answer no keyframe request, like the real ComfyStream on aiortc 1.4.0
                       (its encoder ignores them; x264's own IDR comes every 250 frames)
  --warmup-ms N        delay inside /offer and /prompt when prompts are given (default 0)
  --fail-prompts       reject every workflow: /offer and /prompt answer 500, update_prompts fails
                       (a node with class_type "StandinFailPrompt" does the same per workflow)
  --close-detection dtls|consent
                       dtls: a client's DTLS close_notify ends its peer at once (default);
                       consent: only ICE consent expiry (~30 s) does, like aiortc/ComfyStream,
                       and until then a newer peer gets no frames back (as the real server)
Video packets more than 128 behind the highest sequence number seen are dropped as SRTP replays,
as libsrtp (aiortc's SRTP) does; GET /stats counts them (srtpReplayDrops).
  --ffmpeg PATH        ffmpeg binary (default: $FFMPEG_BIN, ffmpeg-static, ffmpeg on PATH)
  --log-level LEVEL    pino level (default info)
  -h, --help           this text

Tests only: STANDIN_FAULT_INJECTION=oom-on-sigusr2 makes SIGUSR2 allocate memory until the
process is killed (a sidecar over its memory limit).

WebRTC peers must stay on loopback in tests: run it inside a loopback-only network namespace,
e.g. unshare -n sh -c 'ip link set lo up; ip addr add 127.0.0.2/32 dev lo; exec node ... --ice-address 127.0.0.2'
`;

function fail(message: string): never {
  process.stderr.write(`ts-standin: ${message}\n\nTry --help.\n`);
  process.exit(2);
}

function nonNegativeInteger(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!Number.isInteger(number) || number < 0) fail(`${name} must be a non-negative integer, got "${value}"`);
  return number;
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        host: { type: "string" },
        port: { type: "string" },
        "ice-address": { type: "string", multiple: true },
        mode: { type: "string" },
        filter: { type: "string" },
        "max-fps": { type: "string" },
        "comfystream-queue": { type: "boolean" },
        "ignore-pli": { type: "boolean" },
        "warmup-ms": { type: "string" },
        "fail-prompts": { type: "boolean" },
        "close-detection": { type: "string" },
        ffmpeg: { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    fail(error instanceof Error ? error.message : String(error));
  }
  const values = parsed.values;
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const mode = values.mode ?? "filter";
  if (mode !== "filter" && mode !== "passthrough")
    fail(`--mode must be filter or passthrough, got "${mode}"`);
  const closeDetection = values["close-detection"] ?? "dtls";
  if (closeDetection !== "dtls" && closeDetection !== "consent") {
    fail(`--close-detection must be dtls or consent, got "${closeDetection}"`);
  }
  let iceAddresses: string[] | undefined;
  try {
    iceAddresses = values["ice-address"]
      ? values["ice-address"].flatMap((item) => parseIceAddresses(item))
      : undefined;
  } catch (error) {
    fail(error instanceof Error ? error.message : String(error));
  }
  const logger = pino({ name: "ts-standin", level: values["log-level"] ?? "info" });
  try {
    installFaultInjection(logger);
  } catch (error) {
    fail(error instanceof Error ? error.message : String(error));
  }
  const standin = await startTsStandin({
    host: values.host,
    port: nonNegativeInteger(values.port, "--port", 8889),
    iceAddresses,
    mode,
    filter: values.filter,
    maxFps: nonNegativeInteger(values["max-fps"], "--max-fps", 0),
    processingQueue: values["comfystream-queue"] ? "comfystream" : "newest",
    keyframeRequests: values["ignore-pli"] ? "ignore" : "honour",
    warmupMs: nonNegativeInteger(values["warmup-ms"], "--warmup-ms", 0),
    failPrompts: values["fail-prompts"] ?? false,
    closeDetection,
    ffmpegPath: values.ffmpeg,
    logger,
  });
  // Tests that spawn this process read the URL from the first stdout line.
  process.stdout.write(`listening ${standin.url}\n`);
  const shutdown = (): void => {
    void standin.close().then(() => process.exit(0));
  };
  process.once("SIGINT", shutdown);
  process.once("SIGTERM", shutdown);
}

main().catch((error: unknown) => {
  process.stderr.write(`ts-standin: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
