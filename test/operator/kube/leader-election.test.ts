/**
 * Lease leader election between two candidates on a real kube-apiserver: exactly one leads, a
 * graceful release hands over at the next retry, a frozen leader (its apiserver traffic blackholed)
 * gives up after renewDeadline and is replaced only after leaseDuration, and leaseTransitions counts
 * each hand-over. Timings are scaled down: lease 3 s, renew deadline 2 s, retry 0.4 s.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CoordinationV1Api, CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { LeaderElector, type LeaderElectorOptions } from "../../../operator/src/kube/leader-election.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../../infra/apiserver.js";
import { eventually, sleep } from "./helpers.js";
import { StallingProxy } from "./stalling-proxy.js";

const assets = await resolveEnvtestAssets();
const namespace = "leader-election";
const timings = { leaseDurationSeconds: 3, renewDeadlineSeconds: 2, retryPeriodSeconds: 0.4 };

interface Candidate {
  elector: LeaderElector;
  identity: string;
  startedAt?: number;
  stoppedAt?: number;
  signal?: AbortSignal;
  done: Promise<void>;
}

describe("LeaderElector on a real kube-apiserver", { skip: assets.skipReason }, () => {
  let cp: ControlPlane;
  let kc: KubeConfig;
  let leases: CoordinationV1Api;
  const candidates: Candidate[] = [];
  const proxies: StallingProxy[] = [];

  before(async () => {
    cp = await startControlPlane();
    kc = new KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
    leases = kc.makeApiClient(CoordinationV1Api);
    await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: namespace } } });
  });

  after(async () => {
    for (const candidate of candidates) await candidate.elector.release();
    for (const proxy of proxies) await proxy.close();
    await cp?.stop();
  });

  function candidate(
    identity: string,
    lease: string,
    options: Partial<LeaderElectorOptions> = {},
  ): Candidate {
    const elector = new LeaderElector({
      kubeConfig: kc,
      namespace,
      name: lease,
      identity,
      ...timings,
      ...options,
    });
    const entry = { elector, identity } as Candidate;
    entry.done = elector.run({
      onStartedLeading: (signal) => {
        entry.startedAt = performance.now();
        entry.signal = signal;
      },
      onStoppedLeading: () => {
        entry.stoppedAt = performance.now();
      },
    });
    candidates.push(entry);
    return entry;
  }

  const readLease = (name: string) => leases.readNamespacedLease({ namespace, name });

  /** Samples both candidates for `ms`; fails if they ever lead at the same time. */
  async function assertNeverBothLead(a: Candidate, b: Candidate, ms: number): Promise<void> {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      assert.ok(!(a.elector.isLeader && b.elector.isLeader), "two leaders at once");
      await sleep(20);
    }
  }

  test("of two candidates exactly one leads, and the Lease names it", async () => {
    const a = candidate("a", "one-leader");
    const b = candidate("b", "one-leader");
    const leader = await eventually("a leader", 5_000, () =>
      a.elector.isLeader ? a : b.elector.isLeader ? b : undefined,
    );
    const follower = leader === a ? b : a;
    await assertNeverBothLead(a, b, 2_000);
    assert.ok(leader.elector.isLeader, "the leader keeps renewing");
    assert.equal(follower.startedAt, undefined);
    const lease = await readLease("one-leader");
    assert.equal(lease.spec?.holderIdentity, leader.identity);
    assert.equal(lease.spec?.leaseDurationSeconds, 3);
    assert.equal(lease.spec?.leaseTransitions, 0, "a fresh lease starts at 0 transitions");
    assert.equal(follower.elector.leader, leader.identity, "the follower knows who leads");
    const renewed = new Date(String(lease.spec?.renewTime)).getTime();
    await sleep(1_000);
    const later = await readLease("one-leader");
    assert.ok(new Date(String(later.spec?.renewTime)).getTime() > renewed, "renewTime moves on");
    await Promise.all([a.elector.release(), b.elector.release()]);
  });

  test("a released lease is taken over at the successor's next retry", async () => {
    const a = candidate("a", "graceful");
    await eventually("a leads", 5_000, () => a.elector.isLeader);
    const b = candidate("b", "graceful");
    await sleep(1_000);
    assert.ok(!b.elector.isLeader);

    const releasedAt = performance.now();
    await a.elector.release();
    assert.ok(a.signal?.aborted, "the leader's signal aborted");
    assert.ok(a.stoppedAt !== undefined && !a.elector.isLeader);
    await a.done;
    await eventually("b leads", 3_000, () => b.elector.isLeader);
    const takeoverMs = b.startedAt! - releasedAt;
    // Within one jittered retry period (0.4–0.48 s) plus request time: far below the 3 s lease.
    assert.ok(takeoverMs < 1_500, `took over after ${Math.round(takeoverMs)} ms`);
    const lease = await readLease("graceful");
    assert.equal(lease.spec?.holderIdentity, "b");
    assert.equal(lease.spec?.leaseTransitions, 1);
    await b.elector.release();
    assert.equal((await readLease("graceful")).spec?.holderIdentity ?? "", "", "released leases are free");
  });

  test("a frozen leader gives up after renewDeadline; the other takes over only after leaseDuration", async () => {
    const proxy = await StallingProxy.start(cp.server);
    proxies.push(proxy);
    const a = candidate("a", "frozen", { kubeConfig: proxy.kubeConfig(kc) });
    await eventually("a leads", 5_000, () => a.elector.isLeader);
    const b = candidate("b", "frozen");
    await sleep(800);
    assert.ok(!b.elector.isLeader);

    // The leader's process keeps running but none of its requests reach the apiserver any more.
    proxy.blackhole();
    const frozenAt = performance.now();
    await eventually("b leads", 8_000, () => b.elector.isLeader);
    const takeoverMs = b.startedAt! - frozenAt;
    const gaveUpMs = a.stoppedAt! - frozenAt;
    assert.ok(a.stoppedAt !== undefined && a.signal?.aborted, "the frozen leader stopped leading");
    assert.ok(a.stoppedAt! < b.startedAt!, "the old leader stopped before the new one started");
    // a renewed at most one retry period (0.4 s) before the freeze: it gives up ~2 s after that renewal.
    assert.ok(gaveUpMs >= 1_400 && gaveUpMs < 3_200, `gave up after ${Math.round(gaveUpMs)} ms`);
    // b waits 3 s from the last renewal it saw (≤ 0.4 s + polling before the freeze).
    assert.ok(takeoverMs >= 2_400 && takeoverMs < 5_500, `took over after ${Math.round(takeoverMs)} ms`);
    const lease = await readLease("frozen");
    assert.equal(lease.spec?.holderIdentity, "b");
    assert.equal(lease.spec?.leaseTransitions, 1);
    await a.done;
    await b.elector.release();
  });

  test("invalid timings are refused", () => {
    assert.throws(
      () =>
        new LeaderElector({
          kubeConfig: kc,
          namespace,
          name: "x",
          identity: "a",
          leaseDurationSeconds: 2,
          renewDeadlineSeconds: 2,
        }),
      /leaseDurationSeconds must be greater than renewDeadlineSeconds/,
    );
    assert.throws(
      () => new LeaderElector({ kubeConfig: kc, namespace, name: "x", identity: "" }),
      /non-empty identity/,
    );
  });
});
