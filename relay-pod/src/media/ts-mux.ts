/**
 * In-process MPEG-TS muxer for one H.264 video stream and optionally one audio stream (the return
 * path: depacketized WebRTC frames, and the input's audio PES remuxed as they came -> trickle
 * segments). Writes PAT and PMT (with CRC-32/MPEG-2), one PES per access unit with PTS/DTS, a PCR
 * on the video PID and continuity counters per PID. Output for a frame is produced at once, so
 * nothing is held back (unlike muxers that wait for the next keyframe to derive DTS).
 */
import { AUD_NAL_ANNEXB, NAL_AUD } from "./h264.js";
import {
  crc32Mpeg2,
  NULL_PID,
  PAT_PID,
  STREAM_TYPE_H264,
  TS_PACKET_SIZE,
  TS_SYNC_BYTE,
  wrapPts,
  writeTimestamp,
} from "./ts-packet.js";

export interface TsMuxerOptions {
  videoPid?: number;
  pmtPid?: number;
  programNumber?: number;
}

export interface MuxAccessUnitInput {
  /** One access unit in Annex-B format. */
  annexB: Buffer;
  /** 90 kHz; any integer, reduced modulo 2^33. */
  pts: number;
  /** 90 kHz; defaults to pts (no B-frames on the return path). */
  dts?: number;
  keyframe: boolean;
}

/**
 * How far the PCR in a frame's first packet lags its DTS: a decoder must hold a frame's bytes before
 * its decode time, so the clock reference points a little earlier.
 */
const PCR_LEAD_90KHZ = 9000; // 100 ms

const PES_STREAM_ID_VIDEO = 0xe0;
const AUDIO_PID = 257;

/** The output's audio stream: as the input's PMT described it (stream type and descriptors kept). */
export interface MuxAudioStream {
  streamType: number;
  /** ES descriptors for the PMT (e.g. Opus's registration descriptor). */
  descriptors: Buffer;
}

export interface MuxAudioPesInput {
  /** The PES payload as it came (ADTS frames, LATM, Opus access units). */
  payload: Buffer;
  pts: number;
  /** 0xc0 for MPEG audio, 0xbd (private_stream_1) for Opus. */
  streamId: number;
}

export class TsMuxer {
  readonly videoPid: number;
  readonly pmtPid: number;
  readonly programNumber: number;
  private readonly patPacket: Buffer;
  private pmtPacket: Buffer;
  private patContinuity = 0;
  private pmtContinuity = 0;
  private videoContinuity = 0;
  private audioContinuity = 0;
  private audio: MuxAudioStream | undefined;
  private pmtVersion = 0;
  /** PES header + optional AUD, built per frame in place. */
  private readonly prefix = Buffer.alloc(32);

  constructor(options: TsMuxerOptions = {}) {
    this.videoPid = options.videoPid ?? 256;
    this.pmtPid = options.pmtPid ?? 4096;
    this.programNumber = options.programNumber ?? 1;
    for (const [name, pid] of [
      ["videoPid", this.videoPid],
      ["pmtPid", this.pmtPid],
    ] as const) {
      if (!Number.isInteger(pid) || pid <= PAT_PID || pid >= NULL_PID)
        throw new RangeError(`${name} ${pid} is not a usable PID`);
    }
    if (this.videoPid === this.pmtPid) throw new RangeError("videoPid and pmtPid must differ");
    if (!Number.isInteger(this.programNumber) || this.programNumber < 1 || this.programNumber > 0xffff) {
      throw new RangeError(`programNumber ${this.programNumber} must be 1..65535`);
    }
    this.patPacket = this.buildPat();
    this.pmtPacket = this.buildPmt();
  }

  /**
   * TS packets (a multiple of 188 bytes) for one access unit. PAT and PMT come first when
   * `startOfSegment` is true, and also before every keyframe so that a reader joining mid-segment
   * can start there. Keyframes get random_access_indicator; every frame's first packet carries a PCR
   * (cheap: 8 bytes a frame, and well inside the 100 ms PCR interval the standard asks for).
   */
  muxAccessUnit(au: MuxAccessUnitInput, startOfSegment = false): Buffer {
    const pts = wrapPts(au.pts);
    const dts = au.dts === undefined ? pts : wrapPts(au.dts);
    const withDts = dts !== pts;
    const annexB = au.annexB;

    // PES header: start code, stream id, length (below), flags, PTS[/DTS].
    const prefix = this.prefix;
    prefix[0] = 0;
    prefix[1] = 0;
    prefix[2] = 1;
    prefix[3] = PES_STREAM_ID_VIDEO;
    prefix[4] = 0;
    prefix[5] = 0;
    prefix[6] = 0x84; // '10', not scrambled, data_alignment_indicator
    prefix[7] = withDts ? 0xc0 : 0x80;
    prefix[8] = withDts ? 10 : 5;
    writeTimestamp(prefix, 9, withDts ? 0x3 : 0x2, pts);
    let prefixLength = 14;
    if (withDts) {
      writeTimestamp(prefix, 14, 0x1, dts);
      prefixLength = 19;
    }
    if (!startsWithAud(annexB)) {
      AUD_NAL_ANNEXB.copy(prefix, prefixLength);
      prefixLength += AUD_NAL_ANNEXB.length;
    }

    const pesLength = prefixLength + annexB.length;
    // A declared length lets a reader (ffmpeg, our demuxer) hand the frame on as soon as its last
    // byte is in, instead of waiting for the next PES to start: a frame of latency at every reader.
    // Frames too big for 16 bits keep 0 (unbounded, allowed for video).
    const declaredLength = pesLength - 6 <= 0xffff ? pesLength - 6 : 0;
    prefix[4] = declaredLength >> 8;
    prefix[5] = declaredLength & 0xff;
    const firstAdaptationLength = 8; // length byte + flags + 6-byte PCR
    const firstCapacity = TS_PACKET_SIZE - 4 - firstAdaptationLength;
    const pesPackets = pesLength <= firstCapacity ? 1 : 1 + Math.ceil((pesLength - firstCapacity) / 184);
    const writePsi = startOfSegment || au.keyframe;
    const out = Buffer.allocUnsafe((pesPackets + (writePsi ? 2 : 0)) * TS_PACKET_SIZE);
    let position = 0;
    if (writePsi) {
      this.patPacket.copy(out, 0);
      out[3] = 0x10 | this.patContinuity;
      this.patContinuity = (this.patContinuity + 1) & 0x0f;
      this.pmtPacket.copy(out, TS_PACKET_SIZE);
      out[TS_PACKET_SIZE + 3] = 0x10 | this.pmtContinuity;
      this.pmtContinuity = (this.pmtContinuity + 1) & 0x0f;
      position = 2 * TS_PACKET_SIZE;
    }

    const pcrBase = wrapPts(dts - PCR_LEAD_90KHZ);
    let written = 0; // bytes of the PES (prefix + annexB) written so far
    for (let packet = 0; packet < pesPackets; packet++) {
      const first = packet === 0;
      const remaining = pesLength - written;
      const start = position;
      out[start] = TS_SYNC_BYTE;
      out[start + 1] = (first ? 0x40 : 0) | ((this.videoPid >> 8) & 0x1f);
      out[start + 2] = this.videoPid & 0xff;
      const baseAdaptation = first ? firstAdaptationLength : 0;
      const payloadRoom = 184 - baseAdaptation;
      const payloadLength = Math.min(remaining, payloadRoom);
      // Stuffing fills the packet when the payload is short (only ever the last packet).
      const adaptationTotal = 184 - payloadLength; // bytes between the 4-byte header and the payload
      const hasAdaptation = adaptationTotal > 0;
      out[start + 3] = (hasAdaptation ? 0x30 : 0x10) | this.videoContinuity;
      this.videoContinuity = (this.videoContinuity + 1) & 0x0f;
      let cursor = start + 4;
      if (hasAdaptation) {
        out[cursor] = adaptationTotal - 1; // adaptation_field_length excludes itself
        cursor++;
        if (adaptationTotal > 1) {
          let flags = 0;
          if (first) flags |= 0x10; // PCR_flag
          if (first && au.keyframe) flags |= 0x40; // random_access_indicator
          out[cursor] = flags;
          cursor++;
          if (first) {
            writePcr(out, cursor, pcrBase);
            cursor += 6;
          }
          const stuffingEnd = start + 4 + adaptationTotal;
          out.fill(0xff, cursor, stuffingEnd);
          cursor = stuffingEnd;
        }
      }
      // Payload: the part of [prefix | annexB] from `written` onwards.
      let take = payloadLength;
      if (written < prefixLength) {
        const fromPrefix = Math.min(take, prefixLength - written);
        prefix.copy(out, cursor, written, written + fromPrefix);
        cursor += fromPrefix;
        take -= fromPrefix;
        written += fromPrefix;
      }
      if (take > 0) {
        const annexOffset = written - prefixLength;
        annexB.copy(out, cursor, annexOffset, annexOffset + take);
        written += take;
      }
      position = start + TS_PACKET_SIZE;
    }
    return out;
  }

  /** The audio stream to list in the PMT from now on (undefined: video only); a change bumps the PMT version. */
  setAudio(audio: MuxAudioStream | undefined): void {
    const same =
      audio?.streamType === this.audio?.streamType &&
      (audio?.descriptors ?? Buffer.alloc(0)).equals(this.audio?.descriptors ?? Buffer.alloc(0));
    if (same) return;
    this.audio = audio;
    this.pmtVersion = (this.pmtVersion + 1) & 0x1f;
    this.pmtPacket = this.buildPmt();
  }

  get hasAudio(): boolean {
    return this.audio !== undefined;
  }

  /** TS packets for one audio PES on the audio PID (setAudio first); no PCR, no random access flag. */
  muxAudioPes(pes: MuxAudioPesInput): Buffer {
    if (!this.audio) throw new Error("muxAudioPes before setAudio");
    const header = Buffer.alloc(14);
    header[2] = 1;
    header[3] = pes.streamId;
    const pesLength = 14 + pes.payload.length;
    const declared = pesLength - 6 <= 0xffff ? pesLength - 6 : 0;
    header[4] = declared >> 8;
    header[5] = declared & 0xff;
    header[6] = 0x84; // '10', data_alignment_indicator
    header[7] = 0x80; // PTS only
    header[8] = 5;
    writeTimestamp(header, 9, 0x2, wrapPts(pes.pts));
    const body = Buffer.concat([header, pes.payload]);
    const packets = Math.ceil(body.length / 184);
    const out = Buffer.allocUnsafe(packets * TS_PACKET_SIZE);
    for (let packet = 0, written = 0; packet < packets; packet++) {
      const start = packet * TS_PACKET_SIZE;
      const payloadLength = Math.min(184, body.length - written);
      const stuffing = 184 - payloadLength;
      out[start] = TS_SYNC_BYTE;
      out[start + 1] = (packet === 0 ? 0x40 : 0) | ((AUDIO_PID >> 8) & 0x1f);
      out[start + 2] = AUDIO_PID & 0xff;
      out[start + 3] = (stuffing > 0 ? 0x30 : 0x10) | this.audioContinuity;
      this.audioContinuity = (this.audioContinuity + 1) & 0x0f;
      let cursor = start + 4;
      if (stuffing > 0) {
        out[cursor++] = stuffing - 1; // adaptation_field_length
        if (stuffing > 1) {
          out[cursor++] = 0; // no flags
          out.fill(0xff, cursor, start + 4 + stuffing);
          cursor = start + 4 + stuffing;
        }
      }
      body.copy(out, cursor, written, written + payloadLength);
      written += payloadLength;
    }
    return out;
  }

  private buildPat(): Buffer {
    const packet = Buffer.alloc(TS_PACKET_SIZE, 0xff);
    packet[0] = TS_SYNC_BYTE;
    packet[1] = 0x40 | ((PAT_PID >> 8) & 0x1f);
    packet[2] = PAT_PID & 0xff;
    packet[3] = 0x10;
    packet[4] = 0; // pointer_field
    const section = 5;
    const sectionLength = 13; // 5 after length + one 4-byte program + 4-byte CRC
    packet[section] = 0x00; // table_id: program_association_section
    packet[section + 1] = 0xb0 | (sectionLength >> 8); // section_syntax_indicator, '0', reserved
    packet[section + 2] = sectionLength & 0xff;
    packet[section + 3] = 0x00; // transport_stream_id = 1
    packet[section + 4] = 0x01;
    packet[section + 5] = 0xc1; // reserved, version 0, current_next_indicator
    packet[section + 6] = 0; // section_number
    packet[section + 7] = 0; // last_section_number
    packet[section + 8] = this.programNumber >> 8;
    packet[section + 9] = this.programNumber & 0xff;
    packet[section + 10] = 0xe0 | (this.pmtPid >> 8);
    packet[section + 11] = this.pmtPid & 0xff;
    packet.writeUInt32BE(crc32Mpeg2(packet, section, section + 12), section + 12);
    return packet;
  }

  private buildPmt(): Buffer {
    const packet = Buffer.alloc(TS_PACKET_SIZE, 0xff);
    packet[0] = TS_SYNC_BYTE;
    packet[1] = 0x40 | ((this.pmtPid >> 8) & 0x1f);
    packet[2] = this.pmtPid & 0xff;
    packet[3] = 0x10;
    packet[4] = 0; // pointer_field
    const section = 5;
    const streams: Array<{ type: number; pid: number; descriptors: Buffer }> = [
      { type: STREAM_TYPE_H264, pid: this.videoPid, descriptors: Buffer.alloc(0) },
    ];
    // Descriptors beyond what fits one packet are left out (real ones are a few bytes).
    if (this.audio) {
      streams.push({
        type: this.audio.streamType,
        pid: AUDIO_PID,
        descriptors: this.audio.descriptors.subarray(0, 128),
      });
    }
    const entriesLength = streams.reduce((sum, stream) => sum + 5 + stream.descriptors.length, 0);
    const sectionLength = 9 + entriesLength + 4;
    packet[section] = 0x02; // table_id: TS_program_map_section
    packet[section + 1] = 0xb0 | (sectionLength >> 8);
    packet[section + 2] = sectionLength & 0xff;
    packet[section + 3] = this.programNumber >> 8;
    packet[section + 4] = this.programNumber & 0xff;
    packet[section + 5] = 0xc1 | (this.pmtVersion << 1);
    packet[section + 6] = 0;
    packet[section + 7] = 0;
    packet[section + 8] = 0xe0 | (this.videoPid >> 8); // PCR_PID
    packet[section + 9] = this.videoPid & 0xff;
    packet[section + 10] = 0xf0; // program_info_length = 0
    packet[section + 11] = 0x00;
    let cursor = section + 12;
    for (const stream of streams) {
      packet[cursor] = stream.type;
      packet[cursor + 1] = 0xe0 | (stream.pid >> 8);
      packet[cursor + 2] = stream.pid & 0xff;
      packet[cursor + 3] = 0xf0 | (stream.descriptors.length >> 8);
      packet[cursor + 4] = stream.descriptors.length & 0xff;
      stream.descriptors.copy(packet, cursor + 5);
      cursor += 5 + stream.descriptors.length;
    }
    packet.writeUInt32BE(crc32Mpeg2(packet, section, cursor), cursor);
    return packet;
  }
}

function startsWithAud(annexB: Buffer): boolean {
  // Start code is 00 00 01 or 00 00 00 01; an AUD must be the first NAL of the access unit.
  if (annexB.length >= 4 && annexB[0] === 0 && annexB[1] === 0 && annexB[2] === 1) {
    return (annexB[3] & 0x1f) === NAL_AUD;
  }
  if (annexB.length >= 5 && annexB[0] === 0 && annexB[1] === 0 && annexB[2] === 0 && annexB[3] === 1) {
    return (annexB[4] & 0x1f) === NAL_AUD;
  }
  return false;
}

/** program_clock_reference: 33-bit base (90 kHz), 6 reserved bits, 9-bit extension (0). */
function writePcr(out: Buffer, offset: number, base: number): void {
  const high = Math.floor(base / 2); // bits 32..1
  out.writeUInt32BE(high >>> 0, offset);
  out[offset + 4] = ((base % 2) << 7) | 0x7e;
  out[offset + 5] = 0;
}
