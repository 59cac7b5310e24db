/**
 * MPEG-TS packet-level facts shared by the demuxer, the cutter and the muxer (ISO/IEC 13818-1).
 * Everything here works on a packet at an offset inside a larger buffer, so callers never copy.
 */

export const TS_PACKET_SIZE = 188;
export const TS_SYNC_BYTE = 0x47;
export const PAT_PID = 0x0000;
export const NULL_PID = 0x1fff;
/** PTS/DTS are 33-bit counters of a 90 kHz clock. */
export const PTS_MODULUS = 2 ** 33;
export const PTS_CLOCK_HZ = 90_000;

export const STREAM_TYPE_H264 = 0x1b;
export const STREAM_TYPE_HEVC = 0x24;

/** Video stream types a PMT may announce (MPEG-1/2 video, MPEG-4 part 2, H.264, HEVC, AVS, VC-1...). */
const VIDEO_STREAM_TYPES = new Set([0x01, 0x02, 0x10, 0x1b, 0x20, 0x24, 0x42, 0xd1, 0xea]);

export function isVideoStreamType(streamType: number): boolean {
  return VIDEO_STREAM_TYPES.has(streamType);
}

// CRC-32/MPEG-2: polynomial 0x04C11DB7, initial value 0xFFFFFFFF, no reflection, no final XOR.
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 24;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x80000000 ? (crc << 1) ^ 0x04c11db7 : crc << 1;
    table[i] = crc >>> 0;
  }
  return table;
})();

export function crc32Mpeg2(data: Uint8Array, start = 0, end = data.length): number {
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ data[i]) & 0xff]) >>> 0;
  return crc >>> 0;
}

export function packetPid(data: Uint8Array, offset: number): number {
  return ((data[offset + 1] & 0x1f) << 8) | data[offset + 2];
}

export function packetHasPusi(data: Uint8Array, offset: number): boolean {
  return (data[offset + 1] & 0x40) !== 0;
}

/**
 * Offset (absolute) of the payload of the packet at `offset`, or -1 when it has none or its
 * adaptation field is malformed. -2 means the adaptation field length is invalid (a corrupt packet).
 */
export function packetPayloadOffset(data: Uint8Array, offset: number): number {
  const adaptationControl = (data[offset + 3] >> 4) & 0x3;
  if (adaptationControl === 0) return -2; // reserved value: not a valid packet
  if ((adaptationControl & 0x2) === 0) return offset + 4;
  const adaptationLength = data[offset + 4];
  if (adaptationControl === 0x2) return adaptationLength === 183 ? -1 : -2;
  if (adaptationLength > 182) return -2;
  return offset + 5 + adaptationLength;
}

/** random_access_indicator of the packet's adaptation field (false when there is none). */
export function packetHasRandomAccess(data: Uint8Array, offset: number): boolean {
  return (data[offset + 3] & 0x20) !== 0 && data[offset + 4] > 0 && (data[offset + 5] & 0x40) !== 0;
}

/**
 * Whether the packet's adaptation field carries stuffing bytes. Muxers pad a PES's last packet with
 * them (ffmpeg's, hence go-livepeer's and ai-runner's, pad only that one), so a video packet with
 * stuffing ends its PES: the frame is complete without waiting for the next one to start.
 */
export function packetHasStuffing(data: Uint8Array, offset: number): boolean {
  if ((data[offset + 3] & 0x30) !== 0x30) return false; // needs an adaptation field and a payload
  const length = data[offset + 4];
  if (length === 0) return true; // an empty adaptation field is one byte of stuffing
  const flags = data[offset + 5];
  let used = 1;
  if (flags & 0x10) used += 6; // PCR
  if (flags & 0x08) used += 6; // OPCR
  if (flags & 0x04) used += 1; // splice countdown
  if (flags & 0x02 && used < length) used += 1 + data[offset + 5 + used]; // private data
  if (flags & 0x01 && used < length) used += 1 + data[offset + 5 + used]; // extension
  return length > used;
}

/** discontinuity_indicator of the packet's adaptation field. */
export function packetHasDiscontinuity(data: Uint8Array, offset: number): boolean {
  return (data[offset + 3] & 0x20) !== 0 && data[offset + 4] > 0 && (data[offset + 5] & 0x80) !== 0;
}

/** Reads a 33-bit PTS/DTS from the 5 bytes at `offset`. */
export function readTimestamp(data: Uint8Array, offset: number): number {
  const high = (data[offset] & 0x0e) * 0x20000000; // bits 32..30, shifted by 29 because they sit at bit 1
  const low =
    (data[offset + 1] << 22) |
    ((data[offset + 2] >> 1) << 15) |
    (data[offset + 3] << 7) |
    (data[offset + 4] >> 1);
  return high + (low >>> 0);
}

/** Writes a 33-bit PTS/DTS with the 4-bit prefix ('0010' PTS only, '0011' PTS with DTS, '0001' DTS). */
export function writeTimestamp(data: Uint8Array, offset: number, prefix: number, timestamp: number): void {
  const ts = wrapPts(timestamp);
  const high = Math.floor(ts / 0x40000000); // bits 32..30
  const low = ts % 0x40000000; // bits 29..0
  data[offset] = (prefix << 4) | (high << 1) | 1;
  data[offset + 1] = (low >>> 22) & 0xff;
  data[offset + 2] = (((low >>> 15) & 0x7f) << 1) | 1;
  data[offset + 3] = (low >>> 7) & 0xff;
  data[offset + 4] = ((low & 0x7f) << 1) | 1;
}

/** Reduces any integer timestamp into [0, 2^33). */
export function wrapPts(timestamp: number): number {
  const rounded = Math.round(timestamp);
  return ((rounded % PTS_MODULUS) + PTS_MODULUS) % PTS_MODULUS;
}

/** Forward distance from `from` to `to` on the 33-bit circle, in [0, 2^33). */
export function ptsForwardDistance(from: number, to: number): number {
  return wrapPts(to - from);
}

/** `to` − `from` on the 33-bit circle the short way round, in [−2^32, 2^32). */
export function ptsSignedDistance(from: number, to: number): number {
  const forward = ptsForwardDistance(from, to);
  return forward >= 2 ** 32 ? forward - 2 ** 33 : forward;
}

/**
 * The PES header fields at `offset` (which must hold at least 9 bytes of header), or undefined when
 * the bytes are not a PES start. `payloadOffset` is absolute.
 */
export interface PesHeader {
  streamId: number;
  packetLength: number;
  pts: number | undefined;
  dts: number | undefined;
  payloadOffset: number;
}

export function parsePesHeader(data: Uint8Array, offset: number, end: number): PesHeader | undefined {
  if (end - offset < 6) return undefined;
  if (data[offset] !== 0 || data[offset + 1] !== 0 || data[offset + 2] !== 1) return undefined;
  const streamId = data[offset + 3];
  const packetLength = (data[offset + 4] << 8) | data[offset + 5];
  // Stream ids without the optional header (padding, private_stream_2, ECM, EMM, DSMCC, H.222.1 E).
  if (
    streamId === 0xbc ||
    streamId === 0xbe ||
    streamId === 0xbf ||
    streamId === 0xf0 ||
    streamId === 0xf1 ||
    streamId === 0xff ||
    streamId === 0xf2 ||
    streamId === 0xf8
  ) {
    return { streamId, packetLength, pts: undefined, dts: undefined, payloadOffset: offset + 6 };
  }
  if (end - offset < 9 || (data[offset + 6] & 0xc0) !== 0x80) return undefined;
  const ptsDtsFlags = data[offset + 7] >> 6;
  const headerDataLength = data[offset + 8];
  const payloadOffset = offset + 9 + headerDataLength;
  if (payloadOffset > end) return undefined;
  let pts: number | undefined;
  let dts: number | undefined;
  if (ptsDtsFlags & 0x2) {
    if (headerDataLength < 5) return undefined;
    pts = readTimestamp(data, offset + 9);
    if (ptsDtsFlags === 0x3) {
      if (headerDataLength < 10) return undefined;
      dts = readTimestamp(data, offset + 14);
    }
  }
  return { streamId, packetLength, pts, dts: dts ?? pts, payloadOffset };
}

/**
 * Locates the PSI section that starts in this packet's payload: returns [sectionStart, sectionEnd)
 * as absolute offsets, or undefined when the packet does not start a section that fits in it (the
 * relay only needs PAT and PMT, which real muxers keep to one packet) or the CRC is wrong.
 */
export function locateSection(
  data: Uint8Array,
  packetOffset: number,
  expectedTableId: number,
): { start: number; end: number } | "crc" | undefined {
  if (!packetHasPusi(data, packetOffset)) return undefined;
  const payload = packetPayloadOffset(data, packetOffset);
  const packetEnd = packetOffset + TS_PACKET_SIZE;
  if (payload < 0 || payload >= packetEnd) return undefined;
  const start = payload + 1 + data[payload]; // skip pointer_field
  if (start + 3 > packetEnd || data[start] !== expectedTableId) return undefined;
  const sectionLength = ((data[start + 1] & 0x0f) << 8) | data[start + 2];
  const end = start + 3 + sectionLength;
  if (sectionLength < 9 || end > packetEnd) return undefined;
  const storedCrc =
    ((data[end - 4] << 24) | (data[end - 3] << 16) | (data[end - 2] << 8) | data[end - 1]) >>> 0;
  if (crc32Mpeg2(data, start, end - 4) !== storedCrc) return "crc";
  return { start, end };
}

/** PMT PID of the first real program in a PAT packet (program_number 0 is the network PID). */
export function parsePatPacket(data: Uint8Array, packetOffset: number): number | "crc" | undefined {
  const section = locateSection(data, packetOffset, 0x00);
  if (section === undefined || section === "crc") return section;
  for (let i = section.start + 8; i + 4 <= section.end - 4; i += 4) {
    const programNumber = (data[i] << 8) | data[i + 1];
    if (programNumber !== 0) return ((data[i + 2] & 0x1f) << 8) | data[i + 3];
  }
  return undefined;
}

export interface PmtInfo {
  /** The first video elementary stream, if any. */
  video?: { pid: number; streamType: number };
  streamTypes: number[];
}

export function parsePmtPacket(data: Uint8Array, packetOffset: number): PmtInfo | "crc" | undefined {
  const section = locateSection(data, packetOffset, 0x02);
  if (section === undefined || section === "crc") return section;
  const programInfoLength = ((data[section.start + 10] & 0x0f) << 8) | data[section.start + 11];
  const info: PmtInfo = { streamTypes: [] };
  for (let i = section.start + 12 + programInfoLength; i + 5 <= section.end - 4;) {
    const streamType = data[i];
    const pid = ((data[i + 1] & 0x1f) << 8) | data[i + 2];
    const esInfoLength = ((data[i + 3] & 0x0f) << 8) | data[i + 4];
    info.streamTypes.push(streamType);
    if (info.video === undefined && isVideoStreamType(streamType)) info.video = { pid, streamType };
    i += 5 + esInfoLength;
  }
  return info;
}
