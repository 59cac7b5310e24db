import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import path from "node:path";
import { writeFile } from "node:fs/promises";
import { inspectTsSegment, TsDemuxer, type VideoAccessUnit } from "../../relay-pod/src/media/ts-demux.js";
import { isIdrAccessUnit } from "../../relay-pod/src/media/h264.js";
import {
  makeH264Ts,
  makeSegmentFiles,
  makeTempDir,
  probeVideoPackets,
  pseudoRandomBytes,
  runFfmpeg,
  splitRandomly,
  type ProbedPacket,
  needsFfmpeg,
} from "./media-helpers.js";
import { readFile } from "node:fs/promises";

function demux(chunks: Buffer[]): { aus: VideoAccessUnit[]; demuxer: TsDemuxer } {
  const aus: VideoAccessUnit[] = [];
  const demuxer = new TsDemuxer({ onAccessUnit: (au) => aus.push(au) });
  for (const chunk of chunks) demuxer.push(chunk);
  demuxer.flush();
  return { aus, demuxer };
}

function assertMatchesProbe(aus: VideoAccessUnit[], probed: ProbedPacket[]): void {
  assert.equal(aus.length, probed.length, "frame count equals ffprobe's packet count");
  for (let i = 0; i < probed.length; i++) {
    assert.equal(aus[i].pts, probed[i].pts, `pts of frame ${i}`);
    assert.equal(aus[i].dts, probed[i].dts, `dts of frame ${i}`);
    assert.equal(aus[i].keyframe, probed[i].keyframe, `keyframe flag of frame ${i}`);
  }
}

describe("TsDemuxer", needsFfmpeg, () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let plainFile: string;
  let plain: Buffer;
  let bFramesFile: string;
  let bFrames: Buffer;
  let segments: Buffer[];

  before(async () => {
    tmp = await makeTempDir("demux");
    plainFile = path.join(tmp.dir, "plain.ts");
    bFramesFile = path.join(tmp.dir, "bframes.ts");
    [plain, bFrames, segments] = await Promise.all([
      makeH264Ts(plainFile, { seconds: 4 }),
      makeH264Ts(bFramesFile, { seconds: 4, bFrames: 2, extra: ["-preset", "fast"] }),
      makeSegmentFiles(tmp.dir, { seconds: 4 }),
    ]);
  });
  after(() => tmp.cleanup());

  it("reports the same frames, PTS, DTS and keyframes as ffprobe (no B-frames)", async () => {
    const { aus, demuxer } = demux([plain]);
    assertMatchesProbe(aus, await probeVideoPackets(plainFile));
    assert.equal(aus.length, 120);
    assert.equal(demuxer.stats.keyframes, 4);
    assert.equal(demuxer.stats.corruptPackets, 0);
    assert.equal(demuxer.stats.continuityErrors, 0);
    assert.equal(demuxer.stats.streamType, 0x1b);
    assert.equal(demuxer.stats.videoPid, 256);
    for (const au of aus)
      assert.equal(isIdrAccessUnit(au.data), au.keyframe, "payload is Annex-B with IDR iff keyframe");
  });

  it("reports the same frames, PTS, DTS and keyframes as ffprobe (with B-frames)", async () => {
    const { aus } = demux([bFrames]);
    const probed = await probeVideoPackets(bFramesFile);
    assertMatchesProbe(aus, probed);
    assert.ok(
      aus.some((au) => au.pts !== au.dts),
      "the B-frame input really reorders (some PTS != DTS)",
    );
  });

  it("gives identical results whatever the chunking", () => {
    const whole = demux([plain]);
    for (const maxChunk of [1, 7, 188, 189, 1000, 65536]) {
      const split = demux(splitRandomly(plain, maxChunk, maxChunk));
      assert.equal(split.aus.length, whole.aus.length, `chunks up to ${maxChunk}`);
      for (let i = 0; i < whole.aus.length; i++) {
        assert.equal(split.aus[i].pts, whole.aus[i].pts);
        assert.equal(split.aus[i].keyframe, whole.aus[i].keyframe);
        assert.ok(
          split.aus[i].data.equals(whole.aus[i].data),
          `payload of frame ${i}, chunks up to ${maxChunk}`,
        );
      }
      assert.deepEqual(split.demuxer.stats, whole.demuxer.stats);
    }
  });

  it("reads concatenated segments from separate muxers as one stream without counting errors", async () => {
    assert.ok(segments.length >= 3, `ffmpeg made ${segments.length} segments`);
    const concatenated = Buffer.concat(segments);
    const concatFile = path.join(tmp.dir, "concat.ts");
    await writeFile(concatFile, concatenated);
    const { aus, demuxer } = demux(splitRandomly(concatenated, 5000));
    assertMatchesProbe(aus, await probeVideoPackets(concatFile));
    assert.equal(demuxer.stats.continuityErrors, 0, "a fresh muxer's CC restart is not an error");
    assert.equal(demuxer.stats.corruptPackets, 0);
    assert.equal(demuxer.stats.keyframes, segments.length);
  });

  it("inspectTsSegment accepts each ffmpeg segment and describes it", () => {
    let totalFrames = 0;
    for (const segment of segments) {
      const info = inspectTsSegment(segment);
      assert.equal(info.ok, true, JSON.stringify(info));
      if (!info.ok) continue;
      assert.equal(info.streamType, 0x1b);
      assert.equal(info.startsWithKeyframe, true);
      assert.ok(info.frames >= 1 && info.keyframes >= 1);
      assert.ok(info.firstPts !== undefined && info.lastPts !== undefined && info.lastPts > info.firstPts);
      totalFrames += info.frames;
    }
    assert.equal(totalFrames, 120);
  });

  it("inspectTsSegment rejects garbage, empty input, and TS without video, with a reason", async () => {
    const garbage = inspectTsSegment(pseudoRandomBytes(50_000, 3));
    assert.equal(garbage.ok, false);
    assert.match(!garbage.ok ? garbage.reason : "", /sync|PAT/);
    const empty = inspectTsSegment(Buffer.alloc(0));
    assert.deepEqual(empty, { ok: false, reason: "empty segment" });

    const audioFile = path.join(tmp.dir, "audio.ts");
    await runFfmpeg([
      "-f",
      "lavfi",
      "-i",
      "sine=frequency=440:duration=1",
      "-c:a",
      "mp2",
      "-f",
      "mpegts",
      audioFile,
    ]);
    const audio = inspectTsSegment(await readFile(audioFile));
    assert.equal(audio.ok, false);
    assert.match(!audio.ok ? audio.reason : "", /no video stream in the PMT \(stream types: 0x03\)/);

    // A segment truncated before its first frame completes its PAT/PMT but has no frame.
    const onlyHeaders = inspectTsSegment(plain.subarray(0, 3 * 188));
    assert.equal(onlyHeaders.ok, false);
  });

  it("counts and skips random bytes, truncated packets and bit errors without throwing", () => {
    const clean = demux([plain]);
    // Random junk between packets, a packet cut short, and junk at the start.
    const packetCount = plain.length / 188;
    const damaged: Buffer[] = [pseudoRandomBytes(1000, 11)];
    const cutAt = new Set([100, 400, 700]); // packets that lose their tail
    const junkAfter = new Set([250, 800]);
    for (let i = 0; i < packetCount; i++) {
      const packet = plain.subarray(i * 188, (i + 1) * 188);
      damaged.push(cutAt.has(i) ? packet.subarray(0, 90) : packet);
      if (junkAfter.has(i)) damaged.push(pseudoRandomBytes(333, i));
    }
    const input = Buffer.concat(damaged);
    const whole = demux([input]);
    const chunked = demux(splitRandomly(input, 700, 5));
    assert.deepEqual(
      chunked.demuxer.stats,
      whole.demuxer.stats,
      "damage is handled the same whatever the chunking",
    );
    const stats = whole.demuxer.stats;
    assert.ok(stats.corruptPackets >= 6, `corrupt packets counted: ${stats.corruptPackets}`);
    assert.ok(stats.bytesSkipped >= 1000 + 2 * 333);
    // Frames that lost bytes are dropped (continuity gap inside the PES), the others survive intact.
    const cleanByPts = new Map(clean.aus.map((au) => [au.pts, au.data]));
    assert.ok(whole.aus.length >= clean.aus.length - 6 && whole.aus.length < clean.aus.length);
    for (const au of whole.aus) {
      const original = cleanByPts.get(au.pts);
      assert.ok(original !== undefined && original.equals(au.data), `frame at pts ${au.pts} is intact`);
    }
    assert.ok(stats.pesErrors + stats.continuityErrors > 0);
  });

  it("survives pure random input and non-TS data", () => {
    for (let seed = 1; seed <= 5; seed++) {
      const { aus, demuxer } = demux(splitRandomly(pseudoRandomBytes(100_000, seed), 4096, seed));
      assert.equal(aus.length, 0);
      assert.ok(demuxer.stats.corruptPackets >= 1);
    }
    const text = demux([Buffer.from("GET / HTTP/1.1\r\n".repeat(500))]);
    assert.equal(text.aus.length, 0);
  });
});
