/**
 * Bad input and failure paths of TrickleServer over real HTTP on 127.0.0.1: the segment size cap,
 * malformed and negative seqs (spec §3, §17.1), publishers that abort mid-segment (§5.1, §5.5), and
 * channel names that are not one clean path segment.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { delay, isStillPending, openRequest, rawExchange, request, type OpenRequest } from "./raw-http.js";

const CAP = 1000;

describe("trickle server faults", () => {
  let server: TrickleServer;
  let base = "";
  let port = 0;
  const openRequests: OpenRequest[] = [];

  before(async () => {
    server = new TrickleServer({
      maxSegmentBytes: CAP,
      channels: [
        { name: "big", mimeType: "video/MP2T" },
        { name: "other", mimeType: "video/MP2T" },
        { name: "idx", mimeType: "application/json" },
        { name: "ab", mimeType: "video/MP2T" },
        { name: "ab2", mimeType: "video/MP2T" },
        { name: "ab3", mimeType: "video/MP2T" },
      ],
    });
    const listening = await server.listen(0, "127.0.0.1");
    base = listening.url;
    port = listening.port;
  });

  after(async () => {
    for (const open of openRequests) open.req.destroy();
    await server.close();
  });

  function track(open: OpenRequest): OpenRequest {
    openRequests.push(open);
    return open;
  }

  test("oversized segment: 413 with a clear body, first maxSegmentBytes kept and readable, segment closed", async () => {
    const reader = track(openRequest(`${base}big/0`, { timeoutMs: 5000 }));
    reader.req.end();
    const publisher = track(
      openRequest(`${base}big/0`, {
        method: "POST",
        headers: { "Transfer-Encoding": "chunked" },
        timeoutMs: 5000,
      }),
    );
    const first = Buffer.alloc(600, "a");
    const second = Buffer.alloc(600, "b");
    publisher.req.write(first);
    await reader.headers; // the first 600 bytes are live before the cap is hit
    publisher.req.write(second);
    // Keep sending after the cap: the server must answer anyway and discard the rest.
    const pump = setInterval(() => {
      if (!publisher.req.destroyed) publisher.req.write(Buffer.alloc(100, "c"));
    }, 20);
    try {
      const res = await publisher.result;
      assert.equal(res.status, 413);
      assert.equal(res.body, `Segment too large: limit is ${CAP} bytes\n`);
      assert.equal(res.headers["connection"], "close");
    } finally {
      clearInterval(pump);
      publisher.req.destroy();
    }

    const expected = Buffer.concat([first, second]).subarray(0, CAP);
    const live = await reader.result;
    assert.equal(live.status, 200);
    assert.deepEqual(live.bodyBytes, expected, "live reader ends normally with exactly the accepted bytes");
    const replay = await request(`${base}big/0`);
    assert.equal(replay.status, 200);
    assert.deepEqual(replay.bodyBytes, expected);
    assert.equal((await request(`${base}big/next`)).body, "1");
    assert.ok(server.stats().bufferedBytes <= CAP * 6);

    // A later POST to the same (now complete) seq adds nothing.
    await request(`${base}big/0`, { method: "POST", body: "more" });
    assert.equal((await request(`${base}big/0`)).bodyBytes.length, CAP);
  });

  test("oversized segment: the server keeps serving other channels and new segments", async () => {
    const posted = await request(`${base}other/0`, { method: "POST", body: "fine" });
    assert.equal(posted.status, 200);
    assert.equal((await request(`${base}other/0`)).body, "fine");
    const nextBig = await request(`${base}big/1`, { method: "POST", body: Buffer.alloc(CAP, "z") });
    assert.equal(nextBig.status, 200, "a segment of exactly the cap is accepted");
    assert.equal((await request(`${base}big/1`)).bodyBytes.length, CAP);
  });

  for (const [label, index] of [
    ["abc", "abc"],
    ["1.5", "1.5"],
    ["0x10", "0x10"],
    ["empty", ""],
    ["space", "%201"],
    ["huge", "99999999999999999999"],
  ] as const) {
    test(`non-numeric seq '${label}' → 400 'Invalid idx' on GET, POST and DELETE (§3)`, async () => {
      for (const method of ["GET", "POST", "DELETE"]) {
        const res = await request(`${base}idx/${index}`, {
          method,
          body: method === "POST" ? "x" : undefined,
        });
        assert.equal(res.status, 400, `${method} idx/${index}`);
        assert.equal(res.body, "Invalid idx\n", `${method} idx/${index}`);
        assert.equal(res.headers["content-type"], "text/plain; charset=utf-8");
      }
    });
  }

  test("negative seqs: -3 and -100 → 400 on every method; POST and DELETE -2 → 400 (§3, §17.1)", async () => {
    for (const seq of ["-3", "-100"]) {
      for (const method of ["GET", "POST", "DELETE"]) {
        const res = await request(`${base}idx/${seq}`, { method, body: method === "POST" ? "x" : undefined });
        assert.equal(res.status, 400, `${method} ${seq}`);
        assert.equal(res.body, "Invalid idx\n");
      }
    }
    const post = await request(`${base}idx/-2`, { method: "POST", body: "x" });
    assert.equal(post.status, 400);
    assert.equal(post.body, "Invalid idx\n");
    const del = await request(`${base}idx/-2`, { method: "DELETE" });
    assert.equal(del.status, 400);
    assert.equal((await request(`${base}idx/next`)).body, "0", "rejected POSTs wrote nothing");
    // The channel still works.
    assert.equal(
      (await request(`${base}idx/-1`, { method: "POST", body: "{}" })).headers["lp-trickle-seq"],
      "0",
    );
  });

  test("publisher aborts mid-segment: segment left open, reader blocked until DELETE {ch}/{seq} (§5.1, §5.5)", async () => {
    const reader = track(openRequest(`${base}ab/0`, { timeoutMs: 5000 }));
    reader.req.end();
    const publisher = track(
      openRequest(`${base}ab/0`, {
        method: "POST",
        headers: { "Transfer-Encoding": "chunked" },
        timeoutMs: 5000,
      }),
    );
    publisher.req.write("part");
    await reader.headers;
    publisher.req.destroy();
    await assert.rejects(publisher.result);
    assert.ok(await isStillPending(reader.result, 300), "reader must keep waiting on the open segment");
    assert.equal((await request(`${base}ab/next`)).body, "1", "nextWrite moved on the first byte");

    const closed = await request(`${base}ab/0`, { method: "DELETE" });
    assert.equal(closed.status, 200);
    const got = await reader.result;
    assert.equal(got.status, 200);
    assert.equal(got.body, "part");
  });

  test("publisher aborts mid-segment: a Lp-Trickle-Reset POST unblocks the reader (§5.4)", async () => {
    const reader = track(openRequest(`${base}ab2/0`, { timeoutMs: 5000 }));
    reader.req.end();
    const publisher = track(
      openRequest(`${base}ab2/0`, {
        method: "POST",
        headers: { "Transfer-Encoding": "chunked" },
        timeoutMs: 5000,
      }),
    );
    publisher.req.write("half");
    await reader.headers;
    publisher.req.destroy();
    assert.ok(await isStillPending(reader.result, 200));
    const restarted = await request(`${base}ab2/-1`, {
      method: "POST",
      headers: { "Lp-Trickle-Reset": "1" },
      body: "fresh",
    });
    assert.equal(restarted.status, 200);
    assert.equal(restarted.headers["lp-trickle-seq"], "1");
    assert.equal((await reader.result).body, "half");
  });

  test("malformed chunked body mid-segment → 500 'Server error', segment left open (§5.1)", async () => {
    const reader = track(openRequest(`${base}ab3/0`, { timeoutMs: 5000 }));
    reader.req.end();
    const raw = await rawExchange(
      port,
      "POST /ai/trickle/ab3/0 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n",
      3000,
    );
    assert.match(raw, /^HTTP\/1\.1 500 /);
    assert.ok(raw.endsWith("\r\n\r\nServer error\n"), raw);
    assert.match(raw, /\r\nConnection: close\r\n/);
    assert.ok(await isStillPending(reader.result, 200), "segment stays open");
    assert.equal((await request(`${base}ab3/0`, { method: "DELETE" })).status, 200);
    assert.equal((await reader.result).body, "hello");
  });

  test("publisher aborting before its first byte leaves the seq free for a retry", async () => {
    const publisher = track(
      openRequest(`${base}ab3/1`, {
        method: "POST",
        headers: { "Transfer-Encoding": "chunked" },
        timeoutMs: 5000,
      }),
    );
    publisher.req.flushHeaders();
    await delay(100);
    publisher.req.destroy();
    await delay(100);
    const retry = await request(`${base}ab3/1`, { method: "POST", body: "retry" });
    assert.equal(retry.status, 200);
    assert.equal(retry.headers["lp-trickle-seq"], "1");
    assert.equal((await request(`${base}ab3/1`)).body, "retry");
  });

  for (const [label, name] of [
    ["encoded slash", "a%2Fb"],
    ["dot-dot", "%2E%2E"],
    ["space", "a%20b"],
    ["bad percent-encoding", "%ZZ"],
    ["quote", "a%22b"],
    ["too long", "x".repeat(300)],
  ] as const) {
    test(`channel name with ${label} → 400 'Invalid stream name'`, async () => {
      for (const [method, path] of [
        ["GET", `${name}/0`],
        ["POST", `${name}/0`],
        ["POST", name],
        ["DELETE", name],
      ] as const) {
        const res = await request(`${base}${path}`, { method, body: method === "POST" ? "x" : undefined });
        assert.equal(res.status, 400, `${method} ${path}`);
        assert.equal(res.body, "Invalid stream name\n");
      }
    });
  }

  test("extra path segments and an empty channel name → 404 '404 page not found'; outside basePath → 404", async () => {
    for (const path of ["/ai/trickle/a/b/c", "/ai/trickle//0", "/ai/trickle/", "/elsewhere"]) {
      const res = await request(`http://127.0.0.1:${port}${path}`);
      assert.equal(res.status, 404, path);
      assert.equal(res.body, "404 page not found\n", path);
    }
  });

  test("createChannel rejects names that are not one path segment; accepts and dedupes valid ones", () => {
    for (const bad of ["a/b", "", "..", "a b", "a?b"]) {
      assert.throws(() => server.createChannel(bad), /invalid trickle channel name/, JSON.stringify(bad));
    }
    const before = server.stats().channels;
    server.createChannel("ok_name-1.x");
    server.createChannel("ok_name-1.x", "video/MP2T");
    assert.equal(server.stats().channels, before + 1);
    assert.equal(server.closeChannel("ok_name-1.x"), true);
    assert.equal(server.closeChannel("ok_name-1.x"), false);
  });

  test("unsupported method → 405 with Allow", async () => {
    const res = await request(`${base}other/0`, { method: "PUT", body: "x" });
    assert.equal(res.status, 405);
    assert.equal(res.headers["allow"], "GET, POST, DELETE");
  });
});

describe("trickle server lifecycle", () => {
  test("handle() returns false and leaves the response untouched outside basePath", async () => {
    const server = new TrickleServer({ basePath: "/t/" });
    const http = await import("node:http");
    const host = http.createServer((req, res) => {
      if (!server.handle(req, res)) {
        res.writeHead(299);
        res.end("host app");
      }
    });
    await new Promise<void>((resolve) => host.listen(0, "127.0.0.1", resolve));
    try {
      const address = host.address() as { port: number };
      const outside = await request(`http://127.0.0.1:${address.port}/other`);
      assert.equal(outside.status, 299);
      assert.equal(outside.body, "host app");
      const inside = await request(`http://127.0.0.1:${address.port}/t/none/0`);
      assert.equal(inside.status, 404);
      assert.equal(inside.body, "Stream not found\n");
    } finally {
      await server.close();
      host.closeAllConnections();
      await new Promise<void>((resolve) => host.close(() => resolve()));
    }
  });

  test("close() answers waiting GETs and POSTs with end of stream and stops listening", async () => {
    const server = new TrickleServer({ channels: [{ name: "vid" }] });
    const { url, port } = await server.listen(0);
    const reader = openRequest(`${url}vid/-1`, { timeoutMs: 5000 });
    reader.req.end();
    const preconnect = openRequest(`${url}vid/0`, {
      method: "POST",
      headers: { "Transfer-Encoding": "chunked" },
      timeoutMs: 5000,
    });
    preconnect.req.flushHeaders();
    // Both requests must have reached the server before it closes (a fixed 100 ms was once too
    // short on a loaded machine): the reader waits as a subscriber, the POST holds segment 0.
    for (let waited = 0; waited < 5000; waited += 20) {
      const { subscribers, segments } = server.stats();
      if (subscribers === 1 && segments === 1) break;
      await delay(20);
    }
    assert.equal(server.stats().subscribers, 1);
    assert.equal(server.stats().segments, 1);
    await server.close();
    const got = await reader.result;
    assert.equal(got.headers["lp-trickle-closed"], "terminated");
    const posted = await preconnect.result;
    assert.equal(posted.headers["lp-trickle-closed"], "terminated");
    assert.deepEqual(server.stats(), { channels: 0, segments: 0, bufferedBytes: 0, subscribers: 0 });
    await assert.rejects(request(`http://127.0.0.1:${port}/ai/trickle/vid/next`, { timeoutMs: 1000 }));
  });

  test("constructor rejects a basePath that does not start and end with '/'", () => {
    assert.throws(() => new TrickleServer({ basePath: "ai/trickle" }), /basePath/);
    assert.throws(() => new TrickleServer({ basePath: "/ai/trickle" }), /basePath/);
  });
});
