/**
 * Gaps in what ComfyStream returns, counted for status: an outage opens when the peer link is
 * lost (killed, silent, frames stopped, DTLS closed) and closes at the first frame returned after
 * the reconnect. Its gap runs from the last frame returned before the loss, so it is the hole a
 * viewer sees; `detectionMs` is the part of it before the relay noticed.
 */
export interface PeerOutagesStatus {
  /** Outages that ended (output resumed). */
  count: number;
  /** Whether one is going on now, and for how long so far. */
  ongoing: boolean;
  ongoingMs: number | null;
  lastGapMs: number | null;
  /** Every gap summed, the ongoing one included. */
  totalGapMs: number;
  /** Last frame returned → loss noticed, for the latest outage. */
  lastDetectionMs: number | null;
  lastReason?: string;
}

export class OutageMeter {
  private lastReturnAt: number | undefined;
  private open: { since: number; reason: string } | undefined;
  private count = 0;
  private closedGapMs = 0;
  private lastGapMs: number | null = null;
  private lastDetectionMs: number | null = null;
  private lastReason: string | undefined;

  frameReturned(now: number): void {
    this.lastReturnAt = now;
    if (!this.open) return;
    const gap = now - this.open.since;
    this.open = undefined;
    this.count++;
    this.closedGapMs += gap;
    this.lastGapMs = gap;
  }

  /** The link was lost at `now`; a loss while an outage is open (a failed reconnect) changes nothing. */
  lost(now: number, reason: string): void {
    this.lastReason = reason;
    if (this.open) return;
    const since = this.lastReturnAt ?? now;
    this.open = { since, reason };
    this.lastDetectionMs = now - since;
  }

  snapshot(now: number): PeerOutagesStatus {
    const ongoingMs = this.open ? now - this.open.since : null;
    const status: PeerOutagesStatus = {
      count: this.count,
      ongoing: this.open !== undefined,
      ongoingMs,
      lastGapMs: this.lastGapMs,
      totalGapMs: this.closedGapMs + (ongoingMs ?? 0),
      lastDetectionMs: this.lastDetectionMs,
    };
    if (this.lastReason) status.lastReason = this.lastReason;
    return status;
  }
}
