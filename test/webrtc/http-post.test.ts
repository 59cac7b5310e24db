// postJson, the `/offer` request: a session that fails or stops while its offer is on the way aborts
// it, and that must end in a rejected promise, never in an uncaught "socket hang up" (CI caught one
// when the offer began before ffmpeg was started, and a forced NVENC failed at once).
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { postJson } from "../../relay-pod/src/webrtc/http-post.js";

describe("postJson", () => {
  let server: http.Server;
  let url: string;
  before(async () => {
    // Answers /slow never (an offer whose warm-up takes long), anything else at once.
    server = http.createServer((request, response) => {
      if (request.url === "/slow") return;
      response.end(JSON.stringify({ ok: true }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });

  it("answers with the status and body", async () => {
    const result = await postJson(`${url}/fast`, { a: 1 }, 5000);
    assert.deepEqual(result, { status: 200, body: '{"ok":true}' });
  });

  it("rejects at once, sending nothing, when the signal was aborted before the call", async () => {
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(postJson(`${url}/slow`, {}, 5000, controller.signal), /aborted/);
  });

  it("rejects when aborted while the request is on its way", async () => {
    const controller = new AbortController();
    const pending = postJson(`${url}/slow`, {}, 5000, controller.signal);
    setImmediate(() => controller.abort());
    await assert.rejects(pending, /aborted/);
    await new Promise((resolve) => setTimeout(resolve, 100)); // an uncaught error would surface here
  });

  it("rejects on its timeout", async () => {
    await assert.rejects(postJson(`${url}/slow`, {}, 200), /timed out after 200 ms/);
  });
});
