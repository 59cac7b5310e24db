/**
 * The standalone service's REST API over real HTTP on loopback. The sessions behind it are
 * `ScriptedSession`s: a fake that reports a status the test sets and records what it is asked to do.
 * The real RelaySession needs a trickle server, ffmpeg and a WebRTC peer, and is tested with them
 * elsewhere; what is under test here is the HTTP contract and the session bookkeeping.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type http from "node:http";
import { after, before, describe, it } from "node:test";
import { buildApiServer } from "../../relay-pod/src/server/api.js";
import {
  SessionManager,
  type ManagedSession,
  type SessionManagerOptions,
} from "../../relay-pod/src/server/session-manager.js";
import { createRelayMetrics } from "../../relay-pod/src/report/metrics.js";
import { defaultOutputUrl } from "../../crds/src/output-url.js";
import type { RelaySessionConfig, SessionState, SessionStatus } from "../../relay-pod/src/session/types.js";
import { SAMPLE_AUDIO_STATUS } from "../fixtures/session-status.js";

const WORKFLOW = {
  "1": { class_type: "LoadTensor", inputs: {} },
  "2": { class_type: "SaveTensor", inputs: {} },
};
const VALID_START = {
  input_stream_url: "http://127.0.0.1:9/ai/trickle/stream1",
  comfystream_url: "http://127.0.0.1:8889",
  prompts: [WORKFLOW],
};

/** A fake session: its status is whatever the test scripts; it never touches the network. */
class ScriptedSession extends EventEmitter implements ManagedSession {
  readonly id: string;
  state: SessionState = "starting";
  startError: Error | undefined;
  promptResult: { ok: boolean; reply?: unknown; error?: string } = {
    ok: true,
    reply: { type: "prompts_updated" },
  };
  readonly promptUpdates: unknown[] = [];
  stopCalls = 0;
  lastError: SessionStatus["lastError"];

  constructor(readonly config: RelaySessionConfig) {
    super();
    this.id = config.id;
  }

  async start(): Promise<void> {
    if (this.startError) throw this.startError;
    this.state = "connecting";
  }

  async stop(): Promise<void> {
    this.stopCalls++;
    this.end("stopped");
  }

  /** Moves to a final state and says so, as a real session does when its input ends or it gives up. */
  end(state: "completed" | "stopped" | "failed"): void {
    if (this.state === "completed" || this.state === "stopped" || this.state === "failed") return;
    this.state = state;
    this.emit("end", this.status());
  }

  async updatePrompts(prompts: unknown): Promise<{ ok: boolean; reply?: unknown; error?: string }> {
    this.promptUpdates.push(prompts);
    return this.promptResult;
  }

  status(): SessionStatus {
    const c = this.config;
    return {
      id: c.id,
      state: this.state,
      webrtcState: this.state === "running" ? "connected" : "new",
      createdAt: "2025-01-02T03:04:05.000Z",
      inputUrl: c.inputUrl,
      outputUrl: c.outputUrl,
      ...(c.controlUrl ? { controlUrl: c.controlUrl } : {}),
      comfystreamUrl: c.comfystreamUrl,
      width: c.width,
      height: c.height,
      frameRate: c.frameRate,
      mode: c.mode,
      encoder: "x264",
      decoder: "software",
      codecReason: "x264: no CUDA device (h264_nvenc: Cannot load libcuda.so.1)",
      queues: {
        decodedFrames: { size: 3, capacity: c.queueCapacities.decodedFrames, dropped: 1 },
        processedFrames: { size: 2, capacity: c.queueCapacities.processedFrames, dropped: 0 },
        outputSegments: { size: 1, capacity: c.queueCapacities.outputSegments, dropped: 0 },
      },
      fps: { input: 30, output: 29.5 },
      frames: { in: 300, sent: 298, returned: 290, out: 288, dropped: 2, peerLimited: 0 },
      peerWindow: { capacity: 8, inFlight: 2, transcoderGop: "normal" },
      segments: { in: 10, out: 9, dropped: 0, corrupt: 1 },
      outputKeyframes: { source: "peer", reEncodedFrames: 0, idrIntervalSec: { last: 1, max: 1.1 } },
      latencyMs: { p50: 80, p95: 120, samples: 250 },
      hopLatencyMs: { forward: { p50: 40, p95: 60 }, return: { p50: 1, p95: 2 } },
      reconnects: 1,
      ffmpegRestarts: 0,
      inputClockJumps: 0,
      audio: SAMPLE_AUDIO_STATUS,
      promptsGeneration: 1,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }
}

interface Harness {
  baseUrl: string;
  manager: SessionManager;
  created: Map<string, ScriptedSession>;
  trickleRequests: string[];
  close(): Promise<void>;
}

async function startHarness(managerOptions: Partial<SessionManagerOptions> = {}): Promise<Harness> {
  const created = new Map<string, ScriptedSession>();
  const manager = new SessionManager({
    createSession: (config) => {
      const session = new ScriptedSession(config);
      created.set(config.id, session);
      return session;
    },
    defaults: { iceAddresses: ["127.0.0.1"] },
    ...managerOptions,
  });
  const trickleRequests: string[] = [];
  const trickleServer = {
    handle(req: http.IncomingMessage, res: http.ServerResponse): boolean {
      if (req.url === "/ai/trickle/declined") return false;
      trickleRequests.push(`${req.method} ${req.url}`);
      res.writeHead(200, { "content-type": "text/plain" }).end("trickle");
      return true;
    },
  };
  const app = buildApiServer({
    sessions: manager,
    metricsRegistry: createRelayMetrics(() => manager.statuses(), { defaultMetrics: false }),
    trickleServer,
  });
  const address = await app.listen({ port: 0, host: "127.0.0.1" });
  return {
    baseUrl: address,
    manager,
    created,
    trickleRequests,
    async close() {
      await app.close();
      await manager.close();
    },
  };
}

async function call(
  h: Harness,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = { "content-type": "application/json" },
): Promise<{ status: number; body: Record<string, unknown>; text: string; contentType: string | null }> {
  const init: RequestInit = { method, headers: body === undefined ? {} : headers };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  const res = await fetch(h.baseUrl + path, init);
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // Not JSON (the metrics and trickle routes); the text is checked instead.
  }
  return { status: res.status, body: parsed, text, contentType: res.headers.get("content-type") };
}

function assertError(
  res: { status: number; body: Record<string, unknown> },
  status: number,
  mentions: string,
): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.success, false);
  assert.equal(typeof res.body.error, "string");
  assert.match(res.body.error as string, new RegExp(mentions), `error should mention ${mentions}`);
}

describe("REST API (older Trickle Relay Service compatible)", () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(async () => {
    await h.close();
  });

  it("GET /health answers exactly {status: healthy}", async () => {
    const res = await call(h, "GET", "/health");
    assert.equal(res.status, 200);
    assert.equal(res.text, '{"status":"healthy"}');
  });

  it("POST /session/start starts a session with defaults and answers in the old service's shape", async () => {
    const res = await call(h, "POST", "/session/start", { ...VALID_START, session_id: "s-defaults" });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, {
      success: true,
      session_id: "s-defaults",
      input_stream_url: VALID_START.input_stream_url,
      output_stream_url: `${VALID_START.input_stream_url}-out`,
      comfystream_url: VALID_START.comfystream_url,
    });
    const config = h.created.get("s-defaults")!.config;
    assert.equal(config.width, 512);
    assert.equal(config.height, 512);
    assert.equal(config.frameRate, 30);
    assert.equal(config.mode, "transcode");
    assert.equal(config.segmentDurationSec, 1);
    assert.deepEqual(config.queueCapacities, {
      decodedFrames: 100,
      processedFrames: 100,
      outputSegments: 50,
    });
    assert.deepEqual(config.iceAddresses, ["127.0.0.1"]);
    assert.deepEqual(config.prompts, [WORKFLOW]);
  });

  it("POST /session/start passes the optional fields through", async () => {
    const res = await call(h, "POST", "/session/start", {
      ...VALID_START,
      session_id: "s-options",
      output_stream_url: "https://example.test/ai/trickle/custom-out",
      control_url: "http://127.0.0.1:9/ai/trickle/stream1-control",
      events_url: "http://127.0.0.1:9/ai/trickle/stream1-events",
      width: 640,
      height: 384,
      frame_rate: 24,
      peer_window_frames: 6,
      encoder: "x264",
      prompts: WORKFLOW,
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.output_stream_url, "https://example.test/ai/trickle/custom-out");
    const config = h.created.get("s-options")!.config;
    assert.equal(config.controlUrl, "http://127.0.0.1:9/ai/trickle/stream1-control");
    assert.equal(config.eventsUrl, "http://127.0.0.1:9/ai/trickle/stream1-events");
    assert.deepEqual([config.width, config.height, config.frameRate], [640, 384, 24]);
    assert.equal(config.peerWindowFrames, 6);
    assert.equal(config.encoder, "x264");
    assert.deepEqual(config.prompts, [WORKFLOW], "a single workflow becomes ComfyStream's list");
  });

  it("POST /session/start accepts prompts as a JSON string and a body sent without a JSON content type", async () => {
    const res = await call(
      h,
      "POST",
      "/session/start",
      { ...VALID_START, session_id: "s-string-prompts", prompts: JSON.stringify(WORKFLOW) },
      { "content-type": "application/x-www-form-urlencoded" },
    );
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(h.created.get("s-string-prompts")!.config.prompts, [WORKFLOW]);
  });

  it("POST /session/start generates a session id when none is given", async () => {
    const res = await call(h, "POST", "/session/start", VALID_START);
    assert.equal(res.status, 200);
    assert.match(res.body.session_id as string, /^[0-9a-f-]{36}$/);
    await call(h, "DELETE", `/session/${res.body.session_id as string}`);
  });

  it("the default output URL keeps a query string intact", async () => {
    const input = "https://orch.test:8935/ai/trickle/abc?token=x-y&n=1";
    const res = await call(h, "POST", "/session/start", {
      ...VALID_START,
      session_id: "s-query",
      input_stream_url: input,
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.output_stream_url, "https://orch.test:8935/ai/trickle/abc-out?token=x-y&n=1");
    assert.equal(defaultOutputUrl("http://h/a#frag"), "http://h/a-out#frag");
    assert.equal(defaultOutputUrl("http://h/ai/trickle/s"), "http://h/ai/trickle/s-out");
  });

  describe("POST /session/start validation", () => {
    const cases: Array<[string, unknown, string]> = [
      [
        "missing input_stream_url",
        { ...VALID_START, input_stream_url: undefined },
        "input_stream_url is required",
      ],
      [
        "non-http input_stream_url",
        { ...VALID_START, input_stream_url: "rtmp://x/y" },
        "input_stream_url must use http",
      ],
      [
        "unparsable input_stream_url",
        { ...VALID_START, input_stream_url: "not a url" },
        "input_stream_url is not a valid URL",
      ],
      ["numeric input_stream_url", { ...VALID_START, input_stream_url: 5 }, "input_stream_url must be"],
      [
        "missing comfystream_url",
        { ...VALID_START, comfystream_url: undefined },
        "comfystream_url is required",
      ],
      [
        "ftp comfystream_url",
        { ...VALID_START, comfystream_url: "ftp://x" },
        "comfystream_url must use http",
      ],
      ["bad output_stream_url", { ...VALID_START, output_stream_url: "file:///tmp/x" }, "output_stream_url"],
      ["bad control_url", { ...VALID_START, control_url: "nope" }, "control_url"],
      ["bad events_url", { ...VALID_START, events_url: "ws://x/y" }, "events_url"],
      ["missing prompts", { ...VALID_START, prompts: undefined }, "prompts is required"],
      ["numeric prompts", { ...VALID_START, prompts: 5 }, "prompts"],
      ["prompts string that is not JSON", { ...VALID_START, prompts: "a cat" }, "prompts"],
      ["empty prompts list", { ...VALID_START, prompts: [] }, "prompts"],
      ["prompts list of strings", { ...VALID_START, prompts: ["x"] }, "prompts"],
      [
        "width not a multiple of 8",
        { ...VALID_START, width: 500 },
        "width must be an integer from 64 to 2048",
      ],
      ["width too small", { ...VALID_START, width: 32 }, "width"],
      ["height too large", { ...VALID_START, height: 4096 }, "height must be"],
      ["height as a string", { ...VALID_START, height: "512" }, "height"],
      ["fractional width", { ...VALID_START, width: 512.5 }, "width"],
      ["frame_rate zero", { ...VALID_START, frame_rate: 0 }, "frame_rate must be a number from 1 to 60"],
      ["frame_rate too high", { ...VALID_START, frame_rate: 120 }, "frame_rate"],
      [
        "peer_window_frames 1 (the real ComfyStream stalls)",
        { ...VALID_START, peer_window_frames: 1 },
        "peer_window_frames must be a whole number from 2 to 120",
      ],
      ["peer_window_frames fractional", { ...VALID_START, peer_window_frames: 2.5 }, "peer_window_frames"],
      ["encoder cuda", { ...VALID_START, encoder: "cuda" }, 'encoder must be "auto"'],
      ["encoder upper case", { ...VALID_START, encoder: "NVENC" }, "encoder"],
      ["session_id with a slash", { ...VALID_START, session_id: "a/b" }, "session_id must be"],
      ["session_id a number", { ...VALID_START, session_id: 7 }, "session_id"],
      ["body an array", [VALID_START], "request body must be a JSON object"],
    ];
    for (const [name, body, mentions] of cases) {
      it(`400 for ${name}`, async () => {
        assertError(await call(h, "POST", "/session/start", body), 400, mentions);
      });
    }

    it("400 with our error shape for malformed JSON", async () => {
      assertError(await call(h, "POST", "/session/start", '{"input_stream_url": '), 400, "not valid JSON");
    });

    describe("a body that is not JSON: the reply names the content-type received and what is expected", () => {
      /** POSTs raw bytes with exactly this content-type header (none when undefined). */
      async function postRaw(body: string, contentType: string | undefined) {
        const res = await fetch(`${h.baseUrl}/session/start`, {
          method: "POST",
          // A Uint8Array body makes fetch send no content-type of its own.
          headers: contentType === undefined ? {} : { "content-type": contentType },
          body: new TextEncoder().encode(body),
        });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      }
      const expected = "expected content-type application/json with a JSON object";

      it("415 for form fields (curl -d key=value)", async () => {
        const form =
          "input_stream_url=http%3A%2F%2F127.0.0.1%3A8890%2Fai%2Ftrickle%2Fmystream&comfystream_url=x";
        const res = await postRaw(form, "application/x-www-form-urlencoded");
        assertError(res, 415, 'received content-type "application/x-www-form-urlencoded"');
        assert.ok(
          (res.body.error as string).includes(`body starting "${form.slice(0, 40)}…" (form fields)`),
          res.body.error as string,
        );
        assert.ok((res.body.error as string).includes(expected), res.body.error as string);
      });

      it("415 for plain text", async () => {
        const res = await postRaw("start my stream please", "text/plain;charset=UTF-8");
        assertError(
          res,
          415,
          'received content-type "text/plain;charset=UTF-8" with a body starting "start my stream please"',
        );
        assert.ok((res.body.error as string).includes(expected));
      });

      it("415 for text without any content-type", async () => {
        assertError(await postRaw("hello", undefined), 415, "received no content-type");
      });

      it("415 for a content-type header that is not a media type", async () => {
        assertError(
          await postRaw("{}", "json"),
          415,
          'content-type "json" is not a valid media type.*application/json',
        );
      });

      it("400 naming where the JSON stops being valid", async () => {
        const res = await postRaw('{oops: "x"}', "application/json");
        assertError(
          res,
          400,
          "not valid JSON: Expected property name .* at position 1 \\(line 1 column 2\\) \\(send a JSON object\\)$",
        );
      });

      it("400 for JSON that ends early, with its length", async () => {
        assertError(
          await postRaw('{"input_stream_url": ', "application/json"),
          400,
          "not valid JSON: it ends after 21 bytes, before the JSON value is complete",
        );
      });

      it("400 (not 415) for malformed JSON sent as form data, as curl -d does", async () => {
        const res = await postRaw('{"input_stream_url": }', "application/x-www-form-urlencoded");
        assertError(res, 400, "not valid JSON: Unexpected token '}'");
        assert.ok(
          (res.body.error as string).includes(
            'content-type "application/x-www-form-urlencoded"; ' + expected,
          ),
        );
      });

      it("400 for a __proto__ key (fastify's prototype-poisoning guard is kept)", async () => {
        assertError(await postRaw('{"__proto__": {"x": 1}}', "application/json"), 400, "__proto__");
      });
    });

    it("400 for an empty body", async () => {
      const res = await fetch(`${h.baseUrl}/session/start`, {
        method: "POST",
        headers: { "content-type": "application/json" },
      });
      assertError({ status: res.status, body: (await res.json()) as Record<string, unknown> }, 400, "empty");
    });

    it("413 for a body over the limit", async () => {
      const huge = {
        ...VALID_START,
        prompts: [{ "1": { class_type: "X", inputs: { text: "x".repeat(9 * 1024 * 1024) } } }],
      };
      assertError(await call(h, "POST", "/session/start", huge), 413, "larger than");
    });

    it("no session is created by a refused request", async () => {
      const before = h.manager.list().length;
      await call(h, "POST", "/session/start", { ...VALID_START, width: 1 });
      assert.equal(h.manager.list().length, before);
    });
  });

  it("409 for a session_id already in use", async () => {
    await call(h, "POST", "/session/start", { ...VALID_START, session_id: "s-dup" });
    const res = await call(h, "POST", "/session/start", { ...VALID_START, session_id: "s-dup" });
    assertError(res, 409, 'session_id "s-dup" is already in use');
    assert.equal(res.body.session_id, "s-dup");
  });

  it("GET /session/{id}/status reports the old service's fields and ours", async () => {
    await call(h, "POST", "/session/start", {
      ...VALID_START,
      session_id: "s-status",
      control_url: "http://127.0.0.1:9/ai/trickle/stream1-control",
    });
    const scripted = h.created.get("s-status")!;
    scripted.state = "running";
    scripted.lastError = {
      at: "2025-01-02T03:05:00.000Z",
      reason: "comfystream-reconnect",
      message: "ICE failed",
    };
    const res = await call(h, "GET", "/session/s-status/status");
    assert.equal(res.status, 200);
    assert.equal(res.body.success, true);
    const session = res.body.session as Record<string, unknown>;
    // The older service's fields, same names.
    for (const field of [
      "session_id",
      "status",
      "input_stream_url",
      "output_stream_url",
      "comfystream_url",
      "width",
      "height",
      "created_at",
      "queue_sizes",
      "queue_capacity",
      "processing_health",
      "webrtc_state",
    ]) {
      assert.ok(field in session, `status has ${field}`);
    }
    assert.equal(session.session_id, "s-status");
    assert.equal(session.status, "running");
    assert.equal(session.webrtc_state, "connected");
    assert.equal(session.created_at, "2025-01-02T03:04:05.000Z");
    assert.equal(session.control_url, "http://127.0.0.1:9/ai/trickle/stream1-control");
    assert.equal(session.events_url, null);
    assert.deepEqual(session.queue_sizes, { decoded_frames: 3, processed_frames: 2, output_segments: 1 });
    assert.deepEqual(session.queue_capacity, {
      decoded_frames: 100,
      processed_frames: 100,
      output_segments: 50,
    });
    assert.deepEqual(session.processing_health, {
      input_to_webrtc_backlog: 3,
      webrtc_to_output_backlog: 2,
      output_publishing_backlog: 1,
      bottleneck: "No bottleneck detected",
    });
    assert.deepEqual(session.fps, { input: 30, output: 29.5 });
    assert.deepEqual(session.frames, {
      in: 300,
      sent: 298,
      returned: 290,
      out: 288,
      dropped: 2,
      peer_limited: 0,
    });
    assert.deepEqual(session.peer_window, {
      capacity: 8,
      in_flight: 2,
      transcoder_gop: "normal",
      reason: null,
    });
    assert.deepEqual(session.segments, { in: 10, out: 9, dropped: 0, corrupt: 1 });
    assert.deepEqual(session.output_keyframes, {
      source: "peer",
      reason: null,
      re_encoded_frames: 0,
      idr_interval_sec: { last: 1, max: 1.1 },
    });
    assert.deepEqual(session.latency_ms, { p50: 80, p95: 120, samples: 250 });
    assert.equal(session.reconnects, 1);
    assert.equal(session.encoder, "x264");
    assert.equal(session.decoder, "software");
    assert.equal(session.codec_reason, "x264: no CUDA device (h264_nvenc: Cannot load libcuda.so.1)");
    assert.deepEqual(session.last_error, {
      reason: "comfystream-reconnect",
      message: "ICE failed",
      at: "2025-01-02T03:05:00.000Z",
    });
  });

  it("GET /session/{id}/status is 404 for an unknown id", async () => {
    assertError(await call(h, "GET", "/session/nope/status"), 404, 'session "nope" not found');
  });

  it("GET /sessions lists every session with the status objects", async () => {
    const res = await call(h, "GET", "/sessions");
    assert.equal(res.status, 200);
    assert.equal(res.body.success, true);
    const sessions = res.body.sessions as Array<Record<string, unknown>>;
    const ids = sessions.map((s) => s.session_id);
    assert.ok(ids.includes("s-defaults") && ids.includes("s-status"));
    const one = sessions.find((s) => s.session_id === "s-status")!;
    const single = await call(h, "GET", "/session/s-status/status");
    assert.deepEqual(one, single.body.session);
  });

  it("POST /session/{id}/prompts sends {prompts} and ai-runner's {prompt} to the session", async () => {
    const scripted = h.created.get("s-status")!;
    let res = await call(h, "POST", "/session/s-status/prompts", { prompts: [WORKFLOW] });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { success: true, reply: { type: "prompts_updated" } });
    res = await call(h, "POST", "/session/s-status/prompts", { prompt: JSON.stringify(WORKFLOW) });
    assert.equal(res.status, 200);
    assert.deepEqual(scripted.promptUpdates, [[WORKFLOW], [WORKFLOW]]);
  });

  it("POST /session/{id}/prompts: 400 without prompts, 404 unknown, 502 when ComfyStream refuses", async () => {
    assertError(
      await call(h, "POST", "/session/s-status/prompts", { width: 512 }),
      400,
      "prompts is required",
    );
    assertError(await call(h, "POST", "/session/s-status/prompts", { prompts: 3 }), 400, "prompts");
    assertError(await call(h, "POST", "/session/s-status/prompts", "{oops"), 400, "not valid JSON");
    assertError(await call(h, "POST", "/session/missing/prompts", { prompts: [WORKFLOW] }), 404, "not found");
    const scripted = h.created.get("s-status")!;
    scripted.promptResult = { ok: false, error: "data channel not open" };
    const res = await call(h, "POST", "/session/s-status/prompts", { prompts: [WORKFLOW] });
    assertError(res, 502, "data channel not open");
    scripted.promptResult = { ok: true };
  });

  it("DELETE /session/{id} stops it, keeps it visible as stopped, and a second DELETE removes it", async () => {
    await call(h, "POST", "/session/start", { ...VALID_START, session_id: "s-delete" });
    let res = await call(h, "DELETE", "/session/s-delete");
    assert.equal(res.status, 200);
    assert.equal(res.body.success, true);
    assert.match(res.body.message as string, /Session s-delete stopped/);
    assert.equal(h.created.get("s-delete")!.stopCalls, 1);
    res = await call(h, "GET", "/session/s-delete/status");
    assert.equal((res.body.session as Record<string, unknown>).status, "stopped");
    assertError(
      await call(h, "POST", "/session/s-delete/prompts", { prompts: [WORKFLOW] }),
      409,
      "has ended",
    );
    res = await call(h, "DELETE", "/session/s-delete");
    assert.equal(res.status, 200);
    assert.match(res.body.message as string, /removed/);
    assertError(await call(h, "GET", "/session/s-delete/status"), 404, "not found");
  });

  it("DELETE /session/{id} is 404 for an unknown id", async () => {
    assertError(await call(h, "DELETE", "/session/nope"), 404, 'session "nope" not found');
  });

  it("an ended session's id can be used again", async () => {
    await call(h, "POST", "/session/start", { ...VALID_START, session_id: "s-reuse" });
    h.created.get("s-reuse")!.end("failed");
    const res = await call(h, "POST", "/session/start", { ...VALID_START, session_id: "s-reuse" });
    assert.equal(res.status, 200);
    const status = await call(h, "GET", "/session/s-reuse/status");
    assert.equal((status.body.session as Record<string, unknown>).status, "connecting");
  });

  it("GET /metrics serves Prometheus text with per-session series", async () => {
    const res = await call(h, "GET", "/metrics");
    assert.equal(res.status, 200);
    assert.match(res.contentType ?? "", /^text\/plain/);
    assert.match(res.text, /trickle_relay_frames_in_total\{session="s-status"\} 300/);
    assert.match(res.text, /trickle_relay_session_state\{session="s-status",state="running"\} 1/);
  });

  it("unknown routes are 404 JSON", async () => {
    assertError(await call(h, "GET", "/nope"), 404, "no route for GET /nope");
    assertError(await call(h, "PUT", "/session/start", {}), 404, "no route for PUT /session/start");
  });

  it("/ai/trickle/ requests go to the trickle handler, and nothing else does", async () => {
    const before = h.trickleRequests.length;
    const res = await call(h, "GET", "/ai/trickle/stream1/0");
    assert.equal(res.status, 200);
    assert.equal(res.text, "trickle");
    const post = await call(h, "POST", "/ai/trickle/stream1", "raw-bytes", { "content-type": "video/mp2t" });
    assert.equal(post.text, "trickle");
    assert.deepEqual(h.trickleRequests.slice(before), [
      "GET /ai/trickle/stream1/0",
      "POST /ai/trickle/stream1",
    ]);
    // Neither lookalike paths nor the API's own routes reach it.
    await call(h, "GET", "/ai/trickles/x");
    await call(h, "GET", "/ai/trickle");
    await call(h, "GET", "/health");
    await call(h, "GET", "/sessions");
    assert.equal(h.trickleRequests.length, before + 2);
    // A request the trickle handler declines falls through to the API's 404.
    assertError(await call(h, "GET", "/ai/trickle/declined"), 404, "no route");
  });
});

describe("session limits and retention", () => {
  it("429 once maxSessions sessions are running; ended sessions do not count", async () => {
    const h = await startHarness({ maxSessions: 2 });
    try {
      for (const id of ["a", "b"]) {
        assert.equal(
          (await call(h, "POST", "/session/start", { ...VALID_START, session_id: id })).status,
          200,
        );
      }
      assertError(
        await call(h, "POST", "/session/start", { ...VALID_START, session_id: "c" }),
        429,
        "maximum of 2 sessions",
      );
      h.created.get("a")!.end("completed");
      assert.equal(
        (await call(h, "POST", "/session/start", { ...VALID_START, session_id: "c" })).status,
        200,
      );
      const list = await call(h, "GET", "/sessions");
      const states = Object.fromEntries(
        (list.body.sessions as Array<Record<string, unknown>>).map((s) => [s.session_id, s.status]),
      );
      assert.deepEqual(states, { a: "completed", b: "connecting", c: "connecting" });
    } finally {
      await h.close();
    }
  });

  it("ended sessions are removed after the retention time", async () => {
    const h = await startHarness({ endedRetentionMs: 50 });
    try {
      await call(h, "POST", "/session/start", { ...VALID_START, session_id: "short" });
      h.created.get("short")!.end("completed");
      assert.equal((await call(h, "GET", "/session/short/status")).status, 200);
      await new Promise((resolve) => setTimeout(resolve, 120));
      assertError(await call(h, "GET", "/session/short/status"), 404, "not found");
    } finally {
      await h.close();
    }
  });

  it("a session whose start() fails answers 500 with the reason and stays listed as ended", async () => {
    const h = await startHarness({
      createSession: (config) => {
        const session = new ScriptedSession(config);
        session.startError = new Error("ffmpeg not found");
        session.lastError = {
          at: "2025-01-02T03:04:06.000Z",
          reason: "ffmpeg-missing",
          message: "ffmpeg not found",
        };
        return session;
      },
    });
    try {
      const res = await call(h, "POST", "/session/start", { ...VALID_START, session_id: "broken" });
      assertError(res, 500, "failed to start: ffmpeg not found");
      assert.equal(res.body.session_id, "broken");
      const status = await call(h, "GET", "/session/broken/status");
      assert.equal((status.body.session as Record<string, unknown>).status, "stopped");
      assert.deepEqual(
        (status.body.session as Record<string, { reason: string }>).last_error.reason,
        "ffmpeg-missing",
      );
    } finally {
      await h.close();
    }
  });
});
