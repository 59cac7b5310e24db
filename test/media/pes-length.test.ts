// A video frame is complete at its PES's stuffed last packet (media-pipeline.md: trickle segments are
// MPEG-TS from ffmpeg's muxer, which pads only a PES's last packet), so the relay's demuxer emits it
// there and the forward transcode's ffmpeg gets the PES with its length written, instead of both
// waiting for the next frame to start (one frame, 33 ms at 30 fps). Real ffmpeg-made TS throughout.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { PesLengthWriter } from "../../relay-pod/src/media/pes-length.js";
import { TsDemuxer, type VideoAccessUnit } from "../../relay-pod/src/media/ts-demux.js";
import { packetHasPusi, packetPid, TS_PACKET_SIZE } from "../../relay-pod/src/media/ts-packet.js";
import { makeH264Ts, makeTempDir, needsFfmpeg, probeVideoPackets } from "./media-helpers.js";
import { writeFile } from "node:fs/promises";

/** Video PES starts: packet index, and the PES_packet_length written in its header. */
function videoPesLengths(ts: Buffer): Array<{ packet: number; length: number }> {
  const found: Array<{ packet: number; length: number }> = [];
  for (let offset = 0; offset + TS_PACKET_SIZE <= ts.length; offset += TS_PACKET_SIZE) {
    if (!packetHasPusi(ts, offset)) continue;
    const payload = (ts[offset + 3]! & 0x20) !== 0 ? offset + 5 + ts[offset + 4]! : offset + 4;
    if (
      ts[payload] === 0 &&
      ts[payload + 1] === 0 &&
      ts[payload + 2] === 1 &&
      (ts[payload + 3]! & 0xf0) === 0xe0
    ) {
      found.push({ packet: offset / TS_PACKET_SIZE, length: (ts[payload + 4]! << 8) | ts[payload + 5]! });
    }
  }
  return found;
}

/** Cuts `data` into chunks of pseudo-random sizes (fixed sequence), as HTTP delivers them. */
function* chunks(data: Buffer): Generator<Buffer> {
  let seed = 7;
  for (let at = 0; at < data.length;) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const size = 1 + (seed % 3000);
    yield data.subarray(at, at + size);
    at += size;
  }
}

describe("video PES ends at its stuffed last packet", { skip: needsFfmpeg.skip }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let ts: Buffer;
  before(async () => {
    ({ dir, cleanup } = await makeTempDir("pes-length-"));
    ts = await makeH264Ts(path.join(dir, "in.ts"), { seconds: 2, size: "320x240", bFrames: 2 });
  });
  after(() => cleanup());

  it("writes each PES's length, changes nothing else, and ffmpeg reads the same frames", async () => {
    const writer = new PesLengthWriter();
    const out = Buffer.concat([...[...chunks(ts)].flatMap((c) => writer.push(c)), ...writer.endOfSegment()]);
    assert.equal(out.length, ts.length);
    const before = videoPesLengths(ts);
    const after = videoPesLengths(out);
    assert.equal(before.length, 60);
    assert.ok(
      before.every((p) => p.length === 0),
      "ffmpeg writes video PES unbounded",
    );
    assert.equal(after.length, before.length);
    // Every PES gets its length: each is either stuffed at its end or the segment's last.
    for (let i = 0; i < after.length; i++) {
      const next = before[i + 1]?.packet ?? ts.length / TS_PACKET_SIZE;
      assert.ok(after[i]!.length > 0, `PES ${i} has a length`);
      assert.ok(
        after[i]!.length < (next - before[i]!.packet) * TS_PACKET_SIZE,
        `PES ${i} length within its packets`,
      );
    }
    // The same packets otherwise: video packets in order, other PIDs in order.
    const byPid = (data: Buffer) => {
      const map = new Map<number, Buffer[]>();
      for (let o = 0; o < data.length; o += TS_PACKET_SIZE) {
        const pid = packetPid(data, o);
        const packet = Buffer.from(data.subarray(o, o + TS_PACKET_SIZE));
        const payload = (packet[3]! & 0x20) !== 0 ? 5 + packet[4]! : 4;
        if (packetHasPusi(packet, 0) && packet[payload + 3]! >= 0xe0) packet.writeUInt16BE(0, payload + 4);
        map.set(pid, [...(map.get(pid) ?? []), packet]);
      }
      return map;
    };
    assert.deepEqual(byPid(out), byPid(ts));
    const rewritten = path.join(dir, "out.ts");
    await writeFile(rewritten, out);
    assert.deepEqual(await probeVideoPackets(rewritten), await probeVideoPackets(path.join(dir, "in.ts")));
  });

  it("hands each frame on at its last packet, before the next frame starts", () => {
    const starts = videoPesLengths(ts).map((p) => p.packet);
    const writer = new PesLengthWriter();
    const units: VideoAccessUnit[] = [];
    const demuxer = new TsDemuxer({ stuffingEndsPes: true, onAccessUnit: (au) => units.push(au) });
    let written = 0;
    // Everything up to the packet before frame 3 starts: frames 1 and 2 are complete.
    const upTo = starts[2]! * TS_PACKET_SIZE;
    for (const c of chunks(ts.subarray(0, upTo))) {
      for (const piece of writer.push(c)) written += piece.length;
      demuxer.push(c);
    }
    assert.equal(units.length, 2, "the demuxer emitted frames 1 and 2 without seeing frame 3");
    assert.equal(written, upTo, "and the writer let all of their bytes go");
    const plain: VideoAccessUnit[] = [];
    const waiting = new TsDemuxer({ onAccessUnit: (au) => plain.push(au) });
    waiting.push(ts.subarray(0, upTo));
    assert.equal(plain.length, 1, "without the rule frame 2 waits for frame 3");
  });

  it("a stream that stuffs mid-PES loses the rule, not the frames after it", () => {
    // After frame 2's stuffed last packet, one more packet of the video PID without a unit start:
    // what a muxer that stuffs mid-PES would send.
    const starts = videoPesLengths(ts).map((p) => p.packet);
    const cut = starts[2]! * TS_PACKET_SIZE;
    const continuation = Buffer.from(
      ts.subarray(
        starts[1]! * TS_PACKET_SIZE + TS_PACKET_SIZE,
        starts[1]! * TS_PACKET_SIZE + 2 * TS_PACKET_SIZE,
      ),
    );
    assert.equal(packetHasPusi(continuation, 0), false);
    const stream = Buffer.concat([ts.subarray(0, cut), continuation, ts.subarray(cut)]);
    const units: VideoAccessUnit[] = [];
    const demuxer = new TsDemuxer({ stuffingEndsPes: true, onAccessUnit: (au) => units.push(au) });
    const writer = new PesLengthWriter();
    const out: Buffer[] = [];
    for (const c of chunks(stream)) {
      demuxer.push(c);
      out.push(...writer.push(c));
    }
    demuxer.flush();
    out.push(...writer.endOfSegment());
    assert.equal(units.length, 60, "every frame still comes out");
    const lengths = videoPesLengths(Buffer.concat(out));
    assert.ok(lengths[0]!.length > 0 && lengths[1]!.length > 0, "lengths written before the surprise");
    assert.ok(
      lengths.slice(2, -1).every((p) => p.length === 0),
      "none after it: each PES waits for the next one's start again",
    );
  });
});
