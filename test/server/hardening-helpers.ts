/**
 * What the hardening tests (and the REST fuzz test) share: a self-signed certificate made by openssl
 * at test time, an HTTP(S) request helper that can trust that certificate and pick its source address
 * (fetch can do neither), and the real API server in front of fake sessions.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";

import { buildApiServer, type ApiServerOptions } from "../../relay-pod/src/server/api.js";
import { SessionManager, type ManagedSession } from "../../relay-pod/src/server/session-manager.js";
import { createRelayMetrics } from "../../relay-pod/src/report/metrics.js";
import type { RelaySessionConfig, SessionState, SessionStatus } from "../../relay-pod/src/session/types.js";
import { SAMPLE_AUDIO_STATUS } from "../fixtures/session-status.js";

const run = promisify(execFile);

export interface TestCertificate {
  dir: string;
  certPath: string;
  keyPath: string;
  cert: Buffer;
  key: Buffer;
  remove(): Promise<void>;
}

/** A self-signed P-256 certificate for 127.0.0.1 and localhost, valid for a day, in a temp dir. */
export async function makeSelfSignedCertificate(): Promise<TestCertificate> {
  const dir = await mkdtemp(path.join(tmpdir(), "relay-tls-"));
  const certPath = path.join(dir, "cert.pem");
  const keyPath = path.join(dir, "key.pem");
  await run("openssl", [
    ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
    ...["-keyout", keyPath, "-out", certPath, "-days", "1", "-subj", "/CN=localhost"],
    ...["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
  ]);
  return {
    dir,
    certPath,
    keyPath,
    cert: await readFile(certPath),
    key: await readFile(keyPath),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** The body parsed as JSON, or {} when it is not JSON. */
  json: Record<string, unknown>;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Trusted CA for https URLs (the test certificate). */
  ca?: Buffer;
  /** Source address, e.g. 127.0.0.3 to be another client. */
  localAddress?: string;
}

/** One request on a fresh connection; resolves with the whole answer. */
export function request(url: string, options: RequestOptions = {}): Promise<Answer> {
  const target = new URL(url);
  const headers: Record<string, string> = { ...options.headers };
  // Node sends a DELETE's body without framing unless told its length (or chunked).
  if (options.body !== undefined && headers["transfer-encoding"] === undefined)
    headers["content-length"] = String(Buffer.byteLength(options.body));
  const common = {
    method: options.method ?? "GET",
    headers,
    agent: false as const,
    ...(options.localAddress ? { localAddress: options.localAddress } : {}),
  };
  return new Promise((resolve, reject) => {
    let answered = false;
    const onResponse = (res: http.IncomingMessage) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(text) as Record<string, unknown>;
        } catch {
          // not JSON; callers look at text
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    };
    const req =
      target.protocol === "https:"
        ? https.request(target, { ...common, ...(options.ca ? { ca: options.ca } : {}) }, onResponse)
        : http.request(target, common, onResponse);
    // A server that refuses a large body answers and closes while the body is still being sent.
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    req.end(options.body);
  });
}

export const START = {
  input_stream_url: "http://127.0.0.1:9/ai/trickle/stream1",
  comfystream_url: "http://127.0.0.1:8889",
  prompts: [{ "1": { class_type: "LoadTensor", inputs: {} } }],
};
export const JSON_HEADERS = { "content-type": "application/json" };

/** A session that starts at once and stops when told, after `stopDelayMs`. */
export class FakeSession extends EventEmitter implements ManagedSession {
  readonly id: string;
  state: SessionState = "starting";
  stopDelayMs = 0;
  constructor(readonly config: RelaySessionConfig) {
    super();
    this.id = config.id;
  }
  async start(): Promise<void> {
    this.state = "running";
  }
  async stop(): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, this.stopDelayMs));
    this.state = "stopped";
    this.emit("end");
  }
  async updatePrompts(): Promise<{ ok: boolean }> {
    return { ok: true };
  }
  status(): SessionStatus {
    const c = this.config;
    const queue = { size: 0, capacity: 1, dropped: 0 };
    return {
      id: c.id,
      state: this.state,
      webrtcState: "new",
      createdAt: "2025-01-02T03:04:05.000Z",
      inputUrl: c.inputUrl,
      outputUrl: c.outputUrl,
      comfystreamUrl: c.comfystreamUrl,
      width: c.width,
      height: c.height,
      frameRate: c.frameRate,
      mode: c.mode,
      encoder: "x264",
      decoder: "software",
      codecReason: "x264: a fake session (no probe)",
      queues: { decodedFrames: queue, processedFrames: queue, outputSegments: queue },
      fps: { input: 0, output: 0 },
      frames: { in: 0, sent: 0, returned: 0, out: 0, dropped: 0, peerLimited: 0 },
      peerWindow: { capacity: 2, inFlight: 0, transcoderGop: "normal" },
      segments: { in: 0, out: 0, dropped: 0, corrupt: 0 },
      outputKeyframes: { source: "peer", reEncodedFrames: 0, idrIntervalSec: { last: 0, max: 0 } },
      latencyMs: { p50: 0, p95: 0, samples: 0 },
      hopLatencyMs: { forward: { p50: 0, p95: 0 }, return: { p50: 0, p95: 0 } },
      reconnects: 0,
      ffmpegRestarts: 0,
      inputClockJumps: 0,
      audio: SAMPLE_AUDIO_STATUS,
      promptsGeneration: 0,
    };
  }
}

export interface Service {
  url: string;
  manager: SessionManager;
  created: FakeSession[];
  close(): Promise<void>;
}

export async function startService(options: Partial<ApiServerOptions> = {}): Promise<Service> {
  const created: FakeSession[] = [];
  const manager = new SessionManager({
    createSession: (config) => {
      const session = new FakeSession(config);
      created.push(session);
      return session;
    },
    maxSessions: 100,
  });
  const app = buildApiServer({
    sessions: manager,
    metricsRegistry: createRelayMetrics(() => [], { defaultMetrics: false }),
    ...options,
  });
  const url = await app.listen({ port: 0, host: "127.0.0.1" });
  return {
    url,
    manager,
    created,
    async close() {
      await app.close();
      await manager.close();
    },
  };
}

export function assertErrorBody(
  answer: { status: number; json: Record<string, unknown> },
  status: number,
  mentions: RegExp,
) {
  assert.equal(answer.status, status, JSON.stringify(answer.json));
  assert.equal(answer.json.success, false);
  assert.match(String(answer.json.error), mentions);
}
