/**
 * Is ComfyStream still there? ICE consent only declares a vanished peer failed after ~30 s, and a
 * stuck pipeline keeps ICE and RTCP up forever, so the peer watches what arrives itself:
 *  - silent: nothing at all (RTP, RTCP, control message) for `mediaTimeoutMs` — a killed process or
 *    a host gone silent;
 *  - frames stopped: no returned frame for `mediaTimeoutMs` while the relay is sending frames (the
 *    first frame after connecting gets `firstFrameTimeoutMs`) — a stuck pipeline.
 * Separate from the peer so the decision is plain arithmetic on timestamps.
 */
export type LivenessVerdict = { kind: "lost"; reason: string } | { kind: "recovered" } | undefined;

export class PeerLiveness {
  private lastInboundAt = 0;
  private lastReturnedAt = 0;
  private lastSentAt = 0;
  private connectedAt = 0;
  private lossReason: string | undefined;

  constructor(
    private readonly mediaTimeoutMs: number,
    private readonly firstFrameTimeoutMs: number,
  ) {}

  get reason(): string | undefined {
    return this.lossReason;
  }

  connected(now: number): void {
    this.connectedAt = now;
    this.lastInboundAt = now;
  }

  /** The connection now serves a new stream (a session took it over): nothing earlier counts. */
  restart(now: number): void {
    this.connected(now);
    this.lastReturnedAt = 0;
    this.lastSentAt = 0;
    this.lossReason = undefined;
  }

  /** Any RTP, RTCP or control message from the peer. */
  inbound(now: number): void {
    this.lastInboundAt = now;
  }

  returnedFrame(now: number): void {
    this.lastInboundAt = now;
    this.lastReturnedAt = now;
  }

  sent(now: number): void {
    this.lastSentAt = now;
  }

  /** What changed at `now`, given whether the peer is marked lost already. */
  check(now: number, lost: boolean): LivenessVerdict {
    const timeout = this.mediaTimeoutMs;
    const silentFor = now - this.lastInboundAt;
    if (lost) {
      // Only silence can end by itself; stopped frames mean a new connection.
      if (this.lossReason?.startsWith("silent") && silentFor <= timeout) {
        this.lossReason = undefined;
        return { kind: "recovered" };
      }
      return undefined;
    }
    if (silentFor > timeout) {
      return this.lose(`silent: nothing from ComfyStream (RTP, RTCP or control) for ${silentFor} ms`);
    }
    const sending = this.lastSentAt > 0 && now - this.lastSentAt < timeout / 2;
    const since = this.lastReturnedAt || this.connectedAt;
    const allowed = this.lastReturnedAt ? timeout : Math.max(timeout, this.firstFrameTimeoutMs);
    if (sending && now - since > allowed) {
      return this.lose(
        `frames stopped: none returned for ${now - since} ms while sending (ICE and RTCP still up)`,
      );
    }
    return undefined;
  }

  private lose(reason: string): LivenessVerdict {
    this.lossReason = reason;
    return { kind: "lost", reason };
  }
}
