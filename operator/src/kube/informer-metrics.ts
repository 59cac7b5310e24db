/**
 * An informer's bookkeeping: the counters it keeps for tests and health reporting, and the
 * Prometheus metrics that mirror them. Separate from the list/watch loop so that the loop reads as
 * control flow, and so that InformerGroup can sum its members' counters without importing the
 * informer itself.
 */
import type { Counter, Gauge, Registry } from "prom-client";
import { counterIn, gaugeIn } from "./metrics.js";

/** Counters for tests and health reporting; the same numbers go to Prometheus when a registry is given. */
export interface InformerStats {
  /** Successful lists, the first one included. */
  lists: number;
  /** Lists after the first: after a 410, an error, or the watchdog. */
  relists: number;
  /** Watch requests started. */
  watches: number;
  /** Watches that ended abnormally and were replaced (error, 410, watchdog). */
  restarts: number;
  /** Watches abandoned because they stayed silent for watchdogMs. */
  watchdogRestarts: number;
  /** 410 Gone answers (HTTP or an in-stream ERROR event). */
  expired: number;
  /** Failed lists and watches. */
  errors: number;
  /** Watch events received, bookmarks included. */
  events: number;
}

export function zeroStats(): InformerStats {
  return {
    lists: 0,
    relists: 0,
    watches: 0,
    restarts: 0,
    watchdogRestarts: 0,
    expired: 0,
    errors: 0,
    events: 0,
  };
}

export interface InformerMetrics {
  lists: Counter<"informer">;
  restarts: Counter<"informer" | "reason">;
  expired: Counter<"informer">;
  errors: Counter<"informer">;
  events: Counter<"informer" | "type">;
  synced: Gauge<"informer">;
  objects: Gauge<"informer">;
}

export function informerMetrics(registry: Registry): InformerMetrics {
  return {
    lists: counterIn(registry, "operator_informer_lists_total", "Successful lists (initial and relists)", [
      "informer",
    ]),
    restarts: counterIn(
      registry,
      "operator_informer_watch_restarts_total",
      "Watches replaced after an error, a 410 Gone, or a silent-watch watchdog",
      ["informer", "reason"],
    ),
    expired: counterIn(
      registry,
      "operator_informer_gone_total",
      "410 Gone answers (resourceVersion expired)",
      ["informer"],
    ),
    errors: counterIn(registry, "operator_informer_errors_total", "Failed lists and watches", ["informer"]),
    events: counterIn(registry, "operator_informer_events_total", "Watch events received", [
      "informer",
      "type",
    ]),
    synced: gaugeIn(registry, "operator_informer_synced", "1 once the informer's first list is cached", [
      "informer",
    ]),
    objects: gaugeIn(registry, "operator_informer_objects", "Objects in the informer's cache", ["informer"]),
  };
}
