/**
 * The real ComfyStream server (livepeer/comfystream's own `server/app.py` with the real embedded
 * ComfyUI, CPU only) as a test peer: `../shared/peers/comfystream/run.sh` beside the checkout
 * (its README says what it installs and what to expect). Used by test/session/real-comfystream.test.ts
 * and `npm run bench:relay -- --real-comfystream`.
 *
 * `realComfyStreamUnavailable()` says why it cannot run here (no peer folder, packages not installed
 * — `npm test`'s setup installs them as root —, or no loopback-only namespace), so that a suite can
 * skip with the reason instead of failing or passing silently.
 *
 * One server per use: the real server notices a closed client only when ICE consent expires (~30 s,
 * aiortc ignores DTLS close_notify), and a failed connection's cleanup has left it unable to take
 * the next offer (seen here), so a fresh one is the only clean start.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import { freePorts } from "../infra/apiserver.js";
import { inLoopbackOnlyNamespace } from "../infra/netns.js";

/** The peer folder, beside the checkout (`../shared/peers/comfystream`), or COMFYSTREAM_PEER_DIR. */
export const REAL_COMFYSTREAM_DIR =
  process.env.COMFYSTREAM_PEER_DIR ??
  path.resolve(import.meta.dirname, "../../../../shared/peers/comfystream");

/** The cache run.sh unpacks the sources into (its `.key` appears once set-up is complete). */
const PEER_CACHE = path.join(
  process.env.XDG_CACHE_HOME ?? path.join(homedir(), ".cache"),
  "comfystream-peer",
);

/** Why the real server cannot be used here, or undefined when it can. */
export function realComfyStreamUnavailable(): string | undefined {
  if (!existsSync(path.join(REAL_COMFYSTREAM_DIR, "run.sh"))) {
    return `the real ComfyStream peer is not beside the checkout (${REAL_COMFYSTREAM_DIR}/run.sh)`;
  }
  if (!existsSync(path.join(PEER_CACHE, "src", ".key"))) {
    return (
      "the real ComfyStream peer is not set up: run `COMFYSTREAM_PEER_SETUP_ONLY=1 bash " +
      `${REAL_COMFYSTREAM_DIR}/run.sh` +
      "` as root (npm test's setup does when it can)"
    );
  }
  if (!inLoopbackOnlyNamespace)
    return "not in a loopback-only network namespace (WebRTC must stay on loopback)";
  return undefined;
}

export interface RealComfyStream {
  url: string;
  port: number;
  /** The last lines of its log, for failure messages. */
  logTail(): string;
  stop(): Promise<void>;
  /** SIGKILL to the whole process group: a crash, nothing closed gracefully. */
  kill(): Promise<void>;
}

/** Starts a fresh server on a free loopback port (or `port`) and waits for `GET /health` (9–14 s here). */
export async function startRealComfyStream(
  options: { timeoutMs?: number; port?: number } = {},
): Promise<RealComfyStream> {
  const port = options.port ?? (await freePorts(1))[0]!;
  const child = spawn("bash", [path.join(REAL_COMFYSTREAM_DIR, "run.sh"), String(port)], {
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // run.sh execs python, which starts workers: stop the whole group
  });
  const tail: string[] = [];
  const keep = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (!line.trim() || line.includes("timed out, continuing")) continue;
      tail.push(line);
      if (tail.length > 60) tail.shift();
    }
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const url = `http://127.0.0.1:${port}`;
  const server: RealComfyStream = {
    url,
    port,
    logTail: () => tail.join("\n"),
    stop: () => stopGroup(child),
    kill: () => stopGroup(child, "SIGKILL"),
  };
  const deadline = Date.now() + (options.timeoutMs ?? 90_000);
  while (Date.now() < deadline) {
    if (child.exitCode !== null)
      throw new Error(`the real ComfyStream exited (${child.exitCode}):\n${server.logTail()}`);
    try {
      const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
      if (response.ok) return server;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  await server.stop();
  throw new Error(
    `the real ComfyStream was not healthy within ${options.timeoutMs ?? 90_000} ms:\n${server.logTail()}`,
  );
}

async function stopGroup(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  try {
    process.kill(-child.pid!, signal);
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // gone
    }
  }, 5000);
  await exited;
  clearTimeout(timer);
}

/** ComfyUI API-format workflows the real server runs on a CPU (core nodes only; see its README). */
export const REAL_WORKFLOWS = {
  /** LoadTensor → SaveTensor: as fast as the server goes (~30 fps at 512×512 here). */
  passthrough: {
    "1": { class_type: "LoadTensor", inputs: {} },
    "2": { class_type: "SaveTensor", inputs: { images: ["1", 0] } },
  },
  /**
   * A 25×25 Gaussian blur: a few frames a second on this 2-core box, well below a 30 fps input
   * (the CPU stands in for a heavy diffusion workflow on a GPU).
   */
  slowBlur: {
    "1": { class_type: "LoadTensor", inputs: {} },
    "2": { class_type: "ImageBlur", inputs: { image: ["1", 0], blur_radius: 12, sigma: 4.0 } },
    "3": { class_type: "SaveTensor", inputs: { images: ["2", 0] } },
  },
};
