import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import path from "node:path";
import { writeFile } from "node:fs/promises";
import { TsSegmentCutter } from "../../relay-pod/src/media/ts-cutter.js";
import { inspectTsSegment, TsDemuxer } from "../../relay-pod/src/media/ts-demux.js";
import { packetPid } from "../../relay-pod/src/media/ts-packet.js";
import { makeH264Ts, makeTempDir, probeDecodedFrames, splitRandomly, needsFfmpeg } from "./media-helpers.js";

interface CutResult {
  segments: Buffer[];
  events: string[];
  cutter: TsSegmentCutter;
}

function cut(chunks: Buffer[], minDurationSec: number): CutResult {
  const segments: Buffer[][] = [];
  const events: string[] = [];
  let open = false;
  const cutter = new TsSegmentCutter({
    minDurationSec,
    onSegmentStart: () => {
      assert.equal(open, false, "start only after the previous end");
      open = true;
      events.push("start");
      segments.push([]);
    },
    onData: (chunk) => {
      assert.equal(open, true, "data only inside a segment");
      // Views into pushed chunks are valid now; copy like a consumer that keeps them would.
      segments.at(-1)!.push(Buffer.from(chunk));
    },
    onSegmentEnd: () => {
      assert.equal(open, true);
      open = false;
      events.push("end");
    },
  });
  for (const chunk of chunks) cutter.push(chunk);
  cutter.end();
  assert.equal(open, false, "end() closes the last segment");
  return { segments: segments.map((parts) => Buffer.concat(parts)), events, cutter };
}

/** Removes whole 188-byte packets that are PAT/PMT copies the cutter inserted. */
function packetsOf(data: Buffer): Buffer[] {
  const packets: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += 188) packets.push(data.subarray(offset, offset + 188));
  return packets;
}

/** A segment opens with SI packets (PAT before PMT, maybe SDT) and then the video. */
function assertStartsWithPsi(segment: Buffer): void {
  const leading: number[] = [];
  for (let offset = 0; offset < segment.length && packetPid(segment, offset) !== 256; offset += 188) {
    leading.push(packetPid(segment, offset));
  }
  const pat = leading.indexOf(0);
  const pmt = leading.indexOf(4096);
  assert.ok(pat >= 0 && pmt > pat, `PAT then PMT before the first video packet (pids ${leading.join(",")})`);
}

describe("TsSegmentCutter", needsFfmpeg, () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let input: Buffer;
  let inputNoRai: Buffer;
  let inputBFrames: Buffer;

  before(async () => {
    tmp = await makeTempDir("cutter");
    // Keyframes every 15 frames (0.5 s) so that the minimum duration decides where cuts happen.
    [input, inputBFrames] = await Promise.all([
      makeH264Ts(path.join(tmp.dir, "in.ts"), { seconds: 4, gop: 15 }),
      makeH264Ts(path.join(tmp.dir, "in-b.ts"), {
        seconds: 4,
        gop: 15,
        bFrames: 2,
        extra: ["-preset", "fast"],
      }),
    ]);
    // The same stream with every random_access_indicator cleared: keyframes must be found from the NALs.
    inputNoRai = Buffer.from(input);
    for (let offset = 0; offset < inputNoRai.length; offset += 188) {
      if (inputNoRai[offset + 3] & 0x20 && inputNoRai[offset + 4] > 0) inputNoRai[offset + 5] &= ~0x40;
    }
  });
  after(() => tmp.cleanup());

  for (const variant of ["with RAI", "without RAI", "with B-frames"] as const) {
    it(`cuts at keyframes after the minimum duration; segments decode alone; bytes are preserved (${variant})`, async () => {
      const source = variant === "with RAI" ? input : variant === "without RAI" ? inputNoRai : inputBFrames;
      const { segments, events, cutter } = cut(splitRandomly(source, 3000, 9), 1);
      assert.deepEqual(
        events,
        segments.flatMap(() => ["start", "end"]),
      );
      // 4 s with keyframes every 0.5 s and a 1 s minimum: cuts at 0, 1, 2, 3 s.
      assert.equal(segments.length, 4, `segments: ${segments.length}`);
      let totalFrames = 0;
      for (const [index, segment] of segments.entries()) {
        const info = inspectTsSegment(segment);
        assert.equal(info.ok, true, JSON.stringify(info));
        if (!info.ok) continue;
        assert.equal(info.startsWithKeyframe, true, `segment ${index} starts with a keyframe`);
        assert.equal(info.keyframes, 2, `segment ${index} spans two 0.5 s GOPs`);
        totalFrames += info.frames;
        assertStartsWithPsi(segment);
        const file = path.join(tmp.dir, `${variant}-${index}.ts`);
        await writeFile(file, segment);
        const { frames, stderr } = await probeDecodedFrames(file);
        assert.equal(stderr.trim(), "", `segment ${index} decodes without errors`);
        assert.equal(
          frames.length,
          info.frames,
          `ffprobe decodes all ${info.frames} frames of segment ${index}`,
        );
        assert.equal(frames[0].keyframe, true);
      }
      assert.equal(totalFrames, 120);

      // Concatenated, the segments are the input plus inserted PAT/PMT copies, nothing else.
      const output = packetsOf(Buffer.concat(segments));
      const original = packetsOf(source);
      let o = 0;
      let inserted = 0;
      for (const packet of output) {
        if (o < original.length && packet.equals(original[o])) {
          o++;
        } else {
          const pid = packetPid(packet, 0);
          assert.ok(pid === 0 || pid === 4096, `only PAT/PMT may be inserted (pid ${pid})`);
          inserted++;
        }
      }
      assert.equal(o, original.length, "every input packet is in the output, in order");
      assert.equal(inserted, cutter.stats.insertedPsiPackets);
      assert.equal(cutter.stats.bytesBeforeFirstKeyframe, 0);
    });
  }

  it("streams bytes as they come instead of holding a GOP", () => {
    const packetsPerPush = 10;
    let delivered = 0;
    let pushed = 0;
    let maxLag = 0;
    const cutter = new TsSegmentCutter({
      minDurationSec: 1,
      onSegmentStart: () => {},
      onData: (chunk) => {
        delivered += chunk.length;
      },
      onSegmentEnd: () => {},
    });
    for (let offset = 0; offset < input.length; offset += packetsPerPush * 188) {
      const chunk = input.subarray(offset, offset + packetsPerPush * 188);
      cutter.push(chunk);
      pushed += chunk.length;
      maxLag = Math.max(maxLag, pushed - delivered);
    }
    cutter.end();
    assert.ok(maxLag <= 6 * 188, `at most a few packets held back (max lag ${maxLag} bytes)`);
  });

  it("inserts PAT/PMT when the keyframe is not preceded by them, and drops data before the first keyframe", () => {
    // Remove every PSI packet except the first PAT/PMT, and start mid-GOP.
    const packets = packetsOf(input);
    const firstPat = packets.findIndex((p) => packetPid(p, 0) === 0);
    const firstPmt = packets.findIndex((p) => packetPid(p, 0) === 4096);
    const kept = packets.filter((p, i) => {
      const pid = packetPid(p, 0);
      return (pid !== 0 && pid !== 4096 && pid !== 0x11) || i === firstPat || i === firstPmt;
    });
    // Drop the first 5 video packets after the PMT so the stream begins inside a frame.
    const stripped = Buffer.concat([kept[0], kept[1], ...kept.slice(7)]);
    const { segments, cutter } = cut([stripped], 1);
    assert.ok(cutter.stats.bytesBeforeFirstKeyframe > 0);
    assert.ok(segments.length >= 3);
    for (const segment of segments) {
      assertStartsWithPsi(segment);
      const info = inspectTsSegment(segment);
      assert.equal(info.ok && info.startsWithKeyframe, true, JSON.stringify(info));
    }
    assert.ok(cutter.stats.insertedPsiPackets >= 2 * (segments.length - 1));
  });

  it("with minDurationSec 0 cuts at every keyframe, and the demuxer sees the same frames", () => {
    const { segments } = cut([input], 0);
    assert.equal(segments.length, 8);
    let frames = 0;
    const demuxer = new TsDemuxer({ onAccessUnit: () => frames++ });
    for (const segment of segments) demuxer.push(segment);
    demuxer.flush();
    assert.equal(frames, 120);
    assert.equal(demuxer.stats.continuityErrors, 0);
  });
});
