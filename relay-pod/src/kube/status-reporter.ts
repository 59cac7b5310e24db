// Writes the relay's report to `status.relay` of its RelaySession: once a second, plus soon after every
// state change (bursts coalesced into one write), one write at a time, and a final report on exit.
// A failed write is logged and retried with the next one; it never stops the relay.

import { KubeApiError, type KubeAccess } from "./api-client.js";
import { RELAY_POD_FIELD_MANAGER } from "../../../crds/src/index.js";
import { silentLogger, type Logger } from "../common/log.js";
import { relaySessionsPath, type SessionRef } from "./session-resource.js";
import type { RelayReportPatch } from "../report/relay-report.js";

export type RelayReportWriter = (report: RelayReportPatch) => Promise<void>;

export interface StatusReporterOptions {
  /** Builds the report at write time, so each write carries the newest numbers. */
  snapshot: () => RelayReportPatch;
  write: RelayReportWriter;
  /** Period of the regular writes (ms). Default 1000. */
  intervalMs?: number;
  /** How long a state change waits for further changes before it is written (ms). Default 100. */
  coalesceMs?: number;
  /** Attempts for the final report (it has no next write to fall back on). Default 3. */
  finalAttempts?: number;
  logger?: Logger;
}

export class RelayStatusReporter {
  private readonly log: Logger;
  private readonly intervalMs: number;
  private readonly coalesceMs: number;
  private timer: NodeJS.Timeout | undefined;
  private dueAt = Infinity;
  private lastWriteStartedAt = -Infinity;
  private inFlight: Promise<boolean> | undefined;
  private writeAgain = false;
  private finished = false;
  private consecutiveFailures = 0;
  /** Counters for logs and tests. */
  readonly stats = { writes: 0, failures: 0 };

  constructor(private readonly options: StatusReporterOptions) {
    this.log = (options.logger ?? silentLogger).child({ component: "status-reporter" });
    this.intervalMs = options.intervalMs ?? 1000;
    this.coalesceMs = options.coalesceMs ?? 100;
  }

  /** Writes a first report at once, then keeps writing. */
  start(): void {
    this.schedule(0);
  }

  /** Something a reader acts on changed (session or WebRTC state, applied prompts, an error). */
  stateChanged(): void {
    this.schedule(this.coalesceMs);
  }

  /** Stops the regular writes and writes the final report (waiting for a write in flight first). */
  async finish(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.timer);
    await this.inFlight;
    const attempts = this.options.finalAttempts ?? 3;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (await this.writeOnce()) return;
      if (attempt < attempts) await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
    }
    this.log.warn("the final report could not be written");
  }

  /** Stops without a final report (the RelaySession is gone). */
  stop(): void {
    this.finished = true;
    clearTimeout(this.timer);
  }

  /** Arms the timer for `delayMs` from now unless a write is already due sooner. */
  private schedule(delayMs: number): void {
    if (this.finished) return;
    const at = Date.now() + delayMs;
    if (at >= this.dueAt) return;
    this.dueAt = at;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), Math.max(0, at - Date.now()));
  }

  private async tick(): Promise<void> {
    this.dueAt = Infinity;
    if (this.finished) return;
    if (this.inFlight) {
      // One write at a time: whatever asked for this one is covered by a write right after it.
      this.writeAgain = true;
      return;
    }
    let ok = await this.writeOnce();
    while (this.writeAgain && !this.finished) {
      this.writeAgain = false;
      ok = await this.writeOnce();
    }
    if (this.finished) return;
    // Next regular write one interval after this one started; slower after repeated failures.
    const backoff = ok ? 0 : Math.min(10_000, this.intervalMs * 2 ** Math.min(this.consecutiveFailures, 4));
    this.schedule(Math.max(0, this.lastWriteStartedAt + Math.max(this.intervalMs, backoff) - Date.now()));
  }

  private writeOnce(): Promise<boolean> {
    this.lastWriteStartedAt = Date.now();
    const write = (async () => {
      try {
        await this.options.write(this.options.snapshot());
        this.stats.writes++;
        if (this.consecutiveFailures > 0) this.log.info("status report written again");
        this.consecutiveFailures = 0;
        return true;
      } catch (err) {
        this.stats.failures++;
        this.consecutiveFailures++;
        // Every failure would be a log line a second; the first of a run and then every tenth say enough.
        if (this.consecutiveFailures === 1 || this.consecutiveFailures % 10 === 0) {
          this.log.warn(
            { err: describeError(err), failures: this.consecutiveFailures },
            "writing status.relay failed; retrying",
          );
        }
        return false;
      }
    })();
    this.inFlight = write;
    void write.finally(() => {
      if (this.inFlight === write) this.inFlight = undefined;
    });
    return write;
  }
}

/**
 * Merge-patches `{status: {relay: report}}` through the status subresource as field manager
 * `relay-pod`. A merge patch changes only the keys it names, so the operator's phase and conditions
 * are untouched (a list in the patch would replace the whole list: the report has none).
 */
export function kubeRelayReportWriter(kubeConfig: KubeAccess, ref: SessionRef): RelayReportWriter {
  const path = `${relaySessionsPath(ref.namespace)}/${encodeURIComponent(ref.name)}/status`;
  return async (report) => {
    await kubeConfig.request("PATCH", path, {
      body: { status: { relay: report } },
      patch: "merge",
      query: { fieldManager: RELAY_POD_FIELD_MANAGER },
    });
  };
}

function describeError(err: unknown): string {
  if (err instanceof KubeApiError) return err.message.slice(0, 320);
  return (err as Error)?.message ?? String(err);
}
