/**
 * Replays the server-side test vectors S1–S16 of trickle-protocol.md §16 against TrickleServer over
 * real HTTP on 127.0.0.1. The vectors share state (S3 writes vid/0, S11 needs 0..8 written, S13
 * uses the GET left blocked by S11, S14 unblocks the GET of S12), so they run in order on one server.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { TRICKLE_DEFAULTS, TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { delay, isStillPending, openRequest, rawExchange, request, type OpenRequest } from "./raw-http.js";

const KEEPALIVE_MS = 1000;

function assertNoHeader(headers: http.IncomingHttpHeaders, name: string): void {
  assert.equal(headers[name], undefined, `unexpected header ${name}: ${String(headers[name])}`);
}

function waitForSocketClose(open: OpenRequest, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = open.req.socket;
    if (socket === null || socket.destroyed) {
      resolve(true);
      return;
    }
    const timer = setTimeout(() => resolve(false), timeoutMs);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

describe("trickle server conformance, vectors S1–S15 (spec §16, base /ai/trickle/, autocreate off)", () => {
  let server: TrickleServer;
  let base = "";
  let port = 0;
  const openRequests: OpenRequest[] = [];
  // Handed from one vector to the next.
  let blockedGet9: OpenRequest | undefined;
  let blockedCtl1: OpenRequest | undefined;

  before(async () => {
    server = new TrickleServer({
      keepAliveIntervalMs: KEEPALIVE_MS,
      channels: [
        { name: "vid", mimeType: "video/MP2T" },
        { name: "ctl", mimeType: "application/json" },
        { name: "ev", mimeType: "application/json" },
      ],
    });
    const listening = await server.listen(0, "127.0.0.1");
    base = listening.url;
    port = listening.port;
    assert.equal(base, `http://127.0.0.1:${port}/ai/trickle/`);
  });

  after(async () => {
    for (const open of openRequests) open.req.destroy();
    await server.close();
  });

  function track(open: OpenRequest): OpenRequest {
    openRequests.push(open);
    return open;
  }

  test("S1 unknown channel → 404 'Stream not found' text/plain nosniff (§5.2, §7)", async () => {
    const res = await request(`${base}nope/0`);
    assert.equal(res.status, 404);
    assert.equal(res.headers["content-type"], "text/plain; charset=utf-8");
    assert.equal(res.headers["x-content-type-options"], "nosniff");
    assert.equal(res.body, "Stream not found\n");
  });

  test("S2 /next on a fresh channel → 200 '0' with Lp-Trickle-Latest: 0 (§3)", async () => {
    const res = await request(`${base}vid/next`);
    assert.equal(res.status, 200);
    assert.equal(res.headers["lp-trickle-latest"], "0");
    assert.match(String(res.headers["content-type"]), /^text\/plain/);
    assert.equal(res.body, "0");
    assertNoHeader(res.headers, "lp-trickle-closed");
  });

  test("S3 publish seq 0 → 200 Lp-Trickle-Seq: 0, Content-Length: 0 (§5.1)", async () => {
    const res = await request(`${base}vid/0`, {
      method: "POST",
      headers: { "Content-Type": "video/MP2T", "Transfer-Encoding": "chunked" },
      body: "hello",
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers["lp-trickle-seq"], "0");
    assert.equal(res.headers["content-length"], "0");
    assert.equal(res.body, "");
  });

  test("S4 read completed seq 0 → 200 chunked, channel MIME, Latest 1, Seq 0, 'hello' (§5.2)", async () => {
    const res = await request(`${base}vid/0`);
    assert.equal(res.status, 200);
    assert.equal(res.headers["content-type"], "video/MP2T");
    assert.equal(res.headers["lp-trickle-latest"], "1");
    assert.equal(res.headers["lp-trickle-seq"], "0");
    assert.equal(res.headers["transfer-encoding"], "chunked");
    assert.equal(res.body, "hello");
  });

  test("S5 seq too far ahead → 470 'status code 470', Latest 1, Seq 5, 'Entry not found' (§4.2, §5.2)", async () => {
    const res = await request(`${base}vid/5`);
    assert.equal(res.status, 470);
    assert.equal(res.statusMessage, "status code 470");
    assert.equal(res.headers["lp-trickle-latest"], "1");
    assert.equal(res.headers["lp-trickle-seq"], "5");
    assert.equal(res.headers["content-type"], "text/plain; charset=utf-8");
    assert.equal(res.body, "Entry not found");
    // Byte-level: the status line carries Go's reason phrase.
    const raw = await rawExchange(
      port,
      "GET /ai/trickle/vid/5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert.match(raw, /^HTTP\/1\.1 470 status code 470\r\n/);
    assert.ok(raw.endsWith("\r\n\r\nEntry not found"), raw);
  });

  test("S6 seq -2 → current segment: 200 Latest 1, Seq 0, 'hello' (§3)", async () => {
    const res = await request(`${base}vid/-2`);
    assert.equal(res.status, 200);
    assert.equal(res.headers["lp-trickle-latest"], "1");
    assert.equal(res.headers["lp-trickle-seq"], "0");
    assert.equal(res.body, "hello");
  });

  test("S7 seq -1 waits for the live edge and streams chunks as they are written (§4.2, §5.1, §5.2)", async () => {
    const subscriber = track(openRequest(`${base}vid/-1`, { timeoutMs: 5000 }));
    subscriber.req.end();
    assert.ok(await isStillPending(subscriber.headers, 150), "GET -1 must send no headers before data");

    const publisher = track(
      openRequest(`${base}vid/1`, {
        method: "POST",
        headers: { "Content-Type": "video/MP2T", "Transfer-Encoding": "chunked" },
        timeoutMs: 5000,
      }),
    );
    publisher.req.write("AAA");
    const head = await subscriber.headers;
    assert.equal(head.statusCode, 200);
    assert.equal(head.headers["content-type"], "video/MP2T");
    assert.equal(head.headers["lp-trickle-seq"], "1");
    assertNoHeader(head.headers, "lp-trickle-latest");

    await delay(300);
    const bbbWrittenAt = Date.now() - subscriber.startedAt;
    publisher.req.write("BBB");
    await delay(200);
    assert.ok(await isStillPending(publisher.headers, 0), "POST response must wait for the end of its body");
    const publisherEndedAt = Date.now() - publisher.startedAt;
    publisher.req.end();

    const got = await subscriber.result;
    assert.equal(got.body, "AAABBB");
    // AAA arrived before BBB was written; BBB arrived only after it was written.
    const firstChunk = got.chunks[0];
    assert.ok(
      firstChunk !== undefined && firstChunk.data.toString() === "AAA",
      "AAA must arrive as its own chunk",
    );
    assert.ok(firstChunk.at < bbbWrittenAt, `AAA at ${firstChunk.at} ms, BBB written at ${bbbWrittenAt} ms`);
    const bbbChunk = got.chunks.find((chunk) => chunk.data.toString().includes("BBB"));
    assert.ok(bbbChunk !== undefined && bbbChunk.at >= bbbWrittenAt - 5);

    const posted = await publisher.result;
    assert.equal(posted.status, 200);
    assert.equal(posted.headers["lp-trickle-seq"], "1");
    assert.equal(posted.headers["content-length"], "0");
    assert.ok(posted.headersAt >= publisherEndedAt - 5, "POST answered only after its body ended");
  });

  test("S8 default first-byte keep-alive interval is 10 000 ms (§5.1, §15)", async () => {
    assert.equal(TRICKLE_DEFAULTS.keepAliveIntervalMs, 10_000);
    const defaults = new TrickleServer();
    try {
      assert.equal(defaults.keepAliveInterval, 10_000);
    } finally {
      await defaults.close();
    }
  });

  test("S8 idle preconnected POST gets '100 Continue' every interval, final 200 after the body (§5.1)", async () => {
    const publisher = track(
      openRequest(`${base}vid/2`, {
        method: "POST",
        headers: { "Content-Type": "video/MP2T", "Transfer-Encoding": "chunked" },
        timeoutMs: 8000,
      }),
    );
    publisher.req.flushHeaders();
    await delay(2.5 * KEEPALIVE_MS);
    assert.deepEqual(
      publisher.interim.map((entry) => entry.status),
      [100, 100],
      `interim responses: ${JSON.stringify(publisher.interim)}`,
    );
    const [first, second] = publisher.interim;
    assert.ok(first !== undefined && second !== undefined);
    assert.ok(
      first.at >= 0.8 * KEEPALIVE_MS && second.at - first.at >= 0.8 * KEEPALIVE_MS,
      JSON.stringify(publisher.interim),
    );
    publisher.req.end("seg2data");
    const res = await publisher.result;
    assert.equal(res.status, 200);
    assert.equal(res.headers["lp-trickle-seq"], "2");
    assert.equal(res.headers["content-length"], "0");
    assert.equal((await request(`${base}vid/2`)).body, "seg2data");
  });

  test("S8 variant: a client's Expect: 100-continue is answered at once (§5.1)", async () => {
    const publisher = track(
      openRequest(`${base}ev/7`, {
        method: "POST",
        headers: { Expect: "100-continue", "Transfer-Encoding": "chunked" },
        timeoutMs: 3000,
      }),
    );
    publisher.req.flushHeaders();
    await delay(300);
    assert.equal(publisher.interim.length, 1);
    assert.equal(publisher.interim[0]?.status, 100);
    publisher.req.destroy();
  });

  test("S9 empty segment: 200 Connection: close; /next → 4; GET 3 → empty 200 without Content-Type (§4.3, §5.1)", async () => {
    const res = await request(`${base}vid/3`, {
      method: "POST",
      headers: { "Transfer-Encoding": "chunked" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers["connection"], "close");
    assert.equal(res.headers["lp-trickle-seq"], "3");
    assert.equal(res.headers["content-length"], "0");
    assertNoHeader(res.headers, "lp-trickle-closed");

    const next = await request(`${base}vid/next`);
    assert.equal(next.body, "4");
    assert.equal(next.headers["lp-trickle-latest"], "4");

    const get = await request(`${base}vid/3`);
    assert.equal(get.status, 200);
    assert.equal(get.headers["lp-trickle-latest"], "4");
    assert.equal(get.headers["lp-trickle-seq"], "3");
    assert.equal(get.headers["content-length"], "0");
    assertNoHeader(get.headers, "content-type");
    assert.equal(get.body, "");
  });

  test("S10 malformed and missing: Invalid idx, Nonexistent segment, Invalid stream, create refused (§3, §5.3, §5.5, §5.7)", async () => {
    const badIdx = await request(`${base}vid/abc`);
    assert.equal(badIdx.status, 400);
    assert.equal(badIdx.body, "Invalid idx\n");
    assert.equal(badIdx.headers["content-type"], "text/plain; charset=utf-8");
    assert.equal(badIdx.headers["x-content-type-options"], "nosniff");

    const absent = await request(`${base}vid/9`, { method: "DELETE" });
    assert.equal(absent.status, 400);
    assert.equal(absent.body, "Nonexistent segment\n");

    const unknown = await request(`${base}nope`, { method: "DELETE" });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body, "Invalid stream\n");

    const refused = await request(`${base}newstream`, {
      method: "POST",
      headers: { "Expect-Content": "video/MP2T" },
    });
    assert.equal(refused.status, 404);
    assert.equal(refused.body, "Stream not found\n");
    assert.equal(server.hasChannel("newstream"), false);

    const existing = await request(`${base}vid`, { method: "POST" });
    assert.equal(existing.status, 200);
    assert.equal(existing.body, "");
  });

  test("S11 retention: ring of 5, pre-create at nextWrite evicts seq-5 (§4.2, §4.4)", async () => {
    for (let seq = 4; seq <= 8; seq++) {
      const res = await request(`${base}vid/${seq}`, {
        method: "POST",
        headers: { "Content-Type": "video/MP2T", "Transfer-Encoding": "chunked" },
        body: `seg${seq}`,
      });
      assert.equal(res.headers["lp-trickle-seq"], String(seq));
    }
    for (const seq of [2, 3]) {
      const res = await request(`${base}vid/${seq}`);
      assert.equal(res.status, 470, `GET ${seq}`);
      assert.equal(res.headers["lp-trickle-latest"], "9");
      assert.equal(res.headers["lp-trickle-seq"], String(seq));
    }
    for (let seq = 4; seq <= 8; seq++) {
      const res = await request(`${base}vid/${seq}`);
      assert.equal(res.status, 200, `GET ${seq}`);
      assert.equal(res.body, `seg${seq}`);
      assert.equal(res.headers["lp-trickle-seq"], String(seq));
    }
    blockedGet9 = track(openRequest(`${base}vid/9`, { timeoutMs: 10_000 }));
    blockedGet9.req.end();
    assert.ok(await isStillPending(blockedGet9.headers, 200), "GET 9 (= nextWrite) must block");

    const tooFar = await request(`${base}vid/10`);
    assert.equal(tooFar.status, 470);
    assert.equal(tooFar.headers["lp-trickle-latest"], "9");
    const evicted = await request(`${base}vid/4`);
    assert.equal(evicted.status, 470, "pre-created seq 9 evicted seq 4");
    assert.equal(evicted.headers["lp-trickle-latest"], "9");
  });

  test("S12 grace on a fresh channel: GET 1 blocks, GET 2 → 470 Latest 0 Seq 2 (§4.2)", async () => {
    blockedCtl1 = track(openRequest(`${base}ctl/1`, { timeoutMs: 10_000 }));
    blockedCtl1.req.end();
    assert.ok(await isStillPending(blockedCtl1.headers, 200), "GET ctl/1 with nextWrite 0 must block");
    const res = await request(`${base}ctl/2`);
    assert.equal(res.status, 470);
    assert.equal(res.headers["lp-trickle-latest"], "0");
    assert.equal(res.headers["lp-trickle-seq"], "2");
  });

  test("S13 end of stream: DELETE {ch} wakes the blocked GET and the idle POST with Lp-Trickle-Closed (§5.3)", async () => {
    assert.ok(blockedGet9 !== undefined, "needs S11");
    const preconnect = track(
      openRequest(`${base}vid/10`, {
        method: "POST",
        headers: { "Content-Type": "video/MP2T", "Transfer-Encoding": "chunked" },
        timeoutMs: 5000,
      }),
    );
    preconnect.req.flushHeaders();
    assert.ok(await isStillPending(preconnect.headers, 200));

    const deleted = await request(`${base}vid`, { method: "DELETE" });
    assert.equal(deleted.status, 200);
    assert.equal(deleted.body, "");

    const get9 = await blockedGet9.result;
    assert.equal(get9.status, 200);
    assert.equal(get9.headers["lp-trickle-closed"], "terminated");
    assert.equal(get9.headers["lp-trickle-latest"], "9");
    assert.equal(get9.headers["lp-trickle-seq"], "9");
    assert.equal(get9.headers["content-length"], "0");
    assert.equal(get9.body, "");

    // The preconnect's body is still open (never ended) when its final response arrives.
    const post10 = await preconnect.result;
    assert.equal(preconnect.req.writableEnded, false);
    assert.equal(post10.status, 200);
    assert.equal(post10.headers["connection"], "close");
    assert.equal(post10.headers["lp-trickle-closed"], "terminated");
    assert.equal(post10.headers["lp-trickle-seq"], "10");
    assert.equal(post10.headers["content-length"], "0");
    assert.ok(await waitForSocketClose(preconnect, 3000), "server must close the preconnect's connection");

    const next = await request(`${base}vid/next`);
    assert.equal(next.status, 404);
    const post11 = await request(`${base}vid/11`, { method: "POST", body: "x" });
    assert.equal(post11.status, 404);
    assert.equal(post11.headers["connection"], "close");
    assert.equal(post11.body, "Stream not found\n");
    assert.equal(server.hasChannel("vid"), false);
  });

  test("S14 Lp-Trickle-Reset closes lower seqs; bytes already written stay readable (§5.4)", async () => {
    const publisherA = track(
      openRequest(`${base}ctl/0`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Transfer-Encoding": "chunked" },
        timeoutMs: 5000,
      }),
    );
    publisherA.req.write("Hello");
    const readerB = track(openRequest(`${base}ctl/0`, { timeoutMs: 5000 }));
    readerB.req.end();
    const headB = await readerB.headers;
    assert.equal(headB.statusCode, 200);
    assert.ok(await isStillPending(readerB.result, 150), "reader of the open segment keeps waiting");

    const resetPost = await request(`${base}ctl/-1`, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "Lp-Trickle-Reset": "1",
        "Transfer-Encoding": "chunked",
      },
      body: '{"a":1}',
    });
    assert.equal(resetPost.status, 200);
    assert.equal(resetPost.headers["lp-trickle-seq"], "1");

    const gotB = await readerB.result;
    assert.equal(gotB.body, "Hello");

    // The GET left blocked on the pre-created ctl/1 by S12 receives the reset publisher's segment.
    if (blockedCtl1 !== undefined) assert.equal((await blockedCtl1.result).body, '{"a":1}');

    publisherA.req.end();
    const finishedA = await publisherA.result;
    assert.equal(finishedA.status, 200);
    assert.equal(finishedA.headers["lp-trickle-seq"], "0");

    const get1 = await request(`${base}ctl/1`);
    assert.equal(get1.status, 200);
    assert.equal(get1.headers["content-type"], "application/json");
    assert.equal(get1.headers["lp-trickle-latest"], "2");
    assert.equal(get1.headers["lp-trickle-seq"], "1");
    assert.equal(get1.body, '{"a":1}');
  });

  test("S15 re-POST of a completed seq: 200 Connection: close, body discarded (§5.1, §17.2 choice)", async () => {
    const first = await request(`${base}ev/0`, { method: "POST", body: "A" });
    assert.equal(first.status, 200);
    assert.equal(first.headers["lp-trickle-seq"], "0");
    const again = await request(`${base}ev/0`, { method: "POST", body: "B" });
    assert.equal(again.status, 200);
    assert.equal(again.headers["connection"], "close");
    assert.equal(again.headers["lp-trickle-seq"], "0");
    assert.equal((await request(`${base}ev/0`)).body, "A");
  });

  test("re-POST of a still-open seq appends after the earlier bytes (§5.1)", async () => {
    const first = track(
      openRequest(`${base}ev/1`, { method: "POST", headers: { "Transfer-Encoding": "chunked" } }),
    );
    first.req.write("Hello");
    const reader = track(openRequest(`${base}ev/1`));
    reader.req.end();
    await reader.headers;
    first.req.destroy(); // drops mid-segment; the segment stays open
    await delay(100);
    const second = await request(`${base}ev/1`, { method: "POST", body: "World" });
    assert.equal(second.status, 200);
    assert.equal((await reader.result).body, "HelloWorld");
  });

  test("normal completions keep the connection alive: no Connection: close, next request served (§5.1, §8)", async () => {
    const raw = await rawExchange(
      port,
      "POST /ai/trickle/ev/5 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nZ" +
        "GET /ai/trickle/ev/5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    const [postResponse, getResponse] = raw.split(/(?=HTTP\/1\.1 )/);
    assert.match(postResponse ?? "", /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(postResponse ?? "", /\r\nLp-Trickle-Seq: 5\r\n/);
    assert.doesNotMatch(postResponse ?? "", /Connection: close/i);
    assert.match(getResponse ?? "", /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(getResponse ?? "", /\r\n1\r\nZ\r\n0\r\n\r\n$/);
  });
});

describe("trickle server conformance, vector S16 (spec §10, §5.7, §5.8: changefeed + autocreate, base /)", () => {
  let server: TrickleServer;
  let base = "";

  before(async () => {
    server = new TrickleServer({
      basePath: "/",
      changefeed: true,
      autocreate: true,
      idleTimeoutMs: 800,
      sweepIntervalMs: 200,
      channels: [
        { name: "vid", mimeType: "video/MP2T" },
        { name: "vid-out", mimeType: "video/MP2T" },
      ],
    });
    base = (await server.listen(0, "127.0.0.1")).url;
  });

  after(async () => {
    await server.close();
  });

  async function readChange(seq: number): Promise<unknown> {
    const res = await request(`${base}_changes/${seq}`, { timeoutMs: 3000 });
    assert.equal(res.status, 200, `_changes/${seq}`);
    assert.equal(res.headers["content-type"], "application/json");
    return JSON.parse(res.body);
  }

  test("S16 changefeed lists additions, autocreate by POST {ch} and POST {ch}/{seq}, idle sweep removes", async () => {
    assert.deepEqual(await readChange(0), { added: ["_changes"] });
    assert.deepEqual(await readChange(1), { added: ["vid"] });
    assert.deepEqual(await readChange(2), { added: ["vid-out"] });

    const created = await request(`${base}foo`, {
      method: "POST",
      headers: { "Expect-Content": "application/json" },
    });
    assert.equal(created.status, 200);
    assert.deepEqual(await readChange(3), { added: ["foo"] });
    const again = await request(`${base}foo`, {
      method: "POST",
      headers: { "Expect-Content": "text/plain" },
    });
    assert.equal(again.status, 200, "POST {ch} is idempotent");

    const autoPost = await request(`${base}bar/0`, {
      method: "POST",
      headers: { "Content-Type": "text/plain", "Transfer-Encoding": "chunked" },
      body: "hi",
    });
    assert.equal(autoPost.status, 200);
    assert.equal(autoPost.headers["lp-trickle-seq"], "0");
    assert.deepEqual(await readChange(4), { added: ["bar"] });
    const bar = await request(`${base}bar/0`);
    assert.equal(bar.headers["content-type"], "text/plain");
    assert.equal(bar.body, "hi");

    // Idle sweep: everything but `_changes` goes away.
    const deadline = Date.now() + 5000;
    while (server.hasChannel("foo") || server.hasChannel("bar")) {
      assert.ok(Date.now() < deadline, "idle channels were not swept within 5 s");
      await delay(100);
    }
    assert.equal((await request(`${base}foo/next`)).status, 404);
    assert.equal((await request(`${base}bar/0`)).status, 404);
    const next = await request(`${base}_changes/next`);
    assert.equal(next.status, 200, "_changes is exempt from the sweep");
    const nextWrite = Number(next.body);
    assert.equal(nextWrite, 9);
    const removed: string[] = [];
    for (let seq = 5; seq < nextWrite; seq++) {
      const change = (await readChange(seq)) as { removed?: string[] };
      removed.push(...(change.removed ?? []));
    }
    assert.deepEqual(removed.sort(), ["bar", "foo", "vid", "vid-out"]);
  });
});
