/**
 * ffmpeg: finding the binary (DESIGN.md §5), the forward transcode command line (media-pipeline.md
 * §3.6), and a supervised long-lived ffmpeg child process.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { constants as fsConstants } from "node:fs";
import { access } from "node:fs/promises";
import path from "node:path";
import { silentLogger, type Logger } from "../common/log.js";

export interface ResolvedFfmpeg {
  path: string;
  source: "FFMPEG_BIN" | "ffmpeg-static" | "PATH";
  /** First line of `ffmpeg -version`, e.g. "ffmpeg version 5.1.9-0+deb12u1 Copyright ...". */
  version: string;
}

export interface ResolvedFfprobe {
  path: string;
  source: "FFPROBE_BIN" | "next to ffmpeg" | "PATH";
  version: string;
}

const INSTALL_HINT =
  "install Debian's ffmpeg (apt-get install ffmpeg), or set FFMPEG_BIN to the path of an ffmpeg binary";

let ffmpegResolution: Promise<ResolvedFfmpeg> | undefined;
let ffprobeResolution: Promise<ResolvedFfprobe> | undefined;

/**
 * Finds ffmpeg: $FFMPEG_BIN -> ffmpeg-static's path if that file exists -> `ffmpeg` on PATH. Each
 * candidate must run `-version`. The result is cached; a failure is not (so a later call can see a
 * newly installed binary).
 */
export function resolveFfmpeg(options: { logger?: Logger } = {}): Promise<ResolvedFfmpeg> {
  ffmpegResolution ??= findFfmpeg(options.logger ?? silentLogger).catch((error: unknown) => {
    ffmpegResolution = undefined;
    throw error;
  });
  return ffmpegResolution;
}

/** Finds ffprobe: $FFPROBE_BIN -> `ffprobe` next to the resolved ffmpeg -> `ffprobe` on PATH. */
export function resolveFfprobe(options: { logger?: Logger } = {}): Promise<ResolvedFfprobe> {
  ffprobeResolution ??= findFfprobe(options.logger ?? silentLogger).catch((error: unknown) => {
    ffprobeResolution = undefined;
    throw error;
  });
  return ffprobeResolution;
}

/** Forgets cached resolutions (tests, or after the environment changed). */
export function clearFfmpegResolutionCache(): void {
  ffmpegResolution = undefined;
  ffprobeResolution = undefined;
}

async function findFfmpeg(logger: Logger): Promise<ResolvedFfmpeg> {
  const tried: string[] = [];
  const fromEnv = process.env.FFMPEG_BIN;
  if (fromEnv) {
    const version = await probeVersion(fromEnv);
    if (version.ok) return found({ path: fromEnv, source: "FFMPEG_BIN", version: version.version }, logger);
    tried.push(`FFMPEG_BIN=${fromEnv} (${version.reason})`);
    logger.warn(
      { path: fromEnv, reason: version.reason },
      "FFMPEG_BIN is set but not usable; trying the next choices",
    );
  }
  const staticPath = await ffmpegStaticPath();
  if (staticPath !== undefined && staticPath !== fromEnv) {
    const version = await probeVersion(staticPath);
    if (version.ok)
      return found({ path: staticPath, source: "ffmpeg-static", version: version.version }, logger);
    tried.push(`ffmpeg-static ${staticPath} (${version.reason})`);
  } else if (staticPath === undefined) {
    tried.push("ffmpeg-static (not installed or its binary was never downloaded)");
  }
  const onPath = await findOnPath("ffmpeg");
  if (onPath !== undefined) {
    const version = await probeVersion(onPath);
    if (version.ok) return found({ path: onPath, source: "PATH", version: version.version }, logger);
    tried.push(`${onPath} on PATH (${version.reason})`);
  } else {
    tried.push("ffmpeg on PATH (not found)");
  }
  throw new Error(`No usable ffmpeg found: ${INSTALL_HINT}. Tried: ${tried.join("; ")}.`);
}

function found(resolved: ResolvedFfmpeg, logger: Logger): ResolvedFfmpeg {
  logger.info(resolved, "using ffmpeg");
  return resolved;
}

async function findFfprobe(logger: Logger): Promise<ResolvedFfprobe> {
  const tried: string[] = [];
  const fromEnv = process.env.FFPROBE_BIN;
  if (fromEnv) {
    const version = await probeVersion(fromEnv);
    if (version.ok) return { path: fromEnv, source: "FFPROBE_BIN", version: version.version };
    tried.push(`FFPROBE_BIN=${fromEnv} (${version.reason})`);
  }
  try {
    const ffmpeg = await resolveFfmpeg({ logger });
    const sibling = path.join(path.dirname(ffmpeg.path), "ffprobe");
    const version = await probeVersion(sibling);
    if (version.ok) return { path: sibling, source: "next to ffmpeg", version: version.version };
    tried.push(`${sibling} (${version.reason})`);
  } catch {
    tried.push("next to ffmpeg (no ffmpeg)");
  }
  const onPath = await findOnPath("ffprobe");
  if (onPath !== undefined) {
    const version = await probeVersion(onPath);
    if (version.ok) return { path: onPath, source: "PATH", version: version.version };
    tried.push(`${onPath} on PATH (${version.reason})`);
  } else {
    tried.push("ffprobe on PATH (not found)");
  }
  throw new Error(
    `No usable ffprobe found: install Debian's ffmpeg (apt-get install ffmpeg), or set FFPROBE_BIN. Tried: ${tried.join("; ")}.`,
  );
}

/** ffmpeg-static is an optional dependency that usually fails to install offline; tolerate its absence. */
async function ffmpegStaticPath(): Promise<string | undefined> {
  const moduleName = "ffmpeg-static"; // a variable, so TypeScript does not need the package's types
  try {
    const imported = (await import(moduleName)) as { default?: unknown };
    const candidate = imported.default;
    if (typeof candidate !== "string" || candidate === "") return undefined;
    await access(candidate, fsConstants.X_OK);
    return candidate;
  } catch {
    return undefined;
  }
}

async function findOnPath(command: string): Promise<string | undefined> {
  for (const directory of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!directory) continue;
    const candidate = path.join(directory, command);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // next directory
    }
  }
  return undefined;
}

function probeVersion(
  binary: string,
): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
  return new Promise((resolve) => {
    execFile(binary, ["-hide_banner", "-version"], { timeout: 10_000 }, (error, stdout) => {
      if (error) {
        const code = (error as NodeJS.ErrnoException).code;
        resolve({ ok: false, reason: code === "ENOENT" ? "no such file" : error.message.split("\n")[0] });
        return;
      }
      const firstLine = stdout.split("\n")[0]?.trim() ?? "";
      if (!/version/i.test(firstLine))
        resolve({ ok: false, reason: `unexpected -version output "${firstLine}"` });
      else resolve({ ok: true, version: firstLine });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Forward transcode: trickle TS on stdin -> H.264 constrained baseline RTP on loopback UDP.

export interface ForwardTranscodeOptions {
  width: number;
  height: number;
  /** Frame-rate cap: frames are dropped only when the input is faster; timestamps are kept. */
  frameRate: number;
  rtpPort: number;
  payloadType?: number;
  ssrc?: number;
  /** x264 target bitrate, ffmpeg syntax (default "2M", what ComfyStream's encoder uses). */
  bitrate?: string;
  /** Keyframe interval in frames (default = frameRate, about 1 s). */
  gopFrames?: number;
  /** Where ffmpeg sends RTCP sender reports (default rtpPort + 1; may equal rtpPort, RFC 5761 style). */
  rtcpPort?: number;
}

/**
 * The forward ffmpeg's RTCP clock origin, passed as `-start_time_realtime` (µs since the Unix
 * epoch). ffmpeg's RTP muxer writes sender reports with
 * `rtpTimestamp = base + (ntpTime - origin) * 90 kHz`, where `base` is the random RTP timestamp
 * offset it picked; with a known origin every sender report reveals `base` exactly.
 */
export const FORWARD_RTCP_ORIGIN_US = 1_000_000;

/**
 * ffmpeg arguments for the forward path (media-pipeline §3.6): TS on stdin -> H.264 constrained
 * baseline, zerolatency, no B-frames, GOP = gopFrames, cover-cropped to width x height, frame rate
 * capped -> RTP to 127.0.0.1:rtpPort (RTCP to rtcpPort, default rtpPort + 1).
 *
 * Timestamps: the input PTS (90 kHz, from the TS) reaches the RTP timestamp unchanged (measured:
 * identical for every frame, with and without B-frames in the input):
 * - `-copyts` keeps input timestamps (no shift to zero);
 * - `-fps_mode passthrough` stops ffmpeg from duplicating or dropping frames for a constant rate;
 * - `-enc_time_base 1:90000` stops the encoder from rounding timestamps to 1/frameRate;
 * - the frame-rate cap is a `select` filter that drops frames without retiming them (the `fps`
 *   filter would move frames onto its own grid and duplicate frames when the input is slower);
 * - `-fflags +genpts` only fills in a missing PTS.
 * `-muxdelay 0` is irrelevant to the RTP muxer (it only matters to interleaving muxers).
 * ffmpeg's RTP muxer then writes `rtpTimestamp = (base + pts) mod 2^32` with a random `base`.
 * Because `-start_time_realtime` pins the RTCP clock origin, `rtpBaseFromSenderReport()` recovers
 * `base` from any sender report (the first one is sent just before the first RTP packet), and
 * `rtpTimestampToPts(rtpTimestamp, base, recentInputPts)` gives back the input PTS.
 */
export function forwardTranscodeArgs(o: ForwardTranscodeOptions): string[] {
  for (const [name, value] of [
    ["width", o.width],
    ["height", o.height],
    ["rtpPort", o.rtpPort],
  ] as const) {
    if (!Number.isInteger(value) || value <= 0)
      throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  if (o.width % 2 !== 0 || o.height % 2 !== 0)
    throw new RangeError("width and height must be even for 4:2:0 H.264");
  if (!(o.frameRate > 0) || !Number.isFinite(o.frameRate))
    throw new RangeError(`frameRate must be > 0, got ${o.frameRate}`);
  if (o.rtcpPort === undefined && o.rtpPort > 65534)
    throw new RangeError("rtpPort must leave room for RTCP on rtpPort + 1");
  const gopFrames = o.gopFrames ?? Math.max(1, Math.round(o.frameRate));
  const interval = 1 / o.frameRate;
  // Register 0 holds the next due time. A frame is kept when it is at most a quarter interval early;
  // the due time then advances by one interval (or to 0.8 interval after a late frame). This
  // tolerates timestamp jitter, never retimes and never duplicates; faster input loses frames.
  const select =
    `select='if(gte(t\\,ld(0)-${(interval / 4).toFixed(6)})\\,` +
    `st(0\\,max(ld(0)+${interval.toFixed(6)}\\,t+${(interval * 0.8).toFixed(6)}))\\,0)'`;
  const filters = [
    select,
    `scale=${o.width}:${o.height}:force_original_aspect_ratio=increase`,
    `crop=${o.width}:${o.height}`,
    "setsar=1",
    "format=yuv420p",
  ].join(",");
  const args = [
    "-hide_banner",
    "-loglevel",
    "warning",
    "-nostdin",
    // Input: a TS byte stream on stdin; probe little so the first frame goes out fast.
    "-probesize",
    "65536",
    "-analyzeduration",
    "200000",
    "-fflags",
    "+genpts",
    "-flags",
    "low_delay",
    "-threads",
    "1",
    "-f",
    "mpegts",
    "-i",
    "pipe:0",
    "-map",
    "0:v:0",
    "-an",
    "-sn",
    "-dn",
    "-copyts",
    "-fps_mode",
    "passthrough",
    "-vf",
    filters,
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-tune",
    "zerolatency",
    "-profile:v",
    "baseline",
    "-pix_fmt",
    "yuv420p",
    "-bf",
    "0",
    "-g",
    String(gopFrames),
    "-keyint_min",
    String(gopFrames),
    "-sc_threshold",
    "0",
    "-b:v",
    o.bitrate ?? "2M",
    "-enc_time_base",
    "1:90000",
    // SPS/PPS in band before every keyframe: the RTP goes to WebRTC, which has no SDP sprop.
    "-bsf:v",
    "dump_extra=freq=keyframe",
    "-f",
    "rtp",
    "-payload_type",
    String(o.payloadType ?? 96),
  ];
  if (o.ssrc !== undefined) args.push("-ssrc", String(o.ssrc | 0)); // ffmpeg's option is a signed int
  args.push("-start_time_realtime", String(FORWARD_RTCP_ORIGIN_US));
  const rtcp = o.rtcpPort !== undefined ? `&rtcpport=${o.rtcpPort}` : "";
  args.push(`rtp://127.0.0.1:${o.rtpPort}?pkt_size=1200${rtcp}`);
  return args;
}

/** Fields of an RTCP sender report (RFC 3550 §6.4.1), or undefined when the packet is not one. */
export function parseRtcpSenderReport(
  packet: Buffer,
): { ssrc: number; ntpSeconds: number; ntpFraction: number; rtpTimestamp: number } | undefined {
  if (packet.length < 28 || packet[0] >> 6 !== 2 || packet[1] !== 200) return undefined;
  return {
    ssrc: packet.readUInt32BE(4),
    ntpSeconds: packet.readUInt32BE(8),
    ntpFraction: packet.readUInt32BE(12),
    rtpTimestamp: packet.readUInt32BE(16),
  };
}

/** True for RTCP packet types (SR, RR, SDES, BYE, APP, feedback) when RTP and RTCP share a port. */
export function isRtcpPacket(packet: Buffer): boolean {
  return packet.length >= 8 && packet[0] >> 6 === 2 && packet[1] >= 192 && packet[1] <= 223;
}

const NTP_UNIX_OFFSET_US = 2_208_988_800n * 1_000_000n;

/**
 * The RTP timestamp offset (`base`) of the forward ffmpeg, from one of its sender reports: the
 * report's RTP timestamp minus the 90 kHz time since FORWARD_RTCP_ORIGIN_US, which the same report's
 * NTP time gives (ffmpeg computes both from one clock reading, rounding µs to 90 kHz to nearest).
 */
export function rtpBaseFromSenderReport(sr: {
  ntpSeconds: number;
  ntpFraction: number;
  rtpTimestamp: number;
}): number {
  // ffmpeg writes fraction = floor(us * 2^32 / 1e6); the smallest us that maps to it is exact.
  const fractionUs = (BigInt(sr.ntpFraction) * 1_000_000n + (1n << 32n) - 1n) >> 32n;
  const ntpUs = BigInt(sr.ntpSeconds) * 1_000_000n + fractionUs;
  const originUs = BigInt(Math.floor(FORWARD_RTCP_ORIGIN_US / 1000) * 1000);
  const elapsedUs = ntpUs - NTP_UNIX_OFFSET_US - originUs;
  const elapsedTicks = elapsedUs >= 0n ? (elapsedUs * 9n + 50n) / 100n : -((-elapsedUs * 9n + 50n) / 100n);
  return Number((BigInt(sr.rtpTimestamp) - elapsedTicks) & 0xffffffffn);
}

/**
 * Maps an RTP timestamp from the forward ffmpeg back to the 33-bit input PTS: `base` is the RTP
 * offset from `rtpBaseFromSenderReport()`; `referencePts` is any recent input PTS (within
 * ±2^31 ticks, ~6.6 h) used to pick the right 2^32 wrap.
 */
export function rtpTimestampToPts(rtpTimestamp: number, base: number, referencePts: number): number {
  const low32 = (rtpTimestamp - base) >>> 0;
  const modulus33 = 2 ** 33;
  // Candidates differ in bit 32; choose the one closest to the reference on the 33-bit circle.
  let best = low32;
  let bestDistance = Infinity;
  for (const candidate of [low32, low32 + 2 ** 32]) {
    const raw = Math.abs(candidate - (((referencePts % modulus33) + modulus33) % modulus33));
    const distance = Math.min(raw, modulus33 - raw);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Supervised ffmpeg child process.

export interface FfmpegProcessOptions {
  ffmpegPath: string;
  args: string[];
  logger?: Logger;
  /** stdout: "pipe" to read output (e.g. `-f mpegts pipe:1`), "ignore" otherwise (default). */
  stdout?: "pipe" | "ignore";
  /** Bytes of stderr kept for error reports (default 8 KiB). */
  stderrTailBytes?: number;
  /** restart() is allowed this many times per window (default 3 per 120 s, like ai-runner). */
  maxRestarts?: number;
  restartWindowMs?: number;
  /** Time between SIGTERM and SIGKILL on stop (default 2 s). */
  killGraceMs?: number;
  /** Clock (ms) for the restart window; tests pass a fake one. Default Date.now. */
  now?: () => number;
}

export interface FfmpegExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when the exit followed stop() or restart(), i.e. it was asked for. */
  requested: boolean;
  /** Spawn failure (e.g. ENOENT), if any. */
  error?: Error;
  stderrTail: string;
  pid: number | undefined;
}

/**
 * One long-lived ffmpeg child. Events: 'spawn' (pid), 'exit' (FfmpegExit), 'stdout' (Buffer, when
 * stdout is "pipe"), 'restart' (count in window). A crash is not restarted automatically: the owner
 * decides, calling restart(), which refuses (returns false) once the budget is spent.
 */
export class FfmpegProcess extends EventEmitter {
  private readonly options: FfmpegProcessOptions;
  private readonly logger: Logger;
  private readonly tailLimit: number;
  private child: ChildProcess | undefined;
  private stderrChunks: Buffer[] = [];
  private stderrBytes = 0;
  private lastTail = "";
  private restartTimes: number[] = [];
  private requestedExit = new WeakSet<ChildProcess>();
  private inputEnded = new WeakSet<ChildProcess>();
  private exitWaiters = new Map<ChildProcess, Promise<void>>();
  private drainWaits = new WeakMap<NodeJS.WritableStream, Promise<boolean>>();

  constructor(options: FfmpegProcessOptions) {
    super();
    this.options = options;
    this.logger = options.logger ?? silentLogger;
    this.tailLimit = options.stderrTailBytes ?? 8 * 1024;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The running child's stdout (when options.stdout is "pipe"). */
  get stdout(): NodeJS.ReadableStream | undefined {
    return this.child?.stdout ?? undefined;
  }

  /** Bytes written to stdin that ffmpeg has not taken yet (for drop-whole-segment decisions). */
  get stdinBacklogBytes(): number {
    return this.child?.stdin?.writableLength ?? 0;
  }

  /** The last stderr bytes of the current child, or of the previous one if none is running. */
  get stderrTail(): string {
    if (this.child === undefined) return this.lastTail;
    return this.currentTail();
  }

  /** Restarts used within the current window. */
  get restartsInWindow(): number {
    this.pruneRestarts(this.now());
    return this.restartTimes.length;
  }

  start(): void {
    if (this.child !== undefined) throw new Error("ffmpeg is already running");
    this.stderrChunks = [];
    this.stderrBytes = 0;
    const child = spawn(this.options.ffmpegPath, this.options.args, {
      stdio: ["pipe", this.options.stdout ?? "ignore", "pipe"],
    });
    this.child = child;
    let exited = false;
    let spawnError: Error | undefined;
    let resolveExit: () => void = () => {};
    this.exitWaiters.set(
      child,
      new Promise<void>((resolve) => {
        resolveExit = resolve;
      }),
    );
    // A dead child makes writes fail with EPIPE; the 'exit' event reports the real cause.
    child.stdin?.on("error", (error) => this.logger.debug({ err: error }, "ffmpeg stdin error"));
    child.stderr?.on("data", (chunk: Buffer) => this.keepStderr(chunk));
    child.stdout?.on("data", (chunk: Buffer) => this.emit("stdout", chunk));
    child.once("spawn", () => {
      this.logger.debug({ pid: child.pid }, "ffmpeg started");
      this.emit("spawn", child.pid);
    });
    const onGone = (code: number | null, signal: NodeJS.Signals | null) => {
      if (exited) return;
      exited = true;
      const tail = this.currentTail();
      if (this.child === child) {
        this.child = undefined;
        this.lastTail = tail;
      } // After endInput(), exiting 0 is ffmpeg finishing its input: asked for, nothing to warn about.
      const requested = this.requestedExit.has(child) || (this.inputEnded.has(child) && code === 0);
      const info: FfmpegExit = { code, signal, requested, stderrTail: tail, pid: child.pid };
      if (spawnError) info.error = spawnError;
      if (!requested) this.logger.warn({ code, signal, stderr: tail.slice(-2000) }, "ffmpeg exited");
      resolveExit();
      this.exitWaiters.delete(child);
      this.emit("exit", info);
    };
    child.once("error", (error) => {
      spawnError = error;
      // A spawn failure never produces 'close' on older Node versions; report it now.
      if (child.pid === undefined) onGone(null, null);
    });
    child.once("close", onGone);
  }

  /**
   * Writes to ffmpeg's stdin honouring backpressure: resolves true once the chunk is accepted (at
   * once, or after 'drain'), false when there is no running child or it went away first.
   */
  write(chunk: Buffer): Promise<boolean> {
    const stdin = this.child?.stdin;
    if (!stdin || stdin.destroyed || stdin.writableEnded) return Promise.resolve(false);
    if (stdin.write(chunk)) return Promise.resolve(true);
    // All writers waiting on the same stdin share one 'drain' wait (no listener per write).
    let wait = this.drainWaits.get(stdin);
    if (wait === undefined) {
      wait = new Promise<boolean>((resolve) => {
        const done = (value: boolean) => {
          stdin.off("drain", onDrain);
          stdin.off("close", onClose);
          stdin.off("error", onClose);
          this.drainWaits.delete(stdin);
          resolve(value);
        };
        const onDrain = () => done(true);
        const onClose = () => done(false);
        stdin.on("drain", onDrain);
        stdin.on("close", onClose);
        stdin.on("error", onClose);
      });
      this.drainWaits.set(stdin, wait);
    }
    return wait;
  }

  /** Closes stdin so ffmpeg finishes its input and exits by itself. */ endInput(): void {
    const child = this.child;
    if (child) this.inputEnded.add(child);
    const stdin = child?.stdin;
    if (stdin && !stdin.writableEnded) stdin.end();
  }

  /** Arguments for the next start(): a planned change of settings, which spends no restart budget. */
  setArgs(args: string[]): void {
    this.options.args = args;
  }

  /** Resolves true once the current child has exited (at once if none runs), false after timeoutMs. */
  async whenExited(timeoutMs: number): Promise<boolean> {
    const child = this.child;
    const gone = child === undefined ? undefined : this.exitWaiters.get(child);
    if (gone === undefined) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([gone.then(() => true as const), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Kills the current child (if any) and starts a new one, if the budget allows. Returns false
   * (and starts nothing) when maxRestarts restarts already happened within the window.
   */
  async restart(): Promise<boolean> {
    const now = this.now();
    this.pruneRestarts(now);
    if (this.restartTimes.length >= (this.options.maxRestarts ?? 3)) {
      this.logger.error({ restarts: this.restartTimes.length }, "ffmpeg restart budget exhausted");
      return false;
    }
    this.restartTimes.push(now);
    await this.stop();
    this.start();
    this.emit("restart", this.restartTimes.length);
    return true;
  }

  /** Stops the child: stdin closed, SIGTERM, then SIGKILL after the grace period. Resolves once it is gone. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === undefined) return;
    const gone = this.exitWaiters.get(child) ?? Promise.resolve();
    this.requestedExit.add(child);
    child.stdin?.destroy();
    child.kill("SIGTERM");
    const timer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }, this.options.killGraceMs ?? 2000);
    try {
      await gone;
    } finally {
      clearTimeout(timer);
    }
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  private pruneRestarts(now: number): void {
    const windowMs = this.options.restartWindowMs ?? 120_000;
    this.restartTimes = this.restartTimes.filter((time) => now - time < windowMs);
  }

  private currentTail(): string {
    const all = Buffer.concat(this.stderrChunks);
    return all.subarray(Math.max(0, all.length - this.tailLimit)).toString("utf8");
  }

  private keepStderr(chunk: Buffer): void {
    this.stderrChunks.push(chunk);
    this.stderrBytes += chunk.length;
    while (this.stderrBytes - this.stderrChunks[0].length >= this.tailLimit && this.stderrChunks.length > 1) {
      this.stderrBytes -= this.stderrChunks[0].length;
      this.stderrChunks.shift();
    }
  }
}
