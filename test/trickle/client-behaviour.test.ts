/**
 * Trickle client behaviour beyond the spec's vectors: backpressure, dropping and closing, retries,
 * the subscriber's failure budget, insecure TLS, and JSON message limits. Each test scripts the
 * server's answers and asserts what the client asked.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { TrickleHttpError, TrickleRetryBudgetError } from "../../relay-pod/src/trickle/errors.js";
import { TrickleControlReader } from "../../relay-pod/src/trickle/json-channels.js";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import {
  collect,
  delay,
  lastPathPart,
  startScriptedServer,
  type RecordedRequest,
  type ScriptedServer,
} from "./scripted-server.js";

const CHANNEL_PATH = "/ai/trickle/vid";
const TEST_TIMEOUT_MS = 20_000;

type Route = (request: RecordedRequest) => void | Promise<void>;
function routed(routes: Record<string, Route[]>): Route {
  return (request) => routes[`${request.method} ${lastPathPart(request)}`]?.shift()?.(request);
}

async function acceptPost(request: RecordedRequest): Promise<void> {
  await request.readBody();
  request.res.writeHead(200, { "Lp-Trickle-Seq": lastPathPart(request), "Content-Length": "0" });
  request.res.end();
}

function acceptDelete(request: RecordedRequest): void {
  request.res.writeHead(200, { "Content-Length": "0" });
  request.res.end();
}

function serverError(request: RecordedRequest): void {
  request.res.writeHead(500, { "Content-Type": "text/plain; charset=utf-8" });
  request.res.end("Server error\n");
}

function segmentReply(seq: number, body: string): Route {
  return ({ res }) => {
    res.writeHead(200, { "Content-Type": "application/json", "Lp-Trickle-Seq": String(seq) });
    res.end(body);
  };
}

function paths(server: ScriptedServer, method?: string): string[] {
  return server.requests
    .filter((r) => method === undefined || r.method === method)
    .map((r) => `${r.method} ${r.path}`);
}

/** Resolves true if the promise settles within ms (rejections count as settled), else false. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const settled = promise.then(
    () => true,
    () => true,
  );
  const result = await Promise.race([settled, timeout]);
  clearTimeout(timer);
  return result;
}

test(
  "publisher backpressure: write() waits while the bound is full and the server is not reading",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    let startReading!: () => void;
    const reading = new Promise<void>((resolve) => (startReading = resolve));
    const server = await startScriptedServer(
      routed({
        "POST 0": [
          async (request) => {
            await reading;
            await acceptPost(request);
          },
        ],
        "POST 1": [acceptPost],
        "DELETE vid": [acceptDelete],
      }),
    );
    const maxQueuedBytes = 256 * 1024;
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH, { maxQueuedBytes });
    const chunk = Buffer.alloc(64 * 1024, 0x47);
    const writeLimitBytes = 64 * 1024 * 1024;
    try {
      const writer = await publisher.nextSegment();
      let accepted = 0;
      let stalled: Promise<void> | undefined;
      while (accepted < writeLimitBytes) {
        const write = writer.write(chunk);
        if (!(await settlesWithin(write, 500))) {
          stalled = write;
          break;
        }
        await write;
        accepted += chunk.length;
      }
      assert.ok(stalled, `write() never waited after ${accepted} bytes`);
      // Bounded: our queue plus what the kernel's socket buffers absorb on loopback.
      assert.ok(accepted < 32 * 1024 * 1024, `accepted ${accepted} bytes before backpressure`);
      assert.ok(accepted >= maxQueuedBytes, `backpressure before the queue was full (${accepted} bytes)`);
      assert.equal(await settlesWithin(stalled, 300), false, "still waiting while the server does not read");

      startReading();
      await stalled;
      accepted += chunk.length;
      await writer.end();
      assert.equal(server.requests[0]!.body.length, accepted, "every accepted byte arrived, in one POST");
      assert.equal(publisher.stats.bytes, accepted);
    } finally {
      startReading();
      await publisher.close();
      await server.close();
    }
  },
);

test(
  "publisher abort(): ends the partial POST and sends DELETE {ch}/{seq}",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "POST 0": [acceptPost],
        "POST 1": [acceptPost],
        "POST 2": [acceptPost],
        "DELETE 0": [acceptDelete],
        "DELETE vid": [acceptDelete],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
    try {
      const writer = await publisher.nextSegment();
      await writer.write(Buffer.from("partial-gop"));
      await writer.abort();
      assert.deepEqual(paths(server, "DELETE"), [`DELETE ${CHANNEL_PATH}/0`]);
      assert.equal(publisher.stats.dropped, 1);
      await assert.rejects(writer.write(Buffer.from("more")), /aborted/);
      await assert.rejects(writer.end(), /aborted/);
      // The stream carries on with the next seq.
      await publisher.writeSegment(Buffer.from("next-gop"));
      assert.equal(server.requests.find((r) => r.path === `${CHANNEL_PATH}/1`)!.body.toString(), "next-gop");
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test(
  "publisher writeSegment(): a producer failing mid-segment drops it with DELETE {ch}/{seq}",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "POST 0": [acceptPost],
        "POST 1": [acceptPost],
        "DELETE 0": [acceptDelete],
        "DELETE vid": [acceptDelete],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
    async function* failingProducer(): AsyncGenerator<Buffer> {
      yield Buffer.from("first");
      await delay(20);
      throw new Error("encoder crashed");
    }
    try {
      await assert.rejects(publisher.writeSegment(failingProducer()), /encoder crashed/);
      assert.deepEqual(paths(server, "DELETE"), [`DELETE ${CHANNEL_PATH}/0`]);
      assert.equal(publisher.stats.dropped, 1);
      assert.equal(publisher.stats.segments, 0);
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test(
  "publisher close(): DELETE {ch}, then the idle preconnect is ended",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    let heldPreconnect: RecordedRequest | undefined;
    const server = await startScriptedServer(
      routed({
        "POST 0": [acceptPost],
        "POST 1": [(request) => void (heldPreconnect = request)],
        "DELETE vid": [
          (request) => {
            acceptDelete(request);
            // What the GL server does to a waiting preconnect on DELETE (spec S13).
            heldPreconnect?.res.writeHead(200, {
              Connection: "close",
              "Lp-Trickle-Closed": "terminated",
              "Lp-Trickle-Seq": "1",
              "Content-Length": "0",
            });
            heldPreconnect?.res.end();
          },
        ],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
    try {
      await publisher.writeSegment(Buffer.from("only-gop"));
      await server.waitForRequests(2);
      const started = performance.now();
      await publisher.close();
      assert.ok(performance.now() - started < 1500, "close() does not wait out the preconnect");
      assert.equal(publisher.closed, true);
      assert.deepEqual(paths(server), [
        `POST ${CHANNEL_PATH}/0`,
        `POST ${CHANNEL_PATH}/1`,
        `DELETE ${CHANNEL_PATH}`,
      ]);
      await assert.rejects(publisher.nextSegment(), /closed/);
      await publisher.close();
      assert.equal(paths(server, "DELETE").length, 1, "close() is idempotent");
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test(
  "publisher retries a segment on a fresh POST when the first failed before any byte was sent",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    let failedFirst!: () => void;
    const firstFailed = new Promise<void>((resolve) => (failedFirst = resolve));
    const server = await startScriptedServer(
      routed({
        "POST 0": [
          (request) => {
            serverError(request);
            failedFirst();
          },
          acceptPost,
        ],
        "POST 1": [acceptPost],
        "DELETE vid": [acceptDelete],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
    try {
      await publisher.start();
      await firstFailed;
      await delay(50);
      await publisher.writeSegment(Buffer.from("gop0"));
      const posts0 = server.requests.filter((r) => r.path === `${CHANNEL_PATH}/0`);
      assert.equal(posts0.length, 2);
      assert.equal(posts0[1]!.body.toString(), "gop0");
      assert.equal(publisher.stats.retries, 1);
      assert.equal(publisher.stats.segments, 1);
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test(
  "publisher retries after a dropped connection, at most 2 attempts per segment",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const dropConnection: Route = ({ req }) => void req.socket.destroy();
    const server = await startScriptedServer(
      routed({
        "POST 0": [dropConnection, serverError],
        "POST 1": [acceptPost],
        "DELETE 0": [acceptDelete],
        "DELETE vid": [acceptDelete],
      }),
    );
    const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
    try {
      await publisher.start();
      await server.waitForRequests(1);
      await delay(100);
      const error = await publisher.writeSegment(Buffer.from("gop0")).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(error instanceof TrickleHttpError, `expected TrickleHttpError, got ${String(error)}`);
      assert.equal(error.status, 500);
      assert.equal(error.body, "Server error\n");
      assert.equal(paths(server, "POST").filter((p) => p.endsWith("/0")).length, 2);
      assert.equal(publisher.stats.retries, 1);
      assert.equal(publisher.closed, false, "a 500 is not the end of the stream");
    } finally {
      await publisher.close();
      await server.close();
    }
  },
);

test("publisher does not retry a segment once bytes were sent", { timeout: TEST_TIMEOUT_MS }, async () => {
  const server = await startScriptedServer(
    routed({
      "POST 0": [
        async (request) => {
          await request.readBody();
          serverError(request);
        },
      ],
      "POST 1": [acceptPost],
      "DELETE 0": [acceptDelete],
      "DELETE vid": [acceptDelete],
    }),
  );
  const publisher = new TricklePublisher(server.url + CHANNEL_PATH);
  try {
    await assert.rejects(publisher.writeSegment(Buffer.from("gop0")), TrickleHttpError);
    assert.equal(paths(server, "POST").filter((p) => p.endsWith("/0")).length, 1);
    assert.equal(publisher.stats.retries, 0);
    assert.deepEqual(
      paths(server, "DELETE"),
      [`DELETE ${CHANNEL_PATH}/0`],
      "the failed partial segment is dropped",
    );
  } finally {
    await publisher.close();
    await server.close();
  }
});

test(
  "subscriber gives up after maxConsecutiveFailures with a clear error",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(serverError);
    const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, {
      startSeq: 2,
      maxConsecutiveFailures: 3,
      retryDelayMs: 50,
    });
    try {
      const error = await subscriber.next().then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(
        error instanceof TrickleRetryBudgetError,
        `expected TrickleRetryBudgetError, got ${String(error)}`,
      );
      assert.equal(error.attempts, 3);
      assert.match(error.message, /gave up on .*\/vid\/2 after 3 consecutive failed attempts: .*HTTP 500/);
      assert.ok(error.lastError instanceof TrickleHttpError);
      assert.deepEqual(paths(server), Array(3).fill(`GET ${CHANNEL_PATH}/2`));
      assert.equal(subscriber.stats.retries, 2);
      const [first, second] = server.requests;
      assert.ok(second!.receivedAt - first!.receivedAt >= 40, "retry waits retryDelayMs");
      assert.equal(await subscriber.next(), null, "a subscriber that gave up stays ended");
    } finally {
      subscriber.close();
      await server.close();
    }
  },
);

test(
  "subscriber: failures below the budget are retried and a success resets the count",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const dropConnection: Route = ({ req }) => void req.socket.destroy();
    const server = await startScriptedServer(
      routed({
        "GET -2": [serverError, dropConnection, segmentReply(6, "six")],
        "GET 7": [serverError, dropConnection, segmentReply(7, "seven")],
      }),
    );
    const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, {
      startSeq: -2,
      maxConsecutiveFailures: 3,
      retryDelayMs: 10,
    });
    try {
      const six = await subscriber.next();
      assert.equal(six?.seq, 6);
      assert.equal((await collect(six.body)).toString(), "six");
      const seven = await subscriber.next();
      assert.equal(seven?.seq, 7);
      assert.equal((await collect(seven.body)).toString(), "seven");
      assert.equal(subscriber.stats.retries, 4);
      assert.equal(subscriber.stats.segments, 2);
      assert.equal(subscriber.stats.gaps, 0);
    } finally {
      subscriber.close();
      await server.close();
    }
  },
);

test("subscriber counts gaps when a 470 resync skips segments", { timeout: TEST_TIMEOUT_MS }, async () => {
  const server = await startScriptedServer(
    routed({
      "GET 0": [segmentReply(0, "a")],
      "GET 1": [
        ({ res }) => {
          res.writeHead(470, { "Lp-Trickle-Latest": "4", "Lp-Trickle-Seq": "1" });
          res.end("Entry not found");
        },
      ],
      "GET 4": [segmentReply(4, "e")],
    }),
  );
  const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, { startSeq: 0 });
  try {
    (await subscriber.next())!.discard();
    const resynced = await subscriber.next();
    assert.equal(resynced?.seq, 4);
    resynced.discard();
    assert.equal(subscriber.stats.gaps, 3);
    assert.equal(subscriber.stats.resyncs, 1);
  } finally {
    subscriber.close();
    await server.close();
  }
});

test("subscriber close() via AbortSignal aborts the pending GET", { timeout: TEST_TIMEOUT_MS }, async () => {
  const server = await startScriptedServer(() => {
    /* never answers */
  });
  const controller = new AbortController();
  const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, { signal: controller.signal });
  try {
    const pending = subscriber.next();
    const [request] = await server.waitForRequests(1);
    controller.abort();
    assert.equal(await pending, null);
    const deadline = Date.now() + 2000;
    while (!request!.socketClosed && Date.now() < deadline) await delay(10);
    assert.equal(request!.socketClosed, true);
  } finally {
    subscriber.close();
    await server.close();
  }
});

test(
  "control reader: oversized and malformed messages are counted and skipped, never fatal",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const server = await startScriptedServer(
      routed({
        "GET -1": [segmentReply(0, JSON.stringify({ prompt: "x".repeat(2000) }))],
        "GET 1": [segmentReply(1, "{not json")],
        "GET 2": [
          ({ res }) => {
            // A message streamed in several chunks is read whole (spec §17.4).
            res.writeHead(200, { "Content-Type": "application/json", "Lp-Trickle-Seq": "2" });
            res.write('{"prompt":');
            setTimeout(() => res.end('"ok"}'), 30);
          },
        ],
      }),
    );
    const reader = new TrickleControlReader(server.url + "/ai/trickle/ctl", { maxMessageBytes: 1024 });
    try {
      const iterator = reader[Symbol.asyncIterator]();
      const first = await iterator.next();
      assert.deepEqual(first.value, { prompt: "ok" });
      assert.deepEqual(reader.stats, { messages: 1, keepAlives: 0, rejected: 2 });
    } finally {
      reader.close();
      await server.close();
    }
  },
);

async function makeSelfSignedCert(): Promise<{ key: Buffer; cert: Buffer; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "trickle-tls-"));
  const keyPath = join(dir, "key.pem");
  const certPath = join(dir, "cert.pem");
  await promisify(execFile)(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      keyPath,
      "-out",
      certPath,
      "-days",
      "1",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
    ],
    { timeout: 10_000 },
  );
  return {
    key: await readFile(keyPath),
    cert: await readFile(certPath),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

test(
  "insecureTls: subscriber and publisher work against a self-signed HTTPS server, and fail without it",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const tls = await makeSelfSignedCert();
    const server = await startScriptedServer(
      (request) => {
        const part = lastPathPart(request);
        if (request.method === "GET" && part === "-1") return segmentReply(0, "secure")(request);
        if (request.method === "POST") return acceptPost(request);
        if (request.method === "DELETE") return acceptDelete(request);
      },
      { tls: { key: tls.key, cert: tls.cert } },
    );
    try {
      assert.match(server.url, /^https:/);

      const strictSubscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, {
        maxConsecutiveFailures: 1,
      });
      try {
        const error = await strictSubscriber.next().then(
          () => undefined,
          (e: unknown) => e,
        );
        assert.ok(error instanceof TrickleRetryBudgetError, `expected a failure, got ${String(error)}`);
        assert.match(error.lastError.message, /self[- ]signed/i);
      } finally {
        strictSubscriber.close();
      }

      const subscriber = new TrickleSubscriber(server.url + CHANNEL_PATH, { insecureTls: true });
      try {
        const segment = await subscriber.next();
        assert.equal((await collect(segment!.body)).toString(), "secure");
      } finally {
        subscriber.close();
      }

      const strictPublisher = new TricklePublisher(server.url + CHANNEL_PATH);
      try {
        await assert.rejects(strictPublisher.writeSegment(Buffer.from("x")), /self[- ]signed/i);
      } finally {
        await strictPublisher.close();
      }

      const publisher = new TricklePublisher(server.url + CHANNEL_PATH, { insecureTls: true });
      try {
        await publisher.writeSegment(Buffer.from("over tls"));
        assert.equal(publisher.stats.segments, 1);
      } finally {
        await publisher.close();
      }
      const tlsPost = server.requests.find((r) => r.method === "POST" && r.body.toString() === "over tls");
      assert.ok(tlsPost, "the publisher's body arrived over TLS");
    } finally {
      await server.close();
      await tls.cleanup();
    }
  },
);
