// From what the operator observes (the session, its current pod, the relay's own report) to the
// operator-owned part of the status: phase, conditions and pod bookkeeping. Pure functions: no I/O,
// the clock is an argument. The phase table is operator/README.md's; status.relay is never produced
// here because only the relay pod writes it.

import type { V1ContainerStateTerminated, V1Pod } from "@kubernetes/client-node";
import {
  POOL_EXHAUSTED_REASON,
  READY_CONDITION,
  type RelaySession,
  type RelaySessionCondition,
  type RelaySessionPhase,
  type RelaySessionStatus,
} from "../../../crds/src/index.js";
import { RELAY_CONTAINER } from "./labels.js";
import { allocationOfPod } from "./pooled-session.js";

/** A relay report older than this (relay writes ≥ 1/s while running) marks the session Degraded. */
export const DEFAULT_REPORT_STALE_AFTER_MS = 30_000;

export const PROGRESSING_CONDITION = "Progressing";
export const POD_SCHEDULED_CONDITION = "PodScheduled";
export const DEGRADED_CONDITION = "Degraded";

/** Why one attempt (pod) of a session ended badly. */
export type FailureReason =
  | "PodFailed"
  | "DeadlineExceeded"
  | "Evicted"
  | "StartupTimeout"
  | "PodDeleted"
  | "NodeLost"
  | "SidecarExited"
  | "InvalidPodSpec";

export interface Failure {
  reason: FailureReason;
  message: string;
  /** When the attempt ended, the base of the restart backoff. */
  at: Date;
}

/** The operator-owned fields of RelaySession.status (everything but `relay`). */
export interface OperatorStatus {
  phase: RelaySessionPhase;
  conditions: RelaySessionCondition[];
  observedGeneration?: number;
  podName?: string;
  startTime?: string;
  completionTime?: string;
  restarts: number;
  allocation?: NonNullable<RelaySessionStatus["allocation"]>;
}

/** What the reconciler decided this round, when it is more than "watch the current pod". */
export type Outcome =
  /** The attempt failed and a new one follows (after `backoffMs`); `restarts` is the new count. */
  | { kind: "Restarting"; failure: Failure; restarts: number; backoffMs: number }
  /** The pod spec changed: the old pod is going away and a new one with the same attempt follows. */
  | { kind: "Replacing" }
  /** The apiserver refused to create the pod for a reason that may pass (quota, missing PriorityClass). */
  | { kind: "CreateFailed"; message: string }
  /** A pooled session (spec.poolRef) waits for an idle warm pod of its pool. */
  | { kind: "WaitingForPool"; reason: string; message: string }
  /** Final failure: the budget is spent, or the failure cannot be retried. */
  | { kind: "Failed"; failure: Failure; budgetExhausted: boolean; restartBudget: number }
  | { kind: "Succeeded"; at: Date };

export interface StatusInput {
  session: RelaySession;
  /** The pod of the current attempt as last seen; undefined when there is none (yet). */
  pod?: V1Pod | undefined;
  now: Date;
  outcome?: Outcome | undefined;
  reportStaleAfterMs?: number;
}

export interface ComputedStatus {
  status: OperatorStatus;
  /** Evaluate again after this long even without events (report staleness). */
  recheckAfterMs?: number;
}

/** What a pod says about its attempt. */
export type PodVerdict =
  | { kind: "Active" }
  | { kind: "Succeeded"; at: Date }
  | { kind: "Failed"; failure: Failure; retryable: boolean };

// ---------------------------------------------------------------------------------------------
// Small helpers (cache objects mix Date instances from list calls and strings from watch events)

export function toDate(value: Date | string | undefined | null): Date | undefined {
  if (value === undefined || value === null) return undefined;
  const date = value instanceof Date ? value : new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/** RFC 3339 with second precision, as Kubernetes writes metav1.Time. */
export function formatTime(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function isTerminalPhase(phase: string | undefined): phase is "Succeeded" | "Failed" {
  return phase === "Succeeded" || phase === "Failed";
}

/** Pod phase is terminal: the kubelet will never run it again. */
export function isPodFinished(pod: V1Pod): boolean {
  return pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed";
}

function latestDate(dates: Array<Date | undefined>): Date | undefined {
  let latest: Date | undefined;
  for (const date of dates) if (date && (!latest || date > latest)) latest = date;
  return latest;
}

/** When the pod's attempt ended: the relay's exit, else any container's, else its last transition. */
export function podFinishTime(pod: V1Pod): Date | undefined {
  const statuses = pod.status?.containerStatuses ?? [];
  const relay = statuses.find((c) => c.name === RELAY_CONTAINER);
  return (
    toDate(relay?.state?.terminated?.finishedAt) ??
    latestDate(statuses.map((c) => toDate(c.state?.terminated?.finishedAt))) ??
    latestDate((pod.status?.conditions ?? []).map((c) => toDate(c.lastTransitionTime))) ??
    toDate(pod.metadata?.creationTimestamp)
  );
}

function describeTermination(pod: V1Pod): string {
  const relay = pod.status?.containerStatuses?.find((c) => c.name === RELAY_CONTAINER);
  const terminated = relay?.state?.terminated;
  const parts: string[] = [];
  if (terminated) {
    parts.push(`relay exited with code ${terminated.exitCode}`);
    if (terminated.reason) parts.push(`(${terminated.reason})`);
    if (terminated.message) parts.push(`: ${terminated.message.trim().slice(0, 512)}`);
  } else if (pod.status?.message) {
    parts.push(pod.status.message.trim().slice(0, 512));
  } else {
    parts.push("pod failed");
  }
  const sidecar = terminatedSidecar(pod);
  if (sidecar && sidecar.exitCode !== 0) parts.push(`; ${describeSidecarExit(sidecar)}`);
  return `pod ${pod.metadata?.name}: ${parts.join(" ")}`.replace(/ :/g, ":").replace(/ ;/g, ";");
}

/** A container beside the relay (the ComfyStream sidecar) that has terminated, with its name. */
function terminatedSidecar(pod: V1Pod): (V1ContainerStateTerminated & { container: string }) | undefined {
  const status = pod.status?.containerStatuses?.find(
    (c) => c.name !== RELAY_CONTAINER && c.state?.terminated !== undefined,
  );
  return status ? { ...status.state!.terminated!, container: status.name } : undefined;
}

function describeSidecarExit(sidecar: V1ContainerStateTerminated & { container: string }): string {
  const reason = sidecar.reason ? ` (${sidecar.reason})` : "";
  return `the ${sidecar.container} sidecar exited with code ${sidecar.exitCode}${reason}`;
}

/**
 * The pod's verdict on its attempt. With restartPolicy Never the relay container's exit is final even
 * while a ComfyStream sidecar keeps the pod Running, so that exit decides too.
 */
export function classifyPod(pod: V1Pod, now: Date): PodVerdict {
  const at = podFinishTime(pod) ?? now;
  const phase = pod.status?.phase;
  if (phase === "Succeeded") return { kind: "Succeeded", at };
  if (phase === "Failed") {
    const podReason = pod.status?.reason;
    if (podReason === "DeadlineExceeded") {
      const message = `pod ${pod.metadata?.name} ran longer than spec.lifetime.maxDurationSeconds (activeDeadlineSeconds ${pod.spec?.activeDeadlineSeconds ?? "?"})`;
      return { kind: "Failed", failure: { reason: "DeadlineExceeded", message, at }, retryable: false };
    }
    if (podReason === "Evicted") {
      const message = `pod ${pod.metadata?.name} was evicted: ${pod.status?.message ?? "no message"}`;
      return { kind: "Failed", failure: { reason: "Evicted", message, at }, retryable: true };
    }
    return {
      kind: "Failed",
      failure: { reason: "PodFailed", message: describeTermination(pod), at },
      retryable: true,
    };
  }
  const relay = pod.status?.containerStatuses?.find((c) => c.name === RELAY_CONTAINER);
  const terminated = relay?.state?.terminated;
  if (terminated) {
    const exitAt = toDate(terminated.finishedAt) ?? at;
    if (terminated.exitCode === 0) return { kind: "Succeeded", at: exitAt };
    return {
      kind: "Failed",
      failure: { reason: "PodFailed", message: describeTermination(pod), at: exitAt },
      retryable: true,
    };
  }
  // restartPolicy Never: a sidecar that ended (e.g. OOM-killed) never comes back in this pod, and a
  // relay left without its ComfyStream only retries until its reconnect budget is spent. Ending the
  // attempt at once lets the next pod (with a fresh sidecar) start seconds later.
  const sidecar = terminatedSidecar(pod);
  if (sidecar) {
    const message = `pod ${pod.metadata?.name}: ${describeSidecarExit(sidecar)}, which restartPolicy Never does not restart`;
    return {
      kind: "Failed",
      failure: { reason: "SidecarExited", message, at: toDate(sidecar.finishedAt) ?? at },
      retryable: true,
    };
  }
  return { kind: "Active" };
}

/** Restart backoff: 1 s before attempt 1, doubling, at most 60 s. */
export function restartBackoffMs(attempt: number): number {
  if (attempt <= 0) return 0;
  return Math.min(1000 * 2 ** Math.min(attempt - 1, 16), 60_000);
}

// ---------------------------------------------------------------------------------------------
// Conditions

interface ConditionInput {
  type: string;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
}

/**
 * Conditions in the given order (Ready first); lastTransitionTime is kept from `existing` unless the
 * status of that type changed.
 */
export function mergeConditions(
  existing: readonly RelaySessionCondition[] | undefined,
  desired: readonly ConditionInput[],
  now: Date,
  generation: number | undefined,
): RelaySessionCondition[] {
  return desired.map((condition) => {
    const previous = existing?.find((c) => c.type === condition.type);
    const lastTransitionTime =
      previous && previous.status === condition.status ? previous.lastTransitionTime : formatTime(now);
    const merged: RelaySessionCondition = {
      type: condition.type,
      status: condition.status,
      lastTransitionTime,
      reason: condition.reason,
      message: condition.message.slice(0, 32768),
    };
    if (generation !== undefined) merged.observedGeneration = generation;
    return merged;
  });
}

// ---------------------------------------------------------------------------------------------
// The phase table

interface Assessment {
  phase: RelaySessionPhase;
  ready: ConditionInput;
  scheduled: ConditionInput;
  progressing: ConditionInput;
  degraded: ConditionInput;
  recheckAfterMs?: number;
}

const condition = (
  type: string,
  status: ConditionInput["status"],
  reason: string,
  message: string,
): ConditionInput => ({ type, status, reason, message });

const notDegraded = condition(DEGRADED_CONDITION, "False", "AsExpected", "");

function podScheduledCondition(pod: V1Pod | undefined): ConditionInput {
  if (!pod)
    return condition(POD_SCHEDULED_CONDITION, "False", "PodNotCreated", "no relay pod for this attempt yet");
  if (pod.spec?.nodeName) {
    return condition(
      POD_SCHEDULED_CONDITION,
      "True",
      "Scheduled",
      `pod ${pod.metadata?.name} on ${pod.spec.nodeName}`,
    );
  }
  const scheduled = pod.status?.conditions?.find((c) => c.type === "PodScheduled");
  if (scheduled?.status === "True") {
    return condition(POD_SCHEDULED_CONDITION, "True", "Scheduled", `pod ${pod.metadata?.name} scheduled`);
  }
  return condition(
    POD_SCHEDULED_CONDITION,
    "False",
    scheduled?.reason || "PodPending",
    scheduled?.message || `pod ${pod.metadata?.name} is waiting to be scheduled`,
  );
}

function waitingMessage(pod: V1Pod): string {
  for (const status of pod.status?.containerStatuses ?? []) {
    const waiting = status.state?.waiting;
    if (waiting?.reason)
      return `container ${status.name}: ${waiting.reason}${waiting.message ? `: ${waiting.message}` : ""}`;
  }
  return `pod ${pod.metadata?.name} is ${pod.status?.phase ?? "Pending"}`;
}

function relayErrorSuffix(session: RelaySession): string {
  const error = session.status?.relay?.lastError;
  return error?.message
    ? ` (last error${error.component ? ` in ${error.component}` : ""}: ${error.message})`
    : "";
}

/** The live phases, for an active pod of the current attempt. */
function assessActivePod(session: RelaySession, pod: V1Pod, now: Date, staleAfterMs: number): Assessment {
  const scheduled = podScheduledCondition(pod);
  const podName = pod.metadata?.name ?? "";
  if (scheduled.status !== "True") {
    return {
      phase: "Pending",
      ready: condition(READY_CONDITION, "False", scheduled.reason, scheduled.message),
      scheduled,
      progressing: condition(PROGRESSING_CONDITION, "True", "PodPending", scheduled.message),
      degraded: notDegraded,
    };
  }
  const report = session.status?.relay;
  const reportTime = toDate(report?.lastUpdateTime);
  const podCreated = toDate(pod.metadata?.creationTimestamp);
  // The report outlives pods: only one written after this pod was created describes it.
  const reportIsFromThisPod = reportTime !== undefined && (!podCreated || reportTime >= podCreated);
  if (!reportIsFromThisPod) {
    const message = waitingMessage(pod);
    return {
      phase: "Starting",
      ready: condition(READY_CONDITION, "False", "RelayStarting", message),
      scheduled,
      progressing: condition(PROGRESSING_CONDITION, "True", "RelayStarting", message),
      degraded: notDegraded,
    };
  }
  const ageMs = now.getTime() - reportTime.getTime();
  const stale = ageMs > staleAfterMs;
  const recheckAfterMs = stale ? undefined : Math.max(staleAfterMs - ageMs + 1, 1000);
  const connectionState = report?.webrtc?.connectionState ?? "new";
  const wasRunning =
    session.status?.podName === podName &&
    (session.status?.phase === "Running" || session.status?.phase === "Degraded");

  if (!stale && connectionState === "connected") {
    const message = `media flowing through ${podName}`;
    return {
      phase: "Running",
      ready: condition(READY_CONDITION, "True", "WebRTCConnected", message),
      scheduled,
      progressing: condition(PROGRESSING_CONDITION, "False", "WebRTCConnected", message),
      degraded: notDegraded,
      ...(recheckAfterMs !== undefined && { recheckAfterMs }),
    };
  }
  // A stale report reads "since …" (not "for N s"), so the message holds still while it stays stale.
  const [reason, message] = stale
    ? ["RelayReportStale", `no relay report since ${formatTime(reportTime)}`]
    : [
        wasRunning ? "WebRTCDisconnected" : "WebRTCConnecting",
        `WebRTC connection to ComfyStream is ${connectionState}${relayErrorSuffix(session)}`,
      ];
  if (wasRunning) {
    return {
      phase: "Degraded",
      ready: condition(READY_CONDITION, "False", reason, message),
      scheduled,
      progressing: condition(PROGRESSING_CONDITION, "False", reason, message),
      degraded: condition(DEGRADED_CONDITION, "True", reason, message),
      ...(recheckAfterMs !== undefined && { recheckAfterMs }),
    };
  }
  return {
    phase: "Connecting",
    ready: condition(READY_CONDITION, "False", reason, message),
    scheduled,
    progressing: condition(PROGRESSING_CONDITION, "True", reason, message),
    degraded: notDegraded,
    ...(recheckAfterMs !== undefined && { recheckAfterMs }),
  };
}

function assessOutcome(session: RelaySession, pod: V1Pod | undefined, outcome: Outcome): Assessment {
  const scheduled = podScheduledCondition(pod);
  switch (outcome.kind) {
    case "Restarting": {
      const message = `${outcome.failure.message}; restart ${outcome.restarts} of ${session.spec.lifetime?.maxRestarts ?? "?"} after ${Math.round(outcome.backoffMs / 1000)} s`;
      return {
        phase: "Pending",
        ready: condition(READY_CONDITION, "False", outcome.failure.reason, message),
        scheduled,
        progressing: condition(PROGRESSING_CONDITION, "True", "Restarting", message),
        degraded: notDegraded,
      };
    }
    case "Replacing": {
      const message = "the pod-shaping spec changed; replacing the relay pod";
      return {
        phase: "Pending",
        ready: condition(READY_CONDITION, "False", "PodSpecChanged", message),
        scheduled,
        progressing: condition(PROGRESSING_CONDITION, "True", "PodSpecChanged", message),
        degraded: notDegraded,
      };
    }
    case "CreateFailed": {
      return {
        phase: "Pending",
        ready: condition(READY_CONDITION, "False", "PodCreateFailed", outcome.message),
        scheduled,
        progressing: condition(PROGRESSING_CONDITION, "True", "PodCreateFailed", outcome.message),
        degraded: notDegraded,
      };
    }
    case "WaitingForPool": {
      return {
        phase: "Pending",
        ready: condition(READY_CONDITION, "False", outcome.reason, outcome.message),
        scheduled,
        progressing: condition(PROGRESSING_CONDITION, "True", outcome.reason, outcome.message),
        degraded: notDegraded,
      };
    }
    case "Failed": {
      const reason = outcome.budgetExhausted ? "RestartBudgetExhausted" : outcome.failure.reason;
      const message = outcome.budgetExhausted
        ? `restart budget of ${outcome.restartBudget} spent; last attempt: ${outcome.failure.reason}: ${outcome.failure.message}`
        : outcome.failure.message;
      return {
        phase: "Failed",
        ready: condition(READY_CONDITION, "False", reason, message),
        scheduled,
        progressing: condition(PROGRESSING_CONDITION, "False", outcome.failure.reason, message),
        degraded: notDegraded,
      };
    }
    case "Succeeded": {
      const message = "the input stream ended";
      return {
        phase: "Succeeded",
        ready: condition(READY_CONDITION, "False", "Completed", message),
        scheduled,
        progressing: condition(PROGRESSING_CONDITION, "False", "Completed", message),
        degraded: notDegraded,
      };
    }
  }
}

function assessNoPod(session: RelaySession): Assessment {
  const message = "creating the relay pod";
  const restarts = session.status?.restarts ?? 0;
  return {
    phase: "Pending",
    ready: condition(READY_CONDITION, "False", "PodNotCreated", message),
    scheduled: podScheduledCondition(undefined),
    progressing: condition(
      PROGRESSING_CONDITION,
      "True",
      restarts > 0 ? "Restarting" : "PodNotCreated",
      message,
    ),
    degraded: notDegraded,
  };
}

/**
 * The operator-owned status for what was observed. Terminal outcomes fix completionTime; startTime is
 * set once, from the first pod that started; restarts comes from the outcome or stays.
 */
export function computeStatus(input: StatusInput): ComputedStatus {
  const { session, pod, now, outcome } = input;
  const previous = session.status ?? {};
  const generation = session.metadata.generation;
  const staleAfterMs = input.reportStaleAfterMs ?? DEFAULT_REPORT_STALE_AFTER_MS;

  const assessment = outcome
    ? assessOutcome(session, pod, outcome)
    : pod
      ? assessActivePod(session, pod, now, staleAfterMs)
      : assessNoPod(session);

  const status: OperatorStatus = {
    phase: assessment.phase,
    conditions: mergeConditions(
      previous.conditions,
      [assessment.ready, assessment.scheduled, assessment.progressing, assessment.degraded],
      now,
      generation,
    ),
    restarts: outcome?.kind === "Restarting" ? outcome.restarts : (previous.restarts ?? 0),
  };
  if (generation !== undefined) status.observedGeneration = generation;
  // podName names the current attempt's pod once it exists; a restart or replacement clears it.
  if (pod && outcome?.kind !== "Restarting" && outcome?.kind !== "Replacing")
    status.podName = pod.metadata?.name;
  const podStarted = pod
    ? (toDate(pod.status?.startTime) ?? (pod.status?.phase === "Running" ? now : undefined))
    : undefined;
  const startTime = previous.startTime ?? (podStarted ? formatTime(podStarted) : undefined);
  if (startTime) status.startTime = startTime;
  const allocation = (pod && allocationOfPod(pod)) || previous.allocation;
  if (allocation) status.allocation = allocation;
  if (outcome?.kind === "Failed")
    status.completionTime = previous.completionTime ?? formatTime(outcome.failure.at);
  if (outcome?.kind === "Succeeded")
    status.completionTime = previous.completionTime ?? formatTime(outcome.at);

  const result: ComputedStatus = { status };
  if (assessment.recheckAfterMs !== undefined) result.recheckAfterMs = assessment.recheckAfterMs;
  return result;
}

export { POOL_EXHAUSTED_REASON };

/** The operator-owned fields of a stored status, in OperatorStatus shape, to compare with a computed one. */
export function operatorOwnedStatus(session: RelaySession): Partial<OperatorStatus> {
  const { relay: _relay, ...owned } = session.status ?? {};
  void _relay;
  return owned as Partial<OperatorStatus>;
}
