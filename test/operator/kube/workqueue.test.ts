/**
 * The work queue's contract with the controller: de-duplication, one worker per key at a time,
 * per-key exponential backoff plus a global token bucket, requeueAfter, terminal errors, and a
 * shutdown that waits for running handlers.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Registry } from "prom-client";
import {
  ItemExponentialBackoff,
  TerminalError,
  TokenBucket,
  WorkQueue,
} from "../../../operator/src/kube/workqueue.js";
import { eventually, sleep } from "./helpers.js";

describe("rate limiters", () => {
  test("per-key backoff doubles from the base up to the maximum and forget() resets it", () => {
    const backoff = new ItemExponentialBackoff(5, 1_000_000);
    const delays = Array.from({ length: 5 }, () => backoff.when("a"));
    assert.deepEqual(delays, [5, 10, 20, 40, 80]);
    assert.equal(backoff.when("b"), 5, "keys back off independently");
    assert.equal(backoff.retries("a"), 5);
    for (let i = 0; i < 30; i++) backoff.when("a");
    assert.equal(backoff.when("a"), 1_000_000, "capped at 1000 s");
    backoff.forget("a");
    assert.equal(backoff.retries("a"), 0);
    assert.equal(backoff.when("a"), 5);
  });

  test("the token bucket allows a burst, then spaces reservations at 1/qps", () => {
    let now = 0;
    const bucket = new TokenBucket(10, 3, () => now);
    assert.deepEqual([bucket.reserve(), bucket.reserve(), bucket.reserve()], [0, 0, 0]);
    assert.equal(Math.round(bucket.reserve()), 100);
    assert.equal(Math.round(bucket.reserve()), 200);
    now += 1_000; // 10 new tokens repay the 2 borrowed ones; the rest is capped at the burst of 3
    assert.deepEqual([bucket.reserve(), bucket.reserve(), bucket.reserve()], [0, 0, 0]);
    assert.equal(Math.round(bucket.reserve()), 100);
  });
});

describe("WorkQueue", () => {
  test("a key added many times while waiting is handled once", async () => {
    const queue = new WorkQueue();
    for (let i = 0; i < 5; i++) queue.add("ns/a");
    queue.add("ns/b");
    assert.equal(queue.length, 2);
    const handled: string[] = [];
    const done = queue.run(2, async (key) => {
      handled.push(key);
    });
    await eventually("both keys handled", 2_000, () => handled.length === 2);
    await sleep(50);
    assert.deepEqual(handled.sort(), ["ns/a", "ns/b"]);
    await queue.shutdown();
    await done;
  });

  test("a key is never handled by two workers at once; added while running, it runs once more after", async () => {
    const queue = new WorkQueue();
    let active = 0;
    let maxActive = 0;
    const runs: Array<{ start: number; end: number }> = [];
    const done = queue.run(4, async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      const start = performance.now();
      await sleep(100);
      active--;
      runs.push({ start, end: performance.now() });
    });
    queue.add("ns/a");
    await eventually("first run started", 1_000, () => active === 1);
    queue.add("ns/a");
    queue.add("ns/a");
    assert.equal(queue.length, 0, "not queued while it is being processed");
    await eventually("second run finished", 2_000, () => runs.length === 2);
    await sleep(150);
    assert.equal(runs.length, 2, "the two adds during the run collapse into one more run");
    assert.equal(maxActive, 1);
    assert.ok(runs[1]!.start >= runs[0]!.end, "the second run starts after the first ended");
    await queue.shutdown();
    await done;
  });

  test("minIntervalMs: a burst of adds for one key is handled in spaced batches, another key at once", async () => {
    const queue = new WorkQueue({ minIntervalMs: 100 });
    const starts: Array<{ key: string; at: number }> = [];
    const done = queue.run(2, async (key) => {
      starts.push({ key, at: performance.now() });
    });
    const begin = performance.now();
    queue.add("pool/a");
    await eventually("first run", 1_000, () => starts.length === 1);
    // 300 ms of adds every 5 ms (the echoes of a burst): without spacing ~60 runs.
    for (let i = 0; i < 60; i++) {
      queue.add("pool/a");
      if (i === 30) queue.add("pool/b");
      await sleep(5);
    }
    await sleep(250);
    const runsOfA = starts.filter((s) => s.key === "pool/a");
    assert.ok(runsOfA.length >= 3 && runsOfA.length <= 6, `runs of pool/a: ${runsOfA.length}`);
    for (let i = 1; i < runsOfA.length; i++) {
      const gap = runsOfA[i]!.at - runsOfA[i - 1]!.at;
      assert.ok(gap >= 95, `run ${i} started ${gap.toFixed(0)} ms after the one before`);
    }
    assert.ok(runsOfA.at(-1)!.at - begin >= 300, "the adds at the end of the burst got a run after them");
    assert.equal(starts.filter((s) => s.key === "pool/b").length, 1, "pool/b: its own first run, unspaced");
    // Idle for longer than the interval: the next add runs at once.
    const idleAdd = performance.now();
    queue.add("pool/a");
    await eventually("the run after idling", 1_000, () => starts.length === runsOfA.length + 2);
    assert.ok(starts.at(-1)!.at - idleAdd < 50, "not held back after an idle interval");
    await queue.shutdown();
    await done;
  });

  test("different keys run in parallel up to the worker count", async () => {
    const queue = new WorkQueue();
    let active = 0;
    let maxActive = 0;
    const done = queue.run(2, async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      await sleep(80);
      active--;
    });
    for (const key of ["a", "b", "c", "d"]) queue.add(key);
    await eventually("all done", 2_000, () => queue.length === 0 && active === 0);
    assert.equal(maxActive, 2);
    await queue.shutdown();
    await done;
  });

  test("a failing key is retried with growing delays, and success forgets its backoff", async () => {
    const queue = new WorkQueue({ baseDelayMs: 20 });
    const calls: number[] = [];
    const done = queue.run(1, async (key) => {
      calls.push(performance.now());
      if (calls.length < 5) throw new Error(`transient failure of ${key}`);
    });
    queue.add("ns/flaky");
    await eventually("five attempts", 3_000, () => calls.length === 5);
    const gaps = calls.slice(1).map((t, i) => t - calls[i]!);
    [20, 40, 80, 160].forEach((expected, i) =>
      assert.ok(gaps[i]! >= expected - 2, `gap ${i} is ${gaps[i]} ms, expected ≥ ${expected}`),
    );
    assert.ok(gaps[3]! > gaps[0]! * 4, `delays grow: ${gaps.map(Math.round).join(", ")}`);
    await sleep(20);
    assert.equal(queue.numRequeues("ns/flaky"), 0, "forgotten after the success");
    await queue.shutdown();
    await done;
  });

  test("rate-limited retries of different keys share the global token bucket", async () => {
    const queue = new WorkQueue({ baseDelayMs: 1, qps: 10, burst: 1 });
    const retries: number[] = [];
    const seen = new Set<string>();
    const done = queue.run(3, async (key) => {
      if (seen.has(key)) {
        retries.push(performance.now());
        return;
      }
      seen.add(key);
      throw new Error("fail once");
    });
    for (const key of ["a", "b", "c"]) queue.add(key);
    await eventually("three retries", 3_000, () => retries.length === 3);
    retries.sort((x, y) => x - y);
    // Burst 1: the first retry is immediate, the next ones wait 100 ms and 200 ms for tokens.
    assert.ok(retries[2]! - retries[0]! >= 180, `retries spread ${Math.round(retries[2]! - retries[0]!)} ms`);
    await queue.shutdown();
    await done;
  });

  test("requeueAfterMs brings the key back after that delay without counting a retry", async () => {
    const queue = new WorkQueue();
    const calls: number[] = [];
    const done = queue.run(1, async () => {
      calls.push(performance.now());
      return calls.length === 1 ? { requeueAfterMs: 150 } : undefined;
    });
    queue.add("ns/poll");
    await eventually("second call", 2_000, () => calls.length === 2);
    assert.ok(calls[1]! - calls[0]! >= 148, `requeued after ${calls[1]! - calls[0]!} ms`);
    assert.equal(queue.numRequeues("ns/poll"), 0);
    await sleep(250);
    assert.equal(calls.length, 2, "no further calls once the handler returns nothing");
    await queue.shutdown();
    await done;
  });

  test("addAfter keeps the earliest of several pending delays for one key", async () => {
    const queue = new WorkQueue();
    const calls: number[] = [];
    const done = queue.run(1, async () => {
      calls.push(performance.now());
    });
    const start = performance.now();
    queue.addAfter("k", 400);
    queue.addAfter("k", 50);
    queue.addAfter("k", 300);
    await eventually("handled", 1_000, () => calls.length === 1);
    assert.ok(calls[0]! - start < 250, `handled after ${Math.round(calls[0]! - start)} ms`);
    await sleep(450);
    assert.equal(calls.length, 1, "the later delays were superseded, not queued as well");
    await queue.shutdown();
    await done;
  });

  test("a TerminalError is not retried", async () => {
    const queue = new WorkQueue({ baseDelayMs: 1 });
    let calls = 0;
    const done = queue.run(1, async () => {
      calls++;
      throw new TerminalError("invalid spec");
    });
    queue.add("ns/bad");
    await eventually("handled", 1_000, () => calls === 1);
    await sleep(100);
    assert.equal(calls, 1);
    await queue.shutdown();
    await done;
  });

  test("shutdown waits for running handlers, drops waiting keys, and ignores later adds", async () => {
    const queue = new WorkQueue();
    const finished: string[] = [];
    const started: string[] = [];
    const done = queue.run(1, async (key) => {
      started.push(key);
      await sleep(200);
      finished.push(key);
    });
    queue.add("running");
    queue.add("waiting");
    queue.addAfter("scheduled", 50);
    await eventually("first started", 1_000, () => started.length === 1);
    await queue.shutdown();
    assert.deepEqual(finished, ["running"], "shutdown resolved after the running handler finished");
    queue.add("late");
    await done;
    await sleep(100);
    assert.deepEqual(started, ["running"]);
    assert.ok(queue.shuttingDown);
  });

  test("metrics count adds, retries, depth and work duration by queue name", async () => {
    const registry = new Registry();
    const queue = new WorkQueue({ name: "relaysessions", metrics: registry, baseDelayMs: 1 });
    let calls = 0;
    const done = queue.run(1, async () => {
      calls++;
      if (calls === 1) throw new Error("once");
    });
    queue.add("ns/a");
    await eventually("retried", 1_000, () => calls === 2);
    await queue.shutdown();
    await done;
    const text = await registry.metrics();
    assert.match(text, /operator_workqueue_adds_total\{name="relaysessions"\} 2/);
    assert.match(text, /operator_workqueue_retries_total\{name="relaysessions"\} 1/);
    assert.match(text, /operator_workqueue_work_duration_seconds_count\{name="relaysessions"\} 2/);
    assert.match(text, /operator_workqueue_depth\{name="relaysessions"\} 0/);
  });
});
