/**
 * Client-side compatibility vectors C1–C12 (spec trickle-protocol.md §16) against a scripted server
 * that answers exactly as each vector says and records what the client asked.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { TrickleEndOfStreamError, TrickleStreamNotFoundError } from "../../relay-pod/src/trickle/errors.js";
import {
  TrickleControlReader,
  TrickleEventsReader,
  TrickleEventsWriter,
  unwrapEvent,
} from "../../relay-pod/src/trickle/json-channels.js";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { DEFAULT_REFRESH_AFTER_MS, TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import {
  collect,
  delay,
  lastPathPart,
  sendContinue,
  startScriptedServer,
  type RecordedRequest,
  type ScriptedServer,
} from "./scripted-server.js";

const CHANNEL_PATH = "/ai/trickle/vid";
const TEST_TIMEOUT_MS = 15_000;

/** Handlers per "METHOD last-path-part", consumed in order; requests without one are left hanging. */
type Route = (request: RecordedRequest) => void | Promise<void>;
/** go-livepeer's answer for a channel it does not know (trickle-protocol.md §5, §7). */
const streamNotFound: Route = ({ res }) => {
  res.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" });
  res.end("Stream not found\n");
};

/** The same answer to a POST, which also closes the connection to stop the upload. */
const postNotFound: Route = ({ res }) => {
  res.writeHead(404, { Connection: "close", "Content-Type": "text/plain; charset=utf-8" });
  res.end("Stream not found\n");
};

function routed(routes: Record<string, Route[]>): Route {
  return (request) => {
    const key = `${request.method} ${lastPathPart(request)}`;
    const handler = routes[key]?.shift();
    return handler?.(request);
  };
}

/** A POST answered the way the GL server does after the body ended (spec §5.1, S3). */
async function acceptPost(request: RecordedRequest): Promise<void> {
  await request.readBody();
  request.res.writeHead(200, { "Lp-Trickle-Seq": lastPathPart(request), "Content-Length": "0" });
  request.res.end();
}

function acceptDelete(request: RecordedRequest): void {
  request.res.writeHead(200, { "Content-Length": "0" });
  request.res.end();
}

function segmentReply(seq: number, body: string, contentType = "video/MP2T"): Route {
  return (request) => {
    request.res.writeHead(200, { "Content-Type": contentType, "Lp-Trickle-Seq": String(seq) });
    request.res.end(body);
  };
}

function paths(server: ScriptedServer, method?: string): string[] {
  return server.requests
    .filter((r) => method === undefined || r.method === method)
    .map((r) => `${r.method} ${r.path}`);
}

async function waitUntil(condition: () => boolean, timeoutMs = 3000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

test(
  "C1 Go-style publisher start: POST /0 preconnected before data, POST /1 opened when /0 is taken",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({ "POST 0": [acceptPost], "POST 1": [acceptPost], "DELETE vid": [acceptDelete] }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
    try {
      await publisher.start();
      const [first] = await server.waitForRequests(1);
      assert.equal(`${first!.method} ${first!.path}`, `POST ${CHANNEL_PATH}/0`);
      assert.equal(first!.headers["content-type"], "video/MP2T");
      assert.equal(first!.headers["transfer-encoding"], "chunked");
      assert.equal(first!.headers["content-length"], undefined);
      await delay(100);
      assert.equal(server.requests.length, 1, "nothing but the preconnect before the first segment is taken");

      const writer = await publisher.nextSegment();
      assert.equal(writer.seq, 0);
      const [, second] = await server.waitForRequests(2);
      assert.equal(`${second!.method} ${second!.path}`, `POST ${CHANNEL_PATH}/1`);
      assert.equal(first!.bodyEndedAt, undefined, "POST /1 is open while segment 0 is still being written");

      await writer.write(Buffer.from("hello"));
      await writer.end();
      assert.equal(first!.body.toString(), "hello");
      assert.equal(publisher.stats.segments, 1);
      assert.equal(publisher.stats.bytes, 5);
    } finally {
      await publisher.close();
      await server.close();
    }
    assert.deepEqual(paths(server, "DELETE"), [`DELETE ${CHANNEL_PATH}`]);
  },
);

test(
  "C2 PG-style publisher start: GET /next then POST /7 with Lp-Trickle-Reset, POST /8 without",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "GET next": [
          ({ res }) => {
            res.writeHead(200, { "Lp-Trickle-Latest": "7", "Content-Type": "text/plain" });
            res.end("7");
          },
        ],
        "POST 7": [acceptPost],
        "POST 8": [acceptPost],
        "POST 9": [acceptPost],
        "DELETE vid": [acceptDelete],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH, {
      start: "next",
      contentType: "application/json",
    });
    try {
      await publisher.writeSegment(Buffer.from('{"a":1}'));
      await publisher.writeSegment(Buffer.from('{"b":2}'));
      const [next, post7, post8] = server.requests;
      assert.equal(`${next!.method} ${next!.path}`, `GET ${CHANNEL_PATH}/next`);
      assert.equal(`${post7!.method} ${post7!.path}`, `POST ${CHANNEL_PATH}/7`);
      assert.equal(post7!.headers["lp-trickle-reset"], "1");
      assert.equal(post7!.body.toString(), '{"a":1}');
      assert.equal(`${post8!.method} ${post8!.path}`, `POST ${CHANNEL_PATH}/8`);
      assert.equal(post8!.headers["lp-trickle-reset"], undefined);
      assert.equal(post8!.body.toString(), '{"b":2}');
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test(
  "C2 fallback: an older server without /next (400) gets POST /-1 with the reset, then the acknowledged seq + 1",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "GET next": [
          ({ res }) => {
            res.writeHead(400, { "Content-Type": "text/plain; charset=utf-8" });
            res.end("Invalid idx\n");
          },
        ],
        "POST -1": [
          async (request) => {
            await request.readBody();
            request.res.writeHead(200, { "Lp-Trickle-Seq": "3", "Content-Length": "0" });
            request.res.end();
          },
        ],
        "POST 4": [acceptPost],
        "POST 5": [acceptPost],
        "DELETE vid": [acceptDelete],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH, { start: "next" });
    try {
      const first = await publisher.nextSegment();
      assert.equal(first.seq, -1);
      await first.write(Buffer.from("one"));
      await first.end();
      assert.equal(first.seq, 3, "seq resolved from the server's Lp-Trickle-Seq");
      await publisher.writeSegment(Buffer.from("two"));
      const posts = server.requests.filter((r) => r.method === "POST");
      assert.deepEqual(
        posts.map((r) => [r.path, r.headers["lp-trickle-reset"]]),
        [
          [`${CHANNEL_PATH}/-1`, "1"],
          [`${CHANNEL_PATH}/4`, undefined],
        ],
      );
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

// Not a spec vector: the output channel of a new session does not exist until a server with
// autocreate sees its first POST (issue 10: the README's REST example failed on exactly this).
test(
  "/next answering 404 is not terminal: the publisher posts seq 0, which creates the channel",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "GET next": [streamNotFound],
        "POST 0": [acceptPost],
        "POST 1": [acceptPost],
        "DELETE vid": [acceptDelete],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH, { start: "next" });
    try {
      await publisher.start();
      assert.equal(publisher.closed, false);
      await publisher.writeSegment(Buffer.from("first"));
      assert.deepEqual(paths(server).slice(0, 2), [`GET ${CHANNEL_PATH}/next`, `POST ${CHANNEL_PATH}/0`]);
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test(
  "/next 404 and then the POST refused with 404: terminal, and the error says what to do",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({ "GET next": [postNotFound], "POST 0": [postNotFound] }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH, { start: "next" });
    try {
      await publisher.start();
      await waitUntil(() => publisher.closed, 3000, "publisher.closed");
      await assert.rejects(publisher.writeSegment(Buffer.from("data")), (error: Error) => {
        assert.ok(error instanceof TrickleStreamNotFoundError);
        assert.match(error.message, new RegExp(`${CHANNEL_PATH}/0`));
        assert.match(error.message, /create the channel first .* autocreate/);
        return true;
      });
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test(
  "C3 interim responses: two 100 Continue on the idle POST, then data, then 200 => success",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    let continuesSent!: () => void;
    const continues = new Promise<void>((resolve) => (continuesSent = resolve));
    const server = await startScriptedServer(
      routed({
        "POST 0": [
          async (request) => {
            sendContinue(request.res);
            await delay(50);
            sendContinue(request.res);
            continuesSent();
            await acceptPost(request);
          },
        ],
        "POST 1": [acceptPost],
        "DELETE vid": [acceptDelete],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
    try {
      await publisher.start();
      await continues;
      await delay(50);
      const writer = await publisher.nextSegment();
      await writer.write(Buffer.from("seg0data"));
      await writer.end();
      assert.equal(server.requests[0]!.body.toString(), "seg0data");
      assert.equal(publisher.stats.segments, 1);
      assert.equal(publisher.closed, false);
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test(
  "C4 early close: a preconnected POST answered 200 + Lp-Trickle-Closed before any body => end of stream, no more POSTs",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "POST 0": [
          ({ res }) => {
            res.writeHead(200, {
              Connection: "close",
              "Lp-Trickle-Closed": "terminated",
              "Lp-Trickle-Seq": "0",
              "Content-Length": "0",
            });
            res.end();
          },
        ],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
    try {
      await publisher.start();
      await waitUntil(() => publisher.closed, 3000, "publisher.closed");
      await assert.rejects(publisher.nextSegment(), TrickleEndOfStreamError);
      await assert.rejects(publisher.writeSegment(Buffer.from("late")), TrickleEndOfStreamError);
      await publisher.close();
      await delay(200);
      assert.deepEqual(paths(server), [`POST ${CHANNEL_PATH}/0`]);
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test(
  "C4 early close while a handed-out segment waits for data: write() rejects with end of stream",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    let closeSegment!: () => void;
    const server = await startScriptedServer(
      routed({
        "POST 0": [
          ({ res }) =>
            new Promise<void>((resolve) => {
              closeSegment = () => {
                res.writeHead(200, {
                  Connection: "close",
                  "Lp-Trickle-Closed": "terminated",
                  "Lp-Trickle-Seq": "0",
                  "Content-Length": "0",
                });
                res.end();
                resolve();
              };
            }),
        ],
        "POST 1": [
          ({ res }) => {
            // The preconnect is woken by the same close (spec S13).
            setTimeout(() => {
              res.writeHead(200, {
                Connection: "close",
                "Lp-Trickle-Closed": "terminated",
                "Lp-Trickle-Seq": "1",
                "Content-Length": "0",
              });
              res.end();
            }, 20);
          },
        ],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
    try {
      const writer = await publisher.nextSegment();
      await server.waitForRequests(2);
      closeSegment();
      await waitUntil(() => publisher.closed, 3000, "publisher.closed");
      await assert.rejects(writer.write(Buffer.from("x")), TrickleEndOfStreamError);
      await assert.rejects(publisher.nextSegment(), TrickleEndOfStreamError);
      await delay(100);
      assert.equal(paths(server, "POST").length, 2);
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test("C5 404 on POST => terminal stream-not-found, no retry loop", { timeout: TEST_TIMEOUT_MS }, async () => {
  const server = await startScriptedServer(routed({ "POST 0": [postNotFound], "POST 1": [postNotFound] }));
  const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
  try {
    await publisher.start();
    await waitUntil(() => publisher.closed, 3000, "publisher.closed");
    await assert.rejects(publisher.writeSegment(Buffer.from("data")), TrickleStreamNotFoundError);
    await assert.rejects(publisher.writeSegment(Buffer.from("data")), TrickleStreamNotFoundError);
    await delay(300);
    assert.deepEqual(paths(server), [`POST ${CHANNEL_PATH}/0`], "one POST, never retried");
    assert.equal(publisher.stats.retries, 0);
  } finally {
    await publisher.close();
    await server.close();
  }
  assert.equal(server.requests.length, 1, "close() sends no DELETE for a stream the server does not know");
});

test(
  "C6 subscriber: 470 with Lp-Trickle-Latest: 12 for seq 5 => next request GET /12",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "GET 5": [
          ({ res }) => {
            res.writeHead(470, {
              "Lp-Trickle-Latest": "12",
              "Lp-Trickle-Seq": "5",
              "Content-Type": "text/plain; charset=utf-8",
            });
            res.end("Entry not found");
          },
        ],
        "GET 12": [segmentReply(12, "twelve")],
      }),
    );
    const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, { startSeq: 5 });
    try {
      const segment = await subscriber.next();
      assert.ok(segment);
      assert.equal(segment.seq, 12);
      assert.equal((await collect(segment.body)).toString(), "twelve");
      await server.waitForRequests(3);
      assert.deepEqual(paths(server), [
        `GET ${CHANNEL_PATH}/5`,
        `GET ${CHANNEL_PATH}/12`,
        `GET ${CHANNEL_PATH}/13`,
      ]);
      const [refused, resynced] = server.requests;
      assert.ok(resynced!.receivedAt - refused!.receivedAt < 200, "resync is immediate, no retry delay");
      assert.equal(subscriber.stats.resyncs, 1);
      assert.equal(subscriber.stats.retries, 0);
    } finally {
      subscriber.close();
      await server.close();
    }
  },
);

test(
  "C7 subscriber ahead of the writer: 470 Latest: 3 for seq 4 => wait ~250 ms, GET /4 again",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "GET 4": [
          ({ res }) => {
            res.writeHead(470, { "Lp-Trickle-Latest": "3", "Lp-Trickle-Seq": "4" });
            res.end("Entry not found");
          },
          segmentReply(4, "four"),
        ],
      }),
    );
    const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, { startSeq: 4 });
    try {
      const segment = await subscriber.next();
      assert.equal(segment?.seq, 4);
      segment.discard();
      const [first, second] = server.requests;
      assert.equal(second!.path, `${CHANNEL_PATH}/4`);
      const waited = second!.receivedAt - first!.receivedAt;
      assert.ok(waited >= 200 && waited < 1500, `waited ${waited.toFixed(0)} ms`);
      assert.equal(subscriber.stats.resyncs, 0);
    } finally {
      subscriber.close();
      await server.close();
    }
  },
);

test(
  "C8 subscriber: 200 with Lp-Trickle-Seq: 41 => GET /42 preconnected right after the headers",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    let finishSegment!: () => void;
    const server = await startScriptedServer(
      routed({
        "GET -1": [
          ({ res }) => {
            res.writeHead(200, { "Content-Type": "video/MP2T", "Lp-Trickle-Seq": "41" });
            res.write("part1");
            finishSegment = () => res.end("part2");
          },
        ],
      }),
    );
    const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH);
    try {
      const segment = await subscriber.next();
      assert.ok(segment);
      assert.equal(segment.seq, 41);
      assert.equal(segment.contentType, "video/MP2T");
      const [, preconnect] = await server.waitForRequests(2, 2000);
      assert.equal(`${preconnect!.method} ${preconnect!.path}`, `GET ${CHANNEL_PATH}/42`);
      finishSegment();
      assert.equal((await collect(segment.body)).toString(), "part1part2");
      assert.equal(server.requests[0]!.path, `${CHANNEL_PATH}/-1`, "default start is -1");
    } finally {
      subscriber.close();
      await server.close();
    }
  },
);

test(
  "C9 subscriber end of stream: 200 + Lp-Trickle-Closed + empty body => null, no further GET",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "GET -1": [
          ({ res }) => {
            res.writeHead(200, {
              "Lp-Trickle-Closed": "terminated",
              "Lp-Trickle-Latest": "9",
              "Lp-Trickle-Seq": "9",
              "Content-Length": "0",
            });
            res.end();
          },
        ],
      }),
    );
    const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH);
    try {
      assert.equal(await subscriber.next(), null);
      assert.equal(await subscriber.next(), null);
      await delay(200);
      assert.equal(server.requests.length, 1);
    } finally {
      subscriber.close();
      await server.close();
    }
  },
);

test("C9 subscriber end of stream: 404 => null, no further GET", { timeout: TEST_TIMEOUT_MS }, async () => {
  const server = await startScriptedServer(
    routed({
      "GET -1": [segmentReply(0, "zero")],
      "GET 1": [streamNotFound],
    }),
  );
  const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH);
  try {
    const segments: string[] = [];
    for await (const segment of subscriber) segments.push((await collect(segment.body)).toString());
    assert.deepEqual(segments, ["zero"]);
    await delay(200);
    assert.deepEqual(paths(server), [`GET ${CHANNEL_PATH}/-1`, `GET ${CHANNEL_PATH}/1`]);
  } finally {
    subscriber.close();
    await server.close();
  }
});

// Not a spec vector: a relay session may start a moment before its input's publisher creates the
// channel (the README's REST example did); waitForChannelMs covers only that, never a 404 mid-stream.
test(
  "waitForChannelMs: a 404 before the first segment is asked again until the channel exists",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "GET -1": [streamNotFound, streamNotFound, segmentReply(0, "zero")],
        "GET 1": [streamNotFound],
      }),
    );
    const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, { waitForChannelMs: 5000 });
    try {
      const segments: string[] = [];
      for await (const segment of subscriber) segments.push((await collect(segment.body)).toString());
      assert.deepEqual(
        segments,
        ["zero"],
        "the segment once the channel exists, then the end at the next 404",
      );
      assert.equal(paths(server).filter((line) => line.endsWith("/-1")).length, 3);
    } finally {
      subscriber.close();
      await server.close();
    }
    const impatient = await startScriptedServer(routed({ "GET -1": [streamNotFound] }));
    const plain = new TrickleSubscriber(impatient.url + CHANNEL_PATH);
    try {
      assert.equal(await plain.next(), null, "without it a 404 ends the stream at once (spec §11)");
    } finally {
      plain.close();
      await impatient.close();
    }
  },
);

test(
  "C10 headerless GET is aborted and re-issued after refreshAfterMs (default 20 s)",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    assert.equal(DEFAULT_REFRESH_AFTER_MS, 20_000);
    const server = await startScriptedServer(
      routed({
        "GET 3": [
          () => {
            /* no headers: the writer has not started seq 3 */
          },
          segmentReply(3, "three"),
        ],
      }),
    );
    const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, { startSeq: 3, refreshAfterMs: 500 });
    try {
      const segment = await subscriber.next();
      assert.equal(segment?.seq, 3);
      assert.equal((await collect(segment.body)).toString(), "three");
      const [stale, fresh] = server.requests;
      assert.equal(stale!.path, `${CHANNEL_PATH}/3`);
      assert.equal(fresh!.path, `${CHANNEL_PATH}/3`);
      const gap = fresh!.receivedAt - stale!.receivedAt;
      assert.ok(gap >= 450 && gap < 2000, `re-issued after ${gap.toFixed(0)} ms`);
      await waitUntil(() => stale!.socketClosed, 2000, "stale GET's connection to close");
      assert.equal(subscriber.stats.refreshes, 1);
      assert.equal(subscriber.stats.retries, 0);
    } finally {
      subscriber.close();
      await server.close();
    }
  },
);

test(
  "C10 default refresh: a headerless GET is not re-issued early",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(() => {
      /* never answers */
    });
    const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, { startSeq: 3 });
    try {
      const pending = subscriber.next();
      await delay(1200);
      assert.equal(server.requests.length, 1);
      assert.equal(subscriber.stats.refreshes, 0);
      subscriber.close();
      assert.equal(await pending, null, "close() ends a pending next() with null");
    } finally {
      subscriber.close();
      await server.close();
    }
  },
);

test(
  'C11 control reader: {"keep":"alive"} is dropped, the prompt is delivered',
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "GET -1": [segmentReply(0, '{"keep":"alive"}', "application/json")],
        "GET 1": [segmentReply(1, '{"prompt":"a cat in a hat"}', "application/json")],
      }),
    );
    const reader = new TrickleControlReader(server.url + "/ai/trickle/ctl");
    try {
      const iterator = reader[Symbol.asyncIterator]();
      const first = await iterator.next();
      assert.deepEqual(first.value, { prompt: "a cat in a hat" });
      assert.deepEqual(reader.stats, { messages: 1, keepAlives: 1, rejected: 0 });
    } finally {
      reader.close();
      await server.close();
    }
  },
);

test(
  "C12 events reader: wrapped status event and bare error event are both delivered",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const wrapped = JSON.stringify({
      event: { type: "status", pipeline: "comfyui", state: "ONLINE", timestamp: 1 },
      queue_event_type: "ai_stream_events",
    });
    const bare = JSON.stringify({ type: "error", message: "boom", time: 2 });
    const server = await startScriptedServer(
      routed({
        "GET -1": [segmentReply(0, wrapped, "application/json")],
        "GET 1": [segmentReply(1, bare, "application/json")],
      }),
    );
    const reader = new TrickleEventsReader(server.url + "/ai/trickle/ev");
    try {
      const received = [];
      for await (const event of reader) {
        received.push(event);
        if (received.length === 2) break;
      }
      assert.equal(received[0]!.event.type, "status");
      assert.equal(received[0]!.queueEventType, "ai_stream_events");
      assert.equal(received[1]!.event.type, "error");
      assert.equal(received[1]!.event.message, "boom");
      assert.equal(received[1]!.queueEventType, "ai_stream_events");
    } finally {
      reader.close();
      await server.close();
    }
  },
);

test("C12 unwrapEvent: wrapper, bare body, custom queue type, non-object", () => {
  assert.deepEqual(unwrapEvent({ event: { type: "status" }, queue_event_type: "ai_stream_status" }), {
    event: { type: "status" },
    queueEventType: "ai_stream_status",
  });
  assert.deepEqual(unwrapEvent({ type: "error", message: "x" }), {
    event: { type: "error", message: "x" },
    queueEventType: "ai_stream_events",
  });
  assert.throws(() => unwrapEvent("text"), TypeError);
  assert.throws(() => unwrapEvent([1]), TypeError);
});

test(
  "C12 events writer: ai-runner wrapper with a timestamp, one segment per event in a single write",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "POST 0": [acceptPost],
        "POST 1": [acceptPost],
        "POST 2": [acceptPost],
        "DELETE ev": [acceptDelete],
      }),
    );
    const writer = new TrickleEventsWriter(server.url + "/ai/trickle/ev");
    try {
      const before = Date.now();
      await writer.write({ type: "status", state: "ONLINE" }, "ai_stream_status");
      await writer.write({ type: "error", message: "x" });
      const bodies = server.requests
        .filter((r) => r.method === "POST" && r.bodyEndedAt !== undefined)
        .map((r) => JSON.parse(r.body.toString()));
      assert.equal(bodies.length, 2);
      assert.equal(bodies[0].queue_event_type, "ai_stream_status");
      assert.equal(bodies[0].event.type, "status");
      assert.ok(bodies[0].event.timestamp >= before && bodies[0].event.timestamp <= Date.now());
      assert.equal(bodies[1].queue_event_type, "ai_stream_events");
      assert.deepEqual(unwrapEvent(bodies[1]).event.message, "x");
      assert.equal(server.requests[0]!.headers["content-type"], "application/json");
    } finally {
      await writer.close();
      await server.close();
    }
  },
);
