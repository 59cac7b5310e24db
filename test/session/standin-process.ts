/**
 * The TS stand-in ComfyStream in a child process of its own, so that a test or benchmark can do to
 * it what happens to a real server: SIGKILL (process killed: no DTLS close, nothing more sent),
 * SIGSTOP/SIGCONT (host gone silent, then back). The in-process stand-in cannot be killed like that.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const MAIN = fileURLToPath(new URL("../../relay-pod/src/demo/standin-peer/main.js", import.meta.url));

export interface StandinProcess {
  url: string;
  port: number;
  child: ChildProcess;
  signal(signal: NodeJS.Signals): void;
  /** Kills it (SIGCONT first, in case it is stopped) and waits for the exit. */
  stop(): Promise<void>;
}

export async function startStandinProcess(options: {
  iceAddresses: string[];
  port?: number;
  mode?: "passthrough" | "filter";
}): Promise<StandinProcess> {
  const child = spawn(
    process.execPath,
    [
      MAIN,
      "--port",
      String(options.port ?? 0),
      "--ice-address",
      options.iceAddresses.join(","),
      "--mode",
      options.mode ?? "passthrough",
      "--log-level",
      "error",
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const lines = createInterface({ input: child.stdout! });
  let timer: NodeJS.Timeout | undefined;
  const [firstLine] = (await Promise.race([
    once(lines, "line"),
    new Promise((_, reject) => {
      timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error("stand-in process did not start within 15 s"));
      }, 15_000);
    }),
  ])) as [string];
  clearTimeout(timer);
  const url = firstLine.replace(/^listening /, "").trim();
  return {
    url,
    port: Number(new URL(url).port),
    child,
    signal: (signal) => {
      if (child.exitCode === null) child.kill(signal);
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill("SIGCONT");
      child.kill("SIGKILL");
      await exited;
    },
  };
}
