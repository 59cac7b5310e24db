/**
 * Groups the RTP packets ffmpeg sends (forward path) into whole frames, so that frames can be paced
 * and dropped as units. A frame is the run of packets with one timestamp, closed by the marker bit.
 */
export interface RtpFrame {
  rtpTimestamp: number;
  keyframe: boolean;
  packets: Buffer[];
}

export function rtpHeaderLength(packet: Buffer): number {
  const csrcCount = packet[0]! & 0x0f;
  let length = 12 + 4 * csrcCount;
  if (packet[0]! & 0x10 && packet.length >= length + 4) length += 4 + 4 * packet.readUInt16BE(length + 2);
  return length;
}

export function rtpTimestamp(packet: Buffer): number {
  return packet.readUInt32BE(4);
}

export function setRtpTimestamp(packet: Buffer, timestamp: number): void {
  packet.writeUInt32BE(timestamp >>> 0, 4);
}

export function setRtpSequenceNumber(packet: Buffer, sequenceNumber: number): void {
  packet.writeUInt16BE(sequenceNumber & 0xffff, 2);
}

function rtpMarker(packet: Buffer): boolean {
  return (packet[1]! & 0x80) !== 0;
}

/** True when an H.264 RTP payload (RFC 6184) carries an IDR slice or an SPS (which precedes one). */
export function h264PayloadStartsKeyframe(payload: Buffer): boolean {
  if (payload.length === 0) return false;
  const type = payload[0]! & 0x1f;
  if (type === 5 || type === 7) return true;
  if (type === 24) {
    // STAP-A: 16-bit size + NAL, repeated
    for (let offset = 1; offset + 2 < payload.length;) {
      const size = payload.readUInt16BE(offset);
      const nalType = payload[offset + 2]! & 0x1f;
      if (nalType === 5 || nalType === 7) return true;
      offset += 2 + size;
    }
    return false;
  }
  if (type === 28 && payload.length > 1) {
    const startBit = (payload[1]! & 0x80) !== 0;
    return startBit && (payload[1]! & 0x1f) === 5;
  }
  return false;
}

/**
 * Groups packets into frames and watches RTP sequence numbers: loopback UDP has no backpressure, so
 * a receive buffer overrun loses packets silently. A frame missing packets cannot decode, so it is
 * dropped (and counted) rather than handed to ComfyStream's decoder; the frames after it still go,
 * since the decoder conceals the gap until the next IDR (at most one GOP away).
 */
export class RtpFrameAssembler {
  private current: (RtpFrame & { damaged: boolean }) | undefined;
  private lastSequence: number | undefined;
  private lastSsrc: number | undefined;
  /** Packets that never arrived, judged by gaps in the sequence numbers. */
  lostPackets = 0;
  /** Frames dropped because packets of theirs were lost. */
  damagedFrames = 0;

  constructor(private readonly onFrame: (frame: RtpFrame) => void) {}

  push(packet: Buffer): void {
    if (packet.length < 12 || packet[0]! >> 6 !== 2) return;
    const timestamp = rtpTimestamp(packet);
    const gap = this.sequenceGap(packet);
    if (gap < 0) return; // a duplicate or a late packet: its frame is gone already
    if (gap > 0) {
      this.lostPackets += gap;
      // An open frame lost packets: from its middle, or its end (the marker) if this packet is newer.
      if (this.current) this.current.damaged = true;
    }
    if (this.current && this.current.rtpTimestamp !== timestamp) this.flush();
    if (!this.current) {
      // After a gap, a packet that cannot open a frame means this frame lost its head.
      const damaged = gap > 0 && !isFirstPacketOfFrame(packet);
      this.current = { rtpTimestamp: timestamp, keyframe: false, packets: [], damaged };
    }
    this.current.packets.push(packet);
    if (!this.current.keyframe) {
      this.current.keyframe = h264PayloadStartsKeyframe(packet.subarray(rtpHeaderLength(packet)));
    }
    if (rtpMarker(packet)) this.flush();
  }

  flush(): void {
    const frame = this.current;
    this.current = undefined;
    if (!frame) return;
    if (frame.damaged) {
      this.damagedFrames++;
      return;
    }
    this.onFrame({ rtpTimestamp: frame.rtpTimestamp, keyframe: frame.keyframe, packets: frame.packets });
  }

  /** Starts afresh (a new ffmpeg has a new SSRC and sequence base). */
  reset(): void {
    this.current = undefined;
    this.lastSequence = undefined;
    this.lastSsrc = undefined;
  }

  /** Packets missing before this one (0 in order; negative for a duplicate or a late packet). */
  private sequenceGap(packet: Buffer): number {
    const sequence = packet.readUInt16BE(2);
    const ssrc = packet.readUInt32BE(8);
    const previous = this.lastSequence;
    if (previous === undefined || ssrc !== this.lastSsrc) {
      this.lastSequence = sequence;
      this.lastSsrc = ssrc;
      return 0;
    }
    const delta = (sequence - previous + 0x10000) % 0x10000;
    if (delta === 0 || delta >= 0x8000) return -1;
    this.lastSequence = sequence;
    return delta - 1;
  }
}

/** True when a packet opens a frame: a whole NAL or STAP-A, or the first fragment of an FU-A. */
function isFirstPacketOfFrame(packet: Buffer): boolean {
  const payload = packet.subarray(rtpHeaderLength(packet));
  if (payload.length < 2) return false;
  const type = payload[0]! & 0x1f;
  if (type === 28) return (payload[1]! & 0x80) !== 0;
  return type >= 1 && type <= 24;
}
