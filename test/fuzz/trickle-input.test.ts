/**
 * Hostile trickle servers: header values that are not the decimals the protocol says
 * (Lp-Trickle-Seq / Lp-Trickle-Latest), over real HTTP from a scripted server (test/trickle's
 * scripted-server.ts, which knows nothing of the protocol). The subscriber never takes an unsafe
 * number for a sequence, and a server that keeps answering nonsense ends the read with a reason
 * instead of a loop.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { integerHeader } from "../../relay-pod/src/trickle/http.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { TrickleRetryBudgetError } from "../../relay-pod/src/trickle/errors.js";
import { lastPathPart, startScriptedServer, type ScriptedServer } from "../trickle/scripted-server.js";
import { fuzzParameters } from "./fuzz-settings.js";

/** Header values a broken or hostile server may send where a sequence number belongs. */
const HOSTILE_SEQ_VALUES = [
  "99999999999999999999",
  "9007199254740993",
  "-5",
  "1e3",
  "0x10",
  "NaN",
  "",
  " 7 ",
  "3, 4",
  "+2",
  "٣", // an Arabic-Indic digit (not \d in JavaScript; node cannot send it in a header anyway)
];
const ON_THE_WIRE = HOSTILE_SEQ_VALUES.filter((value) => /^[\x20-\x7e]*$/.test(value));

describe("trickle sequence headers", () => {
  it("integerHeader: a safe integer equal to the decimal text, or undefined", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 30 }),
          fc.bigInt().map(String),
          fc.constantFrom(...HOSTILE_SEQ_VALUES),
        ),
        (text) => {
          const value = integerHeader({ "lp-trickle-seq": text }, "lp-trickle-seq");
          if (value === undefined) return;
          assert.ok(Number.isSafeInteger(value), `${value} from ${JSON.stringify(text)}`);
          assert.equal(BigInt(value), BigInt(text.trim()));
        },
      ),
      fuzzParameters(),
    );
  });

  describe("the subscriber against a server that sends them", () => {
    let server: ScriptedServer;
    let hostile = "";
    before(async () => {
      server = await startScriptedServer((request) => {
        const seq = Number(lastPathPart(request));
        if (seq >= 3) {
          // Past the first segments: end of stream, so each read stops.
          request.res.writeHead(200, { "Lp-Trickle-Closed": "terminated", "Content-Length": 0 }).end();
          return;
        }
        request.res.writeHead(200, { "Lp-Trickle-Seq": hostile, "Content-Type": "video/mp2t" });
        request.res.end(`segment ${seq}`);
      });
    });
    after(() => server.close());

    for (const value of ON_THE_WIRE) {
      it(`Lp-Trickle-Seq ${JSON.stringify(value)}: segments delivered in order, no gaps invented`, async () => {
        hostile = value;
        const subscriber = new TrickleSubscriber(`${server.url}/ai/trickle/hostile`, { startSeq: 0 });
        const seqs: number[] = [];
        for await (const segment of subscriber) {
          seqs.push(segment.seq);
          segment.discard();
          if (seqs.length > 5) break;
        }
        subscriber.close();
        assert.ok(seqs.every(Number.isSafeInteger), JSON.stringify(seqs));
        assert.ok(subscriber.stats.gaps < 10, `gaps ${subscriber.stats.gaps}`);
        assert.ok(seqs.length >= 1 && seqs.length <= 3, `read ${JSON.stringify(seqs)} then the end`);
      });
    }
  });

  it("a server that answers 470 with a nonsense Lp-Trickle-Latest forever: the read ends with a reason", async () => {
    const server = await startScriptedServer((request) => {
      request.res.writeHead(470, { "Lp-Trickle-Latest": "99999999999999999999", "Content-Length": 0 }).end();
    });
    try {
      const subscriber = new TrickleSubscriber(`${server.url}/ai/trickle/stuck`, {
        startSeq: 0,
        retryDelayMs: 5,
        maxConsecutiveFailures: 4,
      });
      await assert.rejects(async () => {
        for await (const segment of subscriber) segment.discard();
      }, TrickleRetryBudgetError);
      assert.ok(server.requests.length <= 10, `${server.requests.length} requests before giving up`);
    } finally {
      await server.close();
    }
  });
});
