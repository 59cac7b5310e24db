/**
 * Running the real operator binary (`dist/operator/src/main.js`) against a test control plane
 * (test/infra/apiserver.ts) and the local kubelet harness (test/infra/local-kubelet.ts), as a user
 * runs it out of cluster: a child process with `--kubeconfig`, probed over /readyz and /metrics and
 * read through its JSON log. Also a stand-in relay ("fake relay") for tests that need sessions to
 * reach Running without WebRTC: a small node script the kubelet harness runs for the relay
 * container, which merge-patches its own RelaySession's `status.relay` (WebRTC connected, a fresh
 * `lastUpdateTime`) with the pod's ServiceAccount kubeconfig, like the real relay does.
 *
 *   const op = await startOperator({ kubeconfigPath, args: ["--no-leader-elect"] });
 *   await op.waitReady();
 *   …
 *   await op.stop(); // SIGTERM, then SIGKILL after a grace
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { KubeConfig } from "@kubernetes/client-node";
import { freePorts } from "../infra/apiserver.js";

export const repoRoot = process.cwd();
const OPERATOR_MAIN = join(repoRoot, "dist/operator/src/main.js");

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `probe` (every `intervalMs`) until it returns something truthy; throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => T | undefined | false | null | Promise<T | undefined | false | null>,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false && value !== null) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const cause = lastError instanceof Error ? ` (last error: ${lastError.message})` : "";
      throw new Error(`${what}: not within ${timeoutMs} ms${cause}`);
    }
    await sleep(intervalMs);
  }
}

/** One free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0]!;
}

/** Writes `kubeConfig` to a file in a fresh temp dir (for `--kubeconfig`); returns its path. */
export async function writeKubeconfig(kubeConfig: KubeConfig, dir?: string): Promise<string> {
  const folder = dir ?? (await mkdtemp(join(tmpdir(), "trickle-relay-kubeconfig-")));
  const path = join(folder, `kubeconfig-${Date.now()}-${Math.random().toString(36).slice(2, 8)}.json`);
  await writeFile(path, kubeConfig.exportConfig(), { mode: 0o600 });
  return path;
}

export interface OperatorProcessOptions {
  kubeconfigPath: string;
  /** Extra flags (leader election, --namespace, --watch-timeout …). */
  args?: string[];
  /** POD_NAME (the leader identity) and anything else. */
  env?: Record<string, string>;
  /** Serve /metrics (default true, on a free port). */
  metrics?: boolean;
  /** A name for failure messages. */
  name?: string;
  /** Node's own flags for the operator process (--cpu-prof, V8 flags …), before its script. */
  nodeFlags?: string[];
}

export interface LogLine {
  level: number;
  msg?: string;
  time?: number;
  [key: string]: unknown;
}

export interface OperatorProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly healthPort: number;
  readonly metricsPort: number | undefined;
  /** Resolves with the exit code (or signal name) once the process exited. */
  readonly exited: Promise<number | string>;
  /** Everything the process wrote so far. */
  output(): string;
  /** Parsed JSON log lines so far (non-JSON lines skipped). */
  logLines(): LogLine[];
  /** Log lines whose msg matches. */
  logged(msg: string | RegExp): LogLine[];
  /** HTTP status of /readyz, or 0 when nothing answers. */
  readyz(): Promise<number>;
  /** The /metrics text ("" when nothing answers). */
  metrics(): Promise<string>;
  /** Value of one sample (`name{labels}` exactly as exposed, or just `name`), undefined if absent. */
  metric(sample: string): Promise<number | undefined>;
  waitReady(timeoutMs?: number): Promise<void>;
  /** Sends a signal; resolves once the process exited. */
  kill(signal: NodeJS.Signals): Promise<number | string>;
  /**
   * Sends `signal` the moment a log line with this `msg` arrives (checked on every output chunk,
   * not by polling, so the process has little time to go on); resolves once it exited.
   */
  killWhenLogged(msg: string, signal: NodeJS.Signals, timeoutMs?: number): Promise<number | string>;
  /** SIGTERM, SIGKILL after `graceMs`; idempotent. */
  stop(graceMs?: number): Promise<void>;
}

export async function startOperator(options: OperatorProcessOptions): Promise<OperatorProcess> {
  const healthPort = await freePort();
  const metricsPort = options.metrics === false ? undefined : await freePort();
  const name = options.name ?? "operator";
  const child = spawn(
    process.execPath,
    [
      ...(options.nodeFlags ?? []),
      OPERATOR_MAIN,
      ...["--kubeconfig", options.kubeconfigPath],
      ...["--health-port", String(healthPort), "--metrics-port", String(metricsPort ?? 0)],
      ...["--bind-address", "127.0.0.1", "--relay-image", "trickle-relay/relay:faults"],
      ...(options.args ?? []),
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, TRICKLE_RELAY_LOG_JSON: "1", ...options.env },
    },
  );
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve(child.exitCode ?? child.signalCode ?? "unknown");
    }
    child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown"));
  });
  let exitedYet = false;
  void exited.then(() => (exitedYet = true));

  const logLines = (): LogLine[] => {
    const lines: LogLine[] = [];
    for (const line of output.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        lines.push(JSON.parse(line) as LogLine);
      } catch {
        // a partial last line
      }
    }
    return lines;
  };
  const get = async (port: number, path: string): Promise<{ status: number; text: string }> => {
    try {
      const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(3000) });
      return { status: response.status, text: await response.text() };
    } catch {
      return { status: 0, text: "" };
    }
  };
  const operator: OperatorProcess = {
    name,
    child,
    healthPort,
    metricsPort,
    exited,
    output: () => output,
    logLines,
    logged: (msg) =>
      logLines().filter((line) =>
        typeof msg === "string" ? line.msg === msg : msg.test(String(line.msg ?? "")),
      ),
    readyz: async () => (await get(healthPort, "/readyz")).status,
    metrics: async () => (metricsPort === undefined ? "" : (await get(metricsPort, "/metrics")).text),
    async metric(sample) {
      const text = await operator.metrics();
      for (const line of text.split("\n")) {
        if (line.startsWith("#")) continue;
        const space = line.lastIndexOf(" ");
        if (space > 0 && line.slice(0, space) === sample) return Number(line.slice(space + 1));
      }
      return undefined;
    },
    async waitReady(timeoutMs = 30_000) {
      await waitFor(`${name} /readyz 200`, timeoutMs, async () => {
        if (exitedYet) throw new Error(`${name} exited:\n${output.slice(-2000)}`);
        return (await operator.readyz()) === 200;
      }).catch((err: Error) => {
        throw new Error(`${err.message}\n--- ${name} output (tail) ---\n${output.slice(-2000)}`);
      });
    },
    async kill(signal) {
      if (!exitedYet) child.kill(signal);
      return exited;
    },
    async killWhenLogged(msg, signal, timeoutMs = 30_000) {
      const seen = (): boolean => operator.logged(msg).length > 0;
      if (!seen()) {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => {
            stopWatching();
            reject(new Error(`${name} never logged "${msg}" in ${timeoutMs} ms:\n${output.slice(-2000)}`));
          }, timeoutMs);
          // Registered after the collecting listeners, so `output` already holds this chunk. The
          // logger writes to stderr.
          const check = (): void => {
            if (!seen()) return;
            child.kill(signal);
            clearTimeout(timer);
            stopWatching();
            resolve();
          };
          const stopWatching = (): void => {
            child.stdout!.off("data", check);
            child.stderr!.off("data", check);
          };
          child.stdout!.on("data", check);
          child.stderr!.on("data", check);
        });
      } else {
        child.kill(signal);
      }
      return exited;
    },
    async stop(graceMs = 5000) {
      if (exitedYet) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  return operator;
}

/**
 * Writes the fake relay script into `dir` and returns the kubelet `commands` entry for it: the
 * container's `trickle-relay run --session NS/NAME` runs `node <script> run --session NS/NAME`.
 * It reports `status.relay` (WebRTC connected, lastUpdateTime now) at start and every
 * `reportEveryMs`, through the apiserver its KUBECONFIG names (errors ignored, as a relay riding out
 * an apiserver outage would), and exits 0 on SIGTERM.
 */
export async function fakeRelayCommand(dir: string, reportEveryMs = 5000): Promise<string[]> {
  const script = `
import { readFileSync } from "node:fs";
import { request } from "node:https";
const kubeconfig = JSON.parse(readFileSync(process.env.KUBECONFIG, "utf8"));
const cluster = kubeconfig.clusters[0].cluster;
const token = kubeconfig.users[0].user.token;
const ca = Buffer.from(cluster["certificate-authority-data"], "base64");
const [namespace, name] = process.argv[process.argv.indexOf("--session") + 1].split("/");
const url = new URL(cluster.server + "/apis/trickle-relay.io/v1alpha1/namespaces/" + namespace +
  "/relaysessions/" + name + "/status?fieldManager=relay-pod");
function report() {
  const relay = {
    lastUpdateTime: new Date().toISOString().replace(/\\.\\d+Z$/, "Z"),
    webrtc: { connectionState: "connected", iceConnectionState: "connected" },
  };
  const req = request(url, {
    method: "PATCH", ca, timeout: 5000,
    headers: { authorization: "Bearer " + token, "content-type": "application/merge-patch+json" },
  }, (res) => res.resume());
  req.on("timeout", () => req.destroy());
  req.on("error", () => {});
  req.end(JSON.stringify({ status: { relay } }));
}
report();
const timer = setInterval(report, ${reportEveryMs});
process.on("SIGTERM", () => { clearInterval(timer); process.exit(0); });
`;
  const path = join(dir, "fake-relay.mjs");
  await writeFile(path, script);
  return [process.execPath, path];
}

/** A temp dir removed by the returned cleanup. */
export async function tempDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
