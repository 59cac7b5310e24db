/**
 * Hostile JSON from outside: REST bodies (over real HTTP to the real API server, in front of fake
 * sessions), control-channel messages (through a real trickle server and the real reader), prompts
 * (deeply nested, huge, wrong types) and the peer's data-channel replies. Each gets a 4xx or a stated
 * reason, and the service goes on answering. Corpus: test/fuzz/corpus/json.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import {
  parsePromptUpdate,
  parseStartRequest,
  RequestValidationError,
} from "../../relay-pod/src/server/validation.js";
import {
  MAX_PROMPT_DEPTH,
  MAX_PROMPTS_JSON_BYTES,
  normalisePrompts,
  PromptShapeError,
  promptsFromControlMessage,
} from "../../relay-pod/src/session/prompts.js";
import {
  MAX_CONTROL_MESSAGE_BYTES,
  parseControlMessage,
} from "../../relay-pod/src/webrtc/control-messages.js";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { TrickleControlReader } from "../../relay-pod/src/trickle/json-channels.js";
import { JSON_HEADERS, request, START, startService, type Service } from "../server/hardening-helpers.js";
import { corpusFiles, fuzzParameters, MiB } from "./fuzz-settings.js";

const corpus = corpusFiles("json");
const bodyOf = (name: string) => corpus.find((file) => file.name === name)!.bytes.toString("utf8");

/** What the API answers each corpus body: status and what the error message must mention. */
const REST_EXPECTED: Record<string, [number, RegExp]> = {
  "rest-start-not-object.json": [400, /JSON object/],
  "rest-start-null.json": [400, /JSON object/],
  "rest-start-wrong-types.json": [400, /input_stream_url/],
  "rest-start-url-scheme.json": [400, /comfystream_url/],
  "rest-start-infinite-width.json": [400, /width/],
  "rest-start-negative-rate.json": [400, /frame_rate/],
  "rest-start-window-fraction.json": [400, /peer_window_frames/],
  "rest-start-id-path.json": [400, /session_id/],
  "rest-start-proto-key.json": [400, /__proto__/],
  "rest-start-broken-json.json": [400, /not valid JSON/],
  "rest-start-deep-prompts.json": [400, new RegExp(`nest deeper than ${MAX_PROMPT_DEPTH}`)],
  "rest-start-prompts-wrong-type.json": [400, /prompts/],
  "rest-start-encoder-unknown.json": [400, /encoder/],
  "rest-prompts-string-not-json.json": [400, /must be JSON/],
  "rest-prompts-empty-list.json": [400, /at least one workflow/],
  "rest-prompts-list-of-numbers.json": [400, /workflow object/],
  "rest-prompts-deep.json": [400, /nest deeper/],
  "rest-prompts-missing.json": [400, /prompts is required/],
};

/** Control-channel messages: the prompts they carry, undefined for none, or the reason they are ignored. */
const CONTROL_EXPECTED: Record<string, number | undefined | RegExp> = {
  "control-not-object.json": /must be a JSON object/,
  "control-prompt-deep-string.json": /nest deeper/,
  "control-prompts-null.json": /workflow object/,
  "control-width-only.json": undefined,
  "control-keep-alive-extra.json": 1,
};

const PEER_EXPECTED: Record<string, RegExp | "object"> = {
  "peer-not-json.json": /not JSON/,
  "peer-array.json": /not a JSON object/,
  "peer-type-number.json": "object",
  "peer-deep.json": "object",
};

describe("hostile JSON: the corpus covers every file", () => {
  it("each corpus file has a stated outcome", () => {
    const stated = [
      ...Object.keys(REST_EXPECTED),
      ...Object.keys(CONTROL_EXPECTED),
      ...Object.keys(PEER_EXPECTED),
    ];
    assert.deepEqual(corpus.map((file) => file.name).sort(), stated.sort());
  });
});

describe("hostile REST bodies over real HTTP", () => {
  let service: Service;
  before(async () => {
    service = await startService();
    const started = await request(`${service.url}/session/start`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify({ ...START, session_id: "target" }),
    });
    assert.equal(started.status, 200);
  });
  after(() => service.close());

  for (const [name, [status, mentions]] of Object.entries(REST_EXPECTED)) {
    it(`${name}: ${status}, naming the problem`, async () => {
      const path = name.startsWith("rest-prompts-") ? "/session/target/prompts" : "/session/start";
      const answer = await request(`${service.url}${path}`, {
        method: "POST",
        headers: JSON_HEADERS,
        body: bodyOf(name),
      });
      assert.equal(answer.status, status, JSON.stringify(answer.json));
      assert.equal(answer.json.success, false);
      assert.match(String(answer.json.error), mentions);
    });
  }

  it(`prompts over ${MAX_PROMPTS_JSON_BYTES / MiB} MiB (under the 8 MiB body limit): 400, and the service carries on`, async () => {
    const huge = [{ "1": { class_type: "LoadTensor", inputs: { text: "x".repeat(2 * MiB) } } }];
    const answer = await request(`${service.url}/session/target/prompts`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify({ prompts: huge }),
    });
    assert.equal(answer.status, 400);
    assert.match(String(answer.json.error), /more than the limit of 1048576 bytes/);
    const health = await request(`${service.url}/health`);
    assert.equal(health.status, 200);
    const status = await request(`${service.url}/session/target/status`);
    assert.equal(status.status, 200, "the other session is still there");
  });

  it("any JSON value as a start body: 200 or 400, never 500", async () => {
    const bodies = fc.sample(fc.jsonValue({ maxDepth: 6 }), { seed: 17, numRuns: 40 });
    const mixed = fc.sample(
      fc.record(
        {
          input_stream_url: fc.oneof(fc.constant(START.input_stream_url), fc.jsonValue()),
          comfystream_url: fc.oneof(fc.constant(START.comfystream_url), fc.string()),
          prompts: fc.oneof(fc.constant(START.prompts), fc.jsonValue({ maxDepth: 4 })),
          width: fc.oneof(fc.integer(), fc.double(), fc.string()),
          session_id: fc.string({ maxLength: 200 }),
        },
        { requiredKeys: [] },
      ),
      { seed: 18, numRuns: 40 },
    );
    for (const body of [...bodies, ...mixed]) {
      const answer = await request(`${service.url}/session/start`, {
        method: "POST",
        headers: JSON_HEADERS,
        body: JSON.stringify(body),
      });
      assert.ok(
        [200, 400, 409].includes(answer.status),
        `${answer.status} for ${JSON.stringify(body).slice(0, 200)}`,
      );
    }
  });
});

describe("hostile request fields, in process", () => {
  it("parseStartRequest and parsePromptUpdate: a request or a RequestValidationError, nothing else", () => {
    fc.assert(
      fc.property(fc.anything({ maxDepth: 5 }), (body) => {
        for (const parse of [parseStartRequest, parsePromptUpdate]) {
          try {
            parse(body);
          } catch (error) {
            assert.ok(error instanceof RequestValidationError, String(error));
            assert.ok(error.message.length > 0);
          }
        }
      }),
      fuzzParameters(),
    );
  });

  it(`prompts: any shape is a list of workflows within ${MAX_PROMPT_DEPTH} levels, or a PromptShapeError`, () => {
    const nested = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        fc.jsonValue({ maxDepth: 2 }),
        fc.array(tie("node"), { maxLength: 3 }),
        fc.dictionary(fc.string({ maxLength: 4 }), tie("node"), { maxKeys: 3 }),
      ),
    })).node;
    fc.assert(
      fc.property(
        fc.oneof(
          nested,
          nested.map((v) => JSON.stringify(v)),
        ),
        (value) => {
          try {
            const list = normalisePrompts(value);
            assert.ok(list.length > 0 && list.every((w) => typeof w === "object" && w !== null));
            assert.ok(JSON.stringify(list).length <= MAX_PROMPTS_JSON_BYTES);
          } catch (error) {
            assert.ok(error instanceof PromptShapeError, String(error));
          }
        },
      ),
      fuzzParameters(),
    );
  });

  it("prompts nested 100 000 deep are refused without a stack overflow", () => {
    let deep: unknown = {};
    for (let i = 0; i < 100_000; i++) deep = { a: deep };
    assert.throws(() => normalisePrompts([deep]), PromptShapeError);
  });

  for (const [name, expected] of Object.entries(CONTROL_EXPECTED)) {
    it(`control message ${name}`, () => {
      const message: unknown = JSON.parse(bodyOf(name));
      if (expected instanceof RegExp) assert.throws(() => promptsFromControlMessage(message), expected);
      else assert.equal(promptsFromControlMessage(message)?.length, expected);
    });
  }

  for (const [name, expected] of Object.entries(PEER_EXPECTED)) {
    it(`peer data-channel reply ${name}`, () => {
      const parsed = parseControlMessage(bodyOf(name));
      if (expected === "object") assert.equal(parsed.ok, true);
      else assert.match((parsed as { reason: string }).reason, expected);
    });
  }

  it(`a peer reply over ${MAX_CONTROL_MESSAGE_BYTES / MiB} MiB is ignored unparsed; any bytes give an object or a reason`, () => {
    const big = Buffer.alloc(MAX_CONTROL_MESSAGE_BYTES + 1, 0x20);
    assert.match((parseControlMessage(big) as { reason: string }).reason, /larger than/);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.uint8Array({ maxLength: 200 }),
          fc.jsonValue().map((v) => JSON.stringify(v)),
        ),
        (data) => {
          const parsed = parseControlMessage(data);
          if (parsed.ok) assert.equal(typeof parsed.message, "object");
          else assert.ok(parsed.reason.length > 0);
        },
      ),
      fuzzParameters(),
    );
  });
});

describe("hostile control-channel segments through a real trickle server", () => {
  let trickle: TrickleServer;
  let base: string;
  before(async () => {
    trickle = new TrickleServer({ autocreate: true });
    base = (await trickle.listen(0)).url;
  });
  after(() => trickle.close());

  it("oversized, broken and non-object segments are skipped and counted; the next good message arrives", async () => {
    const channel = `${base}fuzz-control`;
    const publisher = new TricklePublisher(channel, { contentType: "application/json" });
    await publisher.start(); // the channel exists before the reader asks for it
    const reader = new TrickleControlReader(channel, { maxMessageBytes: 64 * 1024, startSeq: 0 });
    const received: unknown[] = [];
    const reading = (async () => {
      for await (const message of reader) {
        received.push(message);
        if (received.length === 2) break;
      }
    })();
    for (const segment of [
      Buffer.alloc(200 * 1024, 0x7b), // 200 KiB of "{": over the reader's cap
      Buffer.from(bodyOf("rest-start-broken-json.json")),
      Buffer.from('{"keep":"alive"}'),
      Buffer.from(bodyOf("control-not-object.json")),
      Buffer.from(JSON.stringify({ prompts: START.prompts })),
    ]) {
      await publisher.writeSegment(segment);
    }
    await Promise.race([
      reading,
      new Promise((_, reject) => setTimeout(() => reject(new Error("no message")), 10_000)),
    ]);
    reader.close();
    await publisher.close();
    assert.equal(
      received[0],
      "update",
      "a JSON string is a message; the session then ignores it as not an object",
    );
    assert.deepEqual(received[1], { prompts: START.prompts });
    assert.equal(reader.stats.rejected, 2, "the oversized and the broken segment");
    assert.equal(reader.stats.keepAlives, 1);
  });
});
