/**
 * Keeps the input's clock continuous: every PTS, DTS and PCR in the input TS is shifted by one
 * offset, which changes only when the input's clock jumps (an encoder restart or a new ingest
 * starts its own clock; a looped file starts over), so that the stream ffmpeg and the relay see
 * never goes back and never leaps ahead. Until the first jump the offset is 0: output PTS = input PTS.
 *
 * Why here and not in ffmpeg: ffmpeg's own repair of a TS discontinuity (fftools, for formats with
 * AVFMT_TS_DISCONT, beyond `-dts_delta_threshold` 10 s or 0.1 s backwards) applies to the packets
 * after the one it noticed, so the first frame of the new clock leaks out with its raw PTS
 * (measured: output PTS 107.36 s → 11.40 s → 106.80 s), and its timestamps then no longer equal
 * the input's, which the relay matches frames by. A 33-bit wrap is not a jump: distances are taken
 * on the 2^33 circle and ffmpeg unwraps TS timestamps itself.
 *
 * Each PID's DTS (PTS where there is no DTS) and each PID's PCR is its own series: a series must
 * move forward, by at most `maxForward`, and may go back by at most `maxBackward` (jitter). The first
 * timestamp that breaks this sets the offset so that it lands one step (that series' last interval)
 * after the series' last value; every stream gets the same offset, so audio stays in sync.
 */
import {
  PTS_MODULUS,
  TS_PACKET_SIZE,
  TS_SYNC_BYTE,
  packetHasPusi,
  packetPid,
  packetPayloadOffset,
  readTimestamp,
  wrapPts,
  writeTimestamp,
} from "./ts-packet.js";

export interface ClockJump {
  pid: number;
  /** What the series expected next and what came (both 90 kHz, before the new offset). */
  expected: number;
  received: number;
  /** The offset now added to every timestamp, in [0, 2^33). */
  offset: number;
}

export interface TsClockOptions {
  /** Largest step back still taken as jitter, 90 kHz (default 0.1 s, as ffmpeg's own check). */
  maxBackward?: number;
  /** Largest step forward still taken as a gap in the input, 90 kHz (default 5 s: under ffmpeg's 10 s). */
  maxForward?: number;
  onJump?: (jump: ClockJump) => void;
}

/** A step to continue with when a series has no interval yet (one frame at 30 fps). */
const DEFAULT_STEP = 3000;
/** Longest interval a series continues with after a jump (0.1 s). */
const MAX_STEP = 9000;

interface Series {
  last: number;
  step: number;
}

export class TsClock {
  /** Added to every timestamp, modulo 2^33. */
  private offset = 0;
  private jumpCount = 0;
  /** A partial packet from the end of the last chunk. */
  private tail: Buffer | undefined;
  private readonly series = new Map<number, Series>();
  private readonly maxBackward: number;
  private readonly maxForward: number;

  constructor(private readonly options: TsClockOptions = {}) {
    this.maxBackward = options.maxBackward ?? 9000;
    this.maxForward = options.maxForward ?? 450_000;
  }

  /** Jumps mended so far. */
  get jumps(): number {
    return this.jumpCount;
  }

  /** What is added to the input's timestamps now, 90 kHz in [0, 2^33). */
  get currentOffset(): number {
    return this.offset;
  }

  /**
   * The chunk's whole packets, timestamps rewritten (a new buffer; the chunk is not changed). A
   * packet cut at the chunk's end waits for the next chunk. Bytes that are not TS packets pass
   * through untouched, for the demuxer to count and skip.
   */
  push(chunk: Buffer): Buffer {
    const data = this.tail ? Buffer.concat([this.tail, chunk]) : Buffer.from(chunk);
    this.tail = undefined;
    let offset = 0;
    while (offset < data.length) {
      if (data[offset] !== TS_SYNC_BYTE) {
        offset = nextSync(data, offset + 1);
        continue;
      }
      if (offset + TS_PACKET_SIZE > data.length) {
        this.tail = data.subarray(offset);
        return data.subarray(0, offset);
      }
      this.mendPacket(data, offset);
      offset += TS_PACKET_SIZE;
    }
    return data;
  }

  /** What is left at the end of a stream or segment: a partial packet, passed on as it is. */
  flush(): Buffer {
    const rest = this.tail ?? Buffer.alloc(0);
    this.tail = undefined;
    return rest;
  }

  /**
   * One segment's chunks, mended; a partial packet at its end follows last. A segment starts on a
   * packet boundary, so what an abandoned segment left behind is dropped.
   */
  async *mend(chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    this.tail = undefined;
    for await (const chunk of chunks) {
      const mended = this.push(chunk);
      if (mended.length > 0) yield mended;
    }
    const rest = this.flush();
    if (rest.length > 0) yield rest;
  }

  private mendPacket(data: Buffer, packet: number): void {
    const pid = packetPid(data, packet);
    const payload = packetPayloadOffset(data, packet);
    if (payload === -2) return; // corrupt: the demuxer counts it
    const end = packet + TS_PACKET_SIZE;
    // The PES header before the PCR: when both are in the packet the PES decides a jump, and the PCR
    // (which leads the DTS by up to a second) must not decide a second one.
    let pesTimestamps = false;
    if (payload > 0 && packetHasPusi(data, packet)) pesTimestamps = this.mendPes(data, payload, end, pid);
    if (hasPcr(data, packet)) this.mendPcr(data, packet + 6, pid, !pesTimestamps);
  }

  /** Rewrites the PES header's PTS and DTS; true when it had any. */
  private mendPes(data: Buffer, start: number, end: number, pid: number): boolean {
    if (end - start < 9 || data[start] !== 0 || data[start + 1] !== 0 || data[start + 2] !== 1) return false;
    if ((data[start + 6] & 0xc0) !== 0x80) return false; // no optional PES header (padding, private 2 …)
    const flags = data[start + 7] >> 6;
    const headerLength = data[start + 8];
    if (!(flags & 0x2) || headerLength < (flags === 0x3 ? 10 : 5) || start + 9 + headerLength > end)
      return false;
    const pts = readTimestamp(data, start + 9);
    const dts = flags === 0x3 ? readTimestamp(data, start + 14) : pts;
    this.follow(pid * 2, dts);
    writeTimestamp(data, start + 9, flags === 0x3 ? 0x3 : 0x2, pts + this.offset);
    if (flags === 0x3) writeTimestamp(data, start + 14, 0x1, dts + this.offset);
    return true;
  }

  /** Rewrites a PCR's 33-bit base (its 9-bit extension stays). */
  private mendPcr(data: Buffer, at: number, pid: number, mayJump: boolean): void {
    const base =
      data[at] * 2 ** 25 +
      data[at + 1] * 2 ** 17 +
      data[at + 2] * 2 ** 9 +
      data[at + 3] * 2 +
      (data[at + 4] >> 7);
    if (mayJump) this.follow(pid * 2 + 1, base);
    else this.record(pid * 2 + 1, wrapPts(base + this.offset));
    const mended = wrapPts(base + this.offset);
    data[at] = Math.floor(mended / 2 ** 25) & 0xff;
    data[at + 1] = Math.floor(mended / 2 ** 17) & 0xff;
    data[at + 2] = Math.floor(mended / 2 ** 9) & 0xff;
    data[at + 3] = Math.floor(mended / 2) & 0xff;
    data[at + 4] = ((mended % 2) << 7) | (data[at + 4] & 0x7f);
  }

  /** Checks a series' next raw timestamp against its last one; a jump moves the offset. */
  private follow(key: number, raw: number): void {
    const mended = wrapPts(raw + this.offset);
    const series = this.series.get(key);
    if (series) {
      const step = signedDistance(series.last, mended);
      if (step < -this.maxBackward || step > this.maxForward) {
        const expected = wrapPts(series.last + series.step);
        this.offset = wrapPts(expected - raw);
        this.jumpCount++;
        this.options.onJump?.({ pid: key >> 1, expected, received: mended, offset: this.offset });
        series.last = expected;
        return;
      }
    }
    this.record(key, mended);
  }

  private record(key: number, mended: number): void {
    const series = this.series.get(key);
    if (!series) {
      this.series.set(key, { last: mended, step: DEFAULT_STEP });
      return;
    }
    const step = signedDistance(series.last, mended);
    if (step <= 0) return; // jitter or a repeat: the series' high mark stays
    series.step = Math.min(step, MAX_STEP);
    series.last = mended;
  }
}

/** From `from` to `to` on the 2^33 circle, in [-2^32, 2^32). */
function signedDistance(from: number, to: number): number {
  const forward = wrapPts(to - from);
  return forward >= PTS_MODULUS / 2 ? forward - PTS_MODULUS : forward;
}

function hasPcr(data: Buffer, packet: number): boolean {
  // adaptation field present, at least flags + 6 PCR bytes, PCR_flag set
  return (data[packet + 3] & 0x20) !== 0 && data[packet + 4] >= 7 && (data[packet + 5] & 0x10) !== 0;
}

/** The next offset from `from` that looks like a packet start (a sync byte 188 bytes on, or the end). */
function nextSync(data: Buffer, from: number): number {
  for (let i = from; i < data.length; i++) {
    if (data[i] !== TS_SYNC_BYTE) continue;
    if (i + TS_PACKET_SIZE >= data.length || data[i + TS_PACKET_SIZE] === TS_SYNC_BYTE) return i;
  }
  return data.length;
}
