/**
 * Hostile H.264 from outside: RTP from the peer (the return path's depacketizer, corpus in
 * test/fuzz/corpus/rtp) and Annex-B access units from the trickle input (NAL splitting, keyframe
 * detection, SPS parsing). Nothing throws past its documented error, the counters say what was
 * dropped, and an access unit that never ends is cut off at the cap with memory bounded.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  H264Depacketizer,
  MAX_ACCESS_UNIT_BYTES,
  type H264AccessUnit,
  type H264DepacketizerStats,
  type H264RtpPacketLike,
} from "../../relay-pod/src/webrtc/h264-depacketizer.js";
import {
  findSps,
  firstSliceNalType,
  isHevcIrapAccessUnit,
  isIdrAccessUnit,
  parseSps,
  splitAnnexB,
} from "../../relay-pod/src/media/h264.js";
import { corpusFiles, fuzzParameters, heldBufferBytes, MiB } from "./fuzz-settings.js";

interface CorpusPacket {
  seq: number;
  ts: number;
  marker: boolean;
  payload: string;
}

function rtp(seq: number, ts: number, marker: boolean, payload: Buffer): H264RtpPacketLike {
  return { header: { sequenceNumber: seq, timestamp: ts, marker }, payload };
}

function pushAll(
  depacketizer: H264Depacketizer,
  packets: H264RtpPacketLike[],
  flush: boolean,
): H264AccessUnit[] {
  const out: H264AccessUnit[] = [];
  for (const packet of packets) out.push(...depacketizer.push(packet));
  if (flush) out.push(...depacketizer.flush());
  return out;
}

const IDR = Buffer.from("6588840021", "hex");

/** The packet the depacketizer took last (RFC 3550 serial-number order, as it judges lateness). */
function lastAccepted(packets: H264RtpPacketLike[]): { seq: number; ts: number } {
  let last: { seq: number; ts: number } | undefined;
  for (const { header } of packets) {
    const delta = last === undefined ? 1 : (header.sequenceNumber - last.seq + 0x10000) & 0xffff;
    if (delta > 0 && delta < 0x8000) last = { seq: header.sequenceNumber, ts: header.timestamp };
  }
  return last ?? { seq: 0, ts: 0 };
}

describe("hostile RTP from the peer: the corpus", () => {
  for (const { name, bytes } of corpusFiles("rtp")) {
    it(name, () => {
      const file = JSON.parse(bytes.toString("utf8")) as {
        expect: Partial<H264DepacketizerStats>;
        packets: CorpusPacket[];
        flush?: boolean;
      };
      const depacketizer = new H264Depacketizer();
      const packets = file.packets.map((p) => rtp(p.seq, p.ts, p.marker, Buffer.from(p.payload, "hex")));
      const units = pushAll(depacketizer, packets, file.flush === true);
      assert.equal(units.length, file.expect.accessUnits);
      for (const [counter, value] of Object.entries(file.expect)) {
        assert.equal(depacketizer.stats[counter as keyof H264DepacketizerStats], value, counter);
      }
      for (const unit of units) assert.deepEqual([...unit.annexB.subarray(0, 4)], [0, 0, 0, 1]);
    });
  }
});

describe("hostile RTP from the peer: generated", () => {
  const packetArb = fc.record({
    seq: fc.integer({ min: 0, max: 0xffff }),
    ts: fc.integer({ min: 0, max: 0xffffffff }),
    marker: fc.boolean(),
    payload: fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      // Structured: a real NAL type or packetization type up front, so the deeper paths run too.
      fc
        .tuple(
          fc.constantFrom(0x05, 0x07, 0x18, 0x1c, 0x19, 0x1d, 0x00, 0x1f),
          fc.uint8Array({ maxLength: 64 }),
        )
        .map(([type, rest]) => Uint8Array.from([0x60 | type, ...rest])),
    ),
  });

  it("any packet sequence: no throw, every packet counted, whole access units out", () => {
    fc.assert(
      fc.property(fc.array(packetArb, { maxLength: 60 }), (raw) => {
        const depacketizer = new H264Depacketizer({ dropUntilKeyframeAfterLoss: raw.length % 2 === 0 });
        const packets = raw.map((p) => rtp(p.seq, p.ts, p.marker, Buffer.from(p.payload)));
        const units = pushAll(depacketizer, packets, true);
        const { stats } = depacketizer;
        assert.equal(stats.packets + stats.latePackets, packets.length, "each packet used or counted late");
        assert.equal(stats.accessUnits, units.length);
        for (const unit of units) {
          assert.deepEqual([...unit.annexB.subarray(0, 4)], [0, 0, 0, 1]);
          assert.ok(unit.annexB.length <= MAX_ACCESS_UNIT_BYTES + 4 * packets.length);
        }
        // The peer's next good frame (in sequence after the last packet taken) still comes through.
        const last = lastAccepted(packets);
        const next = rtp((last.seq + 1) & 0xffff, (last.ts + 3000) >>> 0, true, IDR);
        assert.equal(depacketizer.push(next).length, 1, "a keyframe after the noise is delivered");
      }),
      fuzzParameters(),
    );
  });

  for (const [what, payload] of [
    ["one RTP timestamp without a marker", Buffer.concat([Buffer.from([0x41]), Buffer.alloc(1200, 0xab)])],
    ["an FU-A that never ends", Buffer.concat([Buffer.from([0x7c, 0x05]), Buffer.alloc(1200, 0xab)])],
  ] as const) {
    it(`${what}: dropped past ${MAX_ACCESS_UNIT_BYTES / MiB} MiB, memory bounded, then recovery`, () => {
      const depacketizer = new H264Depacketizer();
      depacketizer.push(rtp(0, 0, false, Buffer.from([0x7c, 0x85, 0x88]))); // FU-A start for the second case
      const heldBefore = heldBufferBytes();
      let seq = 1;
      // 48 MiB in 1.2 KB packets, each its own Buffer as werift hands them over.
      for (let sent = 0; sent < 48 * MiB; sent += payload.length) {
        depacketizer.push(rtp(seq++ & 0xffff, 0, false, Buffer.from(payload)));
      }
      const held = heldBufferBytes() - heldBefore;
      assert.ok(held < 24 * MiB, `held ${(held / MiB).toFixed(1)} MiB after 48 MiB in one access unit`);
      const units = depacketizer.push(rtp(seq & 0xffff, 3000, true, IDR));
      assert.equal(depacketizer.stats.oversizeAccessUnits, 1);
      assert.equal(depacketizer.stats.droppedAccessUnits, 1);
      assert.equal(units.length, 1, "the next keyframe is delivered");
    });
  }
});

describe("hostile Annex-B H.264 from the trickle input", () => {
  it("NAL splitting returns exactly the NAL units joined with start codes", () => {
    // NAL bytes without zeros cannot contain a start code, so the split is unambiguous.
    const nal = fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => Buffer.from(b.map((x) => x || 1)));
    fc.assert(
      fc.property(
        fc.array(nal, { maxLength: 12 }),
        fc.array(fc.boolean(), { minLength: 1 }),
        (nals, long) => {
          const joined = Buffer.concat(
            nals.flatMap((n, i) => [Buffer.from(long[i % long.length] ? [0, 0, 0, 1] : [0, 0, 1]), n]),
          );
          assert.deepEqual(splitAnnexB(joined), nals);
        },
      ),
      fuzzParameters(),
    );
  });

  it("random bytes: keyframe detection and SPS search never throw", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
        splitAnnexB(Buffer.from(bytes));
        firstSliceNalType(bytes);
        isIdrAccessUnit(bytes);
        isHevcIrapAccessUnit(bytes);
        findSps(Uint8Array.from([0, 0, 0, 1, 0x67, ...bytes]));
      }),
      fuzzParameters(),
    );
  });

  it("a damaged SPS is refused with a plain Error that says so, never a crash", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          const sps = parseSps(Uint8Array.from([0x67, ...bytes]));
          assert.ok(Number.isFinite(sps.width) && Number.isFinite(sps.height));
        } catch (error) {
          assert.equal((error as Error).constructor, Error, String(error));
          assert.match((error as Error).message, /SPS|not an SPS/);
        }
      }),
      fuzzParameters(),
    );
  });
});
