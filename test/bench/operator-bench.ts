/**
 * Operator benchmark: how fast a RelaySession becomes a pod, how long the operator takes to
 * reconcile a burst of sessions, what it costs in memory and CPU with that many sessions, and how
 * many API writes it makes per session once nothing changes.
 *
 *   npm run bench:operator [-- --sessions 1000 --latency-samples 50 --steady-seconds 60 --concurrency 4]
 *
 * Set-up: the real control plane of test/infra/apiserver.ts (etcd + kube-apiserver on 127.0.0.1, no
 * controller manager) and the operator binary (dist/operator/src/main.js) as a child process, so
 * its RSS and CPU time in /proc are its own. Nothing runs pods, so in places the bench itself plays
 * the missing components, and says so: the garbage collector (deleting the latency phase's
 * sessions and pods) and the kubelet + scheduler (binding every relay pod and reporting it
 * Running). No relay pods run, so nobody writes `status.relay`: the steady-state writes measured
 * are the operator's own (sessions stay in phase Starting; their startup timeout is set to an hour
 * so it does not fire during the run).
 *
 * Phases:
 *  1. baseline   — apiserver writes with no operator (the apiserver's own housekeeping);
 *  2. latency    — sessions created one at a time, paced; create → pod ADDED on the bench's watch;
 *  3. scale      — N sessions created with bounded parallelism; time until every pod exists and
 *                  every session has status.observedGeneration;
 *  4. kubelet    — the bench binds each pod and patches its status to Running; the operator moves
 *                  every session to Starting;
 *  5. steady     — a quiet window: apiserver write counters (apiserver_request_total), the
 *                  operator's CPU seconds, RSS and its own /metrics.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { freePort } from "../operator/operator-harness.js";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  Watch,
  setHeaderOptions,
  type V1Pod,
} from "@kubernetes/client-node";
import {
  RELAY_SESSION_API_VERSION,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_KIND,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelaySession,
} from "../../crds/src/index.js";
import { startControlPlane, type ControlPlane } from "../infra/apiserver.js";
import { machineInfo, round, writeResults } from "./results.js";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "../../..");
const OPERATOR_MAIN = join(repoRoot, "dist/operator/src/main.js");
const CLOCK_TICKS = 100; // USER_HZ on Linux
const NAMESPACE = "default";
const POD_SELECTOR = "app.kubernetes.io/managed-by=trickle-relay-operator";
const SESSION_LABEL = "trickle-relay.io/session";
const BENCH_NODE = "bench-node";
const WRITE_VERBS = new Set(["POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION"]);
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

interface Options {
  sessions: number;
  latencySamples: number;
  latencyIntervalMs: number;
  steadySeconds: number;
  baselineSeconds: number;
  concurrency: number;
  parallel: number;
  reconcileTimeoutSeconds: number;
  out: string;
}

const HELP = `npm run bench:operator [-- options]

Runs the trickle-relay-operator binary against a real kube-apiserver (test/infra/apiserver.ts) and
measures RelaySession → pod latency, the time to reconcile a burst of sessions, the operator's RSS
and CPU with them, and its API writes per session per minute in steady state.

  --sessions N                sessions in the scale phase (default 1000)
  --latency-samples N         sessions created one at a time for the latency figure (default 50)
  --latency-interval-ms MS    pause between latency samples (default 200)
  --steady-seconds S          length of the steady-state window (default 60)
  --baseline-seconds S        apiserver-only window before the operator starts (default 20)
  --concurrency N             the operator's --concurrency (default 4, the operator's default)
  --parallel N                parallel creates in the scale phase (default 20)
  --reconcile-timeout S       give up waiting for the scale phase after S seconds (default 1800)
  --out FILE                  results JSON (default bench-results/operator.json; .md beside it)
  -h, --help                  this text
`;

function parseOptions(): Options | undefined {
  const { values } = parseArgs({
    options: {
      sessions: { type: "string", default: "1000" },
      "latency-samples": { type: "string", default: "50" },
      "latency-interval-ms": { type: "string", default: "200" },
      "steady-seconds": { type: "string", default: "60" },
      "baseline-seconds": { type: "string", default: "20" },
      concurrency: { type: "string", default: "4" },
      parallel: { type: "string", default: "20" },
      "reconcile-timeout": { type: "string", default: "1800" },
      out: { type: "string", default: "bench-results/operator.json" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return undefined;
  }
  const int = (name: string, value: string | undefined, min: number): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}`);
    return n;
  };
  return {
    sessions: int("sessions", values.sessions, 1),
    latencySamples: int("latency-samples", values["latency-samples"], 0),
    latencyIntervalMs: int("latency-interval-ms", values["latency-interval-ms"], 0),
    steadySeconds: int("steady-seconds", values["steady-seconds"], 5),
    baselineSeconds: int("baseline-seconds", values["baseline-seconds"], 0),
    concurrency: int("concurrency", values.concurrency, 1),
    parallel: int("parallel", values.parallel, 1),
    reconcileTimeoutSeconds: int("reconcile-timeout", values["reconcile-timeout"], 10),
    out: values.out!,
  };
}

function progress(message: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

// ---------------------------------------------------------------------------------------------
// /proc

/** Resident set size of `pid` in MB, or undefined once it has exited. */
function rssMb(pid: number): number | undefined {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** utime + stime of `pid` in seconds. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // After the command: state is field 3, utime field 14, stime field 15 (1-based over the whole line).
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "?";
  }
}

/** Direct children of this process (the control plane's etcd and kube-apiserver, the operator). */
function childPids(): number[] {
  const pids: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${process.pid}/task`)) {
      const text = readFileSync(`/proc/${process.pid}/task/${task}/children`, "utf8").trim();
      if (text) pids.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    // no /proc children file (old kernels): control plane figures stay empty
  }
  return pids;
}

function machineCpu(): { busy: number; total: number } {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3]! + (fields[4] ?? 0);
  return { busy: total - idle, total };
}

/** CPU ticks of every process, to name what else used the machine during the steady window. */
function allProcessTicks(): Map<number, { comm: string; ticks: number }> {
  const result = new Map<number, { comm: string; ticks: number }>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      result.set(Number(entry), { comm, ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // exited meanwhile
    }
  }
  return result;
}

function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim().slice(0, 100);
  } catch {
    return "";
  }
}

/**
 * What the whole machine did between start() and finish(): busy % over all cores and the other
 * processes (not this bench, the operator or its control plane) that used at least 1 CPU second.
 */
class MachineLoad {
  private readonly machine = machineCpu();
  private readonly ticks = allProcessTicks();
  constructor(private readonly ownPids: Set<number>) {}
  finish(): {
    machineCpuPercent: number;
    otherProcessesCpu: Array<{ pid: number; comm: string; cpuSeconds: number; cmdline: string }>;
  } {
    const machine = machineCpu();
    const others = [...allProcessTicks().entries()]
      .filter(([pid]) => !this.ownPids.has(pid))
      .map(([pid, { comm, ticks }]) => ({
        pid,
        comm,
        cpuSeconds: (ticks - (this.ticks.get(pid)?.ticks ?? 0)) / CLOCK_TICKS,
      }))
      .filter((p) => p.cpuSeconds >= 1)
      .sort((a, b) => b.cpuSeconds - a.cpuSeconds)
      .slice(0, 8)
      .map((p) => ({ ...p, cpuSeconds: round(p.cpuSeconds, 1), cmdline: cmdlineOf(p.pid) }));
    return {
      machineCpuPercent: round(
        ((machine.busy - this.machine.busy) / Math.max(1, machine.total - this.machine.total)) * 100,
        1,
      ),
      otherProcessesCpu: others,
    };
  }
}

/** Samples a process's RSS once a second; `mark()` starts a new named segment. */
class RssSampler {
  private readonly timer: NodeJS.Timeout;
  private readonly segments = new Map<string, number[]>();
  private current = "start";
  constructor(private readonly pid: number) {
    this.sample();
    this.timer = setInterval(() => this.sample(), 1000);
    this.timer.unref();
  }
  mark(segment: string): void {
    this.current = segment;
    this.sample();
  }
  sample(): number | undefined {
    const rss = rssMb(this.pid);
    if (rss === undefined) return undefined;
    const list = this.segments.get(this.current) ?? [];
    list.push(rss);
    this.segments.set(this.current, list);
    return rss;
  }
  stop(): void {
    clearInterval(this.timer);
  }
  peak(segment?: string): number {
    const lists = segment ? [this.segments.get(segment) ?? []] : [...this.segments.values()];
    return round(Math.max(0, ...lists.flat()));
  }
  mean(segment: string): number {
    const list = this.segments.get(segment) ?? [];
    return list.length ? round(list.reduce((a, b) => a + b, 0) / list.length) : 0;
  }
  last(segment: string): number {
    return round(this.segments.get(segment)?.at(-1) ?? 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Metrics (Prometheus text)

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** apiserver_request_total of write verbs, keyed "VERB resource[/subresource] code". */
type WriteCounts = Map<string, number>;

function writeCounts(samples: Sample[]): WriteCounts {
  const counts: WriteCounts = new Map();
  for (const s of samples) {
    if (s.name !== "apiserver_request_total" || !WRITE_VERBS.has(s.labels.verb ?? "")) continue;
    const resource = s.labels.subresource
      ? `${s.labels.resource}/${s.labels.subresource}`
      : (s.labels.resource ?? "?");
    const key = `${s.labels.verb} ${resource} ${s.labels.code}`;
    counts.set(key, (counts.get(key) ?? 0) + s.value);
  }
  return counts;
}

function diffCounts(after: WriteCounts, before: WriteCounts): Record<string, number> {
  const diff: Record<string, number> = {};
  for (const [key, value] of after) {
    const d = value - (before.get(key) ?? 0);
    if (d > 0) diff[key] = d;
  }
  return Object.fromEntries(Object.entries(diff).sort((a, b) => b[1] - a[1]));
}

const total = (diff: Record<string, number>): number => Object.values(diff).reduce((a, b) => a + b, 0);

/** The operator's own series worth keeping (informers, workqueue, reconciles); no buckets. */
function operatorSeries(samples: Sample[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) {
    if (!/^(operator_informer_|operator_workqueue_|trickle_relay_operator_)/.test(s.name)) continue;
    if (s.name.endsWith("_bucket")) continue;
    const labels = Object.entries(s.labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(",");
    out[labels ? `${s.name}{${labels}}` : s.name] = round(s.value, 3);
  }
  return out;
}

function diffSeries(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(after)) {
    if (!/_total|_count|_sum/.test(key)) continue;
    const d = round(value - (before[key] ?? 0), 3);
    if (d !== 0) out[key] = d;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The control plane over HTTPS (metrics and version; the typed client has neither)

function apiserverGet(cp: ControlPlane, path: string): Promise<string> {
  const ca = cp.caFile ? readFileSync(cp.caFile) : undefined;
  return new Promise((ok, fail) => {
    const req = httpsRequest(
      `${cp.server}${path}`,
      {
        ca,
        rejectUnauthorized: ca !== undefined,
        timeout: 30_000,
        headers: { authorization: `Bearer ${cp.token}` },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const body = Buffer.concat(chunks).toString("utf8");
          if ((res.statusCode ?? 0) >= 300) fail(new Error(`GET ${path}: HTTP ${res.statusCode}`));
          else ok(body);
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.on("error", fail);
    req.end();
  });
}

async function apiserverWrites(cp: ControlPlane): Promise<WriteCounts> {
  return writeCounts(parsePrometheus(await apiserverGet(cp, "/metrics")));
}

async function operatorMetrics(port: number): Promise<Record<string, number>> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) });
  return operatorSeries(parsePrometheus(await response.text()));
}

// ---------------------------------------------------------------------------------------------
// Watches the bench holds: relay pods (ADDED time per session) and RelaySessions (status)

interface SessionState {
  observedGeneration?: number;
  observedAt?: number;
  phase?: string;
}

class Tracker {
  /** Session name → performance.now() of its pod's ADDED event (first pod only). */
  readonly podAdded = new Map<string, number>();
  readonly sessions = new Map<string, SessionState>();
  private readonly podWaiters = new Map<string, () => void>();
  sessionEvents = 0;
  podEvents = 0;
  lastSessionEventAt = 0;
  watchRestarts = 0;
  private readonly aborts: AbortController[] = [];
  private stopped = false;

  constructor(private readonly kubeConfig: KubeConfig) {}

  async start(): Promise<void> {
    await Promise.all([
      this.watch(
        `/api/v1/namespaces/${NAMESPACE}/pods`,
        { labelSelector: POD_SELECTOR },
        (type, pod: V1Pod) => this.onPod(type, pod),
      ),
      this.watch(
        `/apis/${RELAY_SESSION_GROUP}/${RELAY_SESSION_VERSION}/namespaces/${NAMESPACE}/${RELAY_SESSION_PLURAL}`,
        {},
        (type, session: RelaySession) => this.onSession(type, session),
      ),
    ]);
  }

  stop(): void {
    this.stopped = true;
    for (const abort of this.aborts) abort.abort();
  }

  /** Resolves when the pod of `session` has been seen (ADDED), rejects after `timeoutMs`. */
  waitForPod(session: string, timeoutMs: number): Promise<number> {
    const seen = this.podAdded.get(session);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((ok, fail) => {
      const timer = setTimeout(() => {
        this.podWaiters.delete(session);
        fail(new Error(`no pod for session ${session} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.podWaiters.set(session, () => {
        clearTimeout(timer);
        ok(this.podAdded.get(session)!);
      });
    });
  }

  private onPod(type: string, pod: V1Pod): void {
    this.podEvents++;
    const session = pod.metadata?.labels?.[SESSION_LABEL];
    if (type !== "ADDED" || !session || this.podAdded.has(session)) return;
    this.podAdded.set(session, performance.now());
    const waiter = this.podWaiters.get(session);
    this.podWaiters.delete(session);
    waiter?.();
  }

  private onSession(type: string, session: RelaySession): void {
    const name = session.metadata?.name;
    if (!name) return;
    this.sessionEvents++;
    this.lastSessionEventAt = performance.now();
    if (type === "DELETED") {
      this.sessions.delete(name);
      return;
    }
    const state = this.sessions.get(name) ?? {};
    const observed = session.status?.observedGeneration;
    if (observed !== undefined && state.observedAt === undefined) state.observedAt = performance.now();
    state.observedGeneration = observed;
    state.phase = session.status?.phase;
    this.sessions.set(name, state);
  }

  /** A watch from "now" that re-opens itself from the last resourceVersion until stop(). */
  private async watch<T extends { metadata?: { resourceVersion?: string } }>(
    path: string,
    query: Record<string, string>,
    handler: (type: string, obj: T) => void,
  ): Promise<void> {
    let resourceVersion: string | undefined;
    let gone = false;
    const open = async (): Promise<void> => {
      if (this.stopped) return;
      const watch = new Watch(this.kubeConfig);
      // client-node ends a watch after 30 s without data; in the quiet steady window that would
      // churn the bench's watches, so allow 10 minutes of silence (bookmarks arrive about each minute).
      if ("requestTimeoutMs" in watch) Object.assign(watch, { requestTimeoutMs: 600_000 });
      const abort = await watch.watch(
        path,
        { ...query, allowWatchBookmarks: true, ...(resourceVersion && { resourceVersion }) },
        (type, obj: T) => {
          if (type === "ERROR") {
            if ((obj as { code?: number }).code === 410) gone = true;
            return;
          }
          if (obj?.metadata?.resourceVersion) resourceVersion = obj.metadata.resourceVersion;
          if (type !== "BOOKMARK") handler(type, obj);
        },
        (err: unknown) => {
          if (this.stopped) return;
          this.watchRestarts++;
          progress(`bench watch on ${path} ended (${err ? String(err) : "closed"}); re-opening`);
          // Only a 410 Gone loses the place: start again from "now" (existing objects come as ADDED).
          if (gone) resourceVersion = undefined;
          gone = false;
          void sleep(500)
            .then(open)
            .catch((error: unknown) => {
              progress(`bench watch on ${path} could not re-open: ${String(error)}; retrying`);
              void sleep(2000).then(open);
            });
        },
      );
      this.aborts.push(abort);
    };
    await open();
  }
}

// ---------------------------------------------------------------------------------------------
// The operator child process

interface OperatorProcess {
  child: ChildProcess;
  pid: number;
  metricsPort: number;
  logLevels: Record<string, number>;
  /** Distinct warning/error messages with their counts. */
  problems: Map<string, number>;
  exited: Promise<number | null>;
  command: string;
}

async function startOperator(kubeconfigPath: string, concurrency: number): Promise<OperatorProcess> {
  const [healthPort, metricsPort] = [await freePort(), await freePort()];
  const args = [
    OPERATOR_MAIN,
    ...["--kubeconfig", kubeconfigPath, "--no-leader-elect"],
    ...["--health-port", String(healthPort), "--metrics-port", String(metricsPort)],
    ...["--bind-address", "127.0.0.1", "--concurrency", String(concurrency)],
  ];
  const child = spawn(process.execPath, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, TRICKLE_RELAY_LOG_JSON: "1" },
  });
  process.on("exit", () => child.kill("SIGKILL"));
  const logLevels: Record<string, number> = {};
  const problems = new Map<string, number>();
  const levelName: Record<number, string> = {
    10: "trace",
    20: "debug",
    30: "info",
    40: "warn",
    50: "error",
    60: "fatal",
  };
  let pending = "";
  const onData = (chunk: Buffer) => {
    pending += chunk.toString("utf8");
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) {
      if (!line.trim()) continue;
      let entry: { level?: number; msg?: string; err?: { message?: string } };
      try {
        entry = JSON.parse(line);
      } catch {
        logLevels.text = (logLevels.text ?? 0) + 1;
        continue;
      }
      const level = levelName[entry.level ?? 30] ?? String(entry.level);
      logLevels[level] = (logLevels[level] ?? 0) + 1;
      if ((entry.level ?? 30) >= 40) {
        const key = `${level}: ${entry.msg ?? ""}${entry.err?.message ? ` (${entry.err.message.slice(0, 160)})` : ""}`;
        problems.set(key, (problems.get(key) ?? 0) + 1);
      }
    }
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`operator exited with ${child.exitCode} before /readyz`);
    const ready = await fetch(`http://127.0.0.1:${healthPort}/readyz`, {
      signal: AbortSignal.timeout(2_000),
    }).catch(() => undefined);
    if (ready?.status === 200) break;
    if (Date.now() > deadline) throw new Error("operator not ready within 60 s");
    await sleep(200);
  }
  return {
    child,
    pid: child.pid!,
    metricsPort,
    logLevels,
    problems,
    exited,
    command: `node dist/operator/src/main.js --kubeconfig KUBECONFIG --no-leader-elect --health-port ${healthPort} --metrics-port ${metricsPort} --bind-address 127.0.0.1 --concurrency ${concurrency}`,
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return round(sorted[index]!, 1);
}

function stats(values: number[]): { n: number; p50: number | null; p95: number | null; max: number | null } {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    max: percentile(sorted, 100),
  };
}

/** Runs `task` over `items` with at most `parallel` in flight; returns the errors. */
async function pool<T>(items: T[], parallel: number, task: (item: T) => Promise<void>): Promise<Error[]> {
  const errors: Error[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, items.length) }, async () => {
      for (;;) {
        const index = next++;
        if (index >= items.length) return;
        try {
          await task(items[index]!);
        } catch (err) {
          errors.push(err as Error);
        }
      }
    }),
  );
  return errors;
}

/** Retries a call a few times on transient failures (429/5xx/connection), bounded. */
async function withRetry<T>(call: () => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      const code = err instanceof ApiException ? err.code : undefined;
      const transient = code === undefined || code === 429 || code >= 500;
      if (!transient || attempt >= attempts) throw err;
      await sleep(200 * attempt);
    }
  }
}

function sessionBody(name: string): object {
  return {
    apiVersion: RELAY_SESSION_API_VERSION,
    kind: RELAY_SESSION_KIND,
    metadata: { name, namespace: NAMESPACE, labels: { "bench.trickle-relay.io/run": "operator" } },
    spec: {
      trickle: { inputUrl: `https://gateway.example.com:7280/live/${name}` },
      comfystream: { url: "http://comfystream.comfystream.svc.cluster.local:8889" },
      // No relay runs in this benchmark: keep the startup timeout out of the way of the steady window.
      lifetime: { startupTimeoutSeconds: 3600 },
      prompts: [
        {
          "1": { class_type: "LoadTensor", inputs: {} },
          "2": { class_type: "ImageInvert", inputs: { image: ["1", 0] } },
          "3": { class_type: "SaveTensor", inputs: { images: ["2", 0] } },
        },
      ],
    },
  };
}

function sessionName(prefix: string, i: number): string {
  return `${prefix}-${String(i).padStart(5, "0")}`;
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const options = parseOptions();
  if (!options) return;
  const startedAt = new Date();
  const argv = process.argv.slice(2);
  const command = `npm run bench:operator${argv.length ? ` -- ${argv.join(" ")}` : ""}`;
  progress(`operator benchmark: ${JSON.stringify(options)}`);

  progress("starting etcd + kube-apiserver (no controller manager) with the RelaySession CRD ...");
  const cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds")] });
  const cleanups: Array<() => Promise<unknown> | unknown> = [() => cp.stop()];
  let operator: OperatorProcess | undefined;
  try {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(cp.kubeconfigPath);
    const core = kubeConfig.makeApiClient(CoreV1Api);
    const customObjects = kubeConfig.makeApiClient(CustomObjectsApi);
    const version = JSON.parse(await apiserverGet(cp, "/version")) as { gitVersion?: string };
    const controlPlanePids = childPids().filter((pid) => ["etcd", "kube-apiserver"].includes(commOf(pid)));

    // 1. Baseline: what the apiserver writes by itself, with no client at all.
    progress(`baseline: apiserver writes with no operator for ${options.baselineSeconds} s ...`);
    const baselineBefore = await apiserverWrites(cp);
    await sleep(options.baselineSeconds * 1000);
    const baselineDiff = diffCounts(await apiserverWrites(cp), baselineBefore);
    const baselineWritesPerMin =
      options.baselineSeconds > 0 ? round((total(baselineDiff) * 60) / options.baselineSeconds, 2) : 0;
    progress(`baseline: ${total(baselineDiff)} writes (${JSON.stringify(baselineDiff)})`);

    const tracker = new Tracker(kubeConfig);
    await tracker.start();
    cleanups.push(() => tracker.stop());

    progress(`starting the operator (--concurrency ${options.concurrency}) ...`);
    operator = await startOperator(cp.kubeconfigPath, options.concurrency);
    const op = operator;
    cleanups.push(async () => {
      op.child.kill("SIGTERM");
      const timer = setTimeout(() => op.child.kill("SIGKILL"), 10_000);
      await op.exited;
      clearTimeout(timer);
    });
    const rss = new RssSampler(op.pid);
    const ownPids = new Set([process.pid, op.pid, ...controlPlanePids]);
    cleanups.push(() => rss.stop());
    await sleep(2000);
    rss.mark("idle");
    await sleep(3000);
    const idleRssMb = rss.mean("idle");
    progress(`operator pid ${op.pid} ready; idle RSS ${idleRssMb} MB`);

    const createSession = (name: string) =>
      withRetry(() =>
        customObjects.createNamespacedCustomObject({
          group: RELAY_SESSION_GROUP,
          version: RELAY_SESSION_VERSION,
          namespace: NAMESPACE,
          plural: RELAY_SESSION_PLURAL,
          body: sessionBody(name),
        }),
      );

    // 2. Latency: one session at a time.
    rss.mark("latency");
    const fromResponse: number[] = [];
    const fromRequest: number[] = [];
    const latencyFailures: string[] = [];
    const latencyNames: string[] = [];
    for (let i = 0; i < options.latencySamples; i++) {
      const name = sessionName("lat", i);
      latencyNames.push(name);
      const requested = performance.now();
      await createSession(name);
      const created = performance.now();
      try {
        const added = await tracker.waitForPod(name, 60_000);
        fromResponse.push(added - created);
        fromRequest.push(added - requested);
      } catch (err) {
        latencyFailures.push((err as Error).message);
      }
      if ((i + 1) % 10 === 0) {
        const s = stats(fromResponse);
        progress(`latency: ${i + 1}/${options.latencySamples} (p50 ${s.p50} ms, p95 ${s.p95} ms)`);
      }
      await sleep(options.latencyIntervalMs);
    }
    const latency = { fromCreateResponseMs: stats(fromResponse), fromCreateRequestMs: stats(fromRequest) };

    // The bench plays the garbage collector (not running here): the latency sessions and their pods
    // go, so the scale and steady phases have exactly --sessions sessions.
    if (latencyNames.length > 0) {
      progress(
        `removing the ${latencyNames.length} latency sessions and their pods (bench as garbage collector) ...`,
      );
      await pool(latencyNames, 10, async (name) => {
        await withRetry(() =>
          customObjects.deleteNamespacedCustomObject({
            group: RELAY_SESSION_GROUP,
            version: RELAY_SESSION_VERSION,
            namespace: NAMESPACE,
            plural: RELAY_SESSION_PLURAL,
            name,
          }),
        ).catch(() => undefined);
      });
      const leftover = await core.listNamespacedPod({ namespace: NAMESPACE, labelSelector: POD_SELECTOR });
      await pool(leftover.items, 10, async (pod) => {
        await core
          .deleteNamespacedPod({ namespace: NAMESPACE, name: pod.metadata!.name!, gracePeriodSeconds: 0 })
          .catch(() => undefined);
      });
      await sleep(3000);
    }

    // 3. Scale: --sessions created with bounded parallelism.
    rss.mark("scale");
    const scaleNames = Array.from({ length: options.sessions }, (_, i) => sessionName("s", i));
    const scaleSet = new Set(scaleNames);
    const countPods = () => scaleNames.filter((n) => tracker.podAdded.has(n)).length;
    const countObserved = () =>
      scaleNames.filter((n) => tracker.sessions.get(n)?.observedGeneration !== undefined).length;
    const scaleWritesBefore = await apiserverWrites(cp);
    const scaleCpuBefore = cpuSeconds(op.pid);
    const scaleLoad = new MachineLoad(ownPids);
    progress(`scale: creating ${options.sessions} RelaySessions, ${options.parallel} in parallel ...`);
    const scaleStart = performance.now();
    let created = 0;
    const ticker = setInterval(() => {
      progress(
        `scale: created ${created}/${options.sessions}, pods ${countPods()}, observed ${countObserved()}, ` +
          `operator RSS ${round(rssMb(op.pid) ?? 0)} MB, CPU ${round(cpuSeconds(op.pid) - scaleCpuBefore)} s`,
      );
    }, 5000);
    const createErrors = await pool(scaleNames, options.parallel, async (name) => {
      await createSession(name);
      created++;
    });
    const createSeconds = (performance.now() - scaleStart) / 1000;
    progress(`scale: ${created} created in ${round(createSeconds, 1)} s (${createErrors.length} errors)`);
    let allPodsAt: number | undefined;
    let allObservedAt: number | undefined;
    const reconcileDeadline = scaleStart + options.reconcileTimeoutSeconds * 1000;
    while (performance.now() < reconcileDeadline) {
      if (allPodsAt === undefined && countPods() >= created) allPodsAt = performance.now();
      if (allObservedAt === undefined && countObserved() >= created) allObservedAt = performance.now();
      if (allPodsAt !== undefined && allObservedAt !== undefined) break;
      await sleep(100);
    }
    clearInterval(ticker);
    // Exact instants from the watches, not the 100 ms polling.
    const lastPod = Math.max(...scaleNames.map((n) => tracker.podAdded.get(n) ?? 0));
    const lastObserved = Math.max(...scaleNames.map((n) => tracker.sessions.get(n)?.observedAt ?? 0));
    const scaleCpuSeconds = cpuSeconds(op.pid) - scaleCpuBefore;
    const scaleLoadResult = scaleLoad.finish();
    const scaleWrites = diffCounts(await apiserverWrites(cp), scaleWritesBefore);
    const scale = {
      sessions: options.sessions,
      created,
      createErrors: createErrors.slice(0, 5).map((e) => e.message),
      createParallelism: options.parallel,
      createSeconds: round(createSeconds, 2),
      createPerSecond: round(created / createSeconds, 1),
      allPodsSeconds: allPodsAt !== undefined ? round((lastPod - scaleStart) / 1000, 2) : null,
      allObservedSeconds: allObservedAt !== undefined ? round((lastObserved - scaleStart) / 1000, 2) : null,
      podsAtEnd: countPods(),
      observedAtEnd: countObserved(),
      operatorCpuSeconds: round(scaleCpuSeconds, 1),
      peakRssMb: rss.peak("scale"),
      ...scaleLoadResult,
      apiWrites: scaleWrites,
      apiWritesTotal: total(scaleWrites),
      operatorWritesPerSession: round((total(scaleWrites) - created) / Math.max(1, created), 2),
    };
    progress(
      `scale: all pods after ${scale.allPodsSeconds} s, all observed after ${scale.allObservedSeconds} s; ` +
        `operator CPU ${scale.operatorCpuSeconds} s, peak RSS ${scale.peakRssMb} MB`,
    );
    const podCreateOrder = scaleNames
      .map((n) => tracker.podAdded.get(n))
      .filter((t): t is number => t !== undefined)
      .map((t) => (t - scaleStart) / 1000);
    const podsWithinCreateWindow = podCreateOrder.filter((t) => t <= createSeconds).length;

    // 4. The bench as kubelet + scheduler: bind every relay pod to a (fake) node and report it Running.
    rss.mark("kubelet");
    const kubeletWritesBefore = await apiserverWrites(cp);
    const pods = (
      await core.listNamespacedPod({ namespace: NAMESPACE, labelSelector: POD_SELECTOR })
    ).items.filter((pod) => scaleSet.has(pod.metadata?.labels?.[SESSION_LABEL] ?? ""));
    progress(
      `kubelet: binding ${pods.length} pods to ${BENCH_NODE} and patching them Running (bench as kubelet) ...`,
    );
    const kubeletStart = performance.now();
    const kubeletErrors = await pool(pods, options.parallel, async (pod) => {
      const name = pod.metadata!.name!;
      if (!pod.spec?.nodeName) {
        await withRetry(() =>
          core.createNamespacedPodBinding({
            namespace: NAMESPACE,
            name,
            body: {
              apiVersion: "v1",
              kind: "Binding",
              metadata: { name, namespace: NAMESPACE },
              target: { apiVersion: "v1", kind: "Node", name: BENCH_NODE },
            },
          }),
        );
      }
      const now = new Date().toISOString();
      const condition = (type: string) => ({ type, status: "True", lastTransitionTime: now });
      await withRetry(() =>
        core.patchNamespacedPodStatus(
          {
            namespace: NAMESPACE,
            name,
            body: {
              status: {
                phase: "Running",
                startTime: now,
                hostIP: "127.0.0.1",
                podIP: "127.0.0.1",
                conditions: ["PodScheduled", "Initialized", "ContainersReady", "Ready"].map(condition),
                containerStatuses: (pod.spec?.containers ?? []).map((c) => ({
                  name: c.name,
                  image: c.image ?? "",
                  imageID: "",
                  ready: true,
                  started: true,
                  restartCount: 0,
                  state: { running: { startedAt: now } },
                })),
              },
            },
          },
          mergePatch,
        ),
      );
    });
    const kubeletSeconds = (performance.now() - kubeletStart) / 1000;
    progress(
      `kubelet: ${pods.length} pods Running in ${round(kubeletSeconds, 1)} s (${kubeletErrors.length} errors)`,
    );
    const countStarting = () =>
      scaleNames.filter((n) => tracker.sessions.get(n)?.phase === "Starting").length;
    const startingDeadline = performance.now() + 600_000;
    let lastReport = 0;
    while (countStarting() < pods.length && performance.now() < startingDeadline) {
      if (performance.now() - lastReport > 5000) {
        lastReport = performance.now();
        progress(`kubelet: ${countStarting()}/${pods.length} sessions in phase Starting`);
      }
      await sleep(200);
    }
    const allStartingSeconds = round((performance.now() - kubeletStart) / 1000, 1);
    const phases: Record<string, number> = {};
    for (const n of scaleNames) {
      const phase = tracker.sessions.get(n)?.phase ?? "none";
      phases[phase] = (phases[phase] ?? 0) + 1;
    }
    progress(`kubelet: phases ${JSON.stringify(phases)} after ${allStartingSeconds} s; settling ...`);
    // Settle: no session event for 10 s and an empty queue (bounded at 3 minutes).
    const settleDeadline = performance.now() + 180_000;
    for (;;) {
      const metrics = await operatorMetrics(op.metricsPort).catch(() => ({}) as Record<string, number>);
      const depth = metrics["operator_workqueue_depth{name=relaysessions}"] ?? 0;
      if (
        (performance.now() - tracker.lastSessionEventAt > 10_000 && depth === 0) ||
        performance.now() > settleDeadline
      )
        break;
      await sleep(1000);
    }
    const kubeletWrites = diffCounts(await apiserverWrites(cp), kubeletWritesBefore);
    const kubelet = {
      pods: pods.length,
      seconds: round(kubeletSeconds, 1),
      errors: kubeletErrors.slice(0, 5).map((e) => e.message),
      allSessionsStartingSeconds: allStartingSeconds,
      phases,
      apiWrites: kubeletWrites,
      operatorWritesPerSession: round((total(kubeletWrites) - 2 * pods.length) / Math.max(1, pods.length), 2),
    };

    // 5. Steady state: the bench is idle; every write now is the operator's (or the apiserver's own).
    rss.mark("steady");
    progress(`steady: measuring for ${options.steadySeconds} s ...`);
    const steadyWritesBefore = await apiserverWrites(cp);
    const steadyOpMetricsBefore = await operatorMetrics(op.metricsPort);
    const steadyCpuBefore = cpuSeconds(op.pid);
    const cpCpuBefore = controlPlanePids.map(cpuSeconds);
    const steadyLoad = new MachineLoad(ownPids);
    const sessionEventsBefore = tracker.sessionEvents;
    const podEventsBefore = tracker.podEvents;
    const steadyStart = performance.now();
    for (let elapsed = 0; elapsed < options.steadySeconds; elapsed += 10) {
      await sleep(Math.min(10, options.steadySeconds - elapsed) * 1000);
      progress(
        `steady: ${Math.min(elapsed + 10, options.steadySeconds)}/${options.steadySeconds} s, RSS ${round(rssMb(op.pid) ?? 0)} MB, ` +
          `session events ${tracker.sessionEvents - sessionEventsBefore}`,
      );
    }
    const windowSeconds = (performance.now() - steadyStart) / 1000;
    const steadyWrites = diffCounts(await apiserverWrites(cp), steadyWritesBefore);
    const steadyCpu = cpuSeconds(op.pid) - steadyCpuBefore;
    const cpCpu = controlPlanePids.map((pid, i) => ({
      process: commOf(pid),
      cpuSeconds: round(cpuSeconds(pid) - cpCpuBefore[i]!, 1),
      rssMb: round(rssMb(pid) ?? 0),
    }));
    const steadyLoadResult = steadyLoad.finish();
    const steadyOpMetricsAfter = await operatorMetrics(op.metricsPort);
    const steadyWritesTotal = total(steadyWrites);
    const netWrites = Math.max(0, steadyWritesTotal - (baselineWritesPerMin * windowSeconds) / 60);
    const steady = {
      sessions: options.sessions,
      windowSeconds: round(windowSeconds, 1),
      relayReports: "none (no relay pods run; sessions stay in phase Starting)",
      apiWrites: steadyWrites,
      apiWritesTotal: steadyWritesTotal,
      apiserverBaselineWritesPerMinute: baselineWritesPerMin,
      writesPerSessionPerMinute: round((netWrites * 60) / windowSeconds / options.sessions, 4),
      sessionWatchEvents: tracker.sessionEvents - sessionEventsBefore,
      podWatchEvents: tracker.podEvents - podEventsBefore,
      operatorCpuSeconds: round(steadyCpu, 2),
      operatorCpuPercentOfOneCore: round((steadyCpu / windowSeconds) * 100, 2),
      rssMb: { mean: rss.mean("steady"), last: rss.last("steady"), peak: rss.peak("steady") },
      controlPlane: cpCpu,
      ...steadyLoadResult,
      operatorMetricDeltas: diffSeries(steadyOpMetricsAfter, steadyOpMetricsBefore),
    };
    progress(
      `steady: ${steadyWritesTotal} writes in ${steady.windowSeconds} s → ${steady.writesPerSessionPerMinute} per session per minute; ` +
        `operator CPU ${steady.operatorCpuSeconds} s, RSS ${steady.rssMb.mean} MB`,
    );

    const report = {
      benchmark: "operator",
      command,
      date: startedAt.toISOString(),
      durationSeconds: round((Date.now() - startedAt.getTime()) / 1000, 0),
      machine: { ...machineInfo(), apiserver: version.gitVersion, etcdAndApiserverOnSameMachine: true },
      operatorCommand: op.command,
      options,
      method: [
        "control plane: etcd + kube-apiserver from test/infra/apiserver.ts on 127.0.0.1, no controller manager, no scheduler, no kubelet",
        "operator: the built binary as a child process (leader election off); RSS from /proc/<pid>/status VmRSS sampled each second, CPU from /proc/<pid>/stat utime+stime",
        "latency: sessions created one at a time; from the create call's response (and from just before the call) to the pod's ADDED event on a pod watch the bench holds",
        "scale: sessions created by the bench with bounded parallelism; done when every pod was seen on the pod watch and every session had status.observedGeneration on a session watch",
        "the bench plays the garbage collector (deletes the latency sessions and their pods) and the kubelet+scheduler (pods/binding + pods/status Running)",
        "steady: the bench makes no writes; writes counted from kube-apiserver's apiserver_request_total (write verbs) over the window, minus the apiserver's own writes per minute measured before the operator started",
        "no relay pods run, so there are no status.relay reports: the steady writes are the operator's own",
      ],
      idleRssMb,
      latency: { ...latency, failures: latencyFailures.slice(0, 5), intervalMs: options.latencyIntervalMs },
      scale: { ...scale, podsSeenBeforeLastCreateReturned: podsWithinCreateWindow },
      kubelet,
      steady,
      peakRssMb: rss.peak(),
      operatorFinalMetrics: steadyOpMetricsAfter,
      operatorLog: {
        lines: op.logLevels,
        problems: Object.fromEntries([...op.problems.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)),
      },
      baseline: { seconds: options.baselineSeconds, apiWrites: baselineDiff },
      benchWatchRestarts: tracker.watchRestarts,
    };
    writeResults(options.out, report, toMarkdown(report));
  } finally {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  }
}

type Stats = { n: number; p50: number | null; p95: number | null; max: number | null };
interface MarkdownInput {
  date: string;
  command: string;
  durationSeconds: number;
  machine: ReturnType<typeof machineInfo> & { apiserver: string | undefined };
  operatorCommand: string;
  method: string[];
  idleRssMb: number;
  peakRssMb: number;
  latency: { fromCreateResponseMs: Stats; fromCreateRequestMs: Stats };
  scale: {
    sessions: number;
    created: number;
    createParallelism: number;
    createSeconds: number;
    createPerSecond: number;
    allPodsSeconds: number | null;
    allObservedSeconds: number | null;
    operatorCpuSeconds: number;
    operatorWritesPerSession: number;
    apiWrites: Record<string, number>;
    machineCpuPercent: number;
    otherProcessesCpu: Array<{ comm: string; cpuSeconds: number }>;
  };
  kubelet: { pods: number; allSessionsStartingSeconds: number; operatorWritesPerSession: number };
  steady: {
    sessions: number;
    windowSeconds: number;
    apiWrites: Record<string, number>;
    apiWritesTotal: number;
    apiserverBaselineWritesPerMinute: number;
    writesPerSessionPerMinute: number;
    sessionWatchEvents: number;
    podWatchEvents: number;
    operatorCpuSeconds: number;
    operatorCpuPercentOfOneCore: number;
    rssMb: { mean: number; last: number; peak: number };
    controlPlane: Array<{ process: string; cpuSeconds: number; rssMb: number }>;
    machineCpuPercent: number;
    otherProcessesCpu: Array<{ comm: string; cpuSeconds: number }>;
    operatorMetricDeltas: Record<string, number>;
  };
  baseline: { seconds: number; apiWrites: Record<string, number> };
  operatorLog: { lines: Record<string, number>; problems: Record<string, number> };
}

function toMarkdown(r: MarkdownInput): string {
  const writeRows = (writes: Record<string, number>) =>
    Object.entries(writes).map(([key, n]) => `| ${key} | ${n} |`);
  const s = r.steady;
  const problems = Object.entries(r.operatorLog.problems as Record<string, number>);
  return [
    `# Operator benchmark (${r.date})`,
    "",
    `Machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memoryGiB} GiB, Node ${r.machine.node}, ` +
      `kube-apiserver ${r.machine.apiserver} (etcd and kube-apiserver on the same machine). ` +
      `Command: \`${r.command}\` (${r.durationSeconds} s). Operator: \`${r.operatorCommand}\`.`,
    "",
    "| figure | value |",
    "|---|---|",
    `| RelaySession → pod latency p50 / p95 (from create response, n=${r.latency.fromCreateResponseMs.n}) | ${r.latency.fromCreateResponseMs.p50} / ${r.latency.fromCreateResponseMs.p95} ms (max ${r.latency.fromCreateResponseMs.max}) |`,
    `| same, from just before the create call | ${r.latency.fromCreateRequestMs.p50} / ${r.latency.fromCreateRequestMs.p95} ms |`,
    `| create ${r.scale.created} RelaySessions (${r.scale.createParallelism} parallel) | ${r.scale.createSeconds} s (${r.scale.createPerSecond}/s) |`,
    `| … until all ${r.scale.sessions} pods exist | ${r.scale.allPodsSeconds ?? "not reached"} s |`,
    `| … until every session has status.observedGeneration | ${r.scale.allObservedSeconds ?? "not reached"} s |`,
    `| operator CPU during the scale phase | ${r.scale.operatorCpuSeconds} s |`,
    `| API writes per new session (operator's, scale phase) | ${r.scale.operatorWritesPerSession} |`,
    `| operator RSS idle (0 sessions) | ${r.idleRssMb} MB |`,
    `| operator RSS with ${s.sessions} sessions, steady (mean / peak) | ${s.rssMb.mean} / ${s.rssMb.peak} MB |`,
    `| operator RSS peak over the whole run | ${r.peakRssMb} MB |`,
    `| API writes per session per minute, steady (${s.windowSeconds} s window, no relay reports) | ${s.writesPerSessionPerMinute} (${s.apiWritesTotal} writes in the window; apiserver's own baseline ${s.apiserverBaselineWritesPerMinute}/min) |`,
    `| operator CPU in the steady window | ${s.operatorCpuSeconds} s (${s.operatorCpuPercentOfOneCore} % of one core) |`,
    `| bench as kubelet: ${r.kubelet.pods} pods Running → all sessions Starting | ${r.kubelet.allSessionsStartingSeconds} s; operator writes per session ${r.kubelet.operatorWritesPerSession} |`,
    "",
    "## Method",
    "",
    ...r.method.map((m) => `- ${m}`),
    "",
    "## API writes (kube-apiserver `apiserver_request_total`, verb resource code)",
    "",
    `Scale phase (includes the bench's ${r.scale.created} RelaySession creates; machine CPU ${r.scale.machineCpuPercent} % over all cores; ` +
      `other processes: ${r.scale.otherProcessesCpu.map((p) => `${p.comm} ${p.cpuSeconds} CPU s`).join(", ") || "none"}):`,
    "",
    "| request | count |",
    "|---|---|",
    ...writeRows(r.scale.apiWrites),
    "",
    `Steady window (${s.windowSeconds} s, bench idle):`,
    "",
    "| request | count |",
    "|---|---|",
    ...(Object.keys(s.apiWrites).length ? writeRows(s.apiWrites) : ["| (none) | 0 |"]),
    "",
    `Baseline (${r.baseline.seconds} s, before the operator started): ${JSON.stringify(r.baseline.apiWrites)}.`,
    "",
    "## Steady window: other figures",
    "",
    `- watch events the bench saw: sessions ${s.sessionWatchEvents}, pods ${s.podWatchEvents}`,
    `- control plane: ${s.controlPlane.map((p) => `${p.process} ${p.cpuSeconds} CPU s, RSS ${p.rssMb} MB`).join("; ")}`,
    `- machine CPU ${s.machineCpuPercent} % (all cores); other processes using ≥ 1 CPU s: ${
      s.otherProcessesCpu.length
        ? s.otherProcessesCpu.map((p) => `${p.comm} ${p.cpuSeconds} s`).join(", ")
        : "none"
    }`,
    `- operator metric deltas: ${JSON.stringify(s.operatorMetricDeltas)}`,
    "",
    "## Operator log",
    "",
    `Lines by level: ${JSON.stringify(r.operatorLog.lines)}.`,
    ...(problems.length ? ["", ...problems.map(([m, n]) => `- ${n}× ${m}`)] : []),
    "",
  ].join("\n");
}

await main();
