/**
 * The RelayPool reconciler, keyed "namespace/name": level-based, one pool at a time (the workqueue
 * never runs one key twice at once, which is what makes first-come-first-served allocation a plain
 * loop). Each round, from the caches:
 *
 *   1. clean up: idle pods that ended (crashed while idle) and claimed pods whose session is over
 *      are deleted (the pool then refills); claim Leases left by gone pods are deleted, a pod
 *      without its Lease gets one, and a claim whose labels have not reached its pod yet is finished;
 *   2. allocate: idle Ready pods go to waiting sessions, oldest first (allocator.ts), by an update
 *      of the pod's claim Lease; the claims' answers are not waited for (they are handled when they
 *      come: the claim's labels and owner are then patched onto the pod; a lost race requeues);
 *   3. scale: create missing pods (lowest free index) with their Leases, or drain surplus idle ones
 *      (Lease held by `drain`, then delete), warming before ready and highest index first; an
 *      allocated pod is never removed for scaling; a deleted pool's idle pods are drained the same way;
 *   (1b. spec.recycle: a claimed pod whose relay marked it recycled is given back to the pool;)
 *   4. status: counts, selector, conditions; Events on allocation, exhaustion, refill.
 *
 * Pod shapes and the claim's labels are the session controller's (relaysession/desired-pool-pod.ts),
 * handed in by operator.ts, so both controllers agree on what a relay pod is. The claim Leases'
 * bookkeeping is claim-leases.ts.
 */
import { randomUUID } from "node:crypto";
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Lease,
  type V1Pod,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import {
  ANNOTATION_ALLOCATED_SESSION,
  LABEL_POOL,
  LABEL_POOL_STATE,
  RELAY_POOL_PLURAL,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_VERSION,
  desiredPoolReplicas,
  type RelayPool,
  type RelayPoolStatus,
  type LeaseClaim,
  type RelaySession,
} from "../../../crds/src/index.js";
import { silentLogger } from "../../../relay-pod/src/index.js";
import { canonicalJson } from "../kube/canonical-json.js";
import { Allocator, type ClaimOutcomes, type ClaimStamp, type SessionArrival } from "./allocator.js";
import { apiCode } from "./api.js";
import { leanLeaseWrites } from "../kube/lean-writes.js";
import { ClaimLeases } from "./claim-leases.js";
import type { PoolMetrics } from "./metrics.js";
import { PodLeases, isPodReady, liveCount, sortPoolPods, type PoolPods } from "./pool-pods.js";
import { PoolStatusWrites, poolConditions, sharedComfyStreamProblem } from "./pool-status.js";
import type { WritePriority } from "../kube/write-priority.js";

const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

/** A claim or status write that failed for another reason than a conflict (apiserver away) is retried after this. */
const CLAIM_RETRY_MS = 1000;

/** How the pool's pods look and are claimed: relaysession/desired-pool-pod.ts, wired by operator.ts. */
export interface PoolPodShapes {
  pod(pool: RelayPool, index: number): V1Pod;
  indexOf(poolName: string, podName: string | undefined): number;
  /** ServiceAccount, Role, RoleBinding of the pool's pods (create if missing). */
  ensureRbac(pool: RelayPool): Promise<void>;
  /** The claim Lease of a new pod (no holder). */
  idleLease(pool: RelayPool, pod: V1Pod): V1Lease;
  /** The pod's Lease held by `session` (written with the cached resourceVersion). */
  claim(lease: V1Lease, session: RelaySession, stamp: ClaimStamp): V1Lease;
  /** What follows a claim on the pod: labels, annotations, the session as owner (merge patch). */
  claimPodPatch(session: RelaySession, stamp: ClaimStamp): Pick<V1Pod, "metadata">;
  stampOfLease(lease: V1Lease): ClaimStamp;
  drainLease(lease: V1Lease): V1Lease;
  /** The Lease of a recycled pod: no holder. */
  freeLease(lease: V1Lease): V1Lease;
  leaseClaim(lease: V1Lease): LeaseClaim;
  leasePodUid(lease: V1Lease): string | undefined;
  /** Whether the relay of a claimed pod ended its session cleanly and is idle again (spec.recycle). */
  isRecycled(pod: V1Pod): boolean;
  /** The claimed pod given back to the pool (claim removed, the pool its owner again). */
  unclaim(pod: V1Pod, pool: RelayPool): V1Pod;
  sessionUid(pod: V1Pod): string | undefined;
  attempt(pod: V1Pod): number;
}

export interface PoolEventSink {
  record(
    object: {
      apiVersion?: string;
      kind?: string;
      metadata: { name?: string; namespace?: string; uid?: string };
    },
    type: "Normal" | "Warning",
    reason: string,
    message: string,
  ): void;
}

export interface RelayPoolReconcilerDeps {
  kubeConfig: KubeConfig;
  pools: { get(namespace: string, name: string): RelayPool | undefined };
  /** Every relay pod (pool pods and session pods) in a namespace, from the pod informer. */
  pods: { list(namespace: string): V1Pod[] };
  /** The claim Leases of pool pods in a namespace, from the Lease informer. */
  leases: { list(namespace: string): V1Lease[] };
  sessions: {
    list(namespace: string): RelaySession[];
    get(namespace: string, name: string): RelaySession | undefined;
  };
  shapes: PoolPodShapes;
  arrival(uid: string): SessionArrival | undefined;
  events?: PoolEventSink;
  metrics?: PoolMetrics;
  /** Look at pool `key` again (after `afterMs`): a claim was lost or failed after the round ended. */
  requeue?: (key: string, afterMs?: number) => void;
  now?: () => Date;
  logger?: Logger;
  /**
   * Claims are urgent writes; the pool's status (and, wired by operator.ts, sessions' statuses and
   * Events) wait behind them: operator/src/kube/write-priority.ts.
   */
  priority?: WritePriority;
}

export interface PoolReconcileResult {
  requeueAfterMs?: number;
}

export class RelayPoolReconciler {
  private readonly deps: RelayPoolReconcilerDeps;
  private readonly core: CoreV1Api;
  private readonly coordination: CoordinationV1Api;
  private readonly customObjects: CustomObjectsApi;
  private readonly leases: ClaimLeases;
  /** Pools ("uid/generation") already warned about a shared ComfyStream. */
  private readonly warnedShared = new Set<string>();
  private readonly allocator: Allocator;
  private readonly now: () => Date;
  private readonly logger: Logger;
  private readonly statusWrites: PoolStatusWrites;
  /** uid → "namespace/name" of the pools seen (a failed status write requeues by key). */
  private readonly poolsByUid = new Map<string, string>();
  /** Pods whose first Ready was measured (warm-up histogram), by uid. */
  private readonly warmedUp = new Set<string>();

  constructor(deps: RelayPoolReconcilerDeps) {
    this.deps = deps;
    this.core = deps.kubeConfig.makeApiClient(CoreV1Api);
    this.coordination = deps.kubeConfig.makeApiClient(CoordinationV1Api);
    this.customObjects = deps.kubeConfig.makeApiClient(CustomObjectsApi);
    this.now = deps.now ?? (() => new Date());
    this.logger = deps.logger ?? silentLogger;
    this.leases = new ClaimLeases({
      core: this.core,
      coordination: this.coordination,
      shapes: deps.shapes,
      pods: deps.pods,
      leases: deps.leases,
      sessions: deps.sessions,
      ...(deps.priority ? { background: deps.priority } : {}),
      ...(deps.requeue ? { requeue: deps.requeue } : {}),
      now: this.now,
    });
    this.allocator = new Allocator({
      // The claim, the write an allocation waits for, skips client-node's per-call cost.
      coordination: leanLeaseWrites(deps.kubeConfig),
      claim: (lease, session, stamp) => deps.shapes.claim(lease, session, stamp),
      leaseOf: (pod) => this.leases.of(pod).lease(pod),
      sessionUid: (pod) => this.leases.of(pod).sessionUid(pod),
      attempt: (pod) => this.leases.of(pod).attempt(pod),
      arrival: (uid) => deps.arrival(uid),
      now: this.now,
      ...(deps.priority ? { priority: deps.priority } : {}),
    });
    // A failed status write comes back through the queue (with the pool's cached status as baseline).
    this.statusWrites = new PoolStatusWrites((uid, err) => {
      const pool = this.poolsByUid.get(uid);
      this.logger.warn({ pool, err }, "pool status write failed; retrying");
      if (pool) this.deps.requeue?.(pool, CLAIM_RETRY_MS);
    }, deps.priority);
  }

  async reconcile(key: string): Promise<PoolReconcileResult | void> {
    const slash = key.indexOf("/");
    const namespace = key.slice(0, slash);
    const name = key.slice(slash + 1);
    const pool = this.deps.pools.get(namespace, name);
    if (!pool || pool.metadata.deletionTimestamp) {
      // Idle pods go with the pool (owner references: the garbage collector may be first); they are
      // drained here as on a scale-down. Claimed pods belong to their sessions now and stay.
      const leases = this.leases.refresh(namespace);
      const left = sortPoolPods(this.deps.pods.list(namespace), name, this.deps.shapes, leases);
      for (const pod of [...left.warming, ...left.idleReady]) await this.drain(pod, leases.lease(pod));
      this.deps.metrics?.forget(namespace, name);
      for (const [uid, poolKey] of this.poolsByUid) {
        if (poolKey !== key) continue;
        this.statusWrites.forget(uid);
        this.poolsByUid.delete(uid);
      }
      return;
    }
    this.poolsByUid.set(pool.metadata.uid ?? key, key);
    const log = this.logger.child({ pool: key, reconcileID: randomUUID() });
    await this.deps.shapes.ensureRbac(pool);

    const allPods = this.deps.pods.list(namespace);
    const leases = this.leases.refresh(namespace);
    const sorted = sortPoolPods(allPods, name, this.deps.shapes, leases);
    this.observeWarmups(pool, sorted);
    await this.cleanUp(pool, sorted, leases, log);
    await this.leases.tend(pool, allPods, sorted, leases, log);

    // Allocation before scaling: a pod handed out now is not an idle pod to scale away.
    const sessions = this.deps.sessions.list(namespace);
    const waiting = this.allocator.waitingSessions(pool, sessions, allPods);
    const available = this.allocator.available(sorted.idleReady);
    const sent = this.allocator.dispatch(waiting, available, this.claimOutcomes(pool, key, log));
    // Pods with a claim sent (now or in an earlier round, answer or cache pending) are no longer idle.
    const idleReady = available.slice(sent);
    const allocated = sorted.allocated.length + sorted.idleReady.length - idleReady.length;
    const stillWaiting = waiting.length - sent;

    const desired = desiredPoolReplicas(pool.spec, allocated);
    this.warnSharedComfyStream(pool, desired, log);
    const live = liveCount(sorted);
    let created = 0;
    let removed: V1Pod[] = [];
    if (live < desired) created = await this.scaleUp(pool, allPods, desired - live, stillWaiting, log);
    else if (live > desired)
      removed = await this.scaleDown(pool, [...sorted.warming, ...idleReady], live - desired, leases, log);
    const kept = (pods: V1Pod[]) => pods.filter((pod) => !removed.includes(pod));
    await this.markReady(kept(idleReady));

    const counts = {
      ready: kept(idleReady).length,
      allocated,
      warming: kept(sorted.warming).length + created,
      desired,
      waiting: stillWaiting,
    };
    this.deps.metrics?.set(namespace, name, counts);
    this.writeStatus(pool, counts, live + created - removed.length, key, log);
    // Waiting sessions are served by pod events (Ready, deleted) and claim answers; the requeue only
    // covers a lost event.
    return stillWaiting > 0 ? { requeueAfterMs: 5000 } : undefined;
  }

  /** What happens when a claim sent by this reconcile is answered (after the reconcile returned). */
  private claimOutcomes(pool: RelayPool, key: string, log: Logger): ClaimOutcomes {
    const namespace = pool.metadata.namespace ?? "default";
    const name = pool.metadata.name ?? "";
    return {
      allocated: ({ session, pod, lease, stamp, waitedSeconds, writeMs }) => {
        this.leases.completeClaim(pod, lease, session, stamp, key, log);
        log.info(
          {
            session: session.metadata.name,
            pod: pod.metadata?.name,
            waitedSeconds,
            writeMs: Math.round(writeMs),
          },
          "allocated warm pod",
        );
        this.deps.metrics?.allocationSeconds.observe({ namespace, pool: name }, waitedSeconds);
        this.deps.events?.record(
          session,
          "Normal",
          "Allocated",
          `warm pod ${pod.metadata?.name} of RelayPool ${name} after ${waitedSeconds.toFixed(3)} s`,
        );
      },
      lost: (session, pod) => {
        this.deps.metrics?.claimConflicts.inc({ namespace, pool: name });
        log.debug({ pod: pod.metadata?.name, session: session.metadata.name }, "claim lost");
        this.deps.requeue?.(key);
      },
      failed: (session, pod, err) => {
        log.warn({ pod: pod.metadata?.name, session: session.metadata.name, err }, "claim failed; retrying");
        this.deps.requeue?.(key, CLAIM_RETRY_MS);
      },
    };
  }

  /** Idle pods that ended are replaced; claimed pods whose session is over leave (refill follows). */
  private async cleanUp(pool: RelayPool, sorted: PoolPods, leases: PodLeases, log: Logger): Promise<void> {
    for (const pod of sorted.idleFinished) {
      log.info({ pod: pod.metadata?.name, phase: pod.status?.phase }, "idle warm pod ended; replacing it");
      this.deps.events?.record(
        pool,
        "Warning",
        "WarmPodEnded",
        `idle pod ${pod.metadata?.name} ended (${pod.status?.phase}); replacing it`,
      );
      await this.deletePod(pod);
    }
    // Held by `drain`, the pod can no longer be claimed: deleted by uid whatever its version.
    for (const pod of sorted.draining) await this.deletePod(pod, leases.claim(pod)?.kind !== "drain");
    const namespace = pool.metadata.namespace ?? "default";
    for (const pod of [...sorted.allocated, ...sorted.allocatedFinished]) {
      // Claimed by its Lease, the labels not on the pod yet: ClaimLeases.tend finishes that first.
      if (leases.labelsPending(pod)) continue;
      const sessionName = pod.metadata?.ownerReferences?.find((ref) => ref.kind === "RelaySession")?.name;
      const session = sessionName ? this.deps.sessions.get(namespace, sessionName) : undefined;
      const over =
        !session ||
        session.metadata.uid !== this.deps.shapes.sessionUid(pod) ||
        session.status?.phase === "Succeeded" ||
        session.status?.phase === "Failed" ||
        // A finished pod of an earlier attempt: the session restarted on another pod.
        (sorted.allocatedFinished.includes(pod) &&
          this.deps.shapes.attempt(pod) < (session.status?.restarts ?? 0));
      if (!over) continue;
      if (pool.spec.recycle && sorted.allocated.includes(pod) && this.deps.shapes.isRecycled(pod)) {
        await this.unclaim(pool, pod, leases.lease(pod), log);
        continue;
      }
      log.info({ pod: pod.metadata?.name, session: sessionName }, "session over; deleting its warm pod");
      await this.deletePod(pod);
      // Its Lease goes too (the garbage collector would, later; a test cluster may have none).
      const lease = leases.lease(pod);
      if (lease) await this.leases.delete(lease);
    }
  }

  /**
   * spec.recycle: the relay ended its session cleanly and checked ComfyStream; the pod goes back to
   * the pool: first its Lease is freed, then its labels (each written with the cached
   * resourceVersion; what changed since is looked at again). The pod still carries the session's
   * labels in between, so it is not offered before both are written.
   */
  private async unclaim(pool: RelayPool, pod: V1Pod, lease: V1Lease | undefined, log: Logger): Promise<void> {
    const held = lease ? this.deps.shapes.leaseClaim(lease) : undefined;
    if (lease && held?.kind === "session" && held.sessionUid === this.deps.shapes.sessionUid(pod)) {
      if (!(await this.leases.replace(lease, this.deps.shapes.freeLease(lease)))) return;
    }
    try {
      await this.core.replaceNamespacedPod({
        namespace: pod.metadata?.namespace ?? "default",
        name: pod.metadata?.name ?? "",
        body: this.deps.shapes.unclaim(pod, pool),
      });
    } catch (error) {
      const code = apiCode(error);
      if (code === 409 || code === 404) return; // changed or gone: the next round sees it
      throw error;
    }
    const session = pod.metadata?.annotations?.[ANNOTATION_ALLOCATED_SESSION];
    log.info({ pod: pod.metadata?.name, session }, "session ended cleanly; warm pod recycled");
    this.deps.events?.record(
      pool,
      "Normal",
      "Recycled",
      `pod ${pod.metadata?.name} is idle again after session ${session} ended`,
    );
  }

  private async scaleUp(
    pool: RelayPool,
    allPods: readonly V1Pod[],
    missing: number,
    waiting: number,
    log: Logger,
  ): Promise<number> {
    const name = pool.metadata.name ?? "";
    // Names of every pod of the pool (terminating and finished too): their names are still taken.
    const taken = new Set(
      allPods
        .filter((pod) => pod.metadata?.labels?.[LABEL_POOL] === name)
        .map((pod) => this.deps.shapes.indexOf(name, pod.metadata?.name)),
    );
    let created = 0;
    for (let index = 0; created < missing; index++) {
      if (taken.has(index)) continue;
      const body = this.deps.shapes.pod(pool, index);
      let pod: V1Pod;
      try {
        pod = await this.core.createNamespacedPod({ namespace: pool.metadata.namespace ?? "default", body });
        created++;
      } catch (error) {
        // 409: the cache is behind our own create; the name is taken, try the next.
        if (apiCode(error) !== 409) throw error;
        continue;
      }
      // Its claim Lease at once (needs the pod's uid); one that fails is made by a later round.
      await this.leases
        .create(pool, pod)
        .catch((err: unknown) =>
          log.warn({ pod: pod.metadata?.name, err }, "creating the claim Lease failed; retrying later"),
        );
    }
    if (created === 0) return 0;
    log.info({ created, waiting }, "created warm pods");
    this.deps.events?.record(
      pool,
      "Normal",
      waiting > 0 ? "Refill" : "Scaled",
      `created ${created} warm pod${created === 1 ? "" : "s"}${waiting > 0 ? ` (${waiting} sessions waiting)` : ""}`,
    );
    return created;
  }

  /** Removes `surplus` pods from `candidates` (idle only), warming first, highest index first. */
  private async scaleDown(
    pool: RelayPool,
    candidates: V1Pod[],
    surplus: number,
    leases: PodLeases,
    log: Logger,
  ): Promise<V1Pod[]> {
    const name = pool.metadata.name ?? "";
    const warming = candidates.filter((pod) => !isPodReady(pod));
    const ready = candidates.filter((pod) => isPodReady(pod));
    const byIndexDesc = (a: V1Pod, b: V1Pod) =>
      this.deps.shapes.indexOf(name, b.metadata?.name) - this.deps.shapes.indexOf(name, a.metadata?.name);
    const victims = [...warming.sort(byIndexDesc), ...ready.sort(byIndexDesc)].slice(0, surplus);
    for (const pod of victims) await this.drain(pod, leases.lease(pod));
    if (victims.length > 0) {
      log.info({ deleted: victims.map((pod) => pod.metadata?.name) }, "scaled down idle warm pods");
      this.deps.events?.record(pool, "Normal", "ScaledDown", `deleted ${victims.length} idle warm pod(s)`);
    }
    return victims;
  }

  /**
   * An idle pod leaves through the `draining` state: its Lease is taken by `drain` with the cached
   * resourceVersion (a pod claimed since is spared: 409), which takes the pod out of allocation for
   * any replica; the label says so on the pod; then the pod is deleted (uid as precondition). A pod
   * without a Lease cannot be claimed; its label is set with the pod's cached version instead. A pod
   * left draining by an interrupted round is deleted by the next one (cleanUp).
   */
  private async drain(pod: V1Pod, lease: V1Lease | undefined): Promise<void> {
    if (lease && !(await this.leases.replace(lease, this.deps.shapes.drainLease(lease)))) return;
    let drained: V1Pod;
    try {
      drained = await this.core.patchNamespacedPod(
        {
          namespace: pod.metadata?.namespace ?? "default",
          name: pod.metadata?.name ?? "",
          body: {
            metadata: {
              ...(lease ? {} : { resourceVersion: pod.metadata?.resourceVersion }),
              labels: { [LABEL_POOL_STATE]: "draining" },
            },
          },
        },
        mergePatch,
      );
    } catch (error) {
      if (apiCode(error) !== 409 && apiCode(error) !== 404) throw error;
      return;
    }
    await this.deletePod(drained, !lease);
  }

  /** The state label follows readiness (the relay in the pod only answers its readiness probe). */
  private async markReady(idleReady: readonly V1Pod[]): Promise<void> {
    for (const pod of idleReady) {
      if (pod.metadata?.labels?.[LABEL_POOL_STATE] === "ready") continue;
      try {
        await this.core.patchNamespacedPod(
          {
            namespace: pod.metadata?.namespace ?? "default",
            name: pod.metadata?.name ?? "",
            // Guarded: a claim between our read and this patch wins; the label then says allocated.
            body: {
              metadata: {
                resourceVersion: pod.metadata?.resourceVersion,
                labels: { [LABEL_POOL_STATE]: "ready" },
              },
            },
          },
          mergePatch,
        );
      } catch (error) {
        if (apiCode(error) !== 409 && apiCode(error) !== 404) throw error;
      }
    }
  }

  /**
   * Deletes by uid (a pod that took the name meanwhile is spared); `unclaimed`: also by
   * resourceVersion, so that a pod claimed since it was read is not scaled away.
   */
  private async deletePod(pod: V1Pod, unclaimed = false): Promise<void> {
    try {
      await this.core.deleteNamespacedPod({
        namespace: pod.metadata?.namespace ?? "default",
        name: pod.metadata?.name ?? "",
        body: {
          preconditions: {
            uid: pod.metadata?.uid,
            ...(unclaimed ? { resourceVersion: pod.metadata?.resourceVersion } : {}),
          },
        },
      });
    } catch (error) {
      if (apiCode(error) !== 404 && apiCode(error) !== 409) throw error;
    }
  }

  /** A Warning Event (and log line) once per pool generation whose pods would share one ComfyStream. */
  private warnSharedComfyStream(pool: RelayPool, desired: number, log: Logger): void {
    const problem = sharedComfyStreamProblem(pool, desired);
    const key = `${pool.metadata.uid ?? ""}/${pool.metadata.generation ?? 0}`;
    if (!problem || this.warnedShared.has(key)) return;
    this.warnedShared.add(key);
    if (this.warnedShared.size > 10_000) this.warnedShared.delete(this.warnedShared.values().next().value!);
    log.warn({ problem }, "pool pods would share one ComfyStream");
    this.deps.events?.record(pool, "Warning", "SharedComfyStream", problem);
  }

  private observeWarmups(pool: RelayPool, sorted: PoolPods): void {
    for (const pod of sorted.idleReady) {
      const uid = pod.metadata?.uid ?? "";
      if (this.warmedUp.has(uid)) continue;
      this.warmedUp.add(uid);
      if (this.warmedUp.size > 100_000) this.warmedUp.delete(this.warmedUp.values().next().value!);
      const created = Date.parse(String(pod.metadata?.creationTimestamp ?? ""));
      const ready = pod.status?.conditions?.find((c) => c.type === "Ready")?.lastTransitionTime;
      const readyAt = ready ? Date.parse(String(ready)) : NaN;
      if (Number.isFinite(created) && Number.isFinite(readyAt) && readyAt >= created) {
        this.deps.metrics?.warmupSeconds.observe(
          { namespace: pool.metadata.namespace ?? "default", pool: pool.metadata.name ?? "" },
          (readyAt - created) / 1000,
        );
      }
    }
  }

  private writeStatus(
    pool: RelayPool,
    counts: { ready: number; allocated: number; warming: number; desired: number; waiting: number },
    replicas: number,
    key: string,
    log: Logger,
  ): void {
    const namespace = pool.metadata.namespace ?? "default";
    const name = pool.metadata.name ?? "";
    const uid = pool.metadata.uid ?? key;
    const previous = this.statusWrites.latest(uid) ?? pool.status ?? {};
    const status: RelayPoolStatus = {
      replicas,
      desiredReplicas: counts.desired,
      readyReplicas: counts.ready,
      allocatedReplicas: counts.allocated,
      warmingReplicas: counts.warming,
      waitingSessions: counts.waiting,
      selector: `${LABEL_POOL}=${name}`,
      conditions: poolConditions(previous.conditions, counts, this.now(), pool.metadata.generation),
    };
    if (pool.metadata.generation !== undefined) status.observedGeneration = pool.metadata.generation;
    if (canonicalJson(previous) === canonicalJson(status)) return;
    const wasExhausted = (previous.waitingSessions ?? 0) > 0;
    if (!wasExhausted && counts.waiting > 0) {
      this.deps.metrics?.exhausted.inc({ namespace, pool: name });
      this.deps.events?.record(
        pool,
        "Warning",
        "PoolExhausted",
        `${counts.waiting} session(s) waiting for an idle warm pod`,
      );
    }
    this.statusWrites.submit(uid, status, async () => {
      try {
        await this.customObjects.patchNamespacedCustomObjectStatus(
          {
            group: RELAY_SESSION_GROUP,
            version: RELAY_SESSION_VERSION,
            namespace,
            plural: RELAY_POOL_PLURAL,
            name,
            body: { status },
          },
          mergePatch,
        );
      } catch (error) {
        if (apiCode(error) !== 404) throw error;
      }
      log.debug({ status }, "pool status written");
    });
  }
}
