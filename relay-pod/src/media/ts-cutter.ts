/**
 * Cuts a live MPEG-TS byte stream (e.g. ffmpeg's `-f mpegts pipe:1`) into trickle segments that each
 * start at a video keyframe with PAT and PMT in front, so each segment decodes on its own.
 *
 * Bytes are passed on as they arrive. Only a few packets are ever held: PSI/SI packets until the next
 * packet shows whether they open a new segment (muxers write PAT/PMT right before a keyframe), and the
 * first packets of a frame without random_access_indicator until its first slice NAL tells whether it
 * is an IDR.
 */
import { NAL_IDR, NAL_SLICE } from "./h264.js";
import {
  packetHasPusi,
  packetHasRandomAccess,
  packetPayloadOffset,
  packetPid,
  PAT_PID,
  parsePatPacket,
  parsePesHeader,
  parsePmtPacket,
  PTS_CLOCK_HZ,
  ptsForwardDistance,
  STREAM_TYPE_H264,
  STREAM_TYPE_HEVC,
  TS_PACKET_SIZE,
  TS_SYNC_BYTE,
} from "./ts-packet.js";

export interface TsSegmentCutterOptions {
  /** A new segment starts at a keyframe only once this much PTS has passed since the current one began. */
  minDurationSec: number;
  onSegmentStart: () => void;
  /** Bytes of the current segment. May be a view into a pushed chunk; use it before the chunk is reused. */
  onData: (chunk: Buffer) => void;
  onSegmentEnd: () => void;
}

export interface TsSegmentCutterStats {
  segments: number;
  packets: number;
  /** Bytes dropped before the first keyframe (a segment must start with one). */
  bytesBeforeFirstKeyframe: number;
  /** Bytes skipped while looking for sync, plus a trailing partial packet at end(). */
  bytesSkipped: number;
  /** PAT/PMT packets copied in front of a segment because the keyframe had none right before it. */
  insertedPsiPackets: number;
}

/** Give up looking for the first slice of a frame after this many payload bytes (huge SEI/headers). */
const MAX_DECIDING_BYTES = 64 * 1024;
const START_CODE = Buffer.from([0, 0, 1]);

export class TsSegmentCutter {
  readonly stats: TsSegmentCutterStats = {
    segments: 0,
    packets: 0,
    bytesBeforeFirstKeyframe: 0,
    bytesSkipped: 0,
    insertedPsiPackets: 0,
  };

  private readonly minTicks: number;
  private readonly onSegmentStart: () => void;
  private readonly onData: (chunk: Buffer) => void;
  private readonly onSegmentEnd: () => void;

  private carry: Buffer = Buffer.alloc(0);
  private pmtPid = -1;
  private videoPid = -1;
  private streamType = 0;
  private lastPat: Buffer | undefined;
  private lastPmt: Buffer | undefined;

  private segmentOpen = false;
  private segmentStartPts: number | undefined;

  /** PSI/SI packets (copies) waiting to see whether a keyframe follows them. */
  private heldPsi: Buffer[] = [];
  /** Packets (copies) from a frame start whose keyframe status is still unknown. */
  private deciding: Buffer[] | undefined;
  private decidingPts: number | undefined;
  private decidingScan: Buffer = Buffer.alloc(0);
  private decidingScanLength = 0;
  private decidingScanFrom = 0;

  /** A run of consecutive packets of the current chunk that go out as one view. */
  private runData: Buffer | undefined;
  private runStart = 0;
  private runEnd = 0;
  private ended = false;

  constructor(options: TsSegmentCutterOptions) {
    if (!(options.minDurationSec >= 0)) throw new RangeError("minDurationSec must be >= 0");
    this.minTicks = Math.round(options.minDurationSec * PTS_CLOCK_HZ);
    this.onSegmentStart = options.onSegmentStart;
    this.onData = options.onData;
    this.onSegmentEnd = options.onSegmentEnd;
  }

  push(chunk: Buffer): void {
    if (this.ended) throw new Error("TsSegmentCutter.push() after end()");
    let offset = 0;
    if (this.carry.length > 0) {
      if (this.carry[0] !== TS_SYNC_BYTE) throw new Error("internal: carry must start in sync");
      const missing = TS_PACKET_SIZE - this.carry.length;
      if (chunk.length < missing) {
        this.carry = Buffer.concat([this.carry, chunk]);
        return;
      }
      const packet = Buffer.concat([this.carry, chunk.subarray(0, missing)]);
      this.carry = Buffer.alloc(0);
      offset = missing;
      this.handlePacket(packet, 0);
    }
    while (offset < chunk.length) {
      if (chunk[offset] !== TS_SYNC_BYTE) {
        const next = chunk.indexOf(TS_SYNC_BYTE, offset);
        const resumeAt = next < 0 ? chunk.length : next;
        this.stats.bytesSkipped += resumeAt - offset;
        offset = resumeAt;
        continue;
      }
      if (offset + TS_PACKET_SIZE > chunk.length) {
        this.carry = Buffer.from(chunk.subarray(offset));
        break;
      }
      this.handlePacket(chunk, offset);
      offset += TS_PACKET_SIZE;
    }
    this.flushRun();
  }

  /** Ends the stream: releases anything held and closes the open segment. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.carry.length > 0) {
      this.stats.bytesSkipped += this.carry.length;
      this.carry = Buffer.alloc(0);
    }
    if (this.deciding !== undefined) this.decide(false);
    this.releaseHeld();
    this.flushRun();
    if (this.segmentOpen) {
      this.segmentOpen = false;
      this.onSegmentEnd();
    }
  }

  private handlePacket(data: Buffer, offset: number): void {
    this.stats.packets++;
    const pid = packetPid(data, offset);
    const isPsi = pid < 0x20 || pid === this.pmtPid;
    if (isPsi) this.learnPsi(data, offset, pid);

    if (this.deciding !== undefined) {
      if (pid === this.videoPid && packetHasPusi(data, offset)) {
        // The candidate frame ended without a slice we recognised: not a keyframe.
        this.decide(false);
      } else {
        this.deciding.push(Buffer.from(data.subarray(offset, offset + TS_PACKET_SIZE)));
        if (pid === this.videoPid) this.scanDeciding(data, offset);
        return;
      }
    }

    if (isPsi) {
      this.flushRun();
      this.heldPsi.push(Buffer.from(data.subarray(offset, offset + TS_PACKET_SIZE)));
      return;
    }

    if (pid === this.videoPid && packetHasPusi(data, offset)) {
      const payload = packetPayloadOffset(data, offset);
      const header = payload >= 0 ? parsePesHeader(data, payload, offset + TS_PACKET_SIZE) : undefined;
      const pts = header?.pts;
      if (packetHasRandomAccess(data, offset)) {
        this.keyframeStarts(pts, data, offset);
        return;
      }
      if (this.streamType === STREAM_TYPE_H264 || this.streamType === STREAM_TYPE_HEVC) {
        this.flushRun();
        this.deciding = [Buffer.from(data.subarray(offset, offset + TS_PACKET_SIZE))];
        this.decidingPts = pts;
        this.decidingScanLength = 0;
        this.decidingScanFrom = 0;
        if (header !== undefined) this.appendScan(data, header.payloadOffset, offset + TS_PACKET_SIZE);
        this.checkDeciding();
        return;
      }
    }
    this.releaseHeld();
    this.emitPacket(data, offset);
  }

  private learnPsi(data: Buffer, offset: number, pid: number): void {
    if (pid === PAT_PID) {
      const pmtPid = parsePatPacket(data, offset);
      if (typeof pmtPid === "number") {
        this.pmtPid = pmtPid;
        this.lastPat = Buffer.from(data.subarray(offset, offset + TS_PACKET_SIZE));
      }
    } else if (pid === this.pmtPid) {
      const pmt = parsePmtPacket(data, offset);
      if (pmt !== undefined && pmt !== "crc") {
        this.lastPmt = Buffer.from(data.subarray(offset, offset + TS_PACKET_SIZE));
        if (pmt.video !== undefined) {
          this.videoPid = pmt.video.pid;
          this.streamType = pmt.video.streamType;
        }
      }
    }
  }

  private scanDeciding(data: Buffer, offset: number): void {
    const payload = packetPayloadOffset(data, offset);
    if (payload >= 0) this.appendScan(data, payload, offset + TS_PACKET_SIZE);
    this.checkDeciding();
  }

  private appendScan(data: Buffer, start: number, end: number): void {
    const length = end - start;
    if (this.decidingScanLength + length > this.decidingScan.length) {
      const grown = Buffer.allocUnsafe(Math.max(4096, 2 * (this.decidingScanLength + length)));
      this.decidingScan.copy(grown, 0, 0, this.decidingScanLength);
      this.decidingScan = grown;
    }
    data.copy(this.decidingScan, this.decidingScanLength, start, end);
    this.decidingScanLength += length;
  }

  /** Looks for the first slice NAL in what arrived so far of the candidate frame. */
  private checkDeciding(): void {
    const scan = this.decidingScan.subarray(0, this.decidingScanLength);
    let position = this.decidingScanFrom;
    for (;;) {
      const startCode = scan.indexOf(START_CODE, position);
      if (startCode < 0 || startCode + 3 >= scan.length) {
        this.decidingScanFrom = Math.max(position, scan.length - 3);
        break;
      }
      const header = scan[startCode + 3];
      if (this.streamType === STREAM_TYPE_H264) {
        const type = header & 0x1f;
        if (type >= NAL_SLICE && type <= NAL_IDR) return this.decide(type === NAL_IDR);
      } else {
        const type = (header >> 1) & 0x3f;
        if (type < 32) return this.decide(type >= 16 && type <= 23);
      }
      position = startCode + 3;
    }
    if (this.decidingScanLength > MAX_DECIDING_BYTES) this.decide(false);
  }

  private decide(keyframe: boolean): void {
    const packets = this.deciding ?? [];
    this.deciding = undefined;
    if (keyframe) {
      this.startSegmentIfDue(this.decidingPts);
    } else {
      this.releaseHeld();
    }
    for (const packet of packets) this.emitCopy(packet);
  }

  private keyframeStarts(pts: number | undefined, data: Buffer, offset: number): void {
    this.startSegmentIfDue(pts);
    this.emitPacket(data, offset);
  }

  /** At a keyframe: opens a new segment when due (with PAT/PMT in front), then releases held PSI. */
  private startSegmentIfDue(pts: number | undefined): void {
    let due = !this.segmentOpen;
    if (!due && pts !== undefined) {
      due =
        this.segmentStartPts === undefined || ptsForwardDistance(this.segmentStartPts, pts) >= this.minTicks;
    }
    if (!due) {
      this.releaseHeld();
      return;
    }
    this.flushRun();
    if (this.segmentOpen) this.onSegmentEnd();
    this.segmentOpen = true;
    this.segmentStartPts = pts;
    this.stats.segments++;
    this.onSegmentStart();
    const hasPat = this.heldPsi.some((packet) => packetPid(packet, 0) === PAT_PID);
    const hasPmt = this.heldPsi.some((packet) => packetPid(packet, 0) === this.pmtPid);
    if (!hasPat && this.lastPat !== undefined) {
      this.stats.insertedPsiPackets++;
      this.emitCopy(this.lastPat);
    }
    this.releaseHeld();
    if (!hasPmt && this.lastPmt !== undefined) {
      this.stats.insertedPsiPackets++;
      this.emitCopy(this.lastPmt);
    }
  }

  private releaseHeld(): void {
    if (this.heldPsi.length === 0) return;
    const held = this.heldPsi;
    this.heldPsi = [];
    for (const packet of held) this.emitCopy(packet);
  }

  /** Emits a packet that is our own copy (not part of the current run). */
  private emitCopy(packet: Buffer): void {
    this.flushRun();
    if (this.segmentOpen) this.onData(packet);
    else this.stats.bytesBeforeFirstKeyframe += packet.length;
  }

  private emitPacket(data: Buffer, offset: number): void {
    if (!this.segmentOpen) {
      this.stats.bytesBeforeFirstKeyframe += TS_PACKET_SIZE;
      return;
    }
    if (this.runData === data && this.runEnd === offset) {
      this.runEnd += TS_PACKET_SIZE;
      return;
    }
    this.flushRun();
    this.runData = data;
    this.runStart = offset;
    this.runEnd = offset + TS_PACKET_SIZE;
  }

  private flushRun(): void {
    if (this.runData === undefined) return;
    const view = this.runData.subarray(this.runStart, this.runEnd);
    this.runData = undefined;
    if (view.length > 0) this.onData(view);
  }
}
