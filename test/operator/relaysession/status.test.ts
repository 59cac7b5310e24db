// computeStatus / classifyPod: the phases table of operator/README.md, the conditions' shape and
// their lastTransitionTime bookkeeping, pure and table-driven.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { RelaySessionStatus } from "../../../crds/src/index.js";
import {
  classifyPod,
  computeStatus,
  mergeConditions,
  restartBackoffMs,
  type Outcome,
} from "../../../operator/src/relaysession/status.js";
import { at, iso, podIn, storedSession } from "./fixtures.js";

type Relay = NonNullable<RelaySessionStatus["relay"]>;
const report = (
  seconds: number,
  connectionState: NonNullable<Relay["webrtc"]>["connectionState"],
): Relay => ({
  lastUpdateTime: iso(seconds),
  webrtc: { connectionState },
});

describe("computeStatus: the phases table", () => {
  const cases: Array<{
    name: string;
    pod?: Parameters<typeof podIn>[1];
    status?: RelaySessionStatus;
    now: number;
    outcome?: Outcome;
    phase: string;
    ready: [string, string];
  }> = [
    { name: "no pod yet", now: 0, phase: "Pending", ready: ["False", "PodNotCreated"] },
    {
      name: "pod not scheduled",
      pod: { kind: "created" },
      now: 1,
      phase: "Pending",
      ready: ["False", "PodPending"],
    },
    {
      name: "scheduled, relay not reporting",
      pod: { kind: "scheduled" },
      now: 2,
      phase: "Starting",
      ready: ["False", "RelayStarting"],
    },
    {
      name: "report from an earlier pod does not count",
      pod: { kind: "running" },
      status: { relay: report(-5, "connected") },
      now: 3,
      phase: "Starting",
      ready: ["False", "RelayStarting"],
    },
    {
      name: "reporting, WebRTC connecting",
      pod: { kind: "running" },
      status: { relay: report(3, "connecting") },
      now: 4,
      phase: "Connecting",
      ready: ["False", "WebRTCConnecting"],
    },
    {
      name: "connected and fresh",
      pod: { kind: "running" },
      status: { relay: report(3, "connected") },
      now: 4,
      phase: "Running",
      ready: ["True", "WebRTCConnected"],
    },
    {
      name: "was running, report stale",
      pod: { kind: "running" },
      status: { phase: "Running", podName: "basic-relay-0", relay: report(3, "connected") },
      now: 40,
      phase: "Degraded",
      ready: ["False", "RelayReportStale"],
    },
    {
      name: "was running, WebRTC dropped",
      pod: { kind: "running" },
      status: { phase: "Running", podName: "basic-relay-0", relay: report(39, "disconnected") },
      now: 40,
      phase: "Degraded",
      ready: ["False", "WebRTCDisconnected"],
    },
    {
      name: "never connected, report stale: still Connecting",
      pod: { kind: "running" },
      status: { phase: "Connecting", podName: "basic-relay-0", relay: report(3, "connecting") },
      now: 60,
      phase: "Connecting",
      ready: ["False", "RelayReportStale"],
    },
    {
      name: "restarting after a failure",
      now: 20,
      outcome: {
        kind: "Restarting",
        failure: { reason: "PodFailed", message: "exit 1", at: at(10) },
        restarts: 1,
        backoffMs: 1000,
      },
      phase: "Pending",
      ready: ["False", "PodFailed"],
    },
    {
      name: "budget exhausted",
      now: 20,
      outcome: {
        kind: "Failed",
        failure: { reason: "StartupTimeout", message: "slow", at: at(20) },
        budgetExhausted: true,
        restartBudget: 3,
      },
      phase: "Failed",
      ready: ["False", "RestartBudgetExhausted"],
    },
    {
      name: "deadline exceeded",
      now: 20,
      outcome: {
        kind: "Failed",
        failure: { reason: "DeadlineExceeded", message: "too long", at: at(20) },
        budgetExhausted: false,
        restartBudget: 3,
      },
      phase: "Failed",
      ready: ["False", "DeadlineExceeded"],
    },
    {
      name: "succeeded",
      now: 20,
      outcome: { kind: "Succeeded", at: at(15) },
      phase: "Succeeded",
      ready: ["False", "Completed"],
    },
    {
      name: "replacing",
      pod: { kind: "running" },
      now: 20,
      outcome: { kind: "Replacing" },
      phase: "Pending",
      ready: ["False", "PodSpecChanged"],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const session = storedSession("basic.yaml", { generation: 4, ...(c.status && { status: c.status }) });
      const pod = c.pod ? podIn(session, c.pod) : undefined;
      const { status } = computeStatus({ session, pod, now: at(c.now), outcome: c.outcome });
      assert.equal(status.phase, c.phase);
      const ready = status.conditions[0]!;
      assert.equal(ready.type, "Ready", "Ready comes first");
      assert.deepEqual([ready.status, ready.reason], c.ready, ready.message);
      assert.match(ready.reason, /^[A-Z][A-Za-z]+$/, "CamelCase reason");
      assert.equal(status.observedGeneration, 4);
      assert.deepEqual(
        status.conditions.map((cond) => cond.type),
        ["Ready", "PodScheduled", "Progressing", "Degraded"],
      );
      for (const cond of status.conditions) {
        assert.equal(cond.observedGeneration, 4);
        assert.equal(typeof cond.message, "string");
        assert.match(cond.lastTransitionTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      }
      assert.equal(
        (status as unknown as Record<string, unknown>).relay,
        undefined,
        "never produces status.relay",
      );
    });
  }

  test("Degraded sets the Degraded condition; Running clears it", () => {
    const session = storedSession("basic.yaml", {
      status: { phase: "Running", podName: "basic-relay-0", relay: report(3, "connected") },
    });
    const pod = podIn(session, { kind: "running" });
    const degraded = computeStatus({ session, pod, now: at(60) }).status;
    assert.deepEqual(degraded.conditions.find((c) => c.type === "Degraded")?.status, "True");
    const running = computeStatus({ session, pod, now: at(5) });
    assert.equal(running.status.conditions.find((c) => c.type === "Degraded")?.status, "False");
    assert.ok(
      running.recheckAfterMs !== undefined && running.recheckAfterMs <= 30_000,
      "rechecks for staleness",
    );
  });

  test("pod bookkeeping: podName, startTime once, completionTime on the end, restarts from the outcome", () => {
    const session = storedSession("basic.yaml", { status: { restarts: 1 } });
    const pod = podIn(session, { kind: "running", startedAt: 7 }, { attempt: 1 });
    const running = computeStatus({ session, pod, now: at(8) }).status;
    assert.equal(running.podName, "basic-relay-1");
    assert.equal(running.startTime, iso(7));
    assert.equal(running.restarts, 1);
    assert.equal(running.completionTime, undefined);

    session.status = { ...running, startTime: iso(2) };
    const kept = computeStatus({ session, pod, now: at(9) }).status;
    assert.equal(kept.startTime, iso(2), "startTime is the first pod's");

    const restarting = computeStatus({
      session,
      pod,
      now: at(9),
      outcome: {
        kind: "Restarting",
        failure: { reason: "Evicted", message: "m", at: at(9) },
        restarts: 2,
        backoffMs: 2000,
      },
    }).status;
    assert.equal(restarting.restarts, 2);
    assert.equal(restarting.podName, undefined, "a restart clears podName");

    const done = computeStatus({
      session,
      pod,
      now: at(20),
      outcome: { kind: "Succeeded", at: at(15) },
    }).status;
    assert.equal(done.completionTime, iso(15));
  });
});

describe("conditions", () => {
  test("lastTransitionTime moves only when a condition's status changes", () => {
    const first = mergeConditions(
      undefined,
      [{ type: "Ready", status: "False", reason: "A", message: "a" }],
      at(0),
      1,
    );
    const sameStatus = mergeConditions(
      first,
      [{ type: "Ready", status: "False", reason: "B", message: "b" }],
      at(5),
      2,
    );
    assert.equal(sameStatus[0]!.lastTransitionTime, iso(0));
    assert.equal(sameStatus[0]!.reason, "B");
    assert.equal(sameStatus[0]!.observedGeneration, 2);
    const flipped = mergeConditions(
      sameStatus,
      [{ type: "Ready", status: "True", reason: "C", message: "" }],
      at(9),
      2,
    );
    assert.equal(flipped[0]!.lastTransitionTime, iso(9));
  });

  test("recomputing an unchanged situation yields an identical status (no write churn)", () => {
    const session = storedSession("basic.yaml");
    session.status = { relay: report(3, "connected") };
    const pod = podIn(session, { kind: "running" });
    const first = computeStatus({ session, pod, now: at(4) }).status;
    session.status = { ...first, relay: report(5, "connected") };
    const second = computeStatus({ session, pod, now: at(6) }).status;
    assert.deepEqual(second, first);
  });
});

describe("classifyPod", () => {
  const session = storedSession("sidecar-gpu.yaml");
  const cases: Array<[string, Parameters<typeof podIn>[1], string, string?, boolean?]> = [
    ["running", { kind: "running" }, "Active"],
    ["pending", { kind: "created" }, "Active"],
    ["succeeded", { kind: "succeeded" }, "Succeeded"],
    ["failed with exit code", { kind: "failed", exitCode: 3 }, "Failed", "PodFailed", true],
    [
      "deadline exceeded",
      { kind: "failed", reason: "DeadlineExceeded", message: "Pod was active too long" },
      "Failed",
      "DeadlineExceeded",
      false,
    ],
    [
      "evicted",
      { kind: "failed", reason: "Evicted", message: "node low on memory" },
      "Failed",
      "Evicted",
      true,
    ],
    ["relay exited 0 while the sidecar runs", { kind: "relayExited", exitCode: 0 }, "Succeeded"],
    [
      "relay exited 1 while the sidecar runs",
      { kind: "relayExited", exitCode: 1 },
      "Failed",
      "PodFailed",
      true,
    ],
  ];
  for (const [name, state, kind, reason, retryable] of cases) {
    test(name, () => {
      const verdict = classifyPod(podIn(session, state), at(100));
      assert.equal(verdict.kind, kind);
      if (verdict.kind === "Failed") {
        assert.equal(verdict.failure.reason, reason);
        assert.equal(verdict.retryable, retryable);
        assert.ok(verdict.failure.message.length > 0);
      }
    });
  }

  test("the failure time is the relay's exit (the backoff's base)", () => {
    const verdict = classifyPod(podIn(session, { kind: "failed", finishedAt: 42 }), at(100));
    assert.equal(verdict.kind === "Failed" && verdict.failure.at.getTime(), at(42).getTime());
    assert.match(verdict.kind === "Failed" ? verdict.failure.message : "", /exited with code 1/);
  });

  test("the ComfyStream sidecar OOM-killed while the relay runs: the attempt has failed, saying so", () => {
    const pod = podIn(session, { kind: "running" });
    const terminated = { exitCode: 137, reason: "OOMKilled", finishedAt: at(50) };
    pod.status!.containerStatuses = [
      { name: "relay", ready: true, restartCount: 0, image: "", imageID: "", state: { running: {} } },
      { name: "comfystream", ready: false, restartCount: 0, image: "", imageID: "", state: { terminated } },
    ];
    const verdict = classifyPod(pod, at(100));
    assert.equal(verdict.kind, "Failed");
    if (verdict.kind !== "Failed") return;
    assert.equal(verdict.failure.reason, "SidecarExited");
    assert.equal(verdict.retryable, true);
    assert.equal(verdict.failure.at.getTime(), at(50).getTime());
    assert.match(verdict.failure.message, /the comfystream sidecar exited with code 137 \(OOMKilled\)/);
    // Once the relay has given up too, the pod's failure still names the sidecar.
    pod.status!.phase = "Failed";
    pod.status!.containerStatuses[0]!.state = { terminated: { exitCode: 1, reason: "Error" } };
    const failed = classifyPod(pod, at(100));
    assert.match(
      failed.kind === "Failed" ? failed.failure.message : "",
      /relay exited with code 1 \(Error\); the comfystream sidecar exited with code 137 \(OOMKilled\)/,
    );
  });

  test("restart backoff: 1 s doubling, capped at 60 s", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 7, 8, 50].map(restartBackoffMs),
      [1000, 2000, 4000, 8000, 60_000, 60_000, 60_000],
    );
  });
});
