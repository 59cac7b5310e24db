/**
 * One supervised long-lived ffmpeg child: spawn, stdin with backpressure, the stderr tail for error
 * reports, exit reporting and a restart budget. Separate because it knows nothing of which ffmpeg
 * or which arguments: the transcoder and the keyframe repair stage both run one.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { silentLogger, type Logger } from "../common/log.js";

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
