import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { H264Depacketizer } from "../../relay-pod/src/webrtc/h264-depacketizer.js";

const START = Buffer.from([0, 0, 0, 1]);
const SPS = Buffer.from([0x67, 0x42, 0xc0, 0x1f, 0xda]);
const PPS = Buffer.from([0x68, 0xce, 0x3c, 0x80]);
const IDR = Buffer.concat([Buffer.from([0x65, 0x88, 0x84]), Buffer.alloc(3000, 0xab)]);
const P_SLICE = Buffer.from([0x41, 0x9a, 0x20, 0x11, 0x22]);

let sequence = 65_530; // wraps around 65535 → 0 inside the tests
function packet(timestamp: number, payload: Buffer, marker = false) {
  const sequenceNumber = sequence;
  sequence = (sequence + 1) & 0xffff;
  return { header: { timestamp, marker, sequenceNumber }, payload };
}

function stapA(...nalUnits: Buffer[]): Buffer {
  const parts: Buffer[] = [Buffer.from([0x18])];
  for (const nal of nalUnits) {
    const size = Buffer.alloc(2);
    size.writeUInt16BE(nal.length);
    parts.push(size, nal);
  }
  return Buffer.concat(parts);
}

/** FU-A fragments of one NAL unit, `size` payload bytes each. */
function fuA(nal: Buffer, size: number): Buffer[] {
  const indicator = (nal[0]! & 0xe0) | 28;
  const type = nal[0]! & 0x1f;
  const body = nal.subarray(1);
  const fragments: Buffer[] = [];
  for (let offset = 0; offset < body.length; offset += size) {
    const start = offset === 0 ? 0x80 : 0;
    const end = offset + size >= body.length ? 0x40 : 0;
    fragments.push(
      Buffer.concat([Buffer.from([indicator, start | end | type]), body.subarray(offset, offset + size)]),
    );
  }
  return fragments;
}

const annexB = (...nalUnits: Buffer[]): Buffer => Buffer.concat(nalUnits.flatMap((nal) => [START, nal]));

describe("H264Depacketizer", () => {
  test("STAP-A (SPS+PPS) plus FU-A IDR reassemble into one keyframe access unit", () => {
    const depacketizer = new H264Depacketizer();
    const fragments = fuA(IDR, 1001);
    assert.equal(fragments.length, 3);
    const out = [
      ...depacketizer.push(packet(9000, stapA(SPS, PPS))),
      ...fragments.flatMap((fragment, index) =>
        depacketizer.push(packet(9000, fragment, index === fragments.length - 1)),
      ),
    ];
    assert.equal(out.length, 1);
    assert.equal(out[0]!.rtpTimestamp, 9000);
    assert.equal(out[0]!.keyframe, true);
    assert.deepEqual(out[0]!.annexB, annexB(SPS, PPS, IDR));
    assert.deepEqual(depacketizer.stats, {
      packets: 4,
      accessUnits: 1,
      keyframes: 1,
      lostPackets: 0,
      droppedAccessUnits: 0,
      latePackets: 0,
      oversizeAccessUnits: 0,
    });
  });

  test("single NAL packets; a timestamp change without a marker also completes the access unit", () => {
    const depacketizer = new H264Depacketizer();
    assert.deepEqual(depacketizer.push(packet(100, P_SLICE)), []);
    const out = depacketizer.push(packet(3100, P_SLICE, true));
    assert.equal(out.length, 2);
    assert.deepEqual(
      out.map((unit) => [unit.rtpTimestamp, unit.keyframe]),
      [
        [100, false],
        [3100, false],
      ],
    );
    assert.deepEqual(out[1]!.annexB, annexB(P_SLICE));
  });

  test("a lost FU-A fragment drops the damaged access unit and counts the loss; the next one comes through", () => {
    const depacketizer = new H264Depacketizer();
    const fragments = fuA(IDR, 1001);
    const out = [
      ...depacketizer.push(packet(1000, fragments[0]!)),
      ...(sequence++, []), // fragments[1] lost on the way
      ...depacketizer.push(packet(1000, fragments[2]!, true)),
      ...depacketizer.push(packet(4000, P_SLICE, true)),
    ];
    assert.deepEqual(
      out.map((unit) => unit.rtpTimestamp),
      [4000],
    );
    assert.equal(depacketizer.stats.lostPackets, 1);
    assert.equal(depacketizer.stats.droppedAccessUnits, 1);
  });

  test("a lost marker packet: both the unfinished unit and the unit after the gap are dropped", () => {
    const depacketizer = new H264Depacketizer();
    const fragments = fuA(IDR, 1500);
    const out = [
      ...depacketizer.push(packet(1000, fragments[0]!)),
      ...(sequence++, []), // the last fragment (with the marker) is lost
      ...depacketizer.push(packet(4000, P_SLICE, true)),
      ...depacketizer.push(packet(7000, P_SLICE, true)),
    ];
    assert.deepEqual(
      out.map((unit) => unit.rtpTimestamp),
      [7000],
    );
    assert.equal(depacketizer.stats.droppedAccessUnits, 2);
  });

  test("dropUntilKeyframeAfterLoss waits for the next IDR", () => {
    const depacketizer = new H264Depacketizer({ dropUntilKeyframeAfterLoss: true });
    depacketizer.push(packet(0, P_SLICE, true));
    sequence++; // a whole frame lost
    const out = [
      ...depacketizer.push(packet(6000, P_SLICE, true)),
      ...depacketizer.push(packet(9000, P_SLICE, true)),
      ...depacketizer.push(packet(12000, stapA(SPS, PPS))),
      ...depacketizer.push(packet(12000, IDR.subarray(0, 100), true)),
    ];
    assert.deepEqual(
      out.map((unit) => [unit.rtpTimestamp, unit.keyframe]),
      [[12000, true]],
    );
  });

  test("duplicates and late packets are ignored, not counted as loss; malformed payloads drop the unit", () => {
    const depacketizer = new H264Depacketizer();
    const first = packet(100, P_SLICE, true);
    depacketizer.push(first);
    assert.deepEqual(depacketizer.push(first), []);
    assert.equal(depacketizer.stats.latePackets, 1);
    assert.equal(depacketizer.stats.lostPackets, 0);

    // STAP-A whose length field runs past the end; FU-A continuation without a start.
    assert.deepEqual(depacketizer.push(packet(200, Buffer.from([0x18, 0x00, 0x09, 0x67]), true)), []);
    assert.deepEqual(depacketizer.push(packet(300, fuA(IDR, 1001)[1]!, true)), []);
    assert.equal(depacketizer.stats.droppedAccessUnits, 2);
  });

  test("flush() emits the pending complete unit at end of stream", () => {
    const depacketizer = new H264Depacketizer();
    depacketizer.push(packet(500, P_SLICE));
    const out = depacketizer.flush();
    assert.equal(out.length, 1);
    assert.deepEqual(out[0]!.annexB, annexB(P_SLICE));
  });
});
