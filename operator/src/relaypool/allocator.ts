/**
 * Handing idle warm pods to waiting sessions (Agones' GameServerAllocation, for relay pods).
 *
 * Safety: a claim is an update of the pod carrying the resourceVersion it was read at, so of two
 * claims of one pod (two operator replicas in a split brain, or a stale cache) only one succeeds; the
 * loser moves on to the next idle pod. A session is not given a second pod while the cache has not
 * seen its first claim yet: claims this process made are remembered until the cache shows them.
 * After a restart the cache is a fresh list, in which every claim is visible on its pod.
 *
 * Order: first come, first served. Sessions are ordered by creation time; the apiserver stamps it
 * in whole seconds, so within one second by the order the operator's watch saw them created (the
 * order of creation), then by name (sessions that existed before the operator started).
 */
import type { CoreV1Api, V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
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
  core: CoreV1Api;
  /** The claimed version of an idle pod (labels, annotations, owner): relaysession/desired-pool-pod.ts. */
  claim(pod: V1Pod, session: RelaySession, stamp: ClaimStamp): V1Pod;
  /** The session uid a pod is claimed for, if any. */
  sessionUid(pod: V1Pod): string | undefined;
  /** The session attempt a pod serves (its attempt label), -1 if none. */
  attempt(pod: V1Pod): number;
  arrival(uid: string): SessionArrival | undefined;
  now(): Date;
}

export interface Allocation {
  session: RelaySession;
  pod: V1Pod;
  waitedSeconds: number;
}

/** Claims in flight at once: enough to hide the round trip (48 halved p95 against 16 in bench:pool), few enough not to swamp the apiserver. */
const CLAIM_PARALLELISM = 48;

/** How long a claim is trusted over a cache that does not show it yet. */
const CLAIM_MEMORY_MS = 60_000;

const TERMINAL = new Set(["Succeeded", "Failed"]);

export class Allocator {
  private readonly deps: AllocatorDeps;
  /** session uid → pod name and when: claims made here that the cache may not show yet. */
  private readonly recentClaims = new Map<string, { pod: string; atMs: number }>();

  constructor(deps: AllocatorDeps) {
    this.deps = deps;
  }

  /**
   * Sessions of `pool` that need a warm pod, first come first served: live (not finished or being
   * deleted), no pod of their own (claimed warm pod or cold pod), no claim in flight.
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
    this.forgetSeenClaims(pods);
    const waiting = sessions.filter((session) => {
      const uid = session.metadata.uid ?? "";
      return (
        session.spec.poolRef?.name === poolName &&
        !session.metadata.deletionTimestamp &&
        !TERMINAL.has(session.status?.phase ?? "") &&
        !hasPod(session) &&
        !this.recentClaims.has(uid)
      );
    });
    return waiting.sort((a, b) => this.compareArrival(a, b));
  }

  /**
   * Claims idle pods (in order) for sessions (in order) until either runs out. The claims of one
   * round go out together (at most CLAIM_PARALLELISM at a time): session i gets idle pod i. A claim
   * refused because the pod changed (409) or vanished (404) puts its session into the next round,
   * on the pods nobody has tried yet, still oldest session first.
   */
  async allocate(
    waiting: readonly RelaySession[],
    idle: readonly V1Pod[],
    log: Logger,
    onConflict: () => void,
  ): Promise<Allocation[]> {
    const done: Allocation[] = [];
    let sessions = [...waiting];
    let next = 0;
    while (sessions.length > 0 && next < idle.length) {
      const pairs = sessions.slice(0, idle.length - next).map((session) => ({ session, pod: idle[next++]! }));
      const results = await mapLimited(pairs, CLAIM_PARALLELISM, ({ session, pod }) =>
        this.tryClaim(session, pod),
      );
      const lost: RelaySession[] = [];
      results.forEach((result, i) => {
        if (result) return void done.push(result);
        onConflict();
        log.debug(
          { pod: pairs[i]!.pod.metadata?.name, session: pairs[i]!.session.metadata.name },
          "claim lost",
        );
        lost.push(pairs[i]!.session);
      });
      sessions = [...lost, ...sessions.slice(pairs.length)];
    }
    return done;
  }

  private async tryClaim(session: RelaySession, pod: V1Pod): Promise<Allocation | undefined> {
    const now = this.deps.now();
    const uid = session.metadata.uid ?? "";
    const arrival = this.deps.arrival(uid);
    const firstSeen =
      arrival?.firstSeenMs ?? Date.parse(session.metadata.creationTimestamp as unknown as string);
    const waitedSeconds = Number.isFinite(firstSeen) ? Math.max(0, (now.getTime() - firstSeen) / 1000) : 0;
    const body = this.deps.claim(pod, session, {
      at: now,
      waitedSeconds,
      attempt: session.status?.restarts ?? 0,
    });
    try {
      const written = await this.deps.core.replaceNamespacedPod({
        namespace: pod.metadata?.namespace ?? "default",
        name: pod.metadata?.name ?? "",
        body,
      });
      this.recentClaims.set(uid, { pod: pod.metadata?.name ?? "", atMs: Date.now() });
      return { session, pod: written, waitedSeconds };
    } catch (error) {
      const code = apiCode(error);
      if (code === 409 || code === 404) return undefined;
      throw error;
    }
  }

  private forgetSeenClaims(pods: readonly V1Pod[]): void {
    const cutoff = Date.now() - CLAIM_MEMORY_MS;
    const claimedInCache = new Set(pods.map((pod) => this.deps.sessionUid(pod)).filter(Boolean));
    for (const [uid, claim] of this.recentClaims) {
      if (claimedInCache.has(uid) || claim.atMs < cutoff) this.recentClaims.delete(uid);
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

function isFinishedPod(pod: V1Pod): boolean {
  return pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed";
}

/** `fn` over `items` with at most `limit` calls in flight; results in the order of `items`. */
async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
