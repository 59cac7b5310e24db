/**
 * The RelayPool's conditions from its counts: Ready (an idle warm pod can be handed out now) and
 * Exhausted (sessions are waiting for one). lastTransitionTime moves only when a status flips.
 */
import type { RelayPool, RelayPoolStatus } from "../../../crds/src/index.js";
import type { BackgroundWrites } from "../kube/write-priority.js";

type Condition = NonNullable<RelayPoolStatus["conditions"]>[number];

export function poolConditions(
  previous: readonly Condition[] | undefined,
  counts: { ready: number; warming: number; waiting: number },
  now: Date,
  generation: number | undefined,
): Condition[] {
  const desired: Array<Omit<Condition, "lastTransitionTime">> = [
    counts.ready > 0
      ? { type: "Ready", status: "True", reason: "WarmPodsIdle", message: `${counts.ready} idle warm pod(s)` }
      : {
          type: "Ready",
          status: "False",
          reason: counts.warming > 0 ? "WarmingUp" : "NoIdlePods",
          message: counts.warming > 0 ? `${counts.warming} pod(s) warming up` : "no idle warm pod",
        },
    counts.waiting > 0
      ? {
          type: "Exhausted",
          status: "True",
          reason: "PoolExhausted",
          message: `${counts.waiting} session(s) waiting for an idle warm pod`,
        }
      : { type: "Exhausted", status: "False", reason: "AsExpected", message: "" },
  ];
  return desired.map((condition) => {
    const before = previous?.find((c) => c.type === condition.type);
    return {
      ...condition,
      lastTransitionTime:
        before && before.status === condition.status
          ? before.lastTransitionTime
          : now.toISOString().replace(/\.\d+Z$/, "Z"),
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
    };
  });
}

/**
 * Why a pool cannot work, if its pods would all use one ComfyStream: its template names a server by
 * URL (no sidecar) that is not on the pod's own loopback, and the pool holds more than one pod.
 * ComfyStream serves one peer at a time and a peer's close stops its pipeline for everyone (spec
 * comfystream-webrtc §1.5), while every warm pod keeps a connection to it: the pods would take the
 * server from each other. Undefined when the pool is fine.
 */
export function sharedComfyStreamProblem(pool: RelayPool, desiredReplicas: number): string | undefined {
  const url = pool.spec.template.comfystream.url;
  if (!url || pool.spec.template.comfystream.sidecar || desiredReplicas <= 1) return undefined;
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    return undefined;
  }
  if (host === "localhost" || host === "[::1]" || /^127\./.test(host)) return undefined;
  return (
    `all ${desiredReplicas} pods of this pool would use the one ComfyStream at ${url}, which serves one ` +
    "peer at a time: give the template a comfystream.sidecar (one ComfyStream per pod), or keep the pool at one pod"
  );
}

/**
 * The pool's status writes, off the allocation path: a round hands its status over and goes on (the
 * next session of a burst need not wait for a status round trip; those were most of a round under
 * load). Per pool one write at a time, the latest status wins over one still waiting its turn.
 * `latest()` is the status last handed over, which the cache may not show yet: the baseline for the
 * next round's comparison, conditions and Events. A failed write forgets it and asks for a retry.
 * With `background`, a write also waits while claims are in flight (and the latest status wins).
 */
export class PoolStatusWrites {
  private readonly latestByUid = new Map<string, RelayPoolStatus>();
  private readonly writing = new Set<string>();
  private readonly next = new Map<string, () => Promise<void>>();

  constructor(
    private readonly onFailure: (uid: string, err: unknown) => void,
    private readonly background?: BackgroundWrites,
  ) {}

  latest(uid: string): RelayPoolStatus | undefined {
    return this.latestByUid.get(uid);
  }

  submit(uid: string, status: RelayPoolStatus, write: () => Promise<void>): void {
    this.latestByUid.set(uid, status);
    if (this.writing.has(uid)) return void this.next.set(uid, write);
    void this.run(uid, write);
  }

  forget(uid: string): void {
    this.latestByUid.delete(uid);
    this.next.delete(uid);
  }

  /** Resolves once no write is in progress (shutdown, tests). */
  async idle(): Promise<void> {
    while (this.writing.size > 0) await new Promise((resolve) => setTimeout(resolve, 5));
  }

  private async run(uid: string, write: () => Promise<void>): Promise<void> {
    this.writing.add(uid);
    for (let current: (() => Promise<void>) | undefined = write; current;) {
      try {
        await (this.background ? this.background.background(current) : current());
      } catch (err) {
        this.latestByUid.delete(uid);
        this.next.delete(uid);
        this.onFailure(uid, err);
        break;
      }
      current = this.next.get(uid);
      this.next.delete(uid);
    }
    this.writing.delete(uid);
  }
}
