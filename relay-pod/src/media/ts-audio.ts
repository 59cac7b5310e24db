/**
 * The audio side of an input TS (issue 13): follows PAT → PMT to the first audio elementary stream
 * and hands on its PES, one by one, with PTS, for the relay to remux next to the processed video.
 * Separate from TsDemuxer (video access units, cut points) because audio needs the PMT's
 * descriptors (Opus and AC-3 are identified by them, and the output's PMT must repeat them) and has
 * its own damage rules: a corrupt ADTS frame is skipped on its own, not with its PES.
 *
 * Codecs (ISO 13818-1 stream types; ETSI TS 102 366 for AC-3; the Opus-in-TS mapping, ETSI TS 102
 * 366-based 'Opus' registration): AAC in ADTS (0x0f), AAC in LATM (0x11), Opus (0x06 with a
 * registration descriptor 'Opus'), and, recognised but not carried, MPEG-1/2 audio (0x03, 0x04) and
 * AC-3 / E-AC-3 (0x81, 0x87, or 0x06 with their descriptors).
 */
import {
  packetHasPusi,
  packetPayloadOffset,
  packetPid,
  PAT_PID,
  locateSection,
  parsePatPacket,
  parsePesHeader,
  TS_PACKET_SIZE,
  TS_SYNC_BYTE,
} from "./ts-packet.js";

export type AudioCodec = "aac" | "aac-latm" | "opus" | "mp2" | "ac3" | "eac3" | "unknown";

/** The codecs the relay can carry to the output. */
export const CARRIED_AUDIO_CODECS: ReadonlySet<AudioCodec> = new Set(["aac", "aac-latm", "opus"]);

export interface AudioStreamInfo {
  pid: number;
  streamType: number;
  codec: AudioCodec;
  /** The PES stream_id seen (0xc0–0xdf for MPEG audio, 0xbd private_stream_1 for Opus/AC-3). */
  streamId: number | undefined;
  /** The PMT's ES descriptors for this stream, to repeat in the output's PMT. */
  descriptors: Buffer;
}

export interface AudioPes {
  pts: number | undefined;
  streamId: number;
  /** The PES payload: ADTS frames, LATM, or Opus access units with their control headers. */
  payload: Buffer;
  /** Codec frames in the payload (ADTS: frames kept; others: 1 per PES). */
  frames: number;
}

export interface TsAudioStats {
  pes: number;
  frames: number;
  /** ADTS frames (or whole PES) that were damaged and skipped. */
  corruptFrames: number;
}

/** Largest audio PES assembled; a bigger one is damage (a second of 48 kHz AAC is ~25 KB). */
const MAX_AUDIO_PES_BYTES = 256 * 1024;

export class TsAudioDemuxer {
  readonly stats: TsAudioStats = { pes: 0, frames: 0, corruptFrames: 0 };
  private pmtPid = -1;
  private info: AudioStreamInfo | undefined;
  /** Whether a PMT was read (so "no audio" is known, not just not yet seen). */
  private pmtSeen = false;
  private carry = Buffer.alloc(0);
  private parts: Buffer[] = [];
  private partsLength = 0;
  private expectedLength = 0;

  constructor(private readonly onPes: (pes: AudioPes, stream: AudioStreamInfo) => void) {}

  /** The audio stream the last PMT listed (undefined: none, or no PMT yet: see `pmtRead`). */
  get stream(): AudioStreamInfo | undefined {
    return this.info;
  }

  get pmtRead(): boolean {
    return this.pmtSeen;
  }

  push(chunk: Buffer): void {
    const data = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    let offset = 0;
    while (offset + TS_PACKET_SIZE <= data.length) {
      if (data[offset] !== TS_SYNC_BYTE) {
        offset++;
        continue;
      }
      this.readPacket(data, offset);
      offset += TS_PACKET_SIZE;
    }
    this.carry = Buffer.from(data.subarray(offset));
  }

  /** The end of a segment: the PES being assembled is complete. */
  flush(): void {
    this.carry = Buffer.alloc(0);
    this.emitPes();
  }

  private readPacket(data: Buffer, packet: number): void {
    const pid = packetPid(data, packet);
    if (pid === PAT_PID) {
      const pmtPid = parsePatPacket(data, packet);
      if (typeof pmtPid === "number") this.pmtPid = pmtPid;
      return;
    }
    if (pid === this.pmtPid) {
      this.readPmt(data, packet);
      return;
    }
    if (!this.info || pid !== this.info.pid) return;
    const payload = packetPayloadOffset(data, packet);
    if (payload < 0) return;
    const end = packet + TS_PACKET_SIZE;
    if (packetHasPusi(data, packet)) {
      this.emitPes();
      const header = parsePesHeader(data, payload, end);
      if (!header) {
        this.stats.corruptFrames++;
        return;
      }
      this.expectedLength = header.packetLength > 0 ? header.packetLength + 6 : 0;
    } else if (this.parts.length === 0) {
      return; // the middle of a PES whose start we did not see
    }
    this.parts.push(Buffer.from(data.subarray(payload, end)));
    this.partsLength += end - payload;
    if (this.partsLength > MAX_AUDIO_PES_BYTES) {
      this.stats.corruptFrames++;
      this.parts = [];
      this.partsLength = 0;
      return;
    }
    if (this.expectedLength > 0 && this.partsLength >= this.expectedLength) this.emitPes();
  }

  private readPmt(data: Buffer, packet: number): void {
    const section = locateSection(data, packet, 0x02);
    if (section === undefined || section === "crc") return;
    this.pmtSeen = true;
    const programInfoLength = ((data[section.start + 10] & 0x0f) << 8) | data[section.start + 11];
    let found: AudioStreamInfo | undefined;
    for (let i = section.start + 12 + programInfoLength; i + 5 <= section.end - 4;) {
      const streamType = data[i];
      const pid = ((data[i + 1] & 0x1f) << 8) | data[i + 2];
      const esInfoLength = ((data[i + 3] & 0x0f) << 8) | data[i + 4];
      const descriptors = Buffer.from(data.subarray(i + 5, Math.min(i + 5 + esInfoLength, section.end - 4)));
      const codec = audioCodecOf(streamType, descriptors);
      if (!found && codec) found = { pid, streamType, codec, streamId: undefined, descriptors };
      i += 5 + esInfoLength;
    }
    if (found && this.info?.pid === found.pid) found.streamId = this.info.streamId;
    if (!found || found.pid !== this.info?.pid) {
      this.parts = [];
      this.partsLength = 0;
    }
    this.info = found;
  }

  private emitPes(): void {
    if (this.parts.length === 0 || !this.info) return;
    const pes = Buffer.concat(this.parts);
    this.parts = [];
    this.partsLength = 0;
    const header = parsePesHeader(pes, 0, pes.length);
    const declaredEnd = this.expectedLength > 0 ? this.expectedLength : pes.length;
    if (!header || declaredEnd > pes.length) {
      this.stats.corruptFrames++; // truncated: the segment ended inside it
      return;
    }
    this.info.streamId = header.streamId;
    let payload: Buffer = pes.subarray(header.payloadOffset, declaredEnd);
    let frames = 1;
    if (this.info.codec === "aac") {
      const adts = keepWholeAdtsFrames(payload);
      this.stats.corruptFrames += adts.skipped;
      payload = adts.kept;
      frames = adts.frames;
    }
    this.stats.pes++;
    if (frames === 0) return;
    this.stats.frames += frames;
    this.onPes(
      { pts: header.pts, streamId: header.streamId, payload: Buffer.from(payload), frames },
      this.info,
    );
  }
}

/** The audio codec of a PMT entry, or undefined when it is not audio. */
export function audioCodecOf(streamType: number, descriptors: Buffer): AudioCodec | undefined {
  switch (streamType) {
    case 0x0f:
      return "aac";
    case 0x11:
      return "aac-latm";
    case 0x03:
    case 0x04:
      return "mp2";
    case 0x81:
      return "ac3";
    case 0x87:
      return "eac3";
    case 0x06: {
      if (hasRegistration(descriptors, "Opus")) return "opus";
      if (hasRegistration(descriptors, "AC-3") || hasDescriptorTag(descriptors, 0x6a)) return "ac3";
      if (hasRegistration(descriptors, "EAC3") || hasDescriptorTag(descriptors, 0x7a)) return "eac3";
      return undefined; // private data: subtitles, SCTE-35, …
    }
    default:
      return undefined;
  }
}

function hasRegistration(descriptors: Buffer, formatIdentifier: string): boolean {
  for (let i = 0; i + 2 <= descriptors.length; i += 2 + descriptors[i + 1]) {
    if (descriptors[i] === 0x05 && descriptors[i + 1] >= 4) {
      if (descriptors.toString("latin1", i + 2, i + 6) === formatIdentifier) return true;
    }
  }
  return false;
}

function hasDescriptorTag(descriptors: Buffer, tag: number): boolean {
  for (let i = 0; i + 2 <= descriptors.length; i += 2 + descriptors[i + 1]) {
    if (descriptors[i] === tag) return true;
  }
  return false;
}

/**
 * The length of the ADTS frame starting at `offset` (ISO 14496-3 §1.A.2: sync word 0xFFF, layer 0,
 * a frame length at least its header), or undefined when no frame header starts there. Needs 7 bytes.
 */
export function adtsFrameLength(data: Uint8Array, offset: number): number | undefined {
  if (offset + 7 > data.length) return undefined;
  if (data[offset] !== 0xff || (data[offset + 1]! & 0xf6) !== 0xf0) return undefined;
  const length = ((data[offset + 3]! & 0x03) << 11) | (data[offset + 4]! << 3) | (data[offset + 5]! >> 5);
  const headerLength = data[offset + 1]! & 0x01 ? 7 : 9;
  return length >= headerLength ? length : undefined;
}

/**
 * The whole ADTS frames of a PES payload (ISO 14496-3 §1.A.2): sync word 0xFFF, layer 0, a frame
 * length that fits. A damaged frame is skipped by looking for the next sync word.
 */
export function keepWholeAdtsFrames(payload: Buffer): { kept: Buffer; frames: number; skipped: number } {
  const kept: Buffer[] = [];
  let frames = 0;
  let skipped = 0;
  let offset = 0;
  let inDamage = false;
  while (offset + 7 <= payload.length) {
    const length = adtsFrameLength(payload, offset);
    if (length !== undefined && offset + length <= payload.length) {
      kept.push(payload.subarray(offset, offset + length));
      frames++;
      offset += length;
      inDamage = false;
      continue;
    }
    if (!inDamage) skipped++;
    inDamage = true;
    offset++;
  }
  if (offset < payload.length && !inDamage) skipped++; // a truncated last frame
  return { kept: kept.length === 1 ? kept[0]! : Buffer.concat(kept), frames, skipped };
}
