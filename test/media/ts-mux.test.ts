import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import path from "node:path";
import { writeFile } from "node:fs/promises";
import { TsMuxer } from "../../relay-pod/src/media/ts-mux.js";
import { TsDemuxer, type VideoAccessUnit } from "../../relay-pod/src/media/ts-demux.js";
import { splitAnnexB, nalType, NAL_AUD } from "../../relay-pod/src/media/h264.js";
import { crc32Mpeg2, PTS_MODULUS, readTimestamp } from "../../relay-pod/src/media/ts-packet.js";
import {
  makeH264Ts,
  makeTempDir,
  probeDecodedFrames,
  probeStream,
  probeVideoPackets,
  needsFfmpeg,
} from "./media-helpers.js";

function demuxAll(data: Buffer): { aus: VideoAccessUnit[]; demuxer: TsDemuxer } {
  const aus: VideoAccessUnit[] = [];
  const demuxer = new TsDemuxer({ onAccessUnit: (au) => aus.push(au) });
  demuxer.push(data);
  demuxer.flush();
  return { aus, demuxer };
}

/** Re-muxes every access unit of `aus` with TsMuxer, starting a segment at each keyframe. */
function remux(aus: VideoAccessUnit[], ptsShift = 0, muxer = new TsMuxer()): Buffer {
  const parts = aus.map((au, index) =>
    muxer.muxAccessUnit(
      {
        annexB: au.data,
        pts: (au.pts ?? 0) + ptsShift,
        dts: (au.dts ?? au.pts ?? 0) + ptsShift,
        keyframe: au.keyframe,
      },
      index === 0 || au.keyframe,
    ),
  );
  return Buffer.concat(parts);
}

/** Walks packets: per-PID continuity, PCR presence, PSI CRCs. */
function auditPackets(ts: Buffer): { pcrPackets: number; psiCrcOk: number; ccErrors: number; rai: number } {
  assert.equal(ts.length % 188, 0, "a whole number of packets");
  const lastCc = new Map<number, number>();
  let pcrPackets = 0;
  let psiCrcOk = 0;
  let ccErrors = 0;
  let rai = 0;
  for (let offset = 0; offset < ts.length; offset += 188) {
    assert.equal(ts[offset], 0x47);
    const pid = ((ts[offset + 1] & 0x1f) << 8) | ts[offset + 2];
    const cc = ts[offset + 3] & 0x0f;
    const previous = lastCc.get(pid);
    if (previous !== undefined && cc !== ((previous + 1) & 0x0f)) ccErrors++;
    lastCc.set(pid, cc);
    const hasAdaptation = (ts[offset + 3] & 0x20) !== 0;
    if (hasAdaptation && ts[offset + 4] > 0) {
      if (ts[offset + 5] & 0x10) pcrPackets++;
      if (ts[offset + 5] & 0x40) rai++;
    }
    if (pid === 0 || pid === 4096) {
      const start = offset + 5 + ts[offset + 4];
      const length = ((ts[start + 1] & 0x0f) << 8) | ts[start + 2];
      const end = start + 3 + length;
      if (crc32Mpeg2(ts, start, end - 4) === ts.readUInt32BE(end - 4)) psiCrcOk++;
    }
  }
  return { pcrPackets, psiCrcOk, ccErrors, rai };
}

describe("TsMuxer", needsFfmpeg, () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let sourceAus: VideoAccessUnit[];

  before(async () => {
    tmp = await makeTempDir("mux");
    const source = await makeH264Ts(path.join(tmp.dir, "source.ts"), { seconds: 3, size: "320x240" });
    sourceAus = demuxAll(source).aus;
  });
  after(() => tmp.cleanup());

  it("re-muxes an ffmpeg H.264 stream so that ffprobe decodes every frame with the same PTS", async () => {
    const muxed = remux(sourceAus);
    const file = path.join(tmp.dir, "remuxed.ts");
    await writeFile(file, muxed);

    const packets = await probeVideoPackets(file);
    assert.equal(packets.length, sourceAus.length);
    packets.forEach((packet, i) => {
      assert.equal(packet.pts, sourceAus[i].pts, `pts of packet ${i}`);
      assert.equal(packet.keyframe, sourceAus[i].keyframe, `keyframe ${i}`);
    });
    const { frames, stderr } = await probeDecodedFrames(file);
    assert.equal(stderr.trim(), "", "no decode errors");
    assert.equal(frames.length, sourceAus.length, "every frame decodes");
    assert.deepEqual(
      frames.map((f) => f.pts),
      sourceAus.map((au) => au.pts),
    );
    const stream = await probeStream(file);
    assert.equal(stream.codec_name, "h264");
    assert.equal(stream.width, 320);
    assert.equal(stream.height, 240);
  });

  it("writes continuous continuity counters, a PCR per frame, RAI on keyframes and valid PSI CRCs", () => {
    const muxed = remux(sourceAus);
    const audit = auditPackets(muxed);
    assert.equal(audit.ccErrors, 0);
    assert.equal(audit.pcrPackets, sourceAus.length);
    assert.equal(audit.rai, sourceAus.filter((au) => au.keyframe).length);
    const keyframes = sourceAus.filter((au) => au.keyframe).length;
    assert.equal(audit.psiCrcOk, 2 * keyframes, "PAT+PMT before each keyframe, all CRCs valid");

    // Our own demuxer agrees: no corrupt packets or CC errors, same payloads (plus an AUD).
    const { aus, demuxer } = demuxAll(muxed);
    assert.equal(demuxer.stats.corruptPackets, 0);
    assert.equal(demuxer.stats.continuityErrors, 0);
    assert.equal(aus.length, sourceAus.length);
    aus.forEach((au, i) => {
      assert.equal(au.pts, sourceAus[i].pts);
      assert.equal(au.keyframe, sourceAus[i].keyframe);
      const nals = splitAnnexB(au.data);
      assert.equal(nalType(nals[0]), NAL_AUD, "access unit starts with an AUD");
      const sourceNals = splitAnnexB(sourceAus[i].data);
      const withoutAud = nalType(sourceNals[0]) === NAL_AUD ? nals : nals.slice(1);
      assert.deepEqual(withoutAud, sourceNals);
    });
  });

  it("each segment cut at a keyframe decodes on its own", async () => {
    const muxer = new TsMuxer();
    const segments: Buffer[][] = [];
    sourceAus.forEach((au, i) => {
      const start = i === 0 || au.keyframe;
      if (start) segments.push([]);
      segments
        .at(-1)!
        .push(muxer.muxAccessUnit({ annexB: au.data, pts: au.pts!, keyframe: au.keyframe }, start));
    });
    assert.ok(segments.length >= 3);
    const second = Buffer.concat(segments[1]);
    const file = path.join(tmp.dir, "segment-1.ts");
    await writeFile(file, second);
    const { frames, stderr } = await probeDecodedFrames(file);
    assert.equal(stderr.trim(), "");
    assert.equal(frames.length, segments[1].length);
    assert.equal(frames[0].keyframe, true);
  });

  it("handles the 33-bit PTS wrap", async () => {
    const shift = PTS_MODULUS - 126000 - 45 * 3000; // wraps 45 frames in
    const muxed = remux(sourceAus, shift);
    const { aus } = demuxAll(muxed);
    aus.forEach((au, i) => assert.equal(au.pts, (sourceAus[i].pts! + shift) % PTS_MODULUS));
    assert.ok(aus.some((au) => au.pts! < 10_000) && aus.some((au) => au.pts! > PTS_MODULUS - 10_000));
    const file = path.join(tmp.dir, "wrap.ts");
    await writeFile(file, muxed);
    const { frames, stderr } = await probeDecodedFrames(file);
    assert.equal(stderr.trim(), "");
    assert.equal(frames.length, sourceAus.length);
  });

  it("writes DTS when it differs, and frames of every size as whole packets", () => {
    const muxer = new TsMuxer({ videoPid: 0x101, pmtPid: 0x1001, programNumber: 7 });
    for (let size = 0; size < 800; size++) {
      const annexB = Buffer.concat([Buffer.from([0, 0, 0, 1, 0x41]), Buffer.alloc(size, 0x5a)]);
      const out = muxer.muxAccessUnit({ annexB, pts: 1000 + size, dts: 900 + size, keyframe: false });
      assert.equal(out.length % 188, 0);
      const { aus } = demuxAll(
        Buffer.concat([muxer.muxAccessUnit({ annexB, pts: 0, keyframe: true }, true), out]),
      );
      assert.equal(aus.length, 2);
      assert.equal(aus[1].pts, 1000 + size);
      assert.equal(aus[1].dts, 900 + size);
      assert.equal(aus[1].data.length, 6 + annexB.length, "AUD + frame, no stuffing leaked into the payload");
    }
    // PTS field layout: '0011' prefix when DTS follows.
    const out = muxer.muxAccessUnit({
      annexB: Buffer.from([0, 0, 1, 0x09, 0xf0]),
      pts: 123456789,
      dts: 123450000,
      keyframe: false,
    });
    const pesStart = 4 + 1 + out[4];
    assert.equal(out[pesStart + 9] >> 4, 0x3);
    assert.equal(readTimestamp(out, pesStart + 9), 123456789);
    assert.throws(() => new TsMuxer({ videoPid: 0 }), RangeError);
    assert.throws(() => new TsMuxer({ videoPid: 300, pmtPid: 300 }), RangeError);
  });
});
