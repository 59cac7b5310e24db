/**
 * Return path: H.264 RTP (RFC 6184, packetization-mode 1) → Annex-B access units.
 *
 * Handles single NAL unit packets, STAP-A and FU-A — everything aiortc and libx264 produce in
 * packetization-mode 1. An access unit is the set of packets sharing one RTP timestamp; it is
 * emitted when the marker bit arrives or, if a sender omits the marker, when the timestamp changes.
 *
 * Loss policy: a sequence gap means some NAL data is missing, and we cannot tell whether it
 * belonged to the access unit in progress or to the next one, so both are treated as damaged and
 * dropped (counted) instead of emitting a stream the decoder would render as garbage.
 */

export interface H264RtpPacketLike {
  header: { timestamp: number; marker: boolean; sequenceNumber: number };
  payload: Buffer;
}

export interface H264AccessUnit {
  /** RTP timestamp (90 kHz) shared by every packet of the access unit. */
  rtpTimestamp: number;
  /** NAL units with 4-byte start codes, ready for MPEG-TS or `ffmpeg -f h264`. */
  annexB: Buffer;
  /** True when the access unit holds an IDR slice (NAL type 5). */
  keyframe: boolean;
}

export interface H264DepacketizerStats {
  packets: number;
  accessUnits: number;
  keyframes: number;
  lostPackets: number;
  droppedAccessUnits: number;
  /** Packets older than the newest seen (reordered or duplicated); ignored. */
  latePackets: number;
  /** Access units dropped because they grew past MAX_ACCESS_UNIT_BYTES (a peer that never ends one). */
  oversizeAccessUnits: number;
}

export interface H264DepacketizerOptions {
  /**
   * After a loss, also drop the following access units until the next IDR, so that nothing is
   * emitted that references a missing picture. Off by default: the relay prefers a briefly
   * smeared picture to a gap, and its periodic PLI bounds how long the smear lasts.
   */
  dropUntilKeyframeAfterLoss?: boolean;
}

const START_CODE = Buffer.from([0, 0, 0, 1]);
/**
 * Largest access unit assembled (the TS demuxer's PES cap too). A peer that keeps one RTP timestamp
 * without a marker, or an FU-A without its end bit, would otherwise make the pending unit grow
 * without bound; past the cap its data is released and the unit is dropped when it ends.
 */
export const MAX_ACCESS_UNIT_BYTES = 16 * 1024 * 1024;
const NAL_TYPE_IDR = 5;
const NAL_TYPE_STAP_A = 24;
const NAL_TYPE_FU_A = 28;

interface PendingAccessUnit {
  rtpTimestamp: number;
  nalUnits: Buffer[];
  keyframe: boolean;
  damaged: boolean;
  /** Payload bytes held (NAL units and fragments), checked against MAX_ACCESS_UNIT_BYTES. */
  bytes: number;
  oversize: boolean;
  /** Fragments of the FU-A NAL unit being reassembled, if any. */
  fragments: Buffer[] | undefined;
}

export class H264Depacketizer {
  readonly stats: H264DepacketizerStats = {
    packets: 0,
    accessUnits: 0,
    keyframes: 0,
    lostPackets: 0,
    droppedAccessUnits: 0,
    latePackets: 0,
    oversizeAccessUnits: 0,
  };

  private pending: PendingAccessUnit | undefined;
  private lastSequenceNumber: number | undefined;
  private waitingForKeyframe = false;

  constructor(private readonly options: H264DepacketizerOptions = {}) {}

  /** Feeds one RTP packet; returns the access units it completed (usually zero or one). */
  push(packet: H264RtpPacketLike): H264AccessUnit[] {
    const { timestamp, marker, sequenceNumber } = packet.header;
    const completed: H264AccessUnit[] = [];
    let gap = 0;
    if (this.lastSequenceNumber !== undefined) {
      const delta = (sequenceNumber - this.lastSequenceNumber + 0x10000) & 0xffff;
      if (delta === 0 || delta >= 0x8000) {
        this.stats.latePackets++;
        return completed;
      }
      gap = delta - 1;
    }
    this.lastSequenceNumber = sequenceNumber;
    this.stats.packets++;

    if (gap > 0) {
      this.stats.lostPackets += gap;
      if (this.pending) this.pending.damaged = true;
      if (this.options.dropUntilKeyframeAfterLoss) this.waitingForKeyframe = true;
    }
    if (this.pending && this.pending.rtpTimestamp !== timestamp) {
      this.finish(completed);
    }
    if (!this.pending) {
      this.pending = {
        rtpTimestamp: timestamp,
        nalUnits: [],
        keyframe: false,
        damaged: gap > 0,
        bytes: 0,
        oversize: false,
        fragments: undefined,
      };
    }
    this.addPayload(this.pending, packet.payload);
    this.enforceCap(this.pending, packet.payload.length);
    if (marker) this.finish(completed);
    return completed;
  }

  /** Emits the access unit in progress (end of stream); it counts as damaged if incomplete. */
  flush(): H264AccessUnit[] {
    const completed: H264AccessUnit[] = [];
    if (this.pending) this.finish(completed);
    return completed;
  }

  private enforceCap(unit: PendingAccessUnit, added: number): void {
    if (unit.oversize) return;
    unit.bytes += added;
    if (unit.bytes <= MAX_ACCESS_UNIT_BYTES) return;
    unit.oversize = true;
    unit.damaged = true;
    unit.nalUnits = [];
    unit.fragments = undefined;
  }

  private addPayload(unit: PendingAccessUnit, payload: Buffer): void {
    if (unit.oversize) return;
    if (payload.length < 1) {
      unit.damaged = true;
      return;
    }
    const nalType = payload[0]! & 0x1f;
    if (nalType === NAL_TYPE_FU_A) {
      this.addFragment(unit, payload);
      return;
    }
    // Any non-FU packet ends a fragmented NAL unit; if it never saw its end bit it is incomplete.
    if (unit.fragments) {
      unit.damaged = true;
      unit.fragments = undefined;
    }
    if (nalType >= 1 && nalType <= 23) {
      this.addNalUnit(unit, payload);
    } else if (nalType === NAL_TYPE_STAP_A) {
      let offset = 1;
      while (offset + 2 <= payload.length) {
        const size = payload.readUInt16BE(offset);
        offset += 2;
        if (size === 0 || offset + size > payload.length) {
          unit.damaged = true;
          return;
        }
        this.addNalUnit(unit, payload.subarray(offset, offset + size));
        offset += size;
      }
      if (offset !== payload.length) unit.damaged = true;
    } else {
      // STAP-B, MTAP, FU-B are not allowed in packetization-mode 1; type 0 / 30 / 31 are invalid.
      unit.damaged = true;
    }
  }

  private addFragment(unit: PendingAccessUnit, payload: Buffer): void {
    if (payload.length < 3) {
      unit.damaged = true;
      return;
    }
    const fuHeader = payload[1]!;
    const isStart = (fuHeader & 0x80) !== 0;
    const isEnd = (fuHeader & 0x40) !== 0;
    if (isStart) {
      if (unit.fragments) unit.damaged = true; // the previous fragmented NAL never ended
      const nalHeader = (payload[0]! & 0xe0) | (fuHeader & 0x1f);
      unit.fragments = [Buffer.from([nalHeader]), payload.subarray(2)];
    } else if (!unit.fragments) {
      unit.damaged = true; // continuation without its start
      return;
    } else {
      unit.fragments.push(payload.subarray(2));
    }
    if (isEnd) {
      this.addNalUnit(unit, Buffer.concat(unit.fragments));
      unit.fragments = undefined;
    }
  }

  private addNalUnit(unit: PendingAccessUnit, nalUnit: Buffer): void {
    if ((nalUnit[0]! & 0x1f) === NAL_TYPE_IDR) unit.keyframe = true;
    unit.nalUnits.push(nalUnit);
  }

  private finish(completed: H264AccessUnit[]): void {
    const unit = this.pending;
    this.pending = undefined;
    if (!unit) return;
    if (unit.fragments) unit.damaged = true;
    if (unit.oversize) this.stats.oversizeAccessUnits++;
    if (unit.damaged || unit.nalUnits.length === 0) {
      this.stats.droppedAccessUnits++;
      return;
    }
    if (this.waitingForKeyframe) {
      if (!unit.keyframe) {
        this.stats.droppedAccessUnits++;
        return;
      }
      this.waitingForKeyframe = false;
    }
    const parts: Buffer[] = [];
    for (const nalUnit of unit.nalUnits) parts.push(START_CODE, nalUnit);
    this.stats.accessUnits++;
    if (unit.keyframe) this.stats.keyframes++;
    completed.push({
      rtpTimestamp: unit.rtpTimestamp,
      annexB: Buffer.concat(parts),
      keyframe: unit.keyframe,
    });
  }
}
