/**
 * Handing idle warm pods to waiting sessions (Agones' GameServerAllocation, for relay pods).
 *
 * Safety: a claim is an update of the pod's claim Lease (crds/src/relay-pool.ts) carrying the
 * resourceVersion it was read at, so of two claims of one pod (two operator replicas in a split
 * brain, or a stale cache) only one succeeds; the loser moves on to the next idle pod. A session is
 * not given a second pod while the cache has not seen its first claim yet: claims this process made
 * are remembered until the cache shows them. After a restart the cache is a fresh list, in which
 * every claim is visible on its Lease. The claim's labels and owner reach the pod afterwards
 * (reconciler.ts), off the path a session waits on.
 *
 * Speed: claims are sent without holding up the pool's next round, so a session created during a
 * burst is claimed for as soon as the operator sees it, not after the round trips of the sessions
 * before it (bench-results/pool.md). Pods and sessions with a claim in flight are left out of the
 * next rounds until the answer is in. Claims are the operator's urgent writes: sessions' statuses and
 * Events wait while claims are in flight (operator/src/kube/write-priority.ts).
 *
 * Order: first come, first served. Sessions are ordered by creation time; the apiserver stamps it
 * in whole seconds, so within one second by the order the operator's watch saw them created (the
 * order of creation), then by name (sessions that existed before the operator started).
 */
import type { CoordinationV1Api, V1Lease, V1Pod } from "@kubernetes/client-node";
import type { RelayPool, RelaySession } from "../../../crds/src/index.js";
import { apiCode } from "./api.js";

export interface SessionArrival {
  /** Order in which the operator's watch saw the session created. */
  seq: number;
  /** When the operator first saw it (ms since the epoch). */
  firstSeenMs: number;
}

export interface ClaimStamp {
  at: Date;
  waitedSeconds: number;
  attempt: number;
}

export interface AllocatorDeps {
  coordination: Pick<CoordinationV1Api, "replaceNamespacedLease">;
  /** An idle pod's claim Lease held by `session`: relaysession/desired-pool-pod.ts. */
  claim(lease: V1Lease, session: RelaySession, stamp: ClaimStamp): V1Lease;
  /** The pod's claim Lease as cached. */
  leaseOf(pod: V1Pod): V1Lease | undefined;
  /** The session uid a pod is claimed for, if any (its Lease, or its labels). */
  sessionUid(pod: V1Pod): string | undefined;
  /** The session attempt a pod serves (its attempt label), -1 if none. */
  attempt(pod: V1Pod): number;
  arrival(uid: string): SessionArrival | undefined;
  now(): Date;
  /** Claims count as urgent writes from dispatch to answer: background writes wait for them. */
  priority?: { beginUrgent(): () => void };
}

export interface Allocation {
  session: RelaySession;
  pod: V1Pod;
  /** The claim Lease as written. */
  lease: V1Lease;
  stamp: ClaimStamp;
  waitedSeconds: number;
  /** How long the claim's write took, sent → answered (ms). */
  writeMs: number;
}

/**
 * Claims in flight at once (all pools): enough to hide the round trip, few enough not to swamp the
 * apiserver. A claim is a small Lease write (~20 ms of apiserver time under a burst), so a burst of
 * 100 sessions goes out without queueing here: bench:pool p95 178-181 ms with 100 against 232-247
 * with 48 and 274-331 with 16 (bench-results/pool.md, sixth session). 48 suited whole-pod updates.
 */
const CLAIM_PARALLELISM = 128;

/** How long a claim is trusted over a cache that does not show it yet. */
const CLAIM_MEMORY_MS = 60_000;

const TERMINAL = new Set(["Succeeded", "Failed"]);

export interface ClaimOutcomes {
  /** The claim was written: the pod is the session's. */
  allocated(allocation: Allocation): void;
  /** The claim Lease changed or vanished under the claim (409/404): the session waits for the next round. */
  lost(session: RelaySession, pod: V1Pod): void;
  /** The claim failed otherwise (apiserver unreachable, timeout): the session waits for a retry. */
  failed(session: RelaySession, pod: V1Pod, error: unknown): void;
}

export class Allocator {
  private readonly deps: AllocatorDeps;
  /** session uid → pod name and when: claims made here that the cache may not show yet. */
  private readonly recentClaims = new Map<string, { pod: string; atMs: number }>();
  /**
   * "namespace/pod" → the resourceVersion of its Lease it was claimed at, while the cache still shows
   * that version (an idle pod that is in fact claimed: offering it again would only earn a 409).
   */
  private readonly claimedPods = new Map<string, { resourceVersion: string; atMs: number }>();
  /** Claims sent and not answered yet: "namespace/pod" → session uid. */
  private readonly inFlight = new Map<string, string>();
  private readonly inFlightSessions = new Set<string>();
  private readonly slots: Semaphore;

  constructor(deps: AllocatorDeps) {
    this.deps = deps;
    this.slots = new Semaphore(CLAIM_PARALLELISM);
  }

  /**
   * Sessions of `pool` that need a warm pod, first come first served: live (not finished or being
   * deleted), no pod of their own (claimed warm pod or cold pod), no claim in flight or unseen.
   */
  waitingSessions(
    pool: RelayPool,
    sessions: readonly RelaySession[],
    pods: readonly V1Pod[],
  ): RelaySession[] {
    const poolName = pool.metadata.name;
    // uid → pods of that session. A finished pod of the current attempt still blocks: the session
    // controller first reads how it ended (Succeeded, or a restart that raises status.restarts).
    const podsOf = new Map<string, V1Pod[]>();
    for (const pod of pods) {
      const uid = this.deps.sessionUid(pod);
      if (!uid || pod.metadata?.deletionTimestamp) continue;
      podsOf.set(uid, [...(podsOf.get(uid) ?? []), pod]);
    }
    const hasPod = (session: RelaySession) =>
      (podsOf.get(session.metadata.uid ?? "") ?? []).some(
        (pod) => !isFinishedPod(pod) || this.deps.attempt(pod) >= (session.status?.restarts ?? 0),
      );
    this.forgetSeenClaims(pool.metadata.namespace ?? "default", pods);
    const waiting = sessions.filter((session) => {
      const uid = session.metadata.uid ?? "";
      return (
        session.spec.poolRef?.name === poolName &&
        !session.metadata.deletionTimestamp &&
        !TERMINAL.has(session.status?.phase ?? "") &&
        !hasPod(session) &&
        !this.recentClaims.has(uid) &&
        !this.inFlightSessions.has(uid)
      );
    });
    return waiting.sort((a, b) => this.compareArrival(a, b));
  }

  /** The idle Ready pods of `idleReady` that can be offered: a Lease, no claim in flight, none unseen. */
  available(idleReady: readonly V1Pod[]): V1Pod[] {
    return idleReady.filter((pod) => {
      const key = podKey(pod);
      const lease = this.deps.leaseOf(pod);
      if (!lease || this.inFlight.has(key)) return false;
      const claimed = this.claimedPods.get(key);
      return claimed === undefined || claimed.resourceVersion !== lease.metadata?.resourceVersion;
    });
  }

  /**
   * Sends the claims of `waiting` sessions (in order) on `idle` pods (in order), session i on pod i,
   * and returns how many it sent without waiting for the answers: the pool's next round (the next
   * session created, the next pod Ready) need not wait for this one's round trips, which under a burst
   * was most of an allocation's time. The answers arrive in `outcomes`. A claim carries the cached
   * resourceVersion of the pod's Lease, so it can never take a pod someone else claimed since.
   */
  dispatch(waiting: readonly RelaySession[], idle: readonly V1Pod[], outcomes: ClaimOutcomes): number {
    const pairs = waiting.slice(0, idle.length).map((session, i) => ({ session, pod: idle[i]! }));
    for (const { session, pod } of pairs) {
      const key = podKey(pod);
      const uid = session.metadata.uid ?? "";
      this.inFlight.set(key, uid);
      this.inFlightSessions.add(uid);
      const urgentDone = this.deps.priority?.beginUrgent();
      void this.slots
        .run(() => this.tryClaim(session, pod))
        .finally(() => urgentDone?.())
        .then(
          (allocation) => {
            this.settle(key, uid);
            if (allocation) outcomes.allocated(allocation);
            else outcomes.lost(session, pod);
          },
          (error: unknown) => {
            this.settle(key, uid);
            outcomes.failed(session, pod, error);
          },
        );
    }
    return pairs.length;
  }

  /** Resolves once no claim is in flight (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await new Promise((resolve) => setTimeout(resolve, 5));
  }

  private settle(key: string, uid: string): void {
    this.inFlight.delete(key);
    this.inFlightSessions.delete(uid);
  }

  private async tryClaim(session: RelaySession, pod: V1Pod): Promise<Allocation | undefined> {
    const lease = this.deps.leaseOf(pod);
    if (!lease) return undefined;
    const now = this.deps.now();
    const uid = session.metadata.uid ?? "";
    const arrival = this.deps.arrival(uid);
    const firstSeen =
      arrival?.firstSeenMs ?? Date.parse(session.metadata.creationTimestamp as unknown as string);
    const waitedSeconds = Number.isFinite(firstSeen) ? Math.max(0, (now.getTime() - firstSeen) / 1000) : 0;
    const stamp = { at: now, waitedSeconds, attempt: session.status?.restarts ?? 0 };
    const sentAt = performance.now();
    try {
      const written = await this.deps.coordination.replaceNamespacedLease({
        namespace: lease.metadata?.namespace ?? "default",
        name: lease.metadata?.name ?? "",
        body: this.deps.claim(lease, session, stamp),
      });
      this.recentClaims.set(uid, { pod: pod.metadata?.name ?? "", atMs: Date.now() });
      this.claimedPods.set(podKey(pod), {
        resourceVersion: lease.metadata?.resourceVersion ?? "",
        atMs: Date.now(),
      });
      return { session, pod, lease: written, stamp, waitedSeconds, writeMs: performance.now() - sentAt };
    } catch (error) {
      const code = apiCode(error);
      if (code === 409 || code === 404) return undefined;
      throw error;
    }
  }

  private forgetSeenClaims(namespace: string, pods: readonly V1Pod[]): void {
    const cutoff = Date.now() - CLAIM_MEMORY_MS;
    const claimedInCache = new Set(pods.map((pod) => this.deps.sessionUid(pod)).filter(Boolean));
    for (const [uid, claim] of this.recentClaims) {
      if (claimedInCache.has(uid) || claim.atMs < cutoff) this.recentClaims.delete(uid);
    }
    const cachedVersion = new Map(
      pods.map((pod) => [podKey(pod), this.deps.leaseOf(pod)?.metadata?.resourceVersion]),
    );
    for (const [key, claim] of this.claimedPods) {
      const version = cachedVersion.get(key);
      // Forgotten once the cache moved past the claimed Lease version or lost the pod (`pods` holds
      // the pods of one namespace).
      if (claim.atMs < cutoff || (key.startsWith(`${namespace}/`) && version !== claim.resourceVersion))
        this.claimedPods.delete(key);
    }
  }

  private compareArrival(a: RelaySession, b: RelaySession): number {
    const created = (s: RelaySession) => Date.parse(String(s.metadata.creationTimestamp ?? "")) || 0;
    const byCreation = created(a) - created(b);
    if (byCreation !== 0) return byCreation;
    const seqA = this.deps.arrival(a.metadata.uid ?? "")?.seq ?? Number.MAX_SAFE_INTEGER;
    const seqB = this.deps.arrival(b.metadata.uid ?? "")?.seq ?? Number.MAX_SAFE_INTEGER;
    if (seqA !== seqB) return seqA - seqB;
    return (a.metadata.name ?? "").localeCompare(b.metadata.name ?? "");
  }
}

function podKey(pod: V1Pod): string {
  return `${pod.metadata?.namespace ?? "default"}/${pod.metadata?.name ?? ""}`;
}

function isFinishedPod(pod: V1Pod): boolean {
  return pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed";
}

/** At most `limit` tasks running at once; the others wait their turn in order. */
class Semaphore {
  private running = 0;
  private readonly queue: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    // A finishing task hands its slot straight to the next waiter (no count change in between).
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.queue.push(resolve));
    else this.running++;
    try {
      return await task();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.running--;
    }
  }
}
