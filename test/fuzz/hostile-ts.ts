/**
 * Ways to damage an MPEG-TS byte stream, shared by the TS fuzz test and the corpus writer
 * (make-corpus.ts). Each takes whole 188-byte packets and returns a new buffer; the input is
 * never changed.
 */
import { TS_PACKET_SIZE } from "../../relay-pod/src/media/ts-packet.js";

/** Clears the sync byte of every `every`-th packet. */
export function breakSync(ts: Buffer, every: number): Buffer {
  const out = Buffer.from(ts);
  for (let offset = 0, index = 0; offset < out.length; offset += TS_PACKET_SIZE, index++) {
    if (index % every === every - 1) out[offset] = 0x00;
  }
  return out;
}

/** Sets the continuity counter of every packet of `pid` to a value from `counters` (cycled). */
export function scrambleContinuity(ts: Buffer, pid: number, counters: number[]): Buffer {
  const out = Buffer.from(ts);
  let next = 0;
  for (let offset = 0; offset + TS_PACKET_SIZE <= out.length; offset += TS_PACKET_SIZE) {
    const packetPid = ((out[offset + 1] & 0x1f) << 8) | out[offset + 2];
    if (packetPid !== pid) continue;
    out[offset + 3] = (out[offset + 3] & 0xf0) | (counters[next++ % counters.length] & 0x0f);
  }
  return out;
}

/** Sets transport_error_indicator on every packet. */
export function flagTransportErrors(ts: Buffer): Buffer {
  const out = Buffer.from(ts);
  for (let offset = 0; offset + TS_PACKET_SIZE <= out.length; offset += TS_PACKET_SIZE)
    out[offset + 1] |= 0x80;
  return out;
}

/** Packets reordered by `order` (indexes into the packets; repeats duplicate, omissions drop). */
export function reorderPackets(ts: Buffer, order: number[]): Buffer {
  const count = Math.floor(ts.length / TS_PACKET_SIZE);
  if (count === 0) return Buffer.alloc(0);
  return Buffer.concat(
    order.map((i) => ts.subarray((i % count) * TS_PACKET_SIZE, ((i % count) + 1) * TS_PACKET_SIZE)),
  );
}

/** One video PES that never ends: a unit start, then `payloadBytes` of continuation packets. */
export function* endlessPes(pid: number, payloadBytes: number, packetsPerChunk = 4096): Generator<Buffer> {
  let counter = 0;
  const packet = (unitStart: boolean, body: (payload: Buffer) => void): Buffer => {
    const p = Buffer.alloc(TS_PACKET_SIZE, 0xab);
    p[0] = 0x47;
    p[1] = (unitStart ? 0x40 : 0) | ((pid >> 8) & 0x1f);
    p[2] = pid & 0xff;
    p[3] = 0x10 | (counter++ & 0x0f);
    body(p.subarray(4));
    return p;
  };
  // PES header: start code, stream id 0xe0, length 0 (unbounded, as for video), no PTS.
  const first = packet(true, (payload) => payload.set([0, 0, 1, 0xe0, 0, 0, 0x80, 0, 0, 0, 0, 0, 1, 0x65]));
  let sent = 0;
  let chunk: Buffer[] = [first];
  while (sent < payloadBytes) {
    chunk.push(packet(false, () => {}));
    sent += TS_PACKET_SIZE - 4;
    if (chunk.length === packetsPerChunk) {
      yield Buffer.concat(chunk);
      chunk = [];
    }
  }
  if (chunk.length > 0) yield Buffer.concat(chunk);
}
