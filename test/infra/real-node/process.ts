/**
 * Long-running node processes (dockerd, kubelet, kube-scheduler) and one-shot commands for the
 * real test node. Daemons get a log file, a parent-death signal where `setpriv` has one (so a
 * SIGKILLed test process does not leave a kubelet behind) and a bounded stop: SIGTERM, then SIGKILL.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (killed after `timeoutMs`); never throws on a non-zero exit. */
export function run(
  command: string,
  args: string[],
  options: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((ok) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], env: options.env ?? process.env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    const timer = setTimeout(() => {
      stderr += `\n[real-node] ${command} killed after ${timeoutMs} ms`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      ok({ code: -1, stdout, stderr: stderr + err.message });
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      ok({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? "");
  });
}

/** Like run(), but throws with the command's stderr when it fails. */
export async function runChecked(
  command: string,
  args: string[],
  options: { input?: string; timeoutMs?: number } = {},
): Promise<string> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(" ")} failed (exit ${result.code}): ${result.stderr.trim()}`);
  }
  return result.stdout;
}

const hasSetpriv = spawnSync("bash", ["-c", "setpriv --help 2>/dev/null | grep -q pdeathsig"]).status === 0;
const liveDaemons = new Set<ChildProcess>();
let exitHookInstalled = false;

export interface Daemon {
  name: string;
  child: ChildProcess;
  logPath: string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** True while the process runs. */
  running(): boolean;
  /** The last `lines` lines of its log. */
  logTail(lines?: number): Promise<string>;
  /** SIGTERM, SIGKILL after `graceMs`; idempotent. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts `argv` with stdout and stderr appended to `<logDir>/<name>.log`. */
export function startDaemon(name: string, argv: string[], logDir: string): Daemon {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const child of liveDaemons) child.kill("SIGKILL");
    });
  }
  const logPath = join(logDir, `${name}.log`);
  const log: WriteStream = createWriteStream(logPath, { flags: "a" });
  const [command, ...args] = hasSetpriv ? ["setpriv", "--pdeathsig", "SIGKILL", "--", ...argv] : argv;
  const child = spawn(command!, args, { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.pipe(log, { end: false });
  child.stderr!.pipe(log, { end: false });
  liveDaemons.add(child);
  let done = false;
  const exited = new Promise<number | null>((resolveExit) => {
    child.once("error", (err) => {
      log.write(`spawn error: ${err.message}\n`);
      done = true;
      liveDaemons.delete(child);
      resolveExit(-1);
    });
    child.once("exit", (code, signal) => {
      done = true;
      liveDaemons.delete(child);
      log.write(`\n[real-node] ${name} exited code=${code} signal=${signal}\n`);
      resolveExit(code);
    });
  });
  let stopping: Promise<void> | undefined;
  return {
    name,
    child,
    logPath,
    exited,
    running: () => !done,
    async logTail(lines = 25) {
      const text = await readFile(logPath, "utf8").catch(() => "");
      return text.trimEnd().split("\n").slice(-lines).join("\n");
    },
    stop(graceMs = 10_000) {
      stopping ??= (async () => {
        if (!done) {
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
          await exited;
          clearTimeout(timer);
        }
        await new Promise<void>((closed) => log.end(closed));
      })();
      return stopping;
    },
  };
}

/** Polls `probe` until it returns true; fails early (with the log tail) when `daemon` exits. */
export async function waitForDaemon(
  daemon: Daemon,
  what: string,
  timeoutMs: number,
  probe: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!daemon.running())
      throw new Error(`${daemon.name} exited before ${what}:\n${await daemon.logTail()}`);
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) {
      throw new Error(`${daemon.name}: ${what} not within ${timeoutMs} ms:\n${await daemon.logTail()}`);
    }
    await sleep(250);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}
