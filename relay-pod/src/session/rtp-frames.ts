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

export class RtpFrameAssembler {
  private current: RtpFrame | undefined;

  constructor(private readonly onFrame: (frame: RtpFrame) => void) {}

  push(packet: Buffer): void {
    if (packet.length < 12 || packet[0]! >> 6 !== 2) return;
    const timestamp = rtpTimestamp(packet);
    if (this.current && this.current.rtpTimestamp !== timestamp) this.flush();
    if (!this.current) this.current = { rtpTimestamp: timestamp, keyframe: false, packets: [] };
    this.current.packets.push(packet);
    if (!this.current.keyframe) {
      this.current.keyframe = h264PayloadStartsKeyframe(packet.subarray(rtpHeaderLength(packet)));
    }
    if (rtpMarker(packet)) this.flush();
  }

  flush(): void {
    const frame = this.current;
    this.current = undefined;
    if (frame) this.onFrame(frame);
  }
}
