/**
 * The allocator's bookkeeping while claims are in flight (operator/src/relaypool/allocator.ts): the
 * pool's next round must neither offer a pod whose claim is unanswered nor give its session a second
 * pod; a lost claim (409) puts the session back first in line, and a pod claimed here is not offered
 * again while the cache still shows it idle at the claimed version. The apiserver is played by
 * FakeClaimApi (named as such: each replace waits until the test answers it); the concurrency under a
 * real apiserver is in pool-apiserver.test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiException, type CoreV1Api, type V1Pod } from "@kubernetes/client-node";
import type { RelayPool, RelaySession } from "../../../crds/src/index.js";
import { Allocator, type Allocation } from "../../../operator/src/relaypool/allocator.js";

class FakeClaimApi {
  readonly pending: Array<{ name: string; answer(ok: boolean): void }> = [];
  replaceNamespacedPod(request: { name: string; body: V1Pod }): Promise<V1Pod> {
    return new Promise((resolve, reject) => {
      this.pending.push({
        name: request.name,
        answer: (ok) => (ok ? resolve(request.body) : reject(new ApiException(409, "Conflict", {}, {}))),
      });
    });
  }
}

const pool = { metadata: { name: "gpu", namespace: "ns" }, spec: {} } as unknown as RelayPool;
const pod = (name: string, resourceVersion = "1"): V1Pod => ({
  metadata: { name, namespace: "ns", resourceVersion, labels: {} },
});
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
    core: api as unknown as CoreV1Api,
    claim: (p, s) => ({ ...p, metadata: { ...p.metadata, labels: { session: s.metadata.uid ?? "" } } }),
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

  // Round 3, cache unchanged: p0 is not offered again (claimed at the version the cache shows), a
  // does not wait (its claim is remembered), b is first in line again, on p1 as now cached.
  const p1Changed = pod("p1", "2");
  waiting = allocator.waitingSessions(pool, sessions, [idle[0]!, p1Changed]);
  assert.deepEqual(
    waiting.map((s) => s.metadata.name),
    ["b", "c"],
  );
  assert.deepEqual(
    allocator.available([idle[0]!, p1Changed]).map((p) => p.metadata?.name),
    ["p1"],
  );
});
