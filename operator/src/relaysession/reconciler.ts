// The RelaySession reconciler: level-based and idempotent, keyed by "namespace/name". Each call looks
// at the session and its pods as the caches show them, brings the world one step closer to the
// desired state (RBAC, the pod of the current attempt, restarts, cleanup) and writes the
// operator-owned status. Everything it needs to remember lives in the status (restarts, podName,
// phase), so a restarted operator carries on where the last one stopped.
//
// Cache lag is handled by construction: pod names are deterministic (a repeated create is a 409),
// a pod missing from the cache is looked up live before it counts as deleted, and status patches
// carry the cached resourceVersion, so a decision made on a stale session is rejected (409) and
// retried instead of written.
//
// This file routes a session and owns what surrounds its attempts: RBAC first, then either the pod
// lifecycle (pod-lifecycle.ts) or, once finished, the leftovers and the TTL. Status writes are in
// status-writer.ts, RBAC in session-rbac.ts, the orphan sweep in orphan-sweep.ts; the names this
// module exported before the split are re-exported from here.

import { isRecycledPoolPod } from "./desired-pool-pod.js";
import { randomUUID } from "node:crypto";
import { CoreV1Api, CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
import {
  RELAY_SESSION_GROUP,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelaySession,
} from "../../../crds/src/index.js";
import { silentLogger } from "../../../relay-pod/src/index.js";
import { apiCode, Retry, SHORT_REQUEUE_MS } from "./api-errors.js";
import type { PodCache, ReconcileResult, SessionCache } from "./caches.js";
import type { RelayPodDefaults } from "./desired-pod.js";
import type { EventSink, EventType } from "./events.js";
import { sweepOrphanPods } from "./orphan-sweep.js";
import { PodLifecycle, ttlRequeue } from "./pod-lifecycle.js";
import { withPoolTemplate, type PoolAccess } from "./pooled-session.js";
import { SessionRbac } from "./session-rbac.js";
import { StatusWriter } from "./status-writer.js";
import {
  isPodFinished,
  isTerminalPhase,
  operatorOwnedStatus,
  toDate,
  type OperatorStatus,
} from "./status.js";
import type { BackgroundWrites } from "../kube/write-priority.js";

export { sweepOrphanPods } from "./orphan-sweep.js";
export type { SweepOrphanPodsOptions } from "./orphan-sweep.js";
export { podOwnerUid } from "./pod-lifecycle.js";

export type { PodCache, ReconcileResult, SessionCache } from "./caches.js";

export interface RelaySessionReconcilerDeps {
  sessions: SessionCache;
  pods: PodCache;
  kubeConfig: KubeConfig;
  /** Kubernetes Events on transitions; none when omitted. */
  events?: EventSink;
  /** The operator's --relay-image. */
  relayImage: string;
  /** Installation-wide relay pod defaults (Helm `relay.*` values). */
  relayDefaults?: RelayPodDefaults;
  now?: () => Date;
  logger?: Logger;
  /** Relay reports older than this make a running session Degraded. Default 30 s. */
  reportStaleAfterMs?: number;
  /** Per-session RBAC is re-asserted at most this often per session. Default 10 min. */
  rbacRecheckMs?: number;
  /** Warm pools for sessions with spec.poolRef (the pool informer and controller). */
  pools?: PoolAccess;
  /** Pooled sessions' status writes wait behind warm pod claims (operator/src/kube/write-priority.ts). */
  background?: BackgroundWrites;
}

export function splitKey(key: string): [namespace: string, name: string] {
  const slash = key.indexOf("/");
  return slash < 0 ? ["default", key] : [key.slice(0, slash), key.slice(slash + 1)];
}

export class RelaySessionReconciler {
  private readonly sessions: SessionCache;
  private readonly pods: PodCache;
  private readonly kubeConfig: KubeConfig;
  private readonly customObjects: CustomObjectsApi;
  private readonly events: EventSink | undefined;
  private readonly now: () => Date;
  private readonly logger: Logger;
  private readonly rbac: SessionRbac;
  private readonly status: StatusWriter;
  private readonly lifecycle: PodLifecycle;
  private readonly pools: PoolAccess | undefined;

  constructor(deps: RelaySessionReconcilerDeps) {
    this.sessions = deps.sessions;
    this.pods = deps.pods;
    this.kubeConfig = deps.kubeConfig;
    this.customObjects = deps.kubeConfig.makeApiClient(CustomObjectsApi);
    this.events = deps.events;
    this.now = deps.now ?? (() => new Date());
    this.logger = deps.logger ?? silentLogger;
    this.rbac = new SessionRbac(deps.kubeConfig, deps.rbacRecheckMs);
    this.status = new StatusWriter(this.customObjects, deps.events, deps.background);
    this.pools = deps.pools;
    this.lifecycle = new PodLifecycle({
      pools: deps.pools,
      core: deps.kubeConfig.makeApiClient(CoreV1Api),
      pods: deps.pods,
      status: this.status,
      events: deps.events,
      relayImage: deps.relayImage,
      relayDefaults: deps.relayDefaults,
      reportStaleAfterMs: deps.reportStaleAfterMs,
    });
  }

  async reconcile(key: string): Promise<ReconcileResult | void> {
    const [namespace, name] = splitKey(key);
    const session = this.sessions.get(namespace, name);
    // Gone: the garbage collector removes its pods and RBAC through the owner references.
    if (!session || session.metadata.deletionTimestamp) {
      if (session?.metadata.uid) this.rbac.forget(session.metadata.uid);
      return;
    }
    const log = this.logger.child({
      session: key,
      generation: session.metadata.generation,
      reconcileID: randomUUID(),
    });
    try {
      return await this.reconcileSession(session, this.now(), log);
    } catch (error) {
      const code = apiCode(error);
      if (error instanceof Retry || code === 404 || code === 409) {
        log.debug({ err: error }, "reconcile retried: stale or vanished object");
        return { requeueAfterMs: SHORT_REQUEUE_MS };
      }
      throw error;
    }
  }

  /**
   * Deletes relay pods (from the pod cache) whose session no longer exists; see sweepOrphanPods.
   * Returns the deleted pods as "namespace/name".
   */
  async sweepOrphanPods(namespace?: string): Promise<string[]> {
    const sessions = this.sessions;
    return sweepOrphanPods({
      kubeConfig: this.kubeConfig,
      pods: this.pods.list(namespace),
      sessions: { get: (ns, name) => sessions.get(ns, name) },
      logger: this.logger,
    });
  }

  private async reconcileSession(
    cached: RelaySession,
    now: Date,
    log: Logger,
  ): Promise<ReconcileResult | void> {
    // A warm pool pod runs as its pool's ServiceAccount: only a session that may go cold needs its own.
    if (!cached.spec.poolRef || cached.spec.poolRef.onExhausted === "cold") await this.rbac.ensure(cached);
    if (isTerminalPhase(cached.status?.phase)) return this.reconcileFinished(cached, now, log);
    const poolRef = cached.spec.poolRef;
    const pool = poolRef && this.pools?.get(cached.metadata.namespace ?? "default", poolRef.name);
    return this.lifecycle.reconcile(pool ? withPoolTemplate(cached, pool) : cached, now, log);
  }

  /** Succeeded or Failed: keep the status current, stop leftovers, delete the session after its TTL. */
  private async reconcileFinished(
    session: RelaySession,
    now: Date,
    log: Logger,
  ): Promise<ReconcileResult | void> {
    for (const pod of this.lifecycle.ownedPods(session)) {
      // A recycled warm pod is idle again, not a leftover: the pool controller takes it back.
      if (isRecycledPoolPod(pod)) continue;
      if (!isPodFinished(pod) && !pod.metadata?.deletionTimestamp) await this.lifecycle.deletePod(pod);
    }
    const previous = operatorOwnedStatus(session);
    const generation = session.metadata.generation;
    if (generation !== undefined && previous.observedGeneration !== generation) {
      // Spec edits after the end change nothing, but kstatus readers must see them acknowledged.
      const status = {
        ...previous,
        observedGeneration: generation,
        conditions: (previous.conditions ?? []).map((c) => ({ ...c, observedGeneration: generation })),
      } as OperatorStatus;
      await this.status.write(session, status, log);
    }
    const ttlSeconds = session.spec.lifetime.ttlSecondsAfterFinished;
    const completion = toDate(session.status?.completionTime);
    if (ttlSeconds !== undefined && completion && now.getTime() >= completion.getTime() + ttlSeconds * 1000) {
      await this.deleteSession(session);
      log.info({ ttlSeconds }, "deleted finished session after its TTL");
      this.emit(session, "Normal", "TTLExpired", `deleted ${ttlSeconds} s after the session finished`);
      return;
    }
    return ttlRequeue(session, session.status?.completionTime, now);
  }

  private async deleteSession(session: RelaySession): Promise<void> {
    try {
      await this.customObjects.deleteNamespacedCustomObject({
        group: RELAY_SESSION_GROUP,
        version: RELAY_SESSION_VERSION,
        namespace: session.metadata.namespace ?? "default",
        plural: RELAY_SESSION_PLURAL,
        name: session.metadata.name ?? "",
        propagationPolicy: "Background",
        body: { preconditions: { uid: session.metadata.uid } },
      });
    } catch (error) {
      if (apiCode(error) !== 404 && apiCode(error) !== 409) throw error;
    }
  }

  private emit(session: RelaySession, type: EventType, reason: string, message: string): void {
    this.events?.record(session, type, reason, message);
  }
}
