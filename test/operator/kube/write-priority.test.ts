/**
 * Background writes (session statuses, Events, pool statuses) wait behind urgent ones (warm pod
 * claims): operator/src/kube/write-priority.ts. The writes here are functions that record when they
 * start; no apiserver is involved (the operator's writes going through it are covered end to end by
 * test/operator/relaypool/pool-apiserver.test.ts: statuses and Events still arrive).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { WritePriority } from "../../../operator/src/kube/write-priority.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test("with no claim near, a background write goes at once", async () => {
  const priority = new WritePriority({ lingerMs: 50 });
  let ran = false;
  const result = priority.background(async () => {
    ran = true;
    return 7;
  });
  assert.equal(ran, true, "started in the same tick");
  assert.equal(await result, 7);
});

test("a background write waits while a claim is in flight and until it has been quiet for the linger", async () => {
  const priority = new WritePriority({ lingerMs: 40, maxDeferMs: 10_000 });
  const endClaim = priority.beginUrgent();
  const started: number[] = [];
  const write = priority.background(async () => {
    started.push(performance.now());
  });
  await sleep(150);
  assert.deepEqual(started, [], "held back while the claim is in flight");
  assert.deepEqual(priority.pending, { urgent: 1, heldBack: 1 });
  const endedAt = performance.now();
  endClaim();
  endClaim(); // idempotent
  await write;
  assert.equal(started.length, 1);
  assert.ok(started[0]! - endedAt >= 35, `went ${started[0]! - endedAt} ms after the claim's answer`);
  assert.deepEqual(priority.pending, { urgent: 0, heldBack: 0 });
});

test("a claim arriving within the linger keeps background writes back (a burst in waves)", async () => {
  const priority = new WritePriority({ lingerMs: 80, maxDeferMs: 10_000 });
  priority.beginUrgent()();
  let ran = false;
  const write = priority.background(async () => {
    ran = true;
  });
  await sleep(20);
  const endSecond = priority.beginUrgent();
  await sleep(150);
  assert.equal(ran, false, "the second claim came before the linger ran out");
  endSecond();
  await write;
  assert.equal(ran, true);
});

test("no background write is held longer than the bound, even under claims that never stop", async () => {
  const priority = new WritePriority({ lingerMs: 50, maxDeferMs: 120 });
  priority.beginUrgent(); // never answered
  const queuedAt = performance.now();
  let startedAt = 0;
  await priority.background(async () => {
    startedAt = performance.now();
  });
  assert.ok(startedAt - queuedAt >= 115, `held ${startedAt - queuedAt} ms, at least the bound`);
});

test("held-back writes are released a few at a time, in the order they came", async () => {
  const priority = new WritePriority({ lingerMs: 10, maxDeferMs: 10_000, releaseParallelism: 2 });
  const endClaim = priority.beginUrgent();
  let running = 0;
  let mostAtOnce = 0;
  const order: number[] = [];
  const writes = Array.from({ length: 6 }, (_, i) =>
    priority.background(async () => {
      order.push(i);
      running++;
      mostAtOnce = Math.max(mostAtOnce, running);
      await sleep(20);
      running--;
    }),
  );
  await sleep(30);
  assert.deepEqual(order, []);
  endClaim();
  await Promise.all(writes);
  assert.deepEqual(order, [0, 1, 2, 3, 4, 5]);
  assert.equal(mostAtOnce, 2);
});

test("a failing background write frees its place for the next", async () => {
  const priority = new WritePriority({ lingerMs: 10, releaseParallelism: 1 });
  const endClaim = priority.beginUrgent();
  const failing = priority.background(async () => {
    throw new Error("apiserver away");
  });
  const next = priority.background(async () => "written");
  endClaim();
  await assert.rejects(failing, /apiserver away/);
  assert.equal(await next, "written");
});
