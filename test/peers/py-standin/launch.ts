// Starts the Python stand-in ComfyStream peer (standin.py) as a child process and waits for the port
// it reports. Shared by the stand-in's own tests and the relay's end-to-end tests.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";

export const PYTHON = "/usr/bin/python3"; // Debian's, which sees python3-aiortc; not a pyenv one first on PATH
export const STANDIN = "test/peers/py-standin/standin.py"; // relative to the repo root (cwd under run-tests.sh)
export const LOOPBACK_ICE_ADDRESS = "127.0.0.2"; // aioice skips 127.0.0.1

export class PyStandin {
  readonly baseUrl: string;
  private readonly stderrTail: string[];

  private constructor(
    private readonly child: ChildProcess,
    port: number,
    stderrTail: string[],
  ) {
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.stderrTail = stderrTail;
  }

  static async start(extraArgs: string[] = []): Promise<PyStandin> {
    const args = [
      STANDIN,
      "--port",
      "0",
      "--ice-address",
      LOOPBACK_ICE_ADDRESS,
      "--exit-with-parent",
      ...extraArgs,
    ];
    const child = spawn(PYTHON, args, { stdio: ["ignore", "pipe", "pipe"] });
    const stderrTail: string[] = [];
    createInterface({ input: child.stderr! }).on("line", (line) => {
      stderrTail.push(line);
      if (stderrTail.length > 80) stderrTail.shift();
    });
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`stand-in did not report its port within 15 s:\n${stderrTail.join("\n")}`));
      }, 15_000);
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`stand-in exited early (${code}):\n${stderrTail.join("\n")}`));
      });
      createInterface({ input: child.stdout! }).on("line", (line) => {
        try {
          const event = JSON.parse(line) as { event?: string; port?: number };
          if (event.event === "listening" && typeof event.port === "number") {
            clearTimeout(timer);
            resolve(event.port);
          }
        } catch {
          // not our JSON line
        }
      });
    });
    return new PyStandin(child, port, stderrTail);
  }

  logs(): string {
    return this.stderrTail.join("\n");
  }

  async stats(): Promise<PyStandinStats> {
    const response = await fetch(`${this.baseUrl}/stats`, { signal: AbortSignal.timeout(5_000) });
    return (await response.json()) as PyStandinStats;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    const killTimer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(killTimer);
  }
}

export interface PyStandinStats {
  pipeline: {
    state: string;
    prompt_count: number;
    prompts_source: string | null;
    last_prompts: Record<string, unknown>[];
    width: number;
    height: number;
    last_frame_means: { input: number[]; output: number[] } | null;
  };
  frames_in: number;
  frames_out: number;
  frames_dropped: number;
  peers_served: number;
  offers_failed: number;
  prompt_updates: number;
  keyframes: { keyframe_requests: number; forced_idrs: number; encoder_opens: number };
  peers: { number: number; connection_state: string }[];
  ended_peers: { number: number; connection_state: string }[];
  current_peer_state: string | null;
}
