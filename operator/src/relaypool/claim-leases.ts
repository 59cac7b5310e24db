/**
 * A pool's claim Leases (crds/src/relay-pool.ts), apart from the pool's counts and scaling: the
 * Lease view of each namespace that claims are checked against, the Lease made with each pod, the
 * resourceVersion-guarded writes that drain or free one, the claim's labels patched onto the pod
 * afterwards, and the repairs a stopped operator may leave to the next round (a Lease left by a gone
 * pod, a pod without its Lease, a claim whose labels never reached its pod).
 */
import {
  PatchStrategy,
  setHeaderOptions,
  type CoordinationV1Api,
  type CoreV1Api,
  type V1Lease,
  type V1Pod,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import {
  LABEL_POOL,
  type LeaseClaim,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_VERSION,
  type RelayPool,
  type RelaySession,
} from "../../../crds/src/index.js";
import type { ClaimStamp } from "./allocator.js";
import { apiCode } from "./api.js";
import { PodLeases, isFinished, type PoolPods } from "./pool-pods.js";
import type { BackgroundWrites } from "../kube/write-priority.js";

const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

/** A claim Lease left this long without its pod is deleted (not sooner: the pod cache may lag). */
const STALE_LEASE_MS = 30_000;
/** A claim's labels that could not be patched onto its pod are tried again after this. */
const RETRY_MS = 1000;

/** The parts of the pool pod shapes (reconciler.ts PoolPodShapes) the Leases need. */
export interface LeaseShapes {
  idleLease(pool: RelayPool, pod: V1Pod): V1Lease;
  claimPodPatch(session: RelaySession, stamp: ClaimStamp): Pick<V1Pod, "metadata">;
  stampOfLease(lease: V1Lease): ClaimStamp;
  leaseClaim(lease: V1Lease): LeaseClaim;
  leasePodUid(lease: V1Lease): string | undefined;
  sessionUid(pod: V1Pod): string | undefined;
  attempt(pod: V1Pod): number;
}

export interface ClaimLeasesDeps {
  core: CoreV1Api;
  coordination: CoordinationV1Api;
  shapes: LeaseShapes;
  pods: { list(namespace: string): V1Pod[] };
  leases: { list(namespace: string): V1Lease[] };
  sessions: { get(namespace: string, name: string): RelaySession | undefined };
  /** The claim's labels wait behind claims in flight (operator/src/kube/write-priority.ts). */
  background?: BackgroundWrites;
  /** Look at pool `key` again after `afterMs`. */
  requeue?: (key: string, afterMs?: number) => void;
  now: () => Date;
}

export class ClaimLeases {
  /** The latest view of each namespace's claim Leases (claims are sent after the round that built it). */
  private readonly views = new Map<string, PodLeases>();
  /** Pods whose claim's labels are being patched on ("namespace/name"). */
  private readonly completing = new Set<string>();

  constructor(private readonly deps: ClaimLeasesDeps) {}

  /** A fresh Lease view of `namespace` from the caches, kept for the claims sent after this round. */
  refresh(namespace: string): PodLeases {
    const leases = new PodLeases(
      this.deps.pods.list(namespace),
      this.deps.leases.list(namespace),
      this.deps.shapes,
    );
    this.views.set(namespace, leases);
    return leases;
  }

  /** The latest Lease view of the pod's namespace (empty before its first round). */
  of(pod: V1Pod): PodLeases {
    const namespace = pod.metadata?.namespace ?? "default";
    return this.views.get(namespace) ?? this.refresh(namespace);
  }

  /**
   * Leases in order: one left by a gone pod (or by an earlier pod of the same name) is deleted, a live
   * pod without one gets one (an operator that stopped between the two creates, or an older operator's
   * pod), and a claim whose labels have not reached its pod yet (an operator stopped right after the
   * claim) is finished.
   */
  async tend(
    pool: RelayPool,
    allPods: readonly V1Pod[],
    sorted: PoolPods,
    leases: PodLeases,
    log: Logger,
  ): Promise<void> {
    const name = pool.metadata.name ?? "";
    const podNames = new Set(allPods.map((pod) => pod.metadata?.name));
    for (const lease of leases.stale) {
      if (lease.metadata?.labels?.[LABEL_POOL] !== name) continue;
      const age = this.deps.now().getTime() - Date.parse(String(lease.metadata?.creationTimestamp ?? ""));
      if (!podNames.has(lease.metadata?.name) && !(age > STALE_LEASE_MS)) continue;
      await this.delete(lease);
    }
    for (const pod of [...sorted.warming, ...sorted.idleReady]) {
      if (leases.lease(pod) || isFinished(pod)) continue;
      try {
        await this.create(pool, pod);
      } catch (err) {
        log.warn({ pod: pod.metadata?.name, err }, "creating the claim Lease failed; retrying later");
      }
    }
    const key = `${pool.metadata.namespace ?? "default"}/${name}`;
    for (const pod of [...sorted.allocated, ...sorted.allocatedFinished]) {
      const lease = leases.lease(pod);
      const claim = leases.claim(pod);
      if (!lease || claim?.kind !== "session" || !leases.labelsPending(pod)) continue;
      const [namespace, sessionName] = claim.session.split("/");
      const session = this.deps.sessions.get(namespace ?? "", sessionName ?? "");
      // The session is gone: its owner reference still goes on, so the session's end is seen as for
      // any claimed pod (cleanUp deletes or recycles it next).
      const owner: RelaySession = session ?? {
        apiVersion: `${RELAY_SESSION_GROUP}/${RELAY_SESSION_VERSION}`,
        kind: "RelaySession",
        metadata: { name: sessionName ?? "", namespace: namespace ?? "", uid: claim.sessionUid },
        spec: {} as RelaySession["spec"],
      };
      this.completeClaim(pod, lease, owner, this.deps.shapes.stampOfLease(lease), key, log);
    }
  }

  /**
   * The claim's labels, annotations and owner onto the pod, as a background write (it waits while
   * other claims are in flight): the session controller finds its pod by them. Not guarded by the
   * pod's version: the Lease already made the pod the session's.
   */
  completeClaim(
    pod: V1Pod,
    lease: V1Lease,
    session: RelaySession,
    stamp: ClaimStamp,
    key: string,
    log: Logger,
  ): void {
    const podKey = `${pod.metadata?.namespace ?? "default"}/${pod.metadata?.name ?? ""}`;
    if (this.completing.has(podKey)) return;
    this.completing.add(podKey);
    const write = () =>
      this.deps.core.patchNamespacedPod(
        {
          namespace: pod.metadata?.namespace ?? "default",
          name: pod.metadata?.name ?? "",
          body: this.deps.shapes.claimPodPatch(session, stamp),
        },
        mergePatch,
      );
    void (this.deps.background ? this.deps.background.background(write) : write())
      .catch((error: unknown) => {
        if (apiCode(error) === 404) return;
        log.warn(
          { pod: pod.metadata?.name, lease: lease.metadata?.name, err: error },
          "labelling a claimed pod failed; retrying",
        );
        this.deps.requeue?.(key, RETRY_MS);
      })
      .finally(() => this.completing.delete(podKey));
  }

  /**
   * `body` written over the claim Lease `lease` (it carries the cached resourceVersion); false when the
   * Lease changed since or is gone (409/404): the next round looks again.
   */
  async replace(lease: V1Lease, body: V1Lease): Promise<boolean> {
    try {
      await this.deps.coordination.replaceNamespacedLease({
        namespace: lease.metadata?.namespace ?? "default",
        name: lease.metadata?.name ?? "",
        body,
      });
      return true;
    } catch (error) {
      const code = apiCode(error);
      if (code === 409 || code === 404) return false;
      throw error;
    }
  }

  async create(pool: RelayPool, pod: V1Pod): Promise<void> {
    try {
      await this.deps.coordination.createNamespacedLease({
        namespace: pod.metadata?.namespace ?? "default",
        body: this.deps.shapes.idleLease(pool, pod),
      });
    } catch (error) {
      // 409: there is one (the cache is behind, or an earlier pod's, which tendLeases removes).
      if (apiCode(error) !== 409) throw error;
    }
  }

  async delete(lease: V1Lease): Promise<void> {
    try {
      await this.deps.coordination.deleteNamespacedLease({
        namespace: lease.metadata?.namespace ?? "default",
        name: lease.metadata?.name ?? "",
        body: { preconditions: { uid: lease.metadata?.uid } },
      });
    } catch (error) {
      if (apiCode(error) !== 404 && apiCode(error) !== 409) throw error;
    }
  }
}
