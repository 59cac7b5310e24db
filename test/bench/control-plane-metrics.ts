// Where a control plane's time went during a benchmark step: kube-apiserver's and etcd's own
// Prometheus histograms, scraped before and after the step, subtracted. The apiserver's request
// duration is measured from its handler's start to the response (not the client's queueing); etcd's
// WAL fsync and backend commit show what this machine's disk costs each write.
import { readdirSync, readFileSync } from "node:fs";
import type { ControlPlane } from "../infra/apiserver.js";
import { round } from "./results.js";

/** name → label string (sorted `k="v"` pairs of the labels kept) → value. */
type Samples = Map<string, Map<string, number>>;

export interface ControlPlaneScrape {
  apiserver: Samples;
  etcd: Samples;
}

export interface HistogramDelta {
  /** The kept labels, e.g. `verb="PUT",resource="pods"`. */
  labels: string;
  count: number;
  meanMs: number;
  /** Upper bound of the bucket holding the 95th percentile (ms); Infinity above the last bucket. */
  p95UpperMs: number;
}

export async function scrapeControlPlane(cp: ControlPlane): Promise<ControlPlaneScrape> {
  const raw = await cp.kubectl(["get", "--raw", "/metrics"]);
  if (raw.code !== 0) throw new Error(`apiserver /metrics: ${raw.stderr}`);
  const etcd = await fetch(`${cp.etcdUrl}/metrics`);
  return { apiserver: parse(raw.stdout), etcd: parse(await etcd.text()) };
}

/**
 * The histogram `name` between two scrapes, one row per combination of `keep` labels (the other
 * labels summed), rows with no observations left out, most time first.
 */
export function histogramDelta(
  before: Samples,
  after: Samples,
  name: string,
  keep: string[],
): HistogramDelta[] {
  const group = (samples: Samples, suffix: string) => {
    const out = new Map<string, Map<string, number>>(); // kept labels → le (or "") → value
    for (const [labels, value] of samples.get(`${name}_${suffix}`) ?? []) {
      const all = parseLabels(labels);
      const key = keep.map((k) => `${k}="${all.get(k) ?? ""}"`).join(",");
      const le = suffix === "bucket" ? (all.get("le") ?? "") : "";
      const row = out.get(key) ?? new Map<string, number>();
      row.set(le, (row.get(le) ?? 0) + value);
      out.set(key, row);
    }
    return out;
  };
  const diff = (suffix: string) => {
    const a = group(before, suffix);
    const b = group(after, suffix);
    for (const [key, row] of b) {
      for (const [le, value] of row) row.set(le, value - (a.get(key)?.get(le) ?? 0));
    }
    return b;
  };
  const sums = diff("sum");
  const counts = diff("count");
  const buckets = diff("bucket");
  const rows: HistogramDelta[] = [];
  for (const [labels, row] of counts) {
    const count = row.get("") ?? 0;
    if (count <= 0) continue;
    const sum = sums.get(labels)?.get("") ?? 0;
    const bounds = [...(buckets.get(labels) ?? new Map<string, number>())]
      .map(([le, n]) => ({ le: le === "+Inf" ? Infinity : Number(le), n }))
      .sort((x, y) => x.le - y.le);
    const p95 = bounds.find((b) => b.n >= 0.95 * count)?.le ?? Infinity;
    rows.push({
      labels,
      count: round(count),
      meanMs: round((sum / count) * 1000),
      p95UpperMs: Number.isFinite(p95) ? round(p95 * 1000) : Infinity,
    });
  }
  return rows.sort((x, y) => y.meanMs * y.count - x.meanMs * x.count);
}

function parse(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const [, name, labels = "", value] = match;
    const byLabels = samples.get(name!) ?? new Map<string, number>();
    byLabels.set(labels, Number(value));
    samples.set(name!, byLabels);
  }
  return samples;
}

function parseLabels(labels: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of labels.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) out.set(m[1]!, m[2]!);
  return out;
}

/** CPU seconds (user + system) a process has used so far, from /proc (clock ticks of 10 ms). */
export function cpuSeconds(pid: number, of: "self" | "waited-for children" = "self"): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces) start at ") "; utime, stime, cutime and
  // cstime are fields 14–17.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const at = of === "self" ? 11 : 13;
  return (Number(fields[at]) + Number(fields[at + 1])) / 100;
}

/** The pid of the process whose command line contains `needle` (e.g. a component's unique port flag). */
export function findPid(needle: string): number | undefined {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      if (cmdline.includes(needle)) return Number(entry);
    } catch {
      // The process ended meanwhile.
    }
  }
  return undefined;
}
