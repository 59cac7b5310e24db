// Real parts for relay-session tests: a trickle server, real H.264 input made by ffmpeg and cut at
// keyframes, a paced publisher, an output collector, and both stand-in ComfyStream peers.
import { BEEP_TONE_SOURCE, FLASH_FILTER } from "../../relay-pod/src/demo/av-sync.js";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { TsSegmentCutter } from "../../relay-pod/src/media/ts-cutter.js";
import { TsDemuxer } from "../../relay-pod/src/media/ts-demux.js";
import { startTsStandin, type TsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { RelaySession, type RelaySessionOptions } from "../../relay-pod/src/session/relay-session.js";
import { buildSessionConfig, type SessionConfigInput } from "../../relay-pod/src/session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import type { SessionStatus } from "../../relay-pod/src/session/types.js";
import { LOOPBACK_ICE_ADDRESS, PyStandin } from "../peers/py-standin/launch.js";
import { waitFor } from "../infra/wait-for.js";
import pino, { type Logger } from "pino";

const run = promisify(execFile);
export const FFMPEG = process.env.FFMPEG_BIN ?? "ffmpeg";
export const FFPROBE = process.env.FFPROBE_BIN ?? "ffprobe";
export const ICE_ADDRESSES = [LOOPBACK_ICE_ADDRESS];

/** `seconds` of test pattern as MPEG-TS, 1 s GOPs, cut into one trickle segment per GOP. */
export async function makeInputSegments(options: {
  seconds: number;
  size?: string;
  frameRate?: number;
  /** B-frames in the input (default 2, as RTMP encoders often send; WHIP/browser input has none). */
  bFrames?: number;
  /** Keyframe interval, hence segment length (default 1 s). */
  gopSeconds?: number;
  /** Where the stream's clock starts, in seconds (ffmpeg's -output_ts_offset; the TS muxer adds 1.4 s). */
  startSeconds?: number;
  /** H.264 profile (default: x264's choice, high). */
  profile?: "baseline" | "main" | "high";
  /** An audio track (a 440 Hz tone, 48 kHz stereo) in this codec; default none. */
  audio?: "aac" | "opus" | "mp2";
  /** The tone beeps and the picture flashes white at every whole second (lip-sync: demo/av-sync.ts). */
  beepFlash?: boolean;
}): Promise<{ segments: Buffer[]; pts: number[] }> {
  const frameRate = options.frameRate ?? 30;
  const gopSeconds = options.gopSeconds ?? 1;
  const { stdout } = await run(
    FFMPEG,
    [
      ...["-hide_banner", "-loglevel", "error", "-f", "lavfi"],
      ...[
        "-i",
        `testsrc2=size=${options.size ?? "320x240"}:rate=${frameRate}`,
        "-t",
        String(options.seconds),
      ],
      ...(options.audio
        ? [
            ...[
              "-f",
              "lavfi",
              "-i",
              options.beepFlash ? BEEP_TONE_SOURCE : "sine=frequency=440:sample_rate=48000",
            ],
            ...["-t", String(options.seconds)],
            ...[
              "-ac",
              "2",
              "-c:a",
              { aac: "aac", opus: "libopus", mp2: "mp2" }[options.audio],
              "-b:a",
              "128k",
            ],
          ]
        : []),
      ...(options.beepFlash ? ["-vf", FLASH_FILTER] : []),
      ...[
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        String(Math.round(frameRate * gopSeconds)),
        "-bf",
        String(options.profile === "baseline" ? 0 : (options.bFrames ?? 2)),
        ...(options.profile ? ["-profile:v", options.profile] : []),
        ...(options.startSeconds === undefined ? [] : ["-output_ts_offset", String(options.startSeconds)]),
        "-f",
        "mpegts",
        "pipe:1",
      ],
    ],
    { encoding: "buffer", maxBuffer: 256 * 1024 * 1024 },
  );
  const segments: Buffer[] = [];
  let current: Buffer[] = [];
  const cutter = new TsSegmentCutter({
    minDurationSec: gopSeconds,
    onSegmentStart: () => (current = []),
    onData: (chunk) => current.push(Buffer.from(chunk)),
    onSegmentEnd: () => segments.push(Buffer.concat(current)),
  });
  cutter.push(stdout);
  cutter.end();
  return { segments, pts: demuxPts(stdout) };
}

/** Every video PTS in a TS byte stream, in decode order. */
export function demuxPts(ts: Buffer): number[] {
  const pts: number[] = [];
  const demuxer = new TsDemuxer({ onAccessUnit: (au) => au.pts !== undefined && pts.push(au.pts) });
  demuxer.push(ts);
  demuxer.flush();
  return pts;
}

/** Publishes segments at real-time pace (one per `intervalMs`), with optional extra segments spliced in. */
export async function publishPaced(
  url: string,
  segments: Buffer[],
  options: { intervalMs?: number; inject?: Map<number, Buffer>; signal?: AbortSignal; close?: boolean } = {},
): Promise<TricklePublisher> {
  const publisher = new TricklePublisher(url, { contentType: "video/MP2T" });
  await publisher.start();
  const started = performance.now();
  for (let i = 0; i < segments.length; i++) {
    if (options.signal?.aborted) break;
    const extra = options.inject?.get(i);
    if (extra) await publisher.writeSegment(extra);
    await publisher.writeSegment(segments[i]!);
    const wait = started + (i + 1) * (options.intervalMs ?? 1000) - performance.now();
    if (wait > 0) await sleep(wait);
  }
  if (options.close !== false) await publisher.close();
  return publisher;
}

/** Reads an output channel to its end; `ended` tells whether the server closed it (not us). */
export function collectOutput(url: string): {
  segments: Array<{ seq: number; data: Buffer }>;
  done: Promise<{ closedByServer: boolean }>;
  close(): void;
} {
  const subscriber = new TrickleSubscriber(url, { startSeq: 0 });
  const segments: Array<{ seq: number; data: Buffer }> = [];
  let closedByUs = false;
  const done = (async () => {
    try {
      for await (const segment of subscriber) {
        const parts: Buffer[] = [];
        for await (const chunk of segment.body) parts.push(chunk);
        segments.push({ seq: segment.seq, data: Buffer.concat(parts) });
      }
      return { closedByServer: !closedByUs };
    } catch {
      return { closedByServer: false };
    }
  })();
  return {
    segments,
    done,
    close: () => {
      closedByUs = true;
      subscriber.close();
    },
  };
}

/** Frames ffprobe decodes from one segment on its own, and whether the first frame is a keyframe. */
export async function probeSegment(data: Buffer): Promise<{ frames: number; firstIsKey: boolean }> {
  const child = execFile(FFPROBE, [
    ...["-v", "error", "-f", "mpegts", "-i", "pipe:0", "-select_streams", "v:0"],
    ...["-show_entries", "frame=key_frame", "-of", "csv=p=0"],
  ]);
  const output = new Promise<string>((resolve, reject) => {
    let text = "";
    child.stdout!.on("data", (d: Buffer) => (text += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(text) : reject(new Error(`ffprobe exited ${code}`))));
  });
  child.stdin!.end(data);
  const lines = (await output).split("\n").filter((l) => l.trim() !== "");
  return { frames: lines.length, firstIsKey: lines[0]?.trim().startsWith("1") ?? false };
}

/** What a user checks of an output stream against its input: decodable, IDR-first, same PTS. */
export async function checkOutputAgainstInput(
  segments: Array<{ seq: number; data: Buffer }>,
  inputPts: number[],
): Promise<{
  frames: number;
  undecodable: number[];
  notIdrFirst: number[];
  foreignPts: number[];
  repeatedPts: number;
}> {
  let frames = 0;
  const undecodable: number[] = [];
  const notIdrFirst: number[] = [];
  for (const segment of segments) {
    const probe = await probeSegment(segment.data);
    if (probe.frames === 0) undecodable.push(segment.seq);
    if (!probe.firstIsKey) notIdrFirst.push(segment.seq);
    frames += probe.frames;
  }
  const outputPts = demuxPts(Buffer.concat(segments.map((s) => s.data)));
  const inputSet = new Set(inputPts);
  return {
    frames,
    undecodable,
    notIdrFirst,
    foreignPts: outputPts.filter((p) => !inputSet.has(p)),
    repeatedPts: outputPts.length - new Set(outputPts).size,
  };
}

export async function startTrickle(names: string[]): Promise<{ server: TrickleServer; base: string }> {
  const server = new TrickleServer({
    channels: names.map((name) => ({
      name,
      mimeType: /control|events/.test(name) ? "application/json" : "video/MP2T",
    })),
  });
  const { url } = await server.listen(0, "127.0.0.1");
  return { server, base: url };
}

/** What a test needs of either stand-in peer. */
export interface Peer {
  url: string;
  promptUpdates(): Promise<number>;
  /** The peer's own counters, for failure messages. */
  describe(): Promise<unknown>;
  stop(): Promise<void>;
}

export async function startPeer(kind: "ts" | "py", port = 0): Promise<Peer> {
  if (kind === "ts") {
    // Passthrough: its filter mode restarts its encoder on every PLI and loses the frames in flight,
    // which would hide what the relay itself loses (the filter is exercised in its own tests).
    const standin: TsStandin = await startTsStandin({
      host: "127.0.0.1",
      port,
      iceAddresses: ICE_ADDRESSES,
      mode: "passthrough",
    });
    return {
      url: standin.url,
      promptUpdates: async () => standin.stats().promptUpdates,
      describe: async () => standin.stats().media,
      stop: () => standin.close(),
    };
  }
  // A FIFO instead of ComfyStream's newest-frame slot: on a loaded 2-core machine the Python peer
  // cannot always keep up, and frames it skips would hide what the relay itself loses.
  const standin = await PyStandin.start(["--ice-consent-interval", "0.5", "--queue", "backlog"]);
  return {
    url: standin.baseUrl,
    promptUpdates: async () => (await standin.stats()).prompt_updates,
    describe: async () => {
      const stats = await standin.stats();
      return {
        in: stats.frames_in,
        out: stats.frames_out,
        dropped: stats.frames_dropped,
        keyframes: stats.keyframes,
      };
    },
    stop: () => standin.stop(),
  };
}

export { waitFor };

/** TRICKLE_RELAY_TEST_LOG=FILE: the sessions' debug log (JSON lines) goes there, for a failure's story. */
function testLogger(): { logger?: Logger } {
  const file = process.env.TRICKLE_RELAY_TEST_LOG;
  return file ? { logger: pino({ level: "debug" }, pino.destination({ dest: file, sync: true })) } : {};
}

/**
 * UDP datagrams the kernel dropped for full receive buffers in this network namespace
 * (`RcvbufErrors` in /proc/net/snmp), or undefined where that file is missing. Tests run in a
 * private namespace, so this counts only their own sockets: ffmpeg → relay and the WebRTC hops.
 */
export async function udpReceiveBufferErrors(): Promise<number | undefined> {
  const snmp = await readFile("/proc/net/snmp", "utf8").catch(() => undefined);
  const [names, values] = (snmp ?? "").split("\n").filter((line) => line.startsWith("Udp:"));
  if (!names || !values) return undefined;
  const index = names.split(/\s+/).indexOf("RcvbufErrors");
  return index > 0 ? Number(values.split(/\s+/)[index]) : undefined;
}

/**
 * `segments` published in real time through one RelaySession (`session`, with this file's loopback
 * ICE address) to the ComfyStream at its comfystreamUrl, once connected; returns when the session
 * has ended and the output channel with it.
 */
export async function relaySegmentsThrough(
  segments: Buffer[],
  session: Omit<SessionConfigInput, "inputUrl" | "iceAddresses">,
  options: { connectTimeoutMs: number; cleanups: Array<() => Promise<unknown> | unknown> },
): Promise<{ final: SessionStatus; output: Array<{ seq: number; data: Buffer }> }> {
  const { server, base } = await startTrickle(["in", "in-out"]);
  options.cleanups.push(() => server.close());
  const output = collectOutput(`${base}in-out`);
  options.cleanups.push(() => output.close());
  const relay = new RelaySession(
    buildSessionConfig({ ...session, inputUrl: `${base}in`, iceAddresses: ICE_ADDRESSES }),
    { reconnectBackoffMs: [300, 2000], drainTimeoutMs: 3000 },
  );
  options.cleanups.push(() => relay.stop());
  await relay.start();
  await waitFor(
    () => relay.status().webrtcState === "connected",
    options.connectTimeoutMs,
    "WebRTC connected",
  );
  await publishPaced(`${base}in`, segments);
  await relay.whenEnded();
  await output.done;
  return { final: relay.status(), output: output.segments };
}

export interface RelayedRun {
  final: SessionStatus;
  /** The session's status after each second of input. */
  samples: SessionStatus[];
  /** Its latency p95 a second before the input ends: what a viewer lives with once it has settled. */
  lateLatencyP95: number | null;
  output: Array<{ seq: number; data: Buffer }>;
  inputPts: number[];
}

/**
 * `seconds` of 30 fps test pattern through one RelaySession and the ComfyStream at `comfystreamUrl`,
 * published in real time once the session is connected; returns when the session has ended.
 */
export async function relaySessionThrough(
  comfystreamUrl: string,
  options: {
    seconds: number;
    size?: string;
    session?: Partial<SessionConfigInput>;
    sessionOptions?: RelaySessionOptions;
    connectTimeoutMs?: number;
    cleanups: Array<() => Promise<unknown> | unknown>;
  },
): Promise<RelayedRun> {
  const { seconds, cleanups } = options;
  const { segments, pts: inputPts } = await makeInputSegments({ seconds, size: options.size });
  const { server, base } = await startTrickle(["in", "in-out"]);
  cleanups.push(() => server.close());
  const output = collectOutput(`${base}in-out`);
  cleanups.push(() => output.close());
  const session = new RelaySession(
    buildSessionConfig({
      id: "relayed",
      inputUrl: `${base}in`,
      comfystreamUrl,
      prompts: [PASSTHROUGH_WORKFLOW],
      iceAddresses: ICE_ADDRESSES,
      ...options.session,
    }),
    {
      reconnectBackoffMs: [300, 3000],
      drainTimeoutMs: 3000,
      ...testLogger(),
      ...options.sessionOptions,
    },
  );
  cleanups.push(() => session.stop());
  await session.start();
  await waitFor(
    () => session.status().webrtcState === "connected",
    options.connectTimeoutMs ?? 20_000,
    "WebRTC connected",
  );
  const publishing = publishPaced(`${base}in`, segments);
  const samples: SessionStatus[] = [];
  const sampler = setInterval(() => samples.push(session.status()), 1000);
  await sleep((seconds - 1) * 1000);
  const lateLatencyP95 = session.status().latencyMs.p95;
  await publishing;
  await session.whenEnded();
  clearInterval(sampler);
  await Promise.race([output.done, sleep(5000)]);
  return { final: session.status(), samples, lateLatencyP95, output: output.segments, inputPts };
}
