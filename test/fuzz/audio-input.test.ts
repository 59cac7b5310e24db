/**
 * Hostile audio from the trickle input (issue 13's parsers, media/ts-audio.ts): ADTS payloads of any
 * bytes keep only whole, well-formed frames and count the rest; TS streams of any bytes, and real
 * audio TS cut and damaged anywhere, never throw, and every PES handed on is bounded and has whole
 * ADTS frames. The TS corpus (test/fuzz/corpus/ts) goes through the audio demuxer too.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { keepWholeAdtsFrames, TsAudioDemuxer, type AudioPes } from "../../relay-pod/src/media/ts-audio.js";
import { corpusFiles, fuzzParameters } from "./fuzz-settings.js";

/** Each ADTS frame in `payload`, by its own length field; throws if one is not whole and well-formed. */
function assertWholeAdts(payload: Buffer): number {
  let offset = 0;
  let frames = 0;
  while (offset < payload.length) {
    assert.ok(payload[offset] === 0xff && (payload[offset + 1]! & 0xf6) === 0xf0, `sync at ${offset}`);
    const length =
      ((payload[offset + 3]! & 0x03) << 11) | (payload[offset + 4]! << 3) | (payload[offset + 5]! >> 5);
    assert.ok(length >= 7 && offset + length <= payload.length, `frame at ${offset} is whole`);
    offset += length;
    frames++;
  }
  return frames;
}

function adtsFrame(length: number, fill: number): Buffer {
  const frame = Buffer.alloc(length, fill);
  frame.set([
    0xff,
    0xf1,
    0x50,
    0x80 | (length >> 11),
    (length >> 3) & 0xff,
    ((length & 7) << 5) | 0x1f,
    0xfc,
  ]);
  return frame;
}

describe("hostile audio input", () => {
  it("ADTS payloads of any bytes: only whole frames are kept, each damaged run counted once", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => {
        const payload = Buffer.from(bytes);
        const { kept, frames, skipped } = keepWholeAdtsFrames(payload);
        assert.equal(assertWholeAdts(kept), frames);
        assert.ok(kept.length <= payload.length);
        assert.ok(skipped <= payload.length);
      }),
      fuzzParameters(),
    );
  });

  it("real ADTS frames with damage spliced in: every intact frame survives", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ length: fc.integer({ min: 7, max: 800 }), garbage: fc.uint8Array({ maxLength: 40 }) }),
          {
            maxLength: 30,
          },
        ),
        (parts) => {
          const frames = parts.map((part, i) => adtsFrame(part.length, i & 0xff));
          // Garbage without a sync byte between frames: the frames around it must come through whole.
          const payload = Buffer.concat(
            parts.flatMap((part, i) => [
              Buffer.from(part.garbage).map((b) => (b === 0xff ? 0 : b)),
              frames[i]!,
            ]),
          );
          const { kept, frames: count } = keepWholeAdtsFrames(payload);
          assert.equal(count, frames.length);
          assert.ok(kept.equals(Buffer.concat(frames)));
        },
      ),
      fuzzParameters(),
    );
  });

  it("TS of any bytes, and the corpus's damaged TS, through the audio demuxer: no throw, bounded PES", () => {
    const check = (chunks: Buffer[]) => {
      const pes: AudioPes[] = [];
      const demuxer = new TsAudioDemuxer((p) => pes.push(p));
      for (const chunk of chunks) demuxer.push(chunk);
      demuxer.flush();
      for (const p of pes) assert.ok(p.payload.length <= 256 * 1024, "an audio PES is capped");
    };
    for (const { bytes } of corpusFiles("ts")) check([bytes]);
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 2048 }), { maxLength: 8 }), (chunks) => {
        // Sync bytes every 188 make the random bytes look like packets to the demuxer.
        check(chunks.map((c) => Buffer.from(c.map((b, i) => (i % 188 === 0 ? 0x47 : b)))));
      }),
      fuzzParameters(),
    );
  });
});
