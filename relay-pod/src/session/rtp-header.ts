/**
 * The two RTP header fields the forward path rewrites on every packet it sends: the timestamp (the
 * input PTS plus a small per-frame jitter, for matching returned frames) and the sequence number
 * (the relay's own, so that frames it drops leave no gap the peer would take for loss).
 */

/** RTP timestamps are 32-bit: a 33-bit PTS becomes one modulo this. */
export const RTP_WRAP = 0x1_0000_0000;

export function setRtpTimestamp(packet: Buffer, timestamp: number): void {
  packet.writeUInt32BE(timestamp >>> 0, 4);
}

export function setRtpSequenceNumber(packet: Buffer, sequenceNumber: number): void {
  packet.writeUInt16BE(sequenceNumber & 0xffff, 2);
}
