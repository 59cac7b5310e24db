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

import { randomUUID } from "node:crypto";
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  RbacAuthorizationV1Api,
  setHeaderOptions,
  type V1Pod,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import {
  OPERATOR_FIELD_MANAGER,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelaySession,
} from "../../../crds/src/index.js";
import { silentLogger } from "../../../relay-pod/src/index.js";
import { canonicalJson } from "../kube/canonical-json.js";
import { desiredRelayPod, desiredRelayRbac, podSpecHash, type RelayPodDefaults } from "./desired-pod.js";
import type { EventSink, EventType } from "./events.js";
import {
  ANNOTATION_POD_SPEC_HASH,
  LABEL_ATTEMPT,
  LABEL_MANAGED_BY,
  LABEL_SESSION_UID,
  OPERATOR_NAME,
  relayPodName,
} from "./labels.js";
import {
  classifyPod,
  computeStatus,
  isPodFinished,
  isTerminalPhase,
  operatorOwnedStatus,
  restartBackoffMs,
  toDate,
  type Failure,
  type OperatorStatus,
  type Outcome,
} from "./status.js";

export interface ReconcileResult {
  requeueAfterMs?: number;
}

/** Read access to the RelaySession informer cache. */
export interface SessionCache {
  get(namespace: string, name: string): RelaySession | undefined;
}

/** Read access to the relay pod informer cache. */
export interface PodCache {
  list(namespace?: string): V1Pod[];
  /** The cached pods whose owning session has this uid (`podOwnerUid`); an index, not a scan. */
  byOwner(uid: string): V1Pod[];
}

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
}

/** Short waits for things that resolve on their own (a pod finishing its deletion, a conflict). */
const SHORT_REQUEUE_MS = 1000;
const DEFAULT_RBAC_RECHECK_MS = 10 * 60_000;
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

/** The status fields the operator owns; unset ones are deleted (null) in the merge patch. */
const OPERATOR_STATUS_FIELDS = [
  "phase",
  "conditions",
  "observedGeneration",
  "podName",
  "startTime",
  "completionTime",
  "restarts",
] as const satisfies ReadonlyArray<keyof OperatorStatus>;

type WriteResult = "written" | "unchanged";

/** A conflict or a vanished object: the reconcile ends and is retried shortly. */
class Retry extends Error {}

function apiCode(error: unknown): number | undefined {
  return error instanceof ApiException ? error.code : undefined;
}

function apiMessage(error: unknown): string {
  if (error instanceof ApiException) {
    try {
      const status = JSON.parse(String(error.body)) as { message?: string };
      if (status.message) return status.message;
    } catch {
      // not a Status body
    }
    return `HTTP ${error.code}`;
  }
  return error instanceof Error ? error.message : String(error);
}

export function splitKey(key: string): [namespace: string, name: string] {
  const slash = key.indexOf("/");
  return slash < 0 ? ["default", key] : [key.slice(0, slash), key.slice(slash + 1)];
}

/** The uid of the session that owns `pod`: the uid label, else the controller owner reference. */
export function podOwnerUid(pod: V1Pod): string | undefined {
  return (
    pod.metadata?.labels?.[LABEL_SESSION_UID] ??
    pod.metadata?.ownerReferences?.find((ref) => ref.controller)?.uid
  );
}

function attemptOf(pod: V1Pod): number {
  const attempt = Number(pod.metadata?.labels?.[LABEL_ATTEMPT]);
  return Number.isInteger(attempt) ? attempt : -1;
}

export class RelaySessionReconciler {
  private readonly sessions: SessionCache;
  private readonly pods: PodCache;
  private readonly kubeConfig: KubeConfig;
  private readonly core: CoreV1Api;
  private readonly rbac: RbacAuthorizationV1Api;
  private readonly customObjects: CustomObjectsApi;
  private readonly events: EventSink | undefined;
  private readonly relayImage: string;
  private readonly relayDefaults: RelayPodDefaults | undefined;
  private readonly now: () => Date;
  private readonly logger: Logger;
  private readonly reportStaleAfterMs: number | undefined;
  private readonly rbacRecheckMs: number;
  /** Session uid → when its RBAC was last ensured. */
  private readonly rbacEnsuredAt = new Map<string, number>();

  constructor(deps: RelaySessionReconcilerDeps) {
    this.sessions = deps.sessions;
    this.pods = deps.pods;
    this.kubeConfig = deps.kubeConfig;
    this.core = deps.kubeConfig.makeApiClient(CoreV1Api);
    this.rbac = deps.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    this.customObjects = deps.kubeConfig.makeApiClient(CustomObjectsApi);
    this.events = deps.events;
    this.relayImage = deps.relayImage;
    this.relayDefaults = deps.relayDefaults;
    this.now = deps.now ?? (() => new Date());
    this.logger = deps.logger ?? silentLogger;
    this.reportStaleAfterMs = deps.reportStaleAfterMs;
    this.rbacRecheckMs = deps.rbacRecheckMs ?? DEFAULT_RBAC_RECHECK_MS;
  }

  async reconcile(key: string): Promise<ReconcileResult | void> {
    const [namespace, name] = splitKey(key);
    const session = this.sessions.get(namespace, name);
    // Gone: the garbage collector removes its pods and RBAC through the owner references.
    if (!session || session.metadata.deletionTimestamp) {
      if (session?.metadata.uid) this.rbacEnsuredAt.delete(session.metadata.uid);
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

  // -------------------------------------------------------------------------------------------
  // The decision

  private async reconcileSession(
    cached: RelaySession,
    now: Date,
    log: Logger,
  ): Promise<ReconcileResult | void> {
    await this.ensureRbac(cached);
    if (isTerminalPhase(cached.status?.phase)) return this.reconcileFinished(cached, now, log);

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
    const podName = relayPodName(session.metadata.name ?? "", attempt);
    await this.deleteSupersededPods(owned, attempt, log);

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
      // Replacement in progress, or someone else is deleting it: either way wait until it is gone.
      if (pod.metadata.annotations?.[ANNOTATION_POD_SPEC_HASH] !== desiredHash) {
        await this.writeStatus(
          session,
          computeStatus({ session, pod, now, outcome: { kind: "Replacing" } }).status,
          log,
        );
      }
      return { requeueAfterMs: SHORT_REQUEUE_MS };
    }

    const verdict = classifyPod(pod, now);
    if (verdict.kind === "Succeeded") {
      return this.finish(session, pod, { kind: "Succeeded", at: verdict.at }, now, log);
    }
    if (verdict.kind === "Failed")
      return this.handleFailure(session, pod, verdict.failure, verdict.retryable, now, log);

    if (pod.metadata?.annotations?.[ANNOTATION_POD_SPEC_HASH] !== desiredHash) {
      return this.replacePod(session, pod, now, log);
    }

    const computed = computeStatus({ session, pod, now, reportStaleAfterMs: this.reportStaleAfterMs });
    let requeueAfterMs = computed.recheckAfterMs;
    const phase = computed.status.phase;
    if (phase !== "Running" && phase !== "Degraded") {
      const timeoutMs = session.spec.lifetime.startupTimeoutSeconds * 1000;
      const created = toDate(pod.metadata?.creationTimestamp) ?? now;
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
    await this.writeStatus(session, computed.status, log);
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
          await this.writeStatus(
            session,
            computeStatus({ session, pod: undefined, now, outcome }).status,
            log,
          );
          return { requeueAfterMs: waitMs };
        }
      }
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
          (await this.writeStatus(session, computeStatus({ session, now, outcome }).status, log)) ===
          "written"
        ) {
          this.emit(session, "Warning", "PodCreateFailed", message);
        }
        throw error;
      }
    }
    await this.writeStatus(
      session,
      computeStatus({ session, pod, now, reportStaleAfterMs: this.reportStaleAfterMs }).status,
      log,
    );
    return { requeueAfterMs: session.spec.lifetime.startupTimeoutSeconds * 1000 };
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
      (await this.writeStatus(session, computeStatus({ session, pod, now, outcome }).status, log)) ===
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
    if ((await this.writeStatus(session, status, log)) === "written") {
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
    if (pod && !isPodFinished(pod) && !pod.metadata?.deletionTimestamp) await this.deletePod(pod);
    return this.ttlRequeue(session, status.completionTime, now);
  }

  /** The pod-shaping spec changed: delete the pod; the next reconcile creates its replacement. */
  private async replacePod(
    session: RelaySession,
    pod: V1Pod,
    now: Date,
    log: Logger,
  ): Promise<ReconcileResult> {
    // podName is cleared first, so that the pod's disappearance is not taken for a failure.
    await this.writeStatus(
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

  /** Succeeded or Failed: keep the status current, stop leftovers, delete the session after its TTL. */
  private async reconcileFinished(
    session: RelaySession,
    now: Date,
    log: Logger,
  ): Promise<ReconcileResult | void> {
    for (const pod of this.ownedPods(session)) {
      if (!isPodFinished(pod) && !pod.metadata?.deletionTimestamp) await this.deletePod(pod);
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
      await this.writeStatus(session, status, log);
    }
    const ttlSeconds = session.spec.lifetime.ttlSecondsAfterFinished;
    const completion = toDate(session.status?.completionTime);
    if (ttlSeconds !== undefined && completion && now.getTime() >= completion.getTime() + ttlSeconds * 1000) {
      await this.deleteSession(session);
      log.info({ ttlSeconds }, "deleted finished session after its TTL");
      this.emit(session, "Normal", "TTLExpired", `deleted ${ttlSeconds} s after the session finished`);
      return;
    }
    return this.ttlRequeue(session, session.status?.completionTime, now);
  }

  private ttlRequeue(
    session: RelaySession,
    completionTime: string | undefined,
    now: Date,
  ): ReconcileResult | void {
    const ttlSeconds = session.spec.lifetime.ttlSecondsAfterFinished;
    const completion = toDate(completionTime);
    if (ttlSeconds === undefined || !completion) return;
    return { requeueAfterMs: Math.max(completion.getTime() + ttlSeconds * 1000 - now.getTime(), 1) };
  }

  // -------------------------------------------------------------------------------------------
  // Writes

  /**
   * Merge-patches the operator-owned status fields through /status when they differ from the
   * cached ones. `relay` is never in the body (merge patch would replace the pod's report), and the
   * cached resourceVersion is, so a write based on a stale session is refused (409 → Retry).
   */
  private async writeStatus(
    session: RelaySession,
    status: OperatorStatus,
    log: Logger,
  ): Promise<WriteResult> {
    const previous = operatorOwnedStatus(session);
    const pick = (source: Partial<OperatorStatus>) =>
      Object.fromEntries(OPERATOR_STATUS_FIELDS.map((field) => [field, source[field] ?? null]));
    const desired = pick(status);
    if (canonicalJson(pick(previous)) === canonicalJson(desired)) return "unchanged";
    try {
      await this.customObjects.patchNamespacedCustomObjectStatus(
        {
          group: RELAY_SESSION_GROUP,
          version: RELAY_SESSION_VERSION,
          namespace: session.metadata.namespace ?? "default",
          plural: RELAY_SESSION_PLURAL,
          name: session.metadata.name ?? "",
          body: { metadata: { resourceVersion: session.metadata.resourceVersion }, status: desired },
          fieldManager: OPERATOR_FIELD_MANAGER,
        },
        mergePatch,
      );
    } catch (error) {
      if (apiCode(error) === 409 || apiCode(error) === 404)
        throw new Retry("status write on a stale session");
      throw error;
    }
    log.debug({ phase: status.phase, previousPhase: previous.phase }, "status written");
    this.emitPhaseChange(session, previous.phase, status);
    return "written";
  }

  /** Events for entering the live phases; terminal phases and restarts have their own. */
  private emitPhaseChange(
    session: RelaySession,
    previousPhase: string | undefined,
    status: OperatorStatus,
  ): void {
    if (previousPhase === status.phase) return;
    const ready = status.conditions[0];
    if (status.phase === "Running")
      this.emit(session, "Normal", ready?.reason ?? "Running", ready?.message ?? "");
    if (status.phase === "Degraded")
      this.emit(session, "Warning", ready?.reason ?? "Degraded", ready?.message ?? "");
  }

  private emit(session: RelaySession, type: EventType, reason: string, message: string): void {
    this.events?.record(session, type, reason, message);
  }

  /** ServiceAccount, Role, RoleBinding `NAME-relay`; AlreadyExists is fine. */
  private async ensureRbac(session: RelaySession): Promise<void> {
    const uid = session.metadata.uid ?? "";
    const ensuredAt = this.rbacEnsuredAt.get(uid);
    if (ensuredAt !== undefined && Date.now() - ensuredAt < this.rbacRecheckMs) return;
    const namespace = session.metadata.namespace ?? "default";
    const { serviceAccount, role, roleBinding } = desiredRelayRbac(session);
    const fieldManager = OPERATOR_FIELD_MANAGER;
    const ignoreExists = async (create: () => Promise<unknown>) => {
      try {
        await create();
      } catch (error) {
        if (apiCode(error) !== 409) throw error;
      }
    };
    await ignoreExists(() =>
      this.core.createNamespacedServiceAccount({ namespace, body: serviceAccount, fieldManager }),
    );
    await ignoreExists(() => this.rbac.createNamespacedRole({ namespace, body: role, fieldManager }));
    await ignoreExists(() =>
      this.rbac.createNamespacedRoleBinding({ namespace, body: roleBinding, fieldManager }),
    );
    this.rbacEnsuredAt.set(uid, Date.now());
    // Bounded: forget sessions that were never seen again.
    if (this.rbacEnsuredAt.size > 10_000) this.rbacEnsuredAt.delete(this.rbacEnsuredAt.keys().next().value!);
  }

  private async deletePod(pod: V1Pod): Promise<void> {
    await deletePodIfSame(this.core, pod);
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

  /** Pods of earlier attempts that still run (e.g. an operator restart mid-restart): stop them. */
  private async deleteSupersededPods(owned: V1Pod[], attempt: number, log: Logger): Promise<void> {
    for (const pod of owned) {
      if (attemptOf(pod) >= attempt || isPodFinished(pod) || pod.metadata?.deletionTimestamp) continue;
      log.info({ pod: pod.metadata?.name }, "deleting relay pod of an earlier attempt");
      await this.deletePod(pod);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Reads

  private ownedPods(session: RelaySession): V1Pod[] {
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
}

async function deletePodIfSame(core: CoreV1Api, pod: V1Pod): Promise<void> {
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

async function readSessionUid(
  customObjects: CustomObjectsApi,
  namespace: string,
  name: string,
): Promise<string | undefined> {
  try {
    const session = (await customObjects.getNamespacedCustomObject({
      group: RELAY_SESSION_GROUP,
      version: RELAY_SESSION_VERSION,
      namespace,
      plural: RELAY_SESSION_PLURAL,
      name,
    })) as RelaySession;
    return session.metadata.uid;
  } catch (error) {
    if (apiCode(error) === 404) return undefined;
    throw error;
  }
}

export interface SweepOrphanPodsOptions {
  kubeConfig: KubeConfig;
  /** Candidate pods, e.g. the pod informer's list; only the operator's relay pods are considered. */
  pods: readonly V1Pod[];
  /** Known sessions (a cache or a list); a pod whose owner is not among them is checked live. */
  sessions: SessionCache | readonly RelaySession[];
  logger?: Logger;
}

/**
 * Deletes relay pods whose owning RelaySession (by uid) no longer exists — the garbage collector
 * normally does this; the sweep covers operator downtime and clusters without one. Run it at
 * startup and on resync. A session counts as gone only after a live read, so an unsynced cache
 * deletes nothing. Returns the deleted pods as "namespace/name".
 */
export async function sweepOrphanPods(options: SweepOrphanPodsOptions): Promise<string[]> {
  const core = options.kubeConfig.makeApiClient(CoreV1Api);
  const customObjects = options.kubeConfig.makeApiClient(CustomObjectsApi);
  const logger = options.logger ?? silentLogger;
  const known = options.sessions;
  const knownUid = (namespace: string, name: string): string | undefined =>
    Array.isArray(known)
      ? (known as readonly RelaySession[]).find(
          (session) => session.metadata.namespace === namespace && session.metadata.name === name,
        )?.metadata.uid
      : (known as SessionCache).get(namespace, name)?.metadata.uid;

  const byOwner = new Map<string, { namespace: string; sessionName: string; uid: string; pods: V1Pod[] }>();
  for (const pod of options.pods) {
    if (pod.metadata?.labels?.[LABEL_MANAGED_BY] !== OPERATOR_NAME) continue;
    const uid = podOwnerUid(pod);
    const sessionName = pod.metadata?.ownerReferences?.find((ref) => ref.controller)?.name;
    const namespace = pod.metadata?.namespace;
    if (!uid || !sessionName || !namespace || pod.metadata?.deletionTimestamp) continue;
    const key = `${namespace}/${uid}`;
    const group = byOwner.get(key) ?? { namespace, sessionName, uid, pods: [] };
    group.pods.push(pod);
    byOwner.set(key, group);
  }
  const deleted: string[] = [];
  for (const group of byOwner.values()) {
    if (knownUid(group.namespace, group.sessionName) === group.uid) continue;
    if ((await readSessionUid(customObjects, group.namespace, group.sessionName)) === group.uid) continue;
    for (const pod of group.pods) {
      await deletePodIfSame(core, pod);
      deleted.push(`${group.namespace}/${pod.metadata?.name}`);
    }
  }
  if (deleted.length > 0) logger.info({ pods: deleted }, "deleted orphaned relay pods");
  return deleted;
}
