/**
 * The pod lifecycle of a live RelaySession: which attempt is current, creating its pod once the
 * restart backoff has passed, the startup deadline, a failed attempt → a restart within the budget
 * or Failed, a changed pod-shaping spec → a replacement, and the terminal status when the pod ends.
 * Separate from the reconciler, which routes a session here only while it has not finished and
 * owns what surrounds the attempts (RBAC, the finished phase with its TTL, error → requeue).
 *
 * Cache lag is handled by construction: pod names are deterministic (a repeated create is a 409), a
 * pod missing from the cache is looked up live before it counts as deleted, and every delete carries
 * the pod's uid as a precondition.
 */
import type { CoreV1Api, V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { OPERATOR_FIELD_MANAGER, type RelaySession } from "../../../crds/src/index.js";
import { apiCode, apiMessage, Retry, SHORT_REQUEUE_MS } from "./api-errors.js";
import { desiredRelayPod, podSpecHash, type RelayPodDefaults } from "./desired-pod.js";
import type { EventSink, EventType } from "./events.js";
import { lostPodFailure } from "./node-loss.js";
import { ANNOTATION_POD_SPEC_HASH, LABEL_ATTEMPT, LABEL_SESSION_UID, relayPodName } from "./labels.js";
import type { PodCache, ReconcileResult } from "./caches.js";
import {
  classifyPod,
  computeStatus,
  isPodFinished,
  restartBackoffMs,
  toDate,
  type Failure,
  type Outcome,
} from "./status.js";
import type { StatusWriter } from "./status-writer.js";
import { isRecycledPoolPod } from "./desired-pool-pod.js";
import { isPoolPod, podStartFor, waitingOutcome, type PoolAccess } from "./pooled-session.js";

export interface PodLifecycleDeps {
  core: CoreV1Api;
  pods: PodCache;
  status: StatusWriter;
  events: EventSink | undefined;
  relayImage: string;
  relayDefaults: RelayPodDefaults | undefined;
  reportStaleAfterMs: number | undefined;
  /** Warm pools, for sessions with spec.poolRef; without it such sessions wait (PoolNotFound). */
  pools?: PoolAccess;
}

/** The uid of the session that owns `pod`: the uid label, else the controller owner reference. */
export function podOwnerUid(pod: V1Pod): string | undefined {
  return (
    pod.metadata?.labels?.[LABEL_SESSION_UID] ??
    pod.metadata?.ownerReferences?.find((ref) => ref.controller)?.uid
  );
}

export function attemptOf(pod: V1Pod): number {
  const attempt = Number(pod.metadata?.labels?.[LABEL_ATTEMPT]);
  return Number.isInteger(attempt) ? attempt : -1;
}

export class PodLifecycle {
  private readonly core: CoreV1Api;
  private readonly pods: PodCache;
  private readonly status: StatusWriter;
  private readonly events: EventSink | undefined;
  private readonly relayImage: string;
  private readonly relayDefaults: RelayPodDefaults | undefined;
  private readonly reportStaleAfterMs: number | undefined;
  private readonly pools: PoolAccess | undefined;

  constructor(deps: PodLifecycleDeps) {
    this.core = deps.core;
    this.pods = deps.pods;
    this.status = deps.status;
    this.events = deps.events;
    this.relayImage = deps.relayImage;
    this.relayDefaults = deps.relayDefaults;
    this.reportStaleAfterMs = deps.reportStaleAfterMs;
    this.pools = deps.pools;
  }

  /** One step of a session that has not finished (RBAC is in place): see the file comment. */
  async reconcile(cached: RelaySession, now: Date, log: Logger): Promise<ReconcileResult | void> {
    const namespace = cached.metadata.namespace ?? "default";
    const owned = this.ownedPods(cached);
    // Pods are the durable record of attempts: a pod of a later attempt than status.restarts means
    // the cached session predates our own last write (its status patch will then 409) or the
    // status was lost; either way the highest attempt is the current one.
    const attempt = Math.max(cached.status?.restarts ?? 0, ...owned.map(attemptOf));
    const session: RelaySession =
      attempt === (cached.status?.restarts ?? 0)
        ? cached
        : { ...cached, status: { ...cached.status, restarts: attempt } };
    await this.deleteSupersededPods(owned, attempt, log);
    // A pooled session's pod of this attempt is the warm pod claimed for it, if there is one.
    const claimed = session.spec.poolRef
      ? owned.find((candidate) => isPoolPod(candidate) && attemptOf(candidate) === attempt)
      : undefined;
    if (claimed) await this.deleteColdPodsBeside(claimed, owned, log);
    const podName =
      claimed?.metadata?.name ??
      (session.spec.poolRef && session.status?.allocation?.podName === session.status?.podName
        ? (session.status?.podName ?? relayPodName(session.metadata.name ?? "", attempt))
        : relayPodName(session.metadata.name ?? "", attempt));

    let pod = owned.find((candidate) => candidate.metadata?.name === podName);
    if (!pod && session.status?.podName === podName) pod = await this.readPod(namespace, podName);
    if (pod && podOwnerUid(pod) !== session.metadata.uid) {
      // Left over from an earlier session of the same name; it holds our deterministic name.
      await this.deletePod(pod);
      throw new Retry("pod name held by a previous session's pod");
    }

    if (!pod) {
      if (session.status?.podName === podName) {
        const failure: Failure = { reason: "PodDeleted", message: `pod ${podName} was deleted`, at: now };
        return this.handleFailure(session, undefined, failure, true, now, log);
      }
      return this.startAttempt(session, attempt, owned, now, log);
    }

    const desiredHash = podSpecHash(session);
    if (pod.metadata?.deletionTimestamp) {
      // Replacement in progress, or someone else is deleting it: either way wait until it is gone,
      // unless its node never confirms the deletion (node-loss.ts).
      const lost = lostPodFailure(pod, now);
      if (lost.failure) return this.handleFailure(session, pod, lost.failure, true, now, log);
      if (pod.metadata.annotations?.[ANNOTATION_POD_SPEC_HASH] !== desiredHash) {
        await this.status.write(
          session,
          computeStatus({ session, pod, now, outcome: { kind: "Replacing" } }).status,
          log,
        );
      }
      return { requeueAfterMs: Math.min(SHORT_REQUEUE_MS, lost.waitMs) };
    }

    // A recycling pool's relay ends a clean session by marking its pod, which keeps running idle.
    const verdict = isRecycledPoolPod(pod)
      ? ({ kind: "Succeeded", at: now } as const)
      : classifyPod(pod, now);
    if (verdict.kind === "Succeeded") {
      return this.finish(session, pod, { kind: "Succeeded", at: verdict.at }, now, log);
    }
    if (verdict.kind === "Failed")
      return this.handleFailure(session, pod, verdict.failure, verdict.retryable, now, log);

    // A warm pod was shaped by its pool's template, not by this session's spec.
    if (!isPoolPod(pod) && pod.metadata?.annotations?.[ANNOTATION_POD_SPEC_HASH] !== desiredHash) {
      return this.replacePod(session, pod, now, log);
    }

    const computed = computeStatus({ session, pod, now, reportStaleAfterMs: this.reportStaleAfterMs });
    let requeueAfterMs = computed.recheckAfterMs;
    const phase = computed.status.phase;
    if (phase !== "Running" && phase !== "Degraded") {
      const timeoutMs = session.spec.lifetime.startupTimeoutSeconds * 1000;
      const created = toDate(podStartFor(pod)) ?? now;
      const remainingMs = created.getTime() + timeoutMs - now.getTime();
      if (remainingMs <= 0) {
        await this.deletePod(pod);
        const failure: Failure = {
          reason: "StartupTimeout",
          message: `pod ${podName} was not streaming within ${session.spec.lifetime.startupTimeoutSeconds} s (still ${phase})`,
          at: now,
        };
        return this.handleFailure(session, undefined, failure, true, now, log);
      }
      requeueAfterMs = Math.min(requeueAfterMs ?? remainingMs, remainingMs);
    }
    await this.status.write(session, computed.status, log);
    return requeueAfterMs === undefined ? undefined : { requeueAfterMs };
  }

  /** No pod for the current attempt yet: wait out the restart backoff, then create it. */
  private async startAttempt(
    session: RelaySession,
    attempt: number,
    owned: V1Pod[],
    now: Date,
    log: Logger,
  ): Promise<ReconcileResult | void> {
    const namespace = session.metadata.namespace ?? "default";
    if (attempt > 0) {
      const previous = owned.find(
        (pod) => pod.metadata?.name === relayPodName(session.metadata.name ?? "", attempt - 1),
      );
      const verdict = previous ? classifyPod(previous, now) : undefined;
      if (verdict?.kind === "Failed") {
        const backoffMs = restartBackoffMs(attempt);
        const waitMs = verdict.failure.at.getTime() + backoffMs - now.getTime();
        if (waitMs > 0) {
          const outcome: Outcome = {
            kind: "Restarting",
            failure: verdict.failure,
            restarts: attempt,
            backoffMs,
          };
          await this.status.write(
            session,
            computeStatus({ session, pod: undefined, now, outcome }).status,
            log,
          );
          return { requeueAfterMs: waitMs };
        }
      }
    }

    if (session.spec.poolRef) {
      const waiting = await this.waitForPool(session, now, log);
      if (waiting) return waiting;
    }
    const desired = desiredRelayPod(session, {
      relayImage: this.relayImage,
      attempt,
      defaults: this.relayDefaults,
    });
    const podName = desired.metadata?.name ?? "";
    let pod: V1Pod | undefined;
    try {
      pod = await this.core.createNamespacedPod({
        namespace,
        body: desired,
        fieldManager: OPERATOR_FIELD_MANAGER,
      });
      log.info({ pod: podName, attempt }, "created relay pod");
      this.emit(session, "Normal", "PodCreated", `created pod ${podName} (attempt ${attempt})`);
    } catch (error) {
      const code = apiCode(error);
      if (code === 409) {
        pod = await this.readPod(namespace, podName);
        if (!pod) throw new Retry("pod vanished after AlreadyExists");
        if (podOwnerUid(pod) !== session.metadata.uid) {
          await this.deletePod(pod);
          throw new Retry("pod name held by a previous session's pod");
        }
      } else if (code === 422 || code === 400) {
        // The apiserver refuses this pod (e.g. an affinity passed through from the spec); retrying
        // the same spec cannot help.
        const failure: Failure = {
          reason: "InvalidPodSpec",
          message: `pod ${podName} rejected: ${apiMessage(error)}`,
          at: now,
        };
        return this.handleFailure(session, undefined, failure, false, now, log);
      } else {
        // E.g. a missing PriorityClass or an exceeded quota (403): may resolve on its own, so the
        // queue retries with backoff; meanwhile the status and an Event say why there is no pod.
        const message = `cannot create pod ${podName}: ${apiMessage(error)}`;
        const outcome: Outcome = { kind: "CreateFailed", message };
        if (
          (await this.status.write(session, computeStatus({ session, now, outcome }).status, log)) ===
          "written"
        ) {
          this.emit(session, "Warning", "PodCreateFailed", message);
        }
        throw error;
      }
    }
    await this.status.write(
      session,
      computeStatus({ session, pod, now, reportStaleAfterMs: this.reportStaleAfterMs }).status,
      log,
    );
    return { requeueAfterMs: session.spec.lifetime.startupTimeoutSeconds * 1000 };
  }

  /**
   * A pooled session without a pod of this attempt: it waits for the pool controller's claim, unless
   * it asked for a cold pod when the pool is exhausted (undefined: go on and create that pod).
   */
  private async waitForPool(
    session: RelaySession,
    now: Date,
    log: Logger,
  ): Promise<ReconcileResult | undefined> {
    const namespace = session.metadata.namespace ?? "default";
    const poolName = session.spec.poolRef!.name;
    const pool = this.pools?.get(namespace, poolName);
    // Claimed a moment ago: the pod becomes the session's once the claim's labels reach it.
    if (this.pools?.claimPending(namespace, session.metadata.uid ?? "", session.status?.restarts ?? 0))
      return { requeueAfterMs: 1000 };
    if (pool && session.spec.poolRef!.onExhausted === "cold") {
      if ((this.pools?.idleReadyPods(namespace, poolName) ?? 0) === 0) {
        log.info({ pool: poolName }, "pool exhausted; starting a cold pod as the session asks");
        this.emit(
          session,
          "Normal",
          "PoolExhaustedCold",
          `RelayPool ${poolName} has no idle pod; starting a cold pod`,
        );
        return undefined;
      }
    }
    this.pools?.requestAllocation(namespace, poolName);
    // An idle pod is there: the pool controller's claim follows (a pod event brings us back); the
    // session is not waiting on an exhausted pool, so no PoolExhausted status is written.
    if (pool && (this.pools?.idleReadyPods(namespace, poolName) ?? 0) > 0) return { requeueAfterMs: 2000 };
    const outcome = waitingOutcome(session, pool);
    if (
      (await this.status.write(session, computeStatus({ session, now, outcome }).status, log)) ===
        "written" &&
      session.status?.conditions?.[0]?.reason !== outcome.reason
    ) {
      this.emit(session, "Normal", outcome.reason, outcome.message);
    }
    // The claim is a pod event that brings the session back; the requeue only guards a lost event.
    return { requeueAfterMs: 30_000 };
  }

  /** A claimed warm pod won a race with a cold pod of the same attempt: the cold one goes. */
  private async deleteColdPodsBeside(claimed: V1Pod, owned: V1Pod[], log: Logger): Promise<void> {
    for (const pod of owned) {
      if (pod === claimed || isPoolPod(pod) || isPodFinished(pod) || pod.metadata?.deletionTimestamp)
        continue;
      if (attemptOf(pod) !== attemptOf(claimed)) continue;
      log.info(
        { pod: pod.metadata?.name, warm: claimed.metadata?.name },
        "deleting cold pod: a warm pod was claimed",
      );
      await this.deletePod(pod);
    }
  }

  /** The attempt ended badly: count a restart within the budget, else the session has Failed. */
  private async handleFailure(
    session: RelaySession,
    pod: V1Pod | undefined,
    failure: Failure,
    retryable: boolean,
    now: Date,
    log: Logger,
  ): Promise<ReconcileResult | void> {
    const restarts = session.status?.restarts ?? 0;
    const budget = session.spec.lifetime.maxRestarts;
    if (!retryable || restarts >= budget) {
      const outcome: Outcome = { kind: "Failed", failure, budgetExhausted: retryable, restartBudget: budget };
      return this.finish(session, pod, outcome, now, log);
    }
    const backoffMs = restartBackoffMs(restarts + 1);
    const outcome: Outcome = { kind: "Restarting", failure, restarts: restarts + 1, backoffMs };
    if (
      (await this.status.write(session, computeStatus({ session, pod, now, outcome }).status, log)) ===
      "written"
    ) {
      log.warn(
        { reason: failure.reason, message: failure.message, restarts: restarts + 1 },
        "relay attempt failed; restarting",
      );
      this.emit(
        session,
        "Warning",
        failure.reason,
        `${failure.message}; restarting (restart ${restarts + 1} of ${budget})`,
      );
    }
    // With a ComfyStream sidecar the pod can outlive its relay container; it must not hold the GPU.
    if (pod && !isPodFinished(pod)) await this.deletePod(pod);
    const waitMs = failure.at.getTime() + backoffMs - now.getTime();
    return { requeueAfterMs: Math.max(waitMs, 1) };
  }

  /** Terminal: write Succeeded/Failed, stop the pod if anything still runs in it. */
  private async finish(
    session: RelaySession,
    pod: V1Pod | undefined,
    outcome: Extract<Outcome, { kind: "Succeeded" | "Failed" }>,
    now: Date,
    log: Logger,
  ): Promise<ReconcileResult | void> {
    const status = computeStatus({ session, pod, now, outcome }).status;
    if ((await this.status.write(session, status, log)) === "written") {
      const ready = status.conditions[0];
      if (outcome.kind === "Succeeded") {
        log.info("session succeeded");
        this.emit(session, "Normal", "Completed", ready?.message ?? "the input stream ended");
      } else {
        log.warn({ reason: ready?.reason, message: ready?.message }, "session failed");
        this.emit(
          session,
          "Warning",
          ready?.reason ?? outcome.failure.reason,
          ready?.message ?? outcome.failure.message,
        );
      }
    }
    if (pod && !isPodFinished(pod) && !pod.metadata?.deletionTimestamp && !isRecycledPoolPod(pod))
      await this.deletePod(pod);
    return ttlRequeue(session, status.completionTime, now);
  }

  /** The pod-shaping spec changed: delete the pod; the next reconcile creates its replacement. */
  private async replacePod(
    session: RelaySession,
    pod: V1Pod,
    now: Date,
    log: Logger,
  ): Promise<ReconcileResult> {
    // podName is cleared first, so that the pod's disappearance is not taken for a failure.
    await this.status.write(
      session,
      computeStatus({ session, pod, now, outcome: { kind: "Replacing" } }).status,
      log,
    );
    await this.deletePod(pod);
    log.info({ pod: pod.metadata?.name }, "pod spec changed; replacing the relay pod");
    this.emit(
      session,
      "Normal",
      "PodSpecChanged",
      `replacing pod ${pod.metadata?.name}: the pod-shaping spec changed`,
    );
    return { requeueAfterMs: SHORT_REQUEUE_MS };
  }

  /** Deletes `pod` unless a different pod has taken its name meanwhile. */
  async deletePod(pod: V1Pod): Promise<void> {
    await deletePodIfSame(this.core, pod);
  }

  /** Pods of earlier attempts that still run (e.g. an operator restart mid-restart): stop them. */
  private async deleteSupersededPods(owned: V1Pod[], attempt: number, log: Logger): Promise<void> {
    for (const pod of owned) {
      if (attemptOf(pod) >= attempt || isPodFinished(pod) || pod.metadata?.deletionTimestamp) continue;
      log.info({ pod: pod.metadata?.name }, "deleting relay pod of an earlier attempt");
      await this.deletePod(pod);
    }
  }

  /** The cached pods of `session`, every attempt's. */
  ownedPods(session: RelaySession): V1Pod[] {
    const uid = session.metadata.uid;
    if (uid === undefined) return [];
    // Owner references never cross namespaces; the check guards a uid label copied elsewhere.
    return this.pods.byOwner(uid).filter((pod) => pod.metadata?.namespace === session.metadata.namespace);
  }

  /** A live read, for when the cache may be behind our own writes. */
  private async readPod(namespace: string, name: string): Promise<V1Pod | undefined> {
    try {
      return await this.core.readNamespacedPod({ namespace, name });
    } catch (error) {
      if (apiCode(error) === 404) return undefined;
      throw error;
    }
  }

  private emit(session: RelaySession, type: EventType, reason: string, message: string): void {
    this.events?.record(session, type, reason, message);
  }
}

/** A finished session's next look: when its TTL runs out (none without a TTL). */
export function ttlRequeue(
  session: RelaySession,
  completionTime: string | undefined,
  now: Date,
): ReconcileResult | void {
  const ttlSeconds = session.spec.lifetime.ttlSecondsAfterFinished;
  const completion = toDate(completionTime);
  if (ttlSeconds === undefined || !completion) return;
  return { requeueAfterMs: Math.max(completion.getTime() + ttlSeconds * 1000 - now.getTime(), 1) };
}

/** Deletes `pod` by uid precondition; already gone or replaced counts as done. */
export async function deletePodIfSame(core: CoreV1Api, pod: V1Pod): Promise<void> {
  try {
    await core.deleteNamespacedPod({
      namespace: pod.metadata?.namespace ?? "default",
      name: pod.metadata?.name ?? "",
      // Never delete a different pod that took the same name meanwhile.
      body: { preconditions: { uid: pod.metadata?.uid } },
    });
  } catch (error) {
    if (apiCode(error) !== 404 && apiCode(error) !== 409) throw error;
  }
}
