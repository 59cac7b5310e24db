/**
 * The Prometheus exposition and the ai-runner status/error events, built from SessionStatus
 * snapshots written out in the test.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { createRelayMetrics, renderMetrics } from "../../relay-pod/src/report/metrics.js";
import {
  aiRunnerState,
  buildErrorEvent,
  buildStatusEvent,
  paramsHash,
  wrapEvent,
} from "../../relay-pod/src/session/status-events.js";
import type { SessionStatus } from "../../relay-pod/src/session/types.js";
import { SAMPLE_AUDIO_STATUS } from "../fixtures/session-status.js";

function snapshot(overrides: Partial<SessionStatus> = {}): SessionStatus {
  return {
    id: "sess-1",
    state: "running",
    webrtcState: "connected",
    createdAt: "2025-01-02T03:04:05.000Z",
    startedAt: "2025-01-02T03:04:06.000Z",
    inputUrl: "http://127.0.0.1:9/ai/trickle/in",
    outputUrl: "http://127.0.0.1:9/ai/trickle/in-out",
    comfystreamUrl: "http://127.0.0.1:8889",
    width: 512,
    height: 512,
    frameRate: 30,
    mode: "transcode",
    encoder: "x264",
    decoder: "software",
    codecReason: "x264: no CUDA device (h264_nvenc: Cannot load libcuda.so.1)",
    queues: {
      decodedFrames: { size: 7, capacity: 100, dropped: 4 },
      processedFrames: { size: 2, capacity: 100, dropped: 0 },
      outputSegments: { size: 1, capacity: 50, dropped: 0 },
    },
    fps: { input: 30, output: 29.5 },
    frames: { in: 1200, sent: 1190, returned: 1180, out: 1175, dropped: 10, peerLimited: 0 },
    peerWindow: { capacity: 8, inFlight: 2, transcoderGop: "normal" },
    segments: { in: 40, out: 39, dropped: 1, corrupt: 2 },
    outputKeyframes: { source: "peer", reEncodedFrames: 0, idrIntervalSec: { last: 1, max: 1.1 } },
    latencyMs: { p50: 85, p95: 140, samples: 300 },
    hopLatencyMs: { forward: { p50: 40, p95: 60 }, return: { p50: 1, p95: 2 } },
    reconnects: 3,
    ffmpegRestarts: 1,
    inputClockJumps: 2,
    audio: SAMPLE_AUDIO_STATUS,
    promptsGeneration: 2,
    ...overrides,
  };
}

/** The value of one series in the text exposition, or undefined when the series is absent. */
function seriesValue(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

describe("Prometheus metrics", () => {
  it("exposes every per-session number from the snapshot", async () => {
    const registry = createRelayMetrics(() => [snapshot()], { defaultMetrics: false });
    const { contentType, body } = await renderMetrics(registry);
    assert.match(contentType, /^text\/plain/);
    const expected: Record<string, number> = {
      'trickle_relay_session_state{session="sess-1",state="running"}': 1,
      'trickle_relay_session_state{session="sess-1",state="starting"}': 0,
      'trickle_relay_session_state{session="sess-1",state="failed"}': 0,
      'trickle_relay_queue_size{session="sess-1",queue="decoded_frames"}': 7,
      'trickle_relay_queue_size{session="sess-1",queue="processed_frames"}': 2,
      'trickle_relay_queue_size{session="sess-1",queue="output_segments"}': 1,
      'trickle_relay_queue_capacity{session="sess-1",queue="decoded_frames"}': 100,
      'trickle_relay_queue_capacity{session="sess-1",queue="output_segments"}': 50,
      'trickle_relay_queue_dropped_total{session="sess-1",queue="decoded_frames"}': 4,
      'trickle_relay_webrtc_connected{session="sess-1"}': 1,
      'trickle_relay_webrtc_state{session="sess-1",state="connected"}': 1,
      'trickle_relay_webrtc_state{session="sess-1",state="failed"}': 0,
      'trickle_relay_input_fps{session="sess-1"}': 30,
      'trickle_relay_output_fps{session="sess-1"}': 29.5,
      'trickle_relay_frames_in_total{session="sess-1"}': 1200,
      'trickle_relay_frames_sent_total{session="sess-1"}': 1190,
      'trickle_relay_frames_returned_total{session="sess-1"}': 1180,
      'trickle_relay_frames_out_total{session="sess-1"}': 1175,
      'trickle_relay_frames_dropped_total{session="sess-1"}': 10,
      'trickle_relay_segments_in_total{session="sess-1"}': 40,
      'trickle_relay_segments_out_total{session="sess-1"}': 39,
      'trickle_relay_segments_dropped_total{session="sess-1"}': 1,
      'trickle_relay_segments_corrupt_total{session="sess-1"}': 2,
      'trickle_relay_input_clock_jumps_total{session="sess-1"}': 2,
      'trickle_relay_frame_latency_seconds{session="sess-1",quantile="0.5"}': 0.085,
      'trickle_relay_frame_latency_seconds{session="sess-1",quantile="0.95"}': 0.14,
      'trickle_relay_reconnects_total{session="sess-1"}': 3,
      'trickle_relay_ffmpeg_restarts_total{session="sess-1"}': 1,
      'trickle_relay_prompts_generation{session="sess-1"}': 2,
      'trickle_relay_video_codec_info{session="sess-1",encoder="x264",decoder="software"}': 1,
      'trickle_relay_session_start_time_seconds{session="sess-1"}':
        Date.parse("2025-01-02T03:04:05.000Z") / 1000,
    };
    for (const [series, value] of Object.entries(expected)) {
      assert.equal(seriesValue(body, series), value, series);
    }
  });

  it("declares counters as counters and gauges as gauges", async () => {
    const { body } = await renderMetrics(createRelayMetrics(() => [snapshot()], { defaultMetrics: false }));
    assert.match(body, /^# TYPE trickle_relay_frames_in_total counter$/m);
    assert.match(body, /^# TYPE trickle_relay_reconnects_total counter$/m);
    assert.match(body, /^# TYPE trickle_relay_queue_size gauge$/m);
    assert.match(body, /^# TYPE trickle_relay_session_state gauge$/m);
    // Every per-session counter ends in _total (Prometheus naming).
    for (const match of body.matchAll(/^# TYPE (trickle_relay_\S+) counter$/gm)) {
      assert.match(match[1]!, /_total$/);
    }
  });

  it("follows the sessions on each scrape and leaves out unknown latency", async () => {
    let statuses = [snapshot({ latencyMs: { p50: null, p95: null, samples: 0 } })];
    let calls = 0;
    const registry = createRelayMetrics(
      () => {
        calls++;
        return statuses;
      },
      { defaultMetrics: false },
    );
    let { body } = await renderMetrics(registry);
    assert.equal(calls, 1, "one snapshot per scrape");
    assert.doesNotMatch(body, /trickle_relay_frame_latency_seconds\{/);

    statuses = [
      snapshot({
        id: "sess-2",
        state: "failed",
        webrtcState: "failed",
        frames: { ...snapshot().frames, in: 5 },
      }),
    ];
    await new Promise((resolve) => setImmediate(resolve));
    ({ body } = await renderMetrics(registry));
    assert.equal(calls, 2);
    assert.equal(seriesValue(body, 'trickle_relay_frames_in_total{session="sess-2"}'), 5);
    assert.equal(seriesValue(body, 'trickle_relay_session_state{session="sess-2",state="failed"}'), 1);
    assert.equal(seriesValue(body, 'trickle_relay_webrtc_connected{session="sess-2"}'), 0);
    assert.doesNotMatch(body, /session="sess-1"/, "a removed session's series disappear");
  });

  it("includes the default process metrics unless told not to", async () => {
    const { body } = await renderMetrics(createRelayMetrics(() => []));
    assert.match(body, /^process_cpu_user_seconds_total /m);
    assert.match(body, /^nodejs_heap_size_used_bytes /m);
  });
});

describe("ai-runner events", () => {
  it("buildStatusEvent fills ai-runner's status schema and our relay block", () => {
    const params = [{ "1": { class_type: "LoadTensor", inputs: {} } }];
    const status = snapshot({
      lastPromptUpdate: { at: "2025-01-02T03:10:00.000Z", ok: true },
      lastError: { at: "2025-01-02T03:09:00.000Z", reason: "comfystream-reconnect", message: "ICE failed" },
    });
    const event = buildStatusEvent(status, {
      startTimeMs: 1_700_000_000_000,
      lastParams: params,
      nowMs: 1_700_000_123_000,
    });
    assert.equal(event.type, "status");
    assert.equal(event.pipeline, "comfyui");
    assert.equal(event.start_time, 1_700_000_000_000);
    assert.equal(event.state, "ONLINE");
    assert.equal(event.timestamp, 1_700_000_123_000);
    assert.equal(event.last_status_timestamp, 1_700_000_123_000);
    assert.equal(event.last_state_update_time, Date.parse("2025-01-02T03:04:06.000Z"));
    assert.deepEqual(event.input_status, { last_input_time: null, fps: 30 });
    const inference = event.inference_status as Record<string, unknown>;
    assert.equal(inference.fps, 29.5);
    assert.equal(inference.restart_count, 3);
    assert.equal(inference.last_error, "comfystream-reconnect: ICE failed");
    assert.equal(inference.last_error_time, Date.parse("2025-01-02T03:09:00.000Z"));
    assert.equal(inference.last_params_update_time, Date.parse("2025-01-02T03:10:00.000Z"));
    assert.deepEqual(inference.last_params, params);
    assert.equal(inference.last_params_hash, paramsHash(params));
    const relay = event.relay as Record<string, unknown>;
    assert.equal(relay.session_id, "sess-1");
    assert.deepEqual(relay.queue_sizes, { decoded_frames: 7, processed_frames: 2, output_segments: 1 });
    assert.deepEqual(relay.latency_ms, { p50: 85, p95: 140 });
    assert.equal(relay.ffmpeg_restarts, 1);
    // The whole event survives JSON (it goes over the events channel).
    assert.deepEqual(JSON.parse(JSON.stringify(event)), event);
  });

  it("buildStatusEvent can send the params hash without the params, with a chosen pipeline and times", () => {
    const event = buildStatusEvent(snapshot(), {
      startTimeMs: 1,
      pipeline: "comfystream",
      lastParams: { a: 1 },
      omitLastParams: true,
      lastStateUpdateTimeMs: 5,
      lastInputTimeMs: 6,
      lastOutputTimeMs: 7,
    });
    const inference = event.inference_status as Record<string, unknown>;
    assert.equal(event.pipeline, "comfystream");
    assert.equal(event.last_state_update_time, 5);
    assert.deepEqual(event.input_status, { last_input_time: 6, fps: 30 });
    assert.equal(inference.last_output_time, 7);
    assert.equal(inference.last_params, null);
    assert.equal(inference.last_params_hash, paramsHash({ a: 1 }));
  });

  it("maps our states to ai-runner's", () => {
    const cases: Array<[Partial<SessionStatus>, string]> = [
      [{ state: "starting" }, "LOADING"],
      [{ state: "connecting", webrtcState: "connecting" }, "LOADING"],
      [{ state: "running" }, "ONLINE"],
      [{ state: "degraded", webrtcState: "disconnected" }, "DEGRADED_INFERENCE"],
      [{ state: "degraded", webrtcState: "connected", fps: { input: 0, output: 0 } }, "DEGRADED_INPUT"],
      [{ state: "completed" }, "OFFLINE"],
      [{ state: "stopped" }, "OFFLINE"],
      [{ state: "failed" }, "ERROR"],
    ];
    for (const [overrides, expected] of cases) {
      assert.equal(aiRunnerState(snapshot(overrides)), expected, JSON.stringify(overrides));
    }
  });

  it("the params hash is md5 of Python's json.dumps(sort_keys=True)", () => {
    // Python: hashlib.md5(json.dumps({"b": [1, "é"], "a": None}, sort_keys=True).encode()).hexdigest()
    const python = '{"a": null, "b": [1, "\\u00e9"]}';
    assert.equal(paramsHash({ b: [1, "é"], a: null }), createHash("md5").update(python).digest("hex"));
  });

  it("buildErrorEvent has ai-runner's fields and wrapEvent frames it for the channel", () => {
    const event = buildErrorEvent(
      { message: "ICE failed", reason: "comfystream-reconnect", at: "2025-01-02T03:09:00.000Z" },
      { nowMs: 42 },
    );
    assert.deepEqual(event, {
      type: "error",
      timestamp: 42,
      pipeline: "comfyui",
      message: "comfystream-reconnect: ICE failed",
      time: Date.parse("2025-01-02T03:09:00.000Z"),
      reason: "comfystream-reconnect",
    });
    assert.deepEqual(wrapEvent(event), { event, queue_event_type: "ai_stream_events" });
    assert.equal(buildErrorEvent({ message: "x" }, { nowMs: 9 }).time, 9);
  });
});
