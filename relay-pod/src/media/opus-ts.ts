/**
 * Opus in MPEG-TS (ETSI TS 102 366-style mapping registered as 'Opus'): each access unit in a PES is
 * preceded by a control header, 11 bits of 1s (0x7fe0 with three flags), then its size as a run of
 * 0xff bytes and a last byte below 0xff. The relay reads it to hand ComfyStream the input's Opus
 * packets, and writes it to put ComfyStream's Opus packets into the output as they came.
 */
import type { MuxAudioStream } from "./ts-mux.js";

/** Stream type and PMT descriptors of a stereo Opus stream: registration 'Opus', extension 0x80 (channels). */
export const OPUS_TS_STREAM: MuxAudioStream = {
  streamType: 0x06,
  descriptors: Buffer.from([0x05, 4, 0x4f, 0x70, 0x75, 0x73, 0x7f, 2, 0x80, 2]),
};

/** AAC in ADTS: stream type 0x0f, no descriptors needed. */
export const AAC_ADTS_TS_STREAM: MuxAudioStream = { streamType: 0x0f, descriptors: Buffer.alloc(0) };

/** PES stream_id for Opus (private_stream_1) and for MPEG audio (AAC). */
export const OPUS_STREAM_ID = 0xbd;
export const AAC_STREAM_ID = 0xc0;

/**
 * The Opus packets of one PES payload, without their control headers. Trim and extension fields are
 * skipped (the relay re-times by PTS); a header that runs past the payload ends the list there.
 */
export function opusPacketsOfPes(payload: Buffer): Buffer[] {
  const packets: Buffer[] = [];
  let offset = 0;
  while (offset + 2 <= payload.length) {
    if (payload[offset] !== 0x7f || (payload[offset + 1]! & 0xe0) !== 0xe0) break;
    const flags = payload[offset + 1]!;
    offset += 2;
    let size = 0;
    for (;;) {
      if (offset >= payload.length) return packets;
      const byte = payload[offset++]!;
      size += byte;
      if (byte !== 0xff) break;
    }
    if (flags & 0x10) offset += 2; // start_trim
    if (flags & 0x08) offset += 2; // end_trim
    if (flags & 0x04) {
      if (offset >= payload.length) return packets;
      offset += 1 + payload[offset]!; // control_extension
    }
    if (size === 0 || offset + size > payload.length) return packets;
    packets.push(payload.subarray(offset, offset + size));
    offset += size;
  }
  return packets;
}

/** One PES payload carrying these Opus packets, each behind its control header (no trims). */
export function opusPesPayload(packets: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const packet of packets) {
    const sizeBytes = Math.floor(packet.length / 255) + 1;
    const header = Buffer.alloc(2 + sizeBytes, 0xff);
    header[0] = 0x7f;
    header[1] = 0xe0;
    header[header.length - 1] = packet.length % 255;
    parts.push(header, packet);
  }
  return Buffer.concat(parts);
}
