/**
 * The pool controller's Prometheus series (on the operator's /metrics): pods per pool and state,
 * how long allocation takes, how often a pool ran dry, how long warm pods took to become Ready.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export interface PoolGaugeValues {
  ready: number;
  allocated: number;
  warming: number;
  desired: number;
  waiting: number;
}

export class PoolMetrics {
  private readonly pods: Gauge<"namespace" | "pool" | "state">;
  private readonly waitingSessions: Gauge<"namespace" | "pool">;
  readonly allocationSeconds: Histogram<"namespace" | "pool">;
  readonly exhausted: Counter<"namespace" | "pool">;
  readonly warmupSeconds: Histogram<"namespace" | "pool">;
  readonly claimConflicts: Counter<"namespace" | "pool">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.pods = new Gauge({
      name: "trickle_relay_pool_pods",
      help: "Pods of a RelayPool by state: ready (warm and idle), allocated, warming, desired",
      labelNames: ["namespace", "pool", "state"],
      registers,
    });
    this.waitingSessions = new Gauge({
      name: "trickle_relay_pool_waiting_sessions",
      help: "RelaySessions waiting for an idle warm pod (PoolExhausted)",
      labelNames: ["namespace", "pool"],
      registers,
    });
    this.allocationSeconds = new Histogram({
      name: "trickle_relay_pool_allocation_seconds",
      help: "From the operator's first sight of a pooled RelaySession to the claim of a warm pod",
      labelNames: ["namespace", "pool"],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    });
    this.exhausted = new Counter({
      name: "trickle_relay_pool_exhausted_total",
      help: "Times a RelayPool ran out of idle warm pods while sessions waited",
      labelNames: ["namespace", "pool"],
      registers,
    });
    this.warmupSeconds = new Histogram({
      name: "trickle_relay_pool_warmup_seconds",
      help: "From a warm pod's creation to its first Ready (image pull, ComfyStream start, warm-up)",
      labelNames: ["namespace", "pool"],
      buckets: [1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900],
      registers,
    });
    this.claimConflicts = new Counter({
      name: "trickle_relay_pool_claim_conflicts_total",
      help: "Claims of a warm pod refused because the pod changed since it was read (the next idle pod is tried)",
      labelNames: ["namespace", "pool"],
      registers,
    });
  }

  set(namespace: string, pool: string, values: PoolGaugeValues): void {
    for (const state of ["ready", "allocated", "warming", "desired"] as const)
      this.pods.set({ namespace, pool, state }, values[state]);
    this.waitingSessions.set({ namespace, pool }, values.waiting);
  }

  forget(namespace: string, pool: string): void {
    for (const state of ["ready", "allocated", "warming", "desired"])
      this.pods.remove({ namespace, pool, state });
    this.waitingSessions.remove({ namespace, pool });
  }
}
