// The forward path's frame assembler (RTP from ffmpeg → whole frames). Loopback UDP loses packets
// silently when the receive buffer overruns; a frame missing packets must not reach ComfyStream's
// decoder, and the loss must be counted. Packets are shaped as ffmpeg's H.264 RTP muxer sends them
// (RFC 6184: STAP-A SPS+PPS, FU-A fragments, marker on the last packet of a frame).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { RtpFrameAssembler, type RtpFrame } from "../../relay-pod/src/session/rtp-frames.js";

const SSRC = 0x1234_5678;
const FRAME_TICKS = 3000;

function rtp(sequence: number, timestamp: number, payload: number[], marker: boolean, ssrc = SSRC): Buffer {
  const header = Buffer.alloc(12);
  header[0] = 0x80;
  header[1] = (marker ? 0x80 : 0) | 96;
  header.writeUInt16BE(sequence & 0xffff, 2);
  header.writeUInt32BE(timestamp >>> 0, 4);
  header.writeUInt32BE(ssrc, 8);
  return Buffer.concat([header, Buffer.from(payload)]);
}

/** One frame as three packets: STAP-A or a lone FU-A start, an FU-A middle, an FU-A end (marker). */
function framePackets(firstSequence: number, index: number, keyframe: boolean, ssrc = SSRC): Buffer[] {
  const ts = 90_000 + index * FRAME_TICKS;
  const nalType = keyframe ? 5 : 1;
  const head = keyframe
    ? [24, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce] // STAP-A: SPS, PPS
    : [28, 0x80 | nalType, 0xaa]; // FU-A start
  return [
    rtp(firstSequence, ts, head, false, ssrc),
    rtp(firstSequence + 1, ts, [28, keyframe ? 0x80 | nalType : nalType, 0xbb], false, ssrc),
    rtp(firstSequence + 2, ts, [28, 0x40 | nalType, 0xcc], true, ssrc),
  ];
}

function assemble(packets: Buffer[]): { frames: RtpFrame[]; assembler: RtpFrameAssembler } {
  const frames: RtpFrame[] = [];
  const assembler = new RtpFrameAssembler((frame) => frames.push(frame));
  for (const packet of packets) assembler.push(packet);
  return { frames, assembler };
}

function stream(count: number, firstSequence = 65_530): Buffer[] {
  return Array.from({ length: count }, (_, i) => framePackets(firstSequence + 3 * i, i, i === 0)).flat();
}

describe("RtpFrameAssembler", () => {
  test("in order (across a sequence-number wrap): every frame whole, keyframe marked, nothing lost", () => {
    const { frames, assembler } = assemble(stream(5));
    assert.equal(frames.length, 5);
    assert.deepEqual(
      frames.map((f) => [f.rtpTimestamp, f.keyframe, f.packets.length]),
      [0, 1, 2, 3, 4].map((i) => [90_000 + i * FRAME_TICKS, i === 0, 3]),
    );
    assert.equal(assembler.lostPackets, 0);
    assert.equal(assembler.damagedFrames, 0);
  });

  test("a packet lost from the middle of a frame: that frame is dropped and counted, its neighbours pass", () => {
    const packets = stream(4);
    packets.splice(7, 1); // frame 2's FU-A middle
    const { frames, assembler } = assemble(packets);
    assert.deepEqual(
      frames.map((f) => f.rtpTimestamp),
      [0, 1, 3].map((i) => 90_000 + i * FRAME_TICKS),
    );
    assert.equal(assembler.lostPackets, 1);
    assert.equal(assembler.damagedFrames, 1);
  });

  test("a lost marker packet: the frame it closed is dropped when the next frame begins", () => {
    const packets = stream(3);
    packets.splice(5, 1); // frame 1's last packet
    const { frames, assembler } = assemble(packets);
    assert.deepEqual(
      frames.map((f) => f.rtpTimestamp),
      [0, 2].map((i) => 90_000 + i * FRAME_TICKS),
    );
    assert.equal(assembler.damagedFrames, 1);
  });

  test("a lost head of a frame: the rest of that frame is dropped, not sent as a frame", () => {
    const packets = stream(3);
    packets.splice(3, 1); // frame 1's FU-A start
    const { frames, assembler } = assemble(packets);
    assert.deepEqual(
      frames.map((f) => f.rtpTimestamp),
      [0, 2].map((i) => 90_000 + i * FRAME_TICKS),
    );
    assert.equal(assembler.lostPackets, 1);
    assert.equal(assembler.damagedFrames, 1);
  });

  test("whole frames lost: the packets are counted, the frames around them are whole and pass", () => {
    const packets = stream(5);
    packets.splice(3, 6); // frames 1 and 2 entirely
    const { frames, assembler } = assemble(packets);
    assert.equal(frames.length, 3);
    assert.equal(assembler.lostPackets, 6);
    assert.equal(assembler.damagedFrames, 0);
  });

  test("duplicates are ignored; a new ffmpeg (new SSRC, new sequence base) is not a loss", () => {
    const first = framePackets(100, 0, true);
    const restarted = framePackets(40_000, 1, true, 0x0bad_cafe);
    const { frames, assembler } = assemble([first[0]!, first[0]!, first[1]!, first[2]!, ...restarted]);
    assert.equal(frames.length, 2);
    assert.equal(frames[0]!.packets.length, 3);
    assert.equal(assembler.lostPackets, 0);
  });
});
