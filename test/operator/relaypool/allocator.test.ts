/**
 * The allocator's bookkeeping while claims are in flight (operator/src/relaypool/allocator.ts): the
 * pool's next round must neither offer a pod whose claim is unanswered nor give its session a second
 * pod; a lost claim (409) puts the session back first in line, and a pod claimed here is not offered
 * again while the cache still shows its claim Lease at the claimed version. The apiserver is played
 * by FakeClaimApi (named as such: each Lease update waits until the test answers it); the concurrency
 * under a real apiserver is in pool-apiserver.test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiException, type CoordinationV1Api, type V1Lease, type V1Pod } from "@kubernetes/client-node";
import type { RelayPool, RelaySession } from "../../../crds/src/index.js";
import { Allocator, type Allocation } from "../../../operator/src/relaypool/allocator.js";

class FakeClaimApi {
  readonly pending: Array<{ name: string; answer(ok: boolean): void }> = [];
  replaceNamespacedLease(request: { name: string; body: V1Lease }): Promise<V1Lease> {
    return new Promise((resolve, reject) => {
      this.pending.push({
        name: request.name,
        answer: (ok) => (ok ? resolve(request.body) : reject(new ApiException(409, "Conflict", {}, {}))),
      });
    });
  }
}

const pool = { metadata: { name: "gpu", namespace: "ns" }, spec: {} } as unknown as RelayPool;
const pod = (name: string): V1Pod => ({ metadata: { name, namespace: "ns", labels: {} } });
/** The claim Leases as cached, by pod name. */
const leases = new Map<string, V1Lease>();
const cacheLease = (name: string, resourceVersion = "1") =>
  leases.set(name, { metadata: { name, namespace: "ns", resourceVersion, labels: {} }, spec: {} });
const session = (name: string, createdSecond: number): RelaySession =>
  ({
    metadata: {
      name,
      namespace: "ns",
      uid: `uid-${name}`,
      creationTimestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, createdSecond)).toISOString(),
    },
    spec: { poolRef: { name: "gpu" } },
  }) as unknown as RelaySession;
const flush = () => new Promise((resolve) => setImmediate(resolve));

test("claims in flight hold their pod and session out of the next rounds; a lost claim's session is first again", async () => {
  const api = new FakeClaimApi();
  const allocator = new Allocator({
    coordination: api as unknown as CoordinationV1Api,
    claim: (l, s) => ({ ...l, spec: { holderIdentity: s.metadata.uid ?? "" } }),
    leaseOf: (p) => leases.get(p.metadata?.name ?? ""),
    sessionUid: (p) => p.metadata?.labels?.session,
    attempt: () => 0,
    arrival: () => undefined,
    now: () => new Date(),
  });
  const allocated: Allocation[] = [];
  const lost: string[] = [];
  const outcomes = {
    allocated: (a: Allocation) => allocated.push(a),
    lost: (s: RelaySession) => lost.push(s.metadata.name ?? ""),
    failed: () => assert.fail("no other failure here"),
  };
  const sessions = [session("a", 1), session("b", 2), session("c", 3)];
  const idle = [pod("p0"), pod("p1")];
  cacheLease("p0");
  cacheLease("p1");

  // Round 1: a → p0, b → p1, both unanswered.
  let waiting = allocator.waitingSessions(pool, sessions, idle);
  assert.deepEqual(
    waiting.map((s) => s.metadata.name),
    ["a", "b", "c"],
  );
  assert.equal(allocator.dispatch(waiting, allocator.available(idle), outcomes), 2);
  await flush();
  assert.deepEqual(
    api.pending.map((p) => p.name),
    ["p0", "p1"],
  );

  // Round 2 while both are in flight (the cache still shows both pods idle): nothing to offer, only c waits.
  waiting = allocator.waitingSessions(pool, sessions, idle);
  assert.deepEqual(
    waiting.map((s) => s.metadata.name),
    ["c"],
  );
  assert.deepEqual(allocator.available(idle), []);

  // p0's claim is written; p1's is lost (someone else changed the pod).
  api.pending[0]!.answer(true);
  api.pending[1]!.answer(false);
  await flush();
  assert.deepEqual(
    allocated.map((a) => a.session.metadata.name),
    ["a"],
  );
  assert.deepEqual(lost, ["b"]);

  // Round 3, cache unchanged for p0: p0 is not offered again (claimed at the Lease version the
  // cache shows), a does not wait (its claim is remembered), b is first in line again, on p1 whose
  // Lease the cache now shows at a newer version.
  cacheLease("p1", "2");
  waiting = allocator.waitingSessions(pool, sessions, idle);
  assert.deepEqual(
    waiting.map((s) => s.metadata.name),
    ["b", "c"],
  );
  assert.deepEqual(
    allocator.available(idle).map((p) => p.metadata?.name),
    ["p1"],
  );
  // A pod without its claim Lease is never offered.
  assert.deepEqual(allocator.available([pod("p2")]), []);
});
