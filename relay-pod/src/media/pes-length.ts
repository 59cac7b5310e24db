/**
 * Gives each video PES of an MPEG-TS byte stream its length, so that ffmpeg's TS demuxer hands a
 * frame to the decoder at its last byte. Encoders write video PES with length 0 ("unbounded"), and a
 * demuxer then learns that frame N is complete only when frame N+1 starts: a whole frame of latency
 * (33 ms at 30 fps) on the forward transcode's input. The relay sees where a PES ends sooner: at its
 * stuffed last packet (packetHasStuffing) or at the end of a trickle segment. A video PES is held
 * from its first packet until then, its PES_packet_length written, and let go; packets of other
 * PIDs pass at once (the forward transcode reads only video). A PES whose end is not seen that way,
 * or that is longer than the 16-bit field holds, goes out unchanged when the next one starts.
 */
import {
  packetHasPusi,
  packetHasStuffing,
  packetPayloadOffset,
  packetPid,
  TS_PACKET_SIZE,
  TS_SYNC_BYTE,
} from "./ts-packet.js";

/** PES_packet_length counts the bytes after itself: at most 0xffff, so a PES of up to 6 + 0xffff bytes. */
const MAX_LENGTH_FIELD = 0xffff;

export class PesLengthWriter {
  private carry = Buffer.alloc(0);
  private videoPid = -1;
  /** The video PES being held: its packets, and the payload bytes they carry. */
  private held: Buffer[] = [];
  private heldPayload = 0;
  /** Offset of the PES header's first byte in held[0]. */
  private headerAt = -1;
  /** The last PES was let go at a stuffed packet; more of it would mean the rule does not hold. */
  private endedByStuffing = false;
  private stuffingEndsPes = true;

  /** TS bytes cut anywhere → whole packets to write now, in order. */
  push(chunk: Buffer): Buffer[] {
    const data = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    const out: Buffer[] = [];
    let offset = 0;
    let passFrom = 0; // a run of packets that pass unchanged, written as one slice
    const passRun = (end: number) => {
      if (end > passFrom) out.push(data.subarray(passFrom, end));
    };
    while (offset + TS_PACKET_SIZE <= data.length) {
      if (data[offset] !== TS_SYNC_BYTE) {
        // Not aligned (a corrupt input): stop rewriting and pass everything on as it came.
        this.stuffingEndsPes = false;
        passRun(offset);
        out.push(...this.release(false));
        out.push(data.subarray(offset));
        this.carry = Buffer.alloc(0);
        return out;
      }
      const verdict = this.classify(data, offset);
      if (verdict === "pass") {
        offset += TS_PACKET_SIZE;
        continue;
      }
      passRun(offset);
      const packet = data.subarray(offset, offset + TS_PACKET_SIZE);
      offset += TS_PACKET_SIZE;
      passFrom = offset;
      if (verdict === "start") out.push(...this.release(false));
      if (!this.stuffingEndsPes) {
        out.push(packet);
        continue;
      }
      this.hold(packet);
      if (packetHasStuffing(packet, 0)) out.push(...this.release(true));
    }
    passRun(offset);
    this.carry = Buffer.from(data.subarray(offset));
    return out;
  }

  /** The input segment ended: its last PES is complete. */
  endOfSegment(): Buffer[] {
    const out = this.release(true);
    if (this.carry.length > 0) out.push(this.carry);
    this.carry = Buffer.alloc(0);
    return out;
  }

  /** Forget what is held (a new ffmpeg run starts on fresh input). */
  reset(): void {
    this.carry = Buffer.alloc(0);
    this.held = [];
    this.heldPayload = 0;
    this.headerAt = -1;
    this.endedByStuffing = false;
  }

  private classify(data: Buffer, offset: number): "pass" | "start" | "continue" {
    const pid = packetPid(data, offset);
    const payload = packetPayloadOffset(data, offset);
    if (payload < 0 || payload >= offset + TS_PACKET_SIZE) return pid === this.videoPid ? "continue" : "pass";
    if (packetHasPusi(data, offset)) {
      const isVideoPes =
        data[payload] === 0 &&
        data[payload + 1] === 0 &&
        data[payload + 2] === 1 &&
        (data[payload + 3] & 0xf0) === 0xe0;
      if (isVideoPes) this.videoPid = pid;
      return pid === this.videoPid ? "start" : "pass";
    }
    if (pid !== this.videoPid) return "pass";
    if (this.held.length === 0 && this.endedByStuffing) {
      // More of a PES after its stuffed packet: this muxer stuffs mid-PES. Pass from now on.
      this.stuffingEndsPes = false;
    }
    return "continue";
  }

  private hold(packet: Buffer): void {
    const payload = packetPayloadOffset(packet, 0);
    if (this.held.length === 0) {
      if (!packetHasPusi(packet, 0)) {
        this.held.push(Buffer.from(packet)); // a tail whose start was not held: let it go as it is
        this.headerAt = -1;
        return;
      }
      this.headerAt = payload;
      this.heldPayload = 0;
    }
    this.held.push(Buffer.from(packet));
    if (payload >= 0) this.heldPayload += TS_PACKET_SIZE - payload;
    this.endedByStuffing = false;
  }

  /** Lets the held PES go; with `complete`, with its length written (when it fits). */
  private release(complete: boolean): Buffer[] {
    const held = this.held;
    if (held.length === 0) return [];
    this.held = [];
    const first = held[0]!;
    const at = this.headerAt;
    if (complete && at >= 0 && at + 6 <= TS_PACKET_SIZE) {
      const length = this.heldPayload - 6;
      if (length > 0 && length <= MAX_LENGTH_FIELD && first[at + 4] === 0 && first[at + 5] === 0) {
        first[at + 4] = length >> 8;
        first[at + 5] = length & 0xff;
      }
      this.endedByStuffing = true;
    }
    this.headerAt = -1;
    this.heldPayload = 0;
    return held;
  }
}
