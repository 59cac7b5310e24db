/**
 * A stuck output POST (issue 17 part 2): the server takes the request and then reads none of the
 * body, or reads it all and never answers. The publisher cuts that POST after its stall timeout
 * with TricklePostStalledError (counted in stats.stalled), and the next segment goes out on a new
 * POST. Over real HTTP against the scripted server, which does exactly what each test says.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { TricklePostStalledError } from "../../relay-pod/src/trickle/errors.js";
import { lastPathPart, startScriptedServer, type RecordedRequest } from "./scripted-server.js";

async function acceptPost(request: RecordedRequest): Promise<void> {
  await request.readBody();
  request.res.writeHead(200, { "Lp-Trickle-Seq": lastPathPart(request), "Content-Length": "0" });
  request.res.end();
}

function acceptOther(request: RecordedRequest): void {
  request.res.writeHead(200, { "Content-Length": "0" });
  request.res.end();
}

describe("a stuck output POST", () => {
  for (const stuck of ["reads none of the body", "reads the body but never answers"] as const) {
    it(`the server ${stuck}: cut after the stall timeout, the next segment goes out on a new POST`, async () => {
      const server = await startScriptedServer(async (request) => {
        if (request.method !== "POST") return acceptOther(request);
        if (lastPathPart(request) !== "0") return acceptPost(request);
        if (stuck === "reads the body but never answers") await request.readBody();
        // Otherwise: nothing is read, nothing answered; the socket stays open.
      });
      const publisher = new TricklePublisher(`${server.url}/ai/trickle/out`, { stallTimeoutMs: 1500 });
      try {
        const started = performance.now();
        // Larger than the socket buffers, so that a server that reads nothing blocks the body.
        const big = Buffer.alloc(stuck === "reads none of the body" ? 16 * 1024 * 1024 : 1000, 0x47);
        await assert.rejects(publisher.writeSegment(big), (error: unknown) => {
          assert.ok(error instanceof TricklePostStalledError, String(error));
          assert.equal(error.phase, stuck === "reads none of the body" ? "body" : "answer");
          return true;
        });
        const tookMs = performance.now() - started;
        assert.ok(tookMs < 6000, `noticed after ${Math.round(tookMs)} ms`);
        assert.equal(publisher.stats.stalled, 1);

        await publisher.writeSegment(Buffer.from("next segment"));
        assert.equal(publisher.stats.segments, 1, "the next segment was acknowledged");
        const posts = server.requests.filter((r) => r.method === "POST").map((r) => lastPathPart(r));
        assert.ok(posts.includes("1"), `POSTs seen: ${posts.join(", ")}`);
      } finally {
        await publisher.close().catch(() => undefined);
        await server.close();
      }
    });
  }
});
