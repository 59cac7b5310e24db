/**
 * Incremental MPEG-TS demuxer for the video elementary stream (a "PES splitter"). It reads a byte
 * stream that may be many trickle segments concatenated (each one a complete TS "file" from its own
 * muxer), follows PAT -> PMT -> the first video PID, and emits one access unit per PES.
 *
 * A video PES in TS normally has no length, so a frame is complete only when the next one starts
 * (or at flush()). Damage is counted, never thrown: lost sync is re-acquired by looking for two
 * sync bytes 188 apart; a continuity gap inside a PES drops that PES.
 */
import { silentLogger, type Logger } from "../common/log.js";
import { firstSliceNalType, isHevcIrapAccessUnit, NAL_IDR } from "./h264.js";
import {
  packetHasDiscontinuity,
  packetHasPusi,
  packetHasRandomAccess,
  packetHasStuffing,
  packetPayloadOffset,
  packetPid,
  PAT_PID,
  parsePatPacket,
  parsePesHeader,
  parsePmtPacket,
  STREAM_TYPE_H264,
  STREAM_TYPE_HEVC,
  TS_PACKET_SIZE,
  TS_SYNC_BYTE,
} from "./ts-packet.js";

export interface VideoAccessUnit {
  pid: number;
  streamType: number;
  pts: number | undefined;
  dts: number | undefined;
  keyframe: boolean;
  /** The PES payload (its own copy): Annex-B H.264 for stream type 0x1b. */
  data: Buffer;
}

export interface TsDemuxerStats {
  /** Whole 188-byte packets read (good or not). */
  packets: number;
  /** Packets or byte runs that were unusable: lost sync, truncated packets, bad adaptation fields, TEI, bad PSI CRC. */
  corruptPackets: number;
  /** Continuity-counter gaps (not counted: a new muxer's first packet, CC 0 with a unit start, at a segment boundary). */
  continuityErrors: number;
  /** PES that could not be used (bad header, damaged by a continuity gap). */
  pesErrors: number;
  /** Bytes skipped while looking for sync. */
  bytesSkipped: number;
  accessUnits: number;
  keyframes: number;
  patCount: number;
  pmtCount: number;
  videoPid?: number;
  streamType?: number;
  /** Stream types listed by the last PMT (to explain why no video was found). */
  pmtStreamTypes?: number[];
}

export interface TsDemuxerOptions {
  onAccessUnit?: (au: VideoAccessUnit) => void;
  logger?: Logger;
  /**
   * The source writes packet after packet from its first byte on (ffmpeg on a pipe), so a chunk that
   * ends on a packet boundary ends with a whole packet: take it at once rather than wait for the next
   * sync byte to confirm it, which would hold each frame's last packet until the next frame.
   */
  alignedSource?: boolean;
  /**
   * A video packet with adaptation-field stuffing ends its PES (see packetHasStuffing): the access
   * unit is emitted at its last packet rather than when the next one starts, one frame sooner. If
   * the stream turns out to stuff mid-PES (more of a PES after its stuffed packet), the rule is
   * dropped for the rest of the stream; the frame it cut short is lost.
   */
  stuffingEndsPes?: boolean;
}

/** Largest PES we assemble; a bigger one is dropped (a 4K intra frame stays well below this). */
const MAX_PES_BYTES = 16 * 1024 * 1024;

export class TsDemuxer {
  readonly stats: TsDemuxerStats = {
    packets: 0,
    corruptPackets: 0,
    continuityErrors: 0,
    pesErrors: 0,
    bytesSkipped: 0,
    accessUnits: 0,
    keyframes: 0,
    patCount: 0,
    pmtCount: 0,
  };

  private readonly onAccessUnit: (au: VideoAccessUnit) => void;
  private readonly logger: Logger;
  /** Bytes of an incomplete packet (or an unverified last packet) carried to the next push. */
  private carry: Buffer = Buffer.alloc(0);
  private readonly lastContinuity = new Int8Array(8192).fill(-1);
  /**
   * The video PID's last packet: the same bytes again, with no PAT between (a fresh muxer starts with
   * one), are a duplicate even where they look like a fresh muxer's CC 0 unit start.
   */
  private lastVideoPacket = Buffer.alloc(TS_PACKET_SIZE);
  private patSinceVideoPacket = false;
  private pmtPid = -1;
  private videoPid = -1;
  private streamType = 0;

  // The PES being assembled, in a reusable buffer.
  private pes: Buffer = Buffer.allocUnsafe(64 * 1024);
  private pesLength = 0;
  private pesActive = false;
  private pesDamaged = false;
  private pesRandomAccess = false;
  private inResync = false;
  private readonly alignedSource: boolean;
  private stuffingEndsPes: boolean;
  /** The last PES ended at a stuffed packet (not at the next unit start). */
  private pesEndedByStuffing = false;

  constructor(options: TsDemuxerOptions = {}) {
    this.alignedSource = options.alignedSource === true;
    this.stuffingEndsPes = options.stuffingEndsPes === true;
    this.onAccessUnit = options.onAccessUnit ?? (() => {});
    this.logger = options.logger ?? silentLogger;
  }

  /** Feeds bytes, split anywhere. */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.carry.length === 0) {
      this.keepCarry(chunk, this.scan(chunk, false));
      return;
    }
    // Join the small carried tail with just enough of the chunk to get back in step, so the bulk
    // of the chunk is scanned in place without copying.
    const headLength = Math.min(chunk.length, 2 * TS_PACKET_SIZE);
    const joined = Buffer.concat([this.carry, chunk.subarray(0, headLength)]);
    const consumed = this.scan(joined, false);
    if (headLength === chunk.length) {
      this.keepCarry(joined, consumed);
      return;
    }
    // scan() leaves at most one packet unconsumed, so it always reaches into the chunk here.
    const resumeAt = consumed - this.carry.length;
    this.carry = Buffer.alloc(0);
    const rest = chunk.subarray(resumeAt);
    this.keepCarry(rest, this.scan(rest, false));
  }

  /**
   * Processes any carried bytes and emits the pending PES. Call at the end of the stream; it is
   * also safe at a trickle segment boundary (segments end on a packet boundary and a new segment
   * starts with a new PES), where it saves one frame of latency.
   */
  flush(): void {
    if (this.carry.length > 0) {
      const consumed = this.scan(this.carry, true);
      const leftover = this.carry.length - consumed;
      if (leftover > 0) {
        this.stats.corruptPackets++;
        this.stats.bytesSkipped += leftover;
      }
      this.carry = Buffer.alloc(0);
    }
    this.finishPes();
  }

  private keepCarry(data: Buffer, consumed: number): void {
    // Copy: the caller may reuse its chunk buffer.
    this.carry = consumed < data.length ? Buffer.from(data.subarray(consumed)) : Buffer.alloc(0);
  }

  /**
   * Parses whole packets from `data` and returns how many bytes were consumed. Unless `final`, a
   * packet is only accepted once the sync byte of the packet after it is visible, so that a
   * truncated packet is detected the same way whatever the chunking.
   */
  private scan(data: Buffer, final: boolean): number {
    const length = data.length;
    let offset = 0;
    while (offset < length) {
      if (data[offset] !== TS_SYNC_BYTE) {
        const next = this.findSync(data, offset + 1, final);
        if (!this.inResync) {
          this.inResync = true;
          this.stats.corruptPackets++;
        }
        if (next < 0) {
          // Keep the tail that might still hold a sync byte whose confirmation is not here yet.
          const keepFrom = final ? length : Math.max(offset + 1, length - TS_PACKET_SIZE);
          this.stats.bytesSkipped += keepFrom - offset;
          return keepFrom;
        }
        this.stats.bytesSkipped += next - offset;
        offset = next;
        continue;
      }
      const packetEnd = offset + TS_PACKET_SIZE;
      if (packetEnd > length) return offset;
      // A chunk's last packet waits for the next sync byte to confirm it, unless the source is
      // aligned, or a stuffed packet may end a frame and the stream is in sync (its start is where
      // the packet before it ended, which is what the wait would confirm anyway).
      if (packetEnd === length && !final && !this.alignedSource && !(this.stuffingEndsPes && !this.inResync))
        return offset;
      if (packetEnd < length && data[packetEnd] !== TS_SYNC_BYTE) {
        // This packet is cut short (or the sync byte was a false one): drop it and resync.
        this.stats.packets++;
        this.stats.corruptPackets++;
        this.inResync = true;
        const next = this.findSync(data, offset + 1, final);
        const resumeAt = next < 0 ? (final ? length : Math.max(offset + 1, length - TS_PACKET_SIZE)) : next;
        this.stats.bytesSkipped += resumeAt - offset;
        if (next < 0) return resumeAt;
        offset = next;
        continue;
      }
      this.inResync = false;
      this.stats.packets++;
      this.handlePacket(data, offset);
      offset = packetEnd;
    }
    return offset;
  }

  /** Next offset whose byte is a sync byte confirmed by another one 188 bytes later (or at the end when final). */
  private findSync(data: Buffer, from: number, final: boolean): number {
    let candidate = data.indexOf(TS_SYNC_BYTE, from);
    while (candidate >= 0) {
      const confirm = candidate + TS_PACKET_SIZE;
      if (confirm < data.length) {
        if (data[confirm] === TS_SYNC_BYTE) return candidate;
      } else if (final ? confirm === data.length : true) {
        // Cannot confirm yet: resume here and let the next push decide (or accept the last packet).
        return final ? candidate : -1;
      }
      candidate = data.indexOf(TS_SYNC_BYTE, candidate + 1);
    }
    return -1;
  }

  private handlePacket(data: Buffer, offset: number): void {
    if (data[offset + 1] & 0x80) {
      // transport_error_indicator: a demodulator flagged it; ignore it.
      this.stats.corruptPackets++;
      return;
    }
    const pid = packetPid(data, offset);
    const payload = packetPayloadOffset(data, offset);
    if (payload === -2) {
      this.stats.corruptPackets++;
      return;
    }
    const unitStart = packetHasPusi(data, offset);
    if (payload < 0) return;
    if (this.isDuplicate(data, offset, pid, unitStart) || payload >= offset + TS_PACKET_SIZE) return;

    if (pid === this.videoPid) {
      this.handleVideoPayload(data, offset, payload, unitStart);
    } else if (pid === PAT_PID) {
      const pmtPid = parsePatPacket(data, offset);
      if (pmtPid === "crc") this.stats.corruptPackets++;
      else if (pmtPid !== undefined) {
        this.stats.patCount++;
        this.pmtPid = pmtPid;
      }
    } else if (pid === this.pmtPid) {
      const pmt = parsePmtPacket(data, offset);
      if (pmt === "crc") this.stats.corruptPackets++;
      else if (pmt !== undefined) {
        this.stats.pmtCount++;
        this.stats.pmtStreamTypes = pmt.streamTypes;
        const video = pmt.video;
        if (video !== undefined && (video.pid !== this.videoPid || video.streamType !== this.streamType)) {
          if (this.videoPid >= 0) {
            this.finishPes();
            this.logger.info({ pid: video.pid, streamType: video.streamType }, "video stream changed");
          }
          this.videoPid = video.pid;
          this.streamType = video.streamType;
          this.stats.videoPid = video.pid;
          this.stats.streamType = video.streamType;
        }
      }
    }
  }

  /**
   * Checks the continuity counter of a packet that carries payload; true when the packet repeats
   * the previous one (a legal duplicate whose payload must not be used twice).
   */
  private isDuplicate(data: Buffer, offset: number, pid: number, unitStart: boolean): boolean {
    const counter = data[offset + 3] & 0x0f;
    const previous = this.lastContinuity[pid];
    this.lastContinuity[pid] = counter;
    let repeat = false;
    if (pid === PAT_PID) this.patSinceVideoPacket = true;
    if (pid === this.videoPid) {
      const packet = data.subarray(offset, offset + TS_PACKET_SIZE);
      repeat = counter === previous && !this.patSinceVideoPacket && packet.equals(this.lastVideoPacket);
      packet.copy(this.lastVideoPacket);
      this.patSinceVideoPacket = false;
    }
    if (previous < 0 || counter === ((previous + 1) & 0x0f)) return false;
    // Each trickle segment comes from a fresh muxer whose PIDs start again at CC 0 with a unit start;
    // but the same bytes again are the previous packet repeated (a legal duplicate), not a new start.
    const freshMuxer = counter === 0 && unitStart && !repeat;
    if (counter === previous) return !freshMuxer;
    if (freshMuxer || packetHasDiscontinuity(data, offset)) return false;
    this.stats.continuityErrors++;
    if (pid === this.videoPid && !unitStart && this.pesActive) this.pesDamaged = true;
    return false;
  }

  private handleVideoPayload(data: Buffer, offset: number, payload: number, unitStart: boolean): void {
    if (unitStart) {
      this.finishPes();
      this.pesActive = true;
      this.pesDamaged = false;
      this.pesLength = 0;
      this.pesRandomAccess = packetHasRandomAccess(data, offset);
    } else if (!this.pesActive) {
      if (this.pesEndedByStuffing) {
        this.pesEndedByStuffing = false;
        this.stuffingEndsPes = false;
        this.logger.warn(
          "this stream stuffs packets in the middle of a PES: frames end at the next one's start",
        );
      }
      return; // the middle of a PES whose start we never saw
    }
    const payloadLength = offset + TS_PACKET_SIZE - payload;
    if (this.pesLength + payloadLength > this.pes.length) {
      if (this.pesLength + payloadLength > MAX_PES_BYTES) {
        this.pesDamaged = true;
        return;
      }
      const grown = Buffer.allocUnsafe(Math.max(this.pes.length * 2, this.pesLength + payloadLength));
      this.pes.copy(grown, 0, 0, this.pesLength);
      this.pes = grown;
    }
    data.copy(this.pes, this.pesLength, payload, payload + TS_PACKET_SIZE);
    this.pesLength += payloadLength;
    this.pesEndedByStuffing = false;
    if (this.stuffingEndsPes && packetHasStuffing(data, offset)) {
      this.finishPes();
      this.pesEndedByStuffing = true;
      return;
    }
    // A PES with a declared length is complete as soon as all of it is here.
    if (this.pesLength >= 6) {
      const declared = (this.pes[4] << 8) | this.pes[5];
      if (declared > 0 && this.pesLength >= declared + 6) this.finishPes();
    }
  }

  private finishPes(): void {
    if (!this.pesActive) return;
    this.pesActive = false;
    if (this.pesDamaged) {
      this.stats.pesErrors++;
      return;
    }
    const header = parsePesHeader(this.pes, 0, this.pesLength);
    if (header === undefined) {
      this.stats.pesErrors++;
      return;
    }
    let end = this.pesLength;
    if (header.packetLength > 0) end = Math.min(end, header.packetLength + 6);
    if (end <= header.payloadOffset) {
      this.stats.pesErrors++;
      return;
    }
    const payload = Buffer.from(this.pes.subarray(header.payloadOffset, end));
    const keyframe = this.pesRandomAccess || this.payloadIsKeyframe(payload);
    this.stats.accessUnits++;
    if (keyframe) this.stats.keyframes++;
    this.onAccessUnit({
      pid: this.videoPid,
      streamType: this.streamType,
      pts: header.pts,
      dts: header.dts,
      keyframe,
      data: payload,
    });
  }

  private payloadIsKeyframe(payload: Buffer): boolean {
    if (this.streamType === STREAM_TYPE_H264) return firstSliceNalType(payload) === NAL_IDR;
    if (this.streamType === STREAM_TYPE_HEVC) return isHevcIrapAccessUnit(payload);
    return false;
  }
}

export type TsSegmentInspection =
  | {
      ok: true;
      frames: number;
      keyframes: number;
      /** PTS of the first and last frame in stream (decode) order. */
      firstPts?: number;
      lastPts?: number;
      streamType: number;
      videoPid: number;
      startsWithKeyframe: boolean;
      corruptPackets: number;
    }
  | { ok: false; reason: string };

/** Decides whether one whole trickle segment is usable video, or says why not. */
export function inspectTsSegment(segment: Buffer): TsSegmentInspection {
  let frames = 0;
  let keyframes = 0;
  let firstPts: number | undefined;
  let lastPts: number | undefined;
  let startsWithKeyframe = false;
  const demuxer = new TsDemuxer({
    onAccessUnit: (au) => {
      if (frames === 0) {
        startsWithKeyframe = au.keyframe;
        firstPts = au.pts;
      }
      frames++;
      if (au.keyframe) keyframes++;
      lastPts = au.pts;
    },
  });
  demuxer.push(segment);
  demuxer.flush();
  const stats = demuxer.stats;
  if (segment.length === 0) return { ok: false, reason: "empty segment" };
  if (stats.packets === 0)
    return { ok: false, reason: "no MPEG-TS packets (no 0x47 sync bytes 188 bytes apart)" };
  if (stats.patCount === 0) return { ok: false, reason: "no PAT (program association table)" };
  if (stats.pmtCount === 0) return { ok: false, reason: "no PMT (program map table)" };
  if (stats.videoPid === undefined || stats.streamType === undefined) {
    const types = (stats.pmtStreamTypes ?? []).map((t) => "0x" + t.toString(16).padStart(2, "0")).join(", ");
    return { ok: false, reason: `no video stream in the PMT (stream types: ${types || "none"})` };
  }
  if (frames === 0) return { ok: false, reason: "no complete video frame" };
  return {
    ok: true,
    frames,
    keyframes,
    firstPts,
    lastPts,
    streamType: stats.streamType,
    videoPid: stats.videoPid,
    startsWithKeyframe,
    corruptPackets: stats.corruptPackets,
  };
}
