/**
 * The SRTP replay check of libsrtp, which aiortc (hence ComfyStream) uses and werift does not: a
 * packet whose sequence number is more than the window (128) behind the highest one seen on the
 * connection is dropped as a replay, and so is one seen before. Which way a jump goes is read on the
 * 16-bit circle (libsrtp's index guess): up to 2^15 ahead is new, anything else is behind. A sender
 * that restarts its numbering at random on a connection it keeps therefore loses everything half
 * the time, until its numbers pass the old ones.
 */
const WINDOW = 128;
const HALF = 0x8000;

export class SrtpReplayWindow {
  private highest: number | undefined;
  private readonly seen = new Set<number>();
  /** Packets dropped as replays. */
  drops = 0;

  /** Whether `sequenceNumber` passes; notes it as seen if so. */
  accept(sequenceNumber: number): boolean {
    if (this.highest === undefined) {
      this.note(sequenceNumber, true);
      return true;
    }
    const ahead = (sequenceNumber - this.highest + 0x10000) & 0xffff;
    if (ahead !== 0 && ahead < HALF) {
      this.note(sequenceNumber, true);
      return true;
    }
    const behind = (this.highest - sequenceNumber + 0x10000) & 0xffff;
    if (behind >= WINDOW || this.seen.has(sequenceNumber)) {
      this.drops++;
      return false;
    }
    this.note(sequenceNumber, false);
    return true;
  }

  private note(sequenceNumber: number, newHighest: boolean): void {
    if (newHighest) this.highest = sequenceNumber;
    this.seen.add(sequenceNumber);
    // Only the window's worth matters; drop what fell out of it.
    for (const old of this.seen) {
      if (((this.highest! - old + 0x10000) & 0xffff) >= WINDOW) this.seen.delete(old);
      else break;
    }
  }
}
