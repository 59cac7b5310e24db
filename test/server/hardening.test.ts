/**
 * The standalone service's hardening, in process over real HTTP and real TLS on loopback: the
 * bearer token (constant-time check, GET /health and the trickle mount open), HTTPS with the trickle
 * mount working over it, body limits on every route with a body, the per-client rate limit on
 * session starts, and the shutdown drain's answers. The sessions behind the API are fakes (what is
 * under test is the HTTP side); test/server/serve-cli.test.ts runs the real CLI with real sessions.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { bearerTokenChecker } from "../../relay-pod/src/server/bearer-auth.js";
import { TokenBucketLimiter } from "../../relay-pod/src/server/rate-limit.js";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import {
  assertErrorBody,
  JSON_HEADERS,
  makeSelfSignedCertificate,
  request,
  START,
  startService,
  type Service,
  type TestCertificate,
} from "./hardening-helpers.js";

const TOKEN = "0123456789abcdef0123456789abcdef";
describe("bearer token (--api-token-file)", () => {
  let service: Service;
  const trickleSeen: string[] = [];
  before(async () => {
    service = await startService({
      apiToken: TOKEN,
      trickleServer: {
        handle(req, res) {
          trickleSeen.push(`${req.method} ${req.url}`);
          res.writeHead(200).end("trickle");
          return true;
        },
      },
    });
  });
  after(() => service.close());

  const bearer = (token: string) => ({ authorization: `Bearer ${token}`, ...JSON_HEADERS });

  it("401 without a token, with WWW-Authenticate and the usual error body, on every API route", async () => {
    for (const [method, path] of [
      ["GET", "/sessions"],
      ["GET", "/metrics"],
      ["POST", "/session/start"],
      ["GET", "/session/x/status"],
      ["DELETE", "/session/x"],
      ["POST", "/session/x/prompts"],
      ["GET", "/no/such/route"],
    ] as const) {
      const answer = await request(service.url + path, {
        method,
        ...(method === "POST" ? { headers: JSON_HEADERS, body: JSON.stringify(START) } : {}),
      });
      assertErrorBody(answer, 401, /authentication required: send Authorization: Bearer/);
      assert.match(String(answer.headers["www-authenticate"]), /^Bearer realm=/, `${method} ${path}`);
    }
    assert.equal(service.created.length, 0, "no session started without the token");
  });

  it("401 with a wrong token, a token of another length, or another scheme", async () => {
    for (const authorization of [
      `Bearer ${TOKEN.slice(0, -1)}x`,
      `Bearer ${TOKEN}${TOKEN}`,
      "Bearer a",
      `Basic ${Buffer.from(`user:${TOKEN}`).toString("base64")}`,
      TOKEN,
    ]) {
      const answer = await request(`${service.url}/sessions`, { headers: { authorization } });
      assertErrorBody(answer, 401, /bearer token is not valid/);
      assert.ok(answer.headers["www-authenticate"]);
    }
  });

  it("200 with the token (any case of 'Bearer')", async () => {
    assert.equal((await request(`${service.url}/sessions`, { headers: bearer(TOKEN) })).status, 200);
    const lower = await request(`${service.url}/sessions`, { headers: { authorization: `bearer ${TOKEN}` } });
    assert.equal(lower.status, 200);
    const started = await request(`${service.url}/session/start`, {
      method: "POST",
      headers: bearer(TOKEN),
      body: JSON.stringify(START),
    });
    assert.equal(started.status, 200, started.text);
    assert.equal(started.json.success, true);
  });

  it("GET and HEAD /health stay open", async () => {
    const answer = await request(`${service.url}/health`);
    assert.equal(answer.status, 200);
    assert.equal(answer.text, '{"status":"healthy"}');
    assert.equal((await request(`${service.url}/health?probe=1`, { method: "HEAD" })).status, 200);
    assert.equal((await request(`${service.url}/health`, { method: "POST" })).status, 401);
  });

  it("the trickle mount stays open (trickle clients send no Authorization header)", async () => {
    const answer = await request(`${service.url}/ai/trickle/ch/0`, { method: "POST", body: "x" });
    assert.equal(answer.status, 200);
    assert.deepEqual(trickleSeen, ["POST /ai/trickle/ch/0"]);
  });
});

describe("bearerTokenChecker", () => {
  it("accepts exactly the token, whatever whitespace surrounds it in the header", () => {
    const check = bearerTokenChecker(TOKEN);
    assert.equal(check(`Bearer ${TOKEN}`), true);
    assert.equal(check(`Bearer \t${TOKEN} `), true);
    assert.equal(check(undefined), false);
    assert.equal(check(""), false);
    assert.equal(check("Bearer"), false);
    assert.equal(check(`Bearer ${TOKEN} extra`), false);
    assert.equal(check(`Bearer ${TOKEN.toUpperCase()}`), false);
  });
});

describe("HTTPS (--tls-cert/--tls-key)", () => {
  let cert: TestCertificate;
  let service: Service;
  before(async () => {
    cert = await makeSelfSignedCertificate();
    service = await startService({
      tls: { cert: cert.cert, key: cert.key },
      apiToken: TOKEN,
      trickleServer: new TrickleServer({ autocreate: true }),
    });
  });
  after(async () => {
    await service?.close();
    await cert?.remove();
  });

  it("listens on https:// and answers a client that trusts the certificate", async () => {
    assert.match(service.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const health = await request(`${service.url}/health`, { ca: cert.cert });
    assert.equal(health.status, 200);
    assert.equal(health.text, '{"status":"healthy"}');
    const sessions = await request(`${service.url}/sessions`, {
      ca: cert.cert,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(sessions.status, 200);
    assert.deepEqual(sessions.json, { success: true, sessions: [] });
  });

  it("refuses a client that does not trust the certificate, and plain HTTP gets no API", async () => {
    await assert.rejects(request(`${service.url}/health`), /self-signed|certificate/i);
    await assert.rejects(request(service.url.replace("https:", "http:") + "/health"));
  });

  it("the in-process trickle server works over TLS: publish a segment, read it back, end the stream", async () => {
    const channel = `${service.url}/ai/trickle/tls-channel`;
    const segment = Buffer.from("a segment over TLS ".repeat(1000));
    const posted = await request(`${channel}/0`, {
      method: "POST",
      ca: cert.cert,
      headers: { "content-type": "video/MP2T" },
      body: segment,
    });
    assert.equal(posted.status, 200, posted.text);
    const read = await request(`${channel}/0`, { ca: cert.cert });
    assert.equal(read.status, 200);
    assert.equal(read.text, segment.toString());
    assert.equal(read.headers["lp-trickle-seq"], "0");
    assert.equal((await request(channel, { method: "DELETE", ca: cert.cert })).status, 200);
  });
});

describe("body size limits", () => {
  let service: Service;
  before(async () => {
    service = await startService();
  });
  after(() => service.close());

  const huge = JSON.stringify({ ...START, prompts: [{ "1": { inputs: { text: "x".repeat(9 << 20) } } }] });

  it("413 with a readable message on every route that takes a body", async () => {
    const started = await request(`${service.url}/session/start`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify({ ...START, session_id: "limits" }),
    });
    assert.equal(started.status, 200);
    for (const [method, path] of [
      ["POST", "/session/start"],
      ["POST", "/session/limits/prompts"],
      ["DELETE", "/session/limits"],
    ] as const) {
      const answer = await request(service.url + path, { method, headers: JSON_HEADERS, body: huge });
      assert.equal(answer.status, 413, `${method} ${path}: ${answer.text}`);
      assertErrorBody(answer, 413, /request body is larger than the limit of 8 MiB \(8388608 bytes\)/);
    }
    assert.equal(service.manager.get("limits")?.status().state, "running", "the DELETE was refused");
  });

  it("413 for a chunked body without Content-Length that grows past the limit", async () => {
    const answer = await request(`${service.url}/session/start`, {
      method: "POST",
      headers: { ...JSON_HEADERS, "transfer-encoding": "chunked" },
      body: huge,
    });
    assertErrorBody(answer, 413, /larger than the limit/);
  });
});

describe("rate limit on POST /session/start (--start-rate/--start-burst)", () => {
  let service: Service;
  before(async () => {
    service = await startService({ startRateLimit: { perMinute: 6, burst: 3 } });
  });
  after(() => service.close());

  const start = (localAddress?: string) =>
    request(`${service.url}/session/start`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify(START),
      ...(localAddress ? { localAddress } : {}),
    });

  it("allows the burst, then 429 with Retry-After and the usual error body", async () => {
    for (let i = 0; i < 3; i++) assert.equal((await start()).status, 200, `start ${i + 1} of the burst`);
    const refused = await start();
    assertErrorBody(
      refused,
      429,
      /too many session starts from 127\.0\.0\.1: at most 3 at once and 6 a minute/,
    );
    // One token every 10 s; a little of it has passed since the burst.
    const retryAfter = Number(refused.headers["retry-after"]);
    assert.ok(retryAfter >= 1 && retryAfter <= 10, `Retry-After ${refused.headers["retry-after"]}`);
    assert.equal(service.created.length, 3, "the refused start created no session");
  });

  it("counts each client apart, and limits only starts", async () => {
    assert.equal((await start("127.0.0.3")).status, 200, "another client has its own bucket");
    assert.equal((await request(`${service.url}/sessions`)).status, 200);
  });
});

describe("TokenBucketLimiter", () => {
  it("refills at the rate, up to the burst, and says when the next token comes", () => {
    let now = 0;
    const limiter = new TokenBucketLimiter({ perMinute: 10, burst: 5 }, () => now);
    for (let i = 0; i < 5; i++) assert.deepEqual(limiter.take("a"), { ok: true });
    assert.deepEqual(limiter.take("a"), { ok: false, retryAfterSec: 6 });
    now = 3000;
    assert.deepEqual(limiter.take("a"), { ok: false, retryAfterSec: 3 });
    now = 6000;
    assert.deepEqual(limiter.take("a"), { ok: true });
    assert.deepEqual(limiter.take("b"), { ok: true });
    now = 10 * 60_000;
    for (let i = 0; i < 5; i++) assert.deepEqual(limiter.take("a"), { ok: true }, "refilled to the burst");
    assert.equal(limiter.take("a").ok, false);
  });

  it("forgets clients whose bucket has refilled", () => {
    let now = 0;
    const limiter = new TokenBucketLimiter({ perMinute: 60, burst: 2 }, () => now);
    for (let i = 0; i < 100; i++) limiter.take(`client-${i}`);
    assert.equal(limiter.trackedClients, 100);
    now = 120_000;
    limiter.take("late");
    assert.equal(limiter.trackedClients, 1);
  });
});

describe("shutdown drain", () => {
  let service: Service;
  before(async () => {
    service = await startService();
  });
  after(() => service.close());

  it("refuses new starts with 503, reports it on /health, and stops running sessions, keeping them listed", async () => {
    for (const id of ["d1", "d2"]) {
      const answer = await request(`${service.url}/session/start`, {
        method: "POST",
        headers: JSON_HEADERS,
        body: JSON.stringify({ ...START, session_id: id }),
      });
      assert.equal(answer.status, 200);
    }
    service.created[1]!.stopDelayMs = 1000; // one that does not stop within the drain timeout
    const left = await service.manager.drain(300);
    assert.deepEqual(left, ["d2"]);
    assert.equal(service.created[0]!.state, "stopped");

    const refused = await request(`${service.url}/session/start`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify(START),
    });
    assertErrorBody(refused, 503, /shutting down and starts no new sessions/);
    const health = await request(`${service.url}/health`);
    assert.equal(health.status, 503);
    assert.deepEqual(health.json, { status: "shutting down" });
    const status = await request(`${service.url}/session/d1/status`);
    assert.equal(status.status, 200, "status still answers during the drain");
    assert.equal((status.json.session as Record<string, unknown>).status, "stopped");
  });
});
