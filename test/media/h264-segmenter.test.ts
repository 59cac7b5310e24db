import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import path from "node:path";
import { findSps, isIdrAccessUnit, nalType, parseSps, splitAnnexB } from "../../relay-pod/src/media/h264.js";
import { IdrSegmenter } from "../../relay-pod/src/media/segmenter.js";
import { TsDemuxer, type VideoAccessUnit } from "../../relay-pod/src/media/ts-demux.js";
import { PTS_MODULUS } from "../../relay-pod/src/media/ts-packet.js";
import { makeH264Ts, makeTempDir, needsFfmpeg } from "./media-helpers.js";

function demuxAll(data: Buffer): VideoAccessUnit[] {
  const aus: VideoAccessUnit[] = [];
  const demuxer = new TsDemuxer({ onAccessUnit: (au) => aus.push(au) });
  demuxer.push(data);
  demuxer.flush();
  return aus;
}

describe("h264 helpers", needsFfmpeg, () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  before(async () => {
    tmp = await makeTempDir("h264");
  });
  after(() => tmp.cleanup());

  it("splits Annex-B with 3- and 4-byte start codes, without start codes or trailing zeros", () => {
    const data = Buffer.from([0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 0, 0, 3, 1, 9]);
    const nals = splitAnnexB(data);
    assert.deepEqual(
      nals.map((n) => [...n]),
      [
        [0x67, 1, 2],
        [0x68, 3],
        [0x65, 0, 0, 3, 1, 9],
      ],
    );
    assert.deepEqual(nals.map(nalType), [7, 8, 5]);
    assert.equal(isIdrAccessUnit(data), true);
    assert.equal(isIdrAccessUnit(Buffer.from([0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x41, 0x9a])), false);
    assert.deepEqual(splitAnnexB(Buffer.from([1, 2, 3])), []);
    assert.deepEqual(splitAnnexB(Buffer.alloc(0)), []);
  });

  const cases = [
    {
      name: "baseline 320x240",
      size: "320x240",
      args: ["-profile:v", "baseline"],
      profile: 66,
      constrained: true,
      b: false,
    },
    {
      name: "high with B-frames 640x360",
      size: "640x360",
      args: ["-profile:v", "high", "-bf", "2"],
      profile: 100,
      constrained: false,
      b: true,
    },
    {
      name: "high without B-frames 1280x720",
      size: "1280x720",
      args: ["-profile:v", "high", "-bf", "0"],
      profile: 100,
      constrained: false,
      b: false,
    },
    {
      name: "main odd size 426x240",
      size: "426x240",
      args: ["-profile:v", "main", "-bf", "0"],
      profile: 77,
      constrained: false,
      b: false,
    },
  ];
  for (const c of cases) {
    it(`parses the SPS of ffmpeg's ${c.name}`, async () => {
      const file = path.join(tmp.dir, `${c.name.replace(/\W+/g, "-")}.ts`);
      const aus = demuxAll(
        await makeH264Ts(file, {
          seconds: 0.2,
          size: c.size,
          extra: ["-preset", "medium", ...c.args, "-level", "3.1"],
        }),
      );
      const sps = findSps(aus[0].data);
      assert.ok(sps, "an SPS in the first access unit");
      const [width, height] = c.size.split("x").map(Number);
      assert.equal(sps.width, width);
      assert.equal(sps.height, height);
      assert.equal(sps.profileIdc, c.profile);
      assert.equal(sps.levelIdc, 31);
      assert.equal(sps.constrainedBaseline, c.constrained);
      assert.equal(sps.bFramesPossible, c.b);
      if (c.profile !== 66) assert.equal(sps.maxNumReorderFrames, c.b ? 2 : 0);
      assert.match(sps.profileLevelId, /^[0-9a-f]{6}$/);
    });
  }

  it("rejects what is not an SPS", () => {
    assert.throws(() => parseSps(Buffer.from([0x68, 1, 2, 3])), /not an SPS/);
    assert.throws(() => parseSps(Buffer.from([0x67, 0x42, 0xc0])), /not an SPS/);
  });
});

describe("IdrSegmenter", () => {
  it("cuts at the first IDR, then only at IDRs once the minimum duration has passed", () => {
    const segmenter = new IdrSegmenter({ minSegmentDurationSec: 1 });
    assert.equal(segmenter.shouldCut(1000, false), false, "never on a non-IDR");
    assert.equal(segmenter.shouldCut(3000, true), true, "the first IDR starts a segment");
    assert.equal(segmenter.shouldCut(3000 + 45_000, true), false, "0.5 s later is too early");
    assert.equal(segmenter.shouldCut(3000 + 90_000, false), false, "1 s later but not an IDR");
    assert.equal(segmenter.shouldCut(3000 + 89_999, true), false, "just under 1 s");
    assert.equal(segmenter.shouldCut(3000 + 90_000, true), true, "exactly 1 s");
    assert.equal(segmenter.currentSegmentStartPts, 93_000);
    assert.equal(segmenter.shouldCut(93_000 + 100_000, true), true);
  });

  it("handles the 33-bit wrap and treats a backwards jump as a new timeline", () => {
    const segmenter = new IdrSegmenter({ minSegmentDurationSec: 2 });
    assert.equal(segmenter.shouldCut(PTS_MODULUS - 90_000, true), true);
    assert.equal(segmenter.shouldCut(45_000, true), false, "1.5 s across the wrap");
    assert.equal(segmenter.shouldCut(90_000, true), true, "2 s across the wrap");
    assert.equal(segmenter.shouldCut(80_000, true), true, "PTS went backwards: cut");
    segmenter.reset();
    assert.equal(segmenter.shouldCut(80_001, true), true, "after reset the next IDR cuts");
  });

  it("defaults to 1 s and validates its option", () => {
    const segmenter = new IdrSegmenter({});
    assert.equal(segmenter.shouldCut(0, true), true);
    assert.equal(segmenter.shouldCut(89_000, true), false);
    assert.equal(segmenter.shouldCut(90_000, true), true);
    assert.throws(() => new IdrSegmenter({ minSegmentDurationSec: -1 }), RangeError);
  });
});
