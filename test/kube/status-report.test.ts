// The status.relay report: its shape from a session snapshot, and the reporter's timing (about one
// write a second, state changes written soon and coalesced, one write at a time, failures retried,
// a final report). The writer here is an in-process function that records what it is given; the
// Kubernetes side is covered against a real apiserver in relay-pod-apiserver.test.ts.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  buildRelayReport,
  componentOfError,
  type RelayReportPatch,
} from "../../relay-pod/src/report/relay-report.js";
import { RelayStatusReporter } from "../../relay-pod/src/kube/status-reporter.js";
import type { SessionStatus } from "../../relay-pod/src/session/types.js";
import { SAMPLE_AUDIO_STATUS } from "../fixtures/session-status.js";

function snapshot(overrides: Partial<SessionStatus> = {}): SessionStatus {
  const queue = (size: number, capacity: number) => ({ size, capacity, dropped: 0 });
  return {
    id: "studio/cam-1",
    state: "running",
    webrtcState: "connected",
    createdAt: "2026-01-01T00:00:00.000Z",
    inputUrl: "http://gw/live/a",
    outputUrl: "http://gw/live/a-out",
    comfystreamUrl: "http://comfy:8889",
    width: 512,
    height: 512,
    frameRate: 30,
    mode: "transcode",
    encoder: "x264",
    decoder: "software",
    codecReason: "x264: no CUDA device (h264_nvenc: Cannot load libcuda.so.1)",
    queues: { decodedFrames: queue(3, 100), processedFrames: queue(1, 100), outputSegments: queue(0, 50) },
    fps: { input: 29.9712, output: 29.4 },
    frames: { in: 900, sent: 890, returned: 880, out: 870, dropped: 4, peerLimited: 0 },
    peerWindow: { capacity: 8, inFlight: 2, transcoderGop: "normal" },
    segments: { in: 30, out: 29, dropped: 1, corrupt: 2 },
    outputKeyframes: { source: "peer", reEncodedFrames: 0, idrIntervalSec: { last: 1, max: 1.1 } },
    latencyMs: { p50: 41.26, p95: 80.04, samples: 500 },
    hopLatencyMs: { forward: { p50: 5, p95: 9 }, return: { p50: 1, p95: 2 } },
    reconnects: 1,
    ffmpegRestarts: 0,
    inputClockJumps: 0,
    audio: SAMPLE_AUDIO_STATUS,
    promptsGeneration: 1,
    ...overrides,
  };
}

describe("buildRelayReport", () => {
  test("maps a running session's snapshot onto the RelayReport shape", () => {
    const now = new Date("2026-01-01T00:01:00.000Z");
    const report = buildRelayReport(snapshot(), { now, appliedPromptsGeneration: 3 });
    assert.deepEqual(report, {
      lastUpdateTime: "2026-01-01T00:01:00.000Z",
      appliedPromptsGeneration: 3,
      webrtc: { connectionState: "connected", iceConnectionState: "connected" },
      queues: {
        decodedFrames: { size: 3, capacity: 100 },
        processedFrames: { size: 1, capacity: 100 },
        outputSegments: { size: 0, capacity: 50 },
      },
      inputFps: 29.97,
      outputFps: 29.4,
      framesIn: 900,
      framesOut: 870,
      framesDropped: 4,
      framesPeerLimited: 0,
      // null: a merge patch removes a reason an earlier report wrote.
      outputKeyframes: {
        source: "peer",
        reason: null,
        idrIntervalSeconds: 1.1,
      } as unknown as RelayReportPatch["outputKeyframes"],
      encoder: "x264",
      decoder: "software",
      codecReason: "x264: no CUDA device (h264_nvenc: Cannot load libcuda.so.1)",
      segmentsIn: 30,
      segmentsOut: 29,
      segmentsDropped: 3,
      inputClockJumps: 0,
      peerOutages: null,
      inputStalled: null,
      audio: {
        mode: "passthrough",
        reason: "auto → passthrough: the workflow has no audio node",
        codecIn: "aac",
        codecOut: "aac",
        framesIn: 470,
        framesOut: 465,
        framesDropped: 0,
        framesCorrupt: 0,
        queue: { size: 5, capacity: 512 },
        avOffsetMs: 12,
      },
      latencyMs: { p50: 41.3, p95: 80 },
      reconnects: 1,
      lastError: null,
    } satisfies RelayReportPatch);
  });

  test("peer outages and a stalled input are reported (issue 17), null where the status has none", () => {
    const report = buildRelayReport(
      snapshot({
        peerOutages: {
          count: 2,
          ongoing: false,
          ongoingMs: null,
          lastGapMs: 5200.4,
          totalGapMs: 9800.6,
          lastDetectionMs: 4029.2,
        },
        input: { stalled: true, idleSec: 12, policy: { statusAfterSec: 10, endAfterSec: 300 } },
      }),
      { now: new Date(), appliedPromptsGeneration: 1 },
    );
    assert.deepEqual(report.peerOutages, { count: 2, totalGapMs: 9801, lastDetectionMs: 4029 });
    assert.equal(report.inputStalled, true);
  });

  test("encoder, decoder and their reason: passthrough says none, before the choice they are null", () => {
    const passthrough = buildRelayReport(
      snapshot({
        mode: "passthrough",
        encoder: "none (passthrough)",
        decoder: "none (passthrough)",
        codecReason: "passthrough: the input's H.264 is sent as is",
      }),
    );
    assert.equal(passthrough.encoder, "none (passthrough)");
    assert.equal(passthrough.decoder, "none (passthrough)");
    const starting = buildRelayReport(
      snapshot({ encoder: null, decoder: null, codecReason: "not chosen yet (encoder auto)" }),
    );
    assert.equal(starting.encoder, null);
    assert.equal(starting.decoder, null);
    assert.equal(starting.codecReason, "not chosen yet (encoder auto)");
  });

  test("unknown values are null (a merge patch removes what a previous pod wrote)", () => {
    const report = buildRelayReport(
      snapshot({ webrtcState: "connecting", latencyMs: { p50: null, p95: null, samples: 0 } }),
    );
    assert.equal(report.latencyMs, null);
    assert.equal(report.appliedPromptsGeneration, null);
    assert.equal(report.webrtc?.iceConnectionState, "checking");
  });

  test("lastError: the newer of the session's error and the caller's, with a component", () => {
    const session = snapshot({
      lastError: { at: "2026-01-01T00:00:10.000Z", reason: "ComfyStreamDisconnected", message: "gone" },
    });
    assert.deepEqual(buildRelayReport(session).lastError, {
      component: "comfystream",
      message: "ComfyStreamDisconnected: gone",
      time: "2026-01-01T00:00:10.000Z",
    });
    const later = { component: "comfystream", message: "prompts refused", time: "2026-01-01T00:00:20.000Z" };
    assert.deepEqual(buildRelayReport(session, { lastError: later }).lastError, later);
    assert.equal(componentOfError("TranscoderCrashed"), "ffmpeg");
    assert.equal(componentOfError("InputFailed"), "trickle-input");
    assert.equal(componentOfError("OutputFailed"), "trickle-output");
    assert.equal(componentOfError("StartFailed"), "relay");
    assert.equal(componentOfError("EncoderUnavailable"), "ffmpeg");
  });
});

describe("RelayStatusReporter", () => {
  function recorder(options: { failFirst?: number; delayMs?: number } = {}) {
    const writes: number[] = [];
    let calls = 0;
    let concurrent = 0;
    let maxConcurrent = 0;
    return {
      writes,
      get maxConcurrent() {
        return maxConcurrent;
      },
      write: async () => {
        calls++;
        concurrent++;
        maxConcurrent = Math.max(maxConcurrent, concurrent);
        try {
          if (options.delayMs) await sleep(options.delayMs);
          if (calls <= (options.failFirst ?? 0)) throw new Error("apiserver unavailable");
          writes.push(Date.now());
        } finally {
          concurrent--;
        }
      },
    };
  }
  const report = () => buildRelayReport(snapshot());

  test("writes at once, then about once per interval", async () => {
    const sink = recorder();
    const reporter = new RelayStatusReporter({ snapshot: report, write: sink.write, intervalMs: 200 });
    reporter.start();
    await sleep(1050);
    reporter.stop();
    // t = 0, 200, 400, 600, 800, 1000
    assert.ok(sink.writes.length >= 5 && sink.writes.length <= 7, `writes: ${sink.writes.length}`);
  });

  test("a burst of state changes is one prompt write, not one per change", async () => {
    const sink = recorder();
    const reporter = new RelayStatusReporter({
      snapshot: report,
      write: sink.write,
      intervalMs: 10_000,
      coalesceMs: 50,
    });
    reporter.start();
    await sleep(100);
    assert.equal(sink.writes.length, 1);
    for (let i = 0; i < 20; i++) reporter.stateChanged();
    await sleep(200);
    assert.equal(sink.writes.length, 2, "the burst became one write");
    reporter.stop();
  });

  test("one write at a time; a change during a slow write is written right after it", async () => {
    const sink = recorder({ delayMs: 150 });
    const reporter = new RelayStatusReporter({
      snapshot: report,
      write: sink.write,
      intervalMs: 10_000,
      coalesceMs: 10,
    });
    reporter.start();
    await sleep(50);
    reporter.stateChanged();
    await sleep(50);
    reporter.stateChanged();
    await sleep(400);
    reporter.stop();
    assert.equal(sink.maxConcurrent, 1);
    assert.equal(sink.writes.length, 2);
  });

  test("failed writes are retried and never thrown; the final report retries too", async () => {
    const sink = recorder({ failFirst: 3 });
    const reporter = new RelayStatusReporter({
      snapshot: report,
      write: sink.write,
      intervalMs: 50,
      finalAttempts: 3,
    });
    reporter.start();
    await waitUntil(() => sink.writes.length >= 1, 3000);
    assert.equal(reporter.stats.failures, 3);
    await reporter.finish();
    const afterFinish = sink.writes.length;
    await sleep(200);
    assert.equal(sink.writes.length, afterFinish, "no writes after the final report");

    const failing = recorder({ failFirst: 100 });
    const doomed = new RelayStatusReporter({ snapshot: report, write: failing.write, finalAttempts: 2 });
    await doomed.finish(); // resolves although every attempt fails
    assert.equal(doomed.stats.failures, 2);
  });
});

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(10);
  }
}
