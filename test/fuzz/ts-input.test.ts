/**
 * Hostile MPEG-TS on the trickle input: the checked-in corpus (test/fuzz/corpus/ts) and generated
 * damage. Whatever arrives, the demuxer never throws, says why a segment is unusable, keeps its
 * memory bounded, and the next good segment still comes through whole.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { inspectTsSegment, TsDemuxer, type VideoAccessUnit } from "../../relay-pod/src/media/ts-demux.js";
import { corpusFiles, fuzzParameters, heldBufferBytes, MiB } from "./fuzz-settings.js";
import { endlessPes, reorderPackets } from "./hostile-ts.js";

const corpus = corpusFiles("ts");
const clean = corpus.find((file) => file.name === "base-h264.mpegts")!.bytes;
const CLEAN_FRAMES = 6;

function newDemuxer(): { demuxer: TsDemuxer; frames: VideoAccessUnit[] } {
  const frames: VideoAccessUnit[] = [];
  return { demuxer: new TsDemuxer({ onAccessUnit: (au) => frames.push(au) }), frames };
}

/** Feeds a good segment after whatever came before; all of its frames must come out. */
function assertRecovers(demuxer: TsDemuxer, frames: VideoAccessUnit[], after: string): void {
  demuxer.flush();
  const before = frames.length;
  demuxer.push(clean);
  demuxer.flush();
  assert.equal(frames.length - before, CLEAN_FRAMES, `a good segment after ${after} comes through whole`);
}

/** What each corpus file must give: frames demuxed, and inspectTsSegment's verdict. */
const EXPECTED: Record<string, { frames: number | [number, number]; reason?: RegExp; todo?: string }> = {
  "base-h264.mpegts": { frames: 6 },
  "base-h264-other-pids.mpegts": { frames: 6 },
  "base-aac-only.mpegts": { frames: 0, reason: /no video stream in the PMT \(stream types: 0x0f\)/ },
  "bad-sync-every-7th.mpegts": { frames: [1, 5] },
  "cc-jumps-on-video.mpegts": { frames: [0, 5] },
  "transport-errors.mpegts": { frames: 0, reason: /no PAT/ },
  // The packet just before the garbage has no sync byte after it, so it cannot be told from a cut
  // one and is dropped with the first segment's last frame. The relay flushes at each segment's
  // end (where the last packet is taken), so this costs a frame only when garbage is inside a segment.
  "garbage-between-segments.mpegts": { frames: 11 },
  "truncated-mid-packet.mpegts": { frames: 5 },
  "pat-pmt-change.mpegts": { frames: 18 },
  "no-video-in-pmt.mpegts": { frames: 0, reason: /no video stream in the PMT/ },
  "packets-reversed.mpegts": { frames: [0, 6] },
  // The repeat of the video PID's first packet (CC 0 + unit start) was once taken for a new muxer's
  // start, and a 162-byte truncated IDR came out before the whole one.
  "every-packet-twice.mpegts": { frames: 6 },
  "no-pat.mpegts": { frames: 0, reason: /no PAT/ },
  "empty.mpegts": { frames: 0, reason: /empty segment/ },
  "one-sync-byte.mpegts": { frames: 0, reason: /no MPEG-TS packets/ },
};

describe("hostile MPEG-TS input: the corpus", () => {
  it("holds every file it is expected to (and nothing unexplained)", () => {
    assert.deepEqual(corpus.map((file) => file.name).sort(), Object.keys(EXPECTED).sort());
  });

  for (const { name, bytes } of corpus) {
    const expected = EXPECTED[name] ?? { frames: -1 };
    const title = `${name}: the frames that survive, a reason when unusable, then recovery`;
    it(title, expected.todo ? { todo: expected.todo } : {}, () => {
      const { demuxer, frames } = newDemuxer();
      demuxer.push(bytes);
      demuxer.flush();
      const [min, max] = Array.isArray(expected.frames)
        ? expected.frames
        : [expected.frames, expected.frames];
      assert.ok(
        frames.length >= min && frames.length <= max,
        `${frames.length} frames, expected ${min}..${max}`,
      );
      const verdict = inspectTsSegment(bytes);
      if (expected.reason) {
        assert.equal(verdict.ok, false);
        assert.match((verdict as { reason: string }).reason, expected.reason);
      } else {
        assert.equal(verdict.ok, true, JSON.stringify(verdict));
      }
      assertRecovers(demuxer, frames, name);
    });
  }

  it("a PMT that moves the video to other PIDs is followed, and back", () => {
    const { demuxer, frames } = newDemuxer();
    demuxer.push(corpus.find((file) => file.name === "pat-pmt-change.mpegts")!.bytes);
    demuxer.flush();
    const pidRuns = frames.map((frame) => frame.pid).filter((pid, i, all) => i === 0 || all[i - 1] !== pid);
    assert.deepEqual(pidRuns, [0x100, 0x300, 0x100], "video PIDs in order of appearance");
  });
});

describe("hostile MPEG-TS input: generated", () => {
  it("random bytes, split anywhere: no throw, then a good segment comes through", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 4096 }),
        fc.array(fc.integer({ min: 1, max: 600 }), { minLength: 1, maxLength: 8 }),
        (bytes, cuts) => {
          const { demuxer, frames } = newDemuxer();
          let offset = 0;
          for (let i = 0; offset < bytes.length; i++) {
            const size = cuts[i % cuts.length]!;
            demuxer.push(Buffer.from(bytes.subarray(offset, offset + size)));
            offset += size;
          }
          assertRecovers(demuxer, frames, "random bytes");
          assert.ok(inspectTsSegment(Buffer.from(bytes)).ok === false || frames.length > 0);
        },
      ),
      fuzzParameters(),
    );
  });

  it("a good segment with bytes overwritten: no throw, a verdict, then recovery", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(clean.length - 1), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 40,
        }),
        (edits) => {
          const damaged = Buffer.from(clean);
          for (const [at, value] of edits) damaged[at] = value;
          const verdict = inspectTsSegment(damaged);
          if (!verdict.ok) assert.ok(verdict.reason.length > 0);
          const { demuxer, frames } = newDemuxer();
          demuxer.push(damaged);
          assert.ok(frames.length <= CLEAN_FRAMES);
          assertRecovers(demuxer, frames, "overwritten bytes");
        },
      ),
      fuzzParameters(),
    );
  });

  it("packets dropped, duplicated and reordered: no throw, then recovery", () => {
    const packets = clean.length / 188;
    fc.assert(
      fc.property(fc.array(fc.nat(packets - 1), { maxLength: packets * 2 }), (order) => {
        const { demuxer, frames } = newDemuxer();
        demuxer.push(reorderPackets(clean, order));
        assertRecovers(demuxer, frames, "reordered packets");
      }),
      fuzzParameters(),
    );
  });

  it("a PES that never ends is dropped at the 16 MiB cap, and memory stays bounded", () => {
    const { demuxer, frames } = newDemuxer();
    demuxer.push(clean.subarray(0, 3 * 188)); // PAT, PMT and the first video packet
    const heldBefore = heldBufferBytes();
    let peak = 0;
    for (const chunk of endlessPes(0x100, 48 * MiB)) {
      demuxer.push(chunk);
      peak = Math.max(peak, process.memoryUsage().arrayBuffers);
    }
    const held = heldBufferBytes() - heldBefore;
    assert.ok(held < 40 * MiB, `held ${(held / MiB).toFixed(1)} MiB after a 48 MiB PES`);
    const pesErrorsBefore = demuxer.stats.pesErrors;
    assertRecovers(demuxer, frames, "a 48 MiB PES");
    assert.ok(demuxer.stats.pesErrors > pesErrorsBefore, "the oversized PES counts as a PES error");
    assert.ok(frames.every((frame) => frame.data.length <= 16 * MiB));
  });
});
