/**
 * The trickle server's set of channels: creation and removal, the idle sweep (§5.8) and the
 * `_changes` changefeed (§10). Separate from server.ts because none of it touches HTTP: the
 * handlers and the public createChannel/closeChannel API both go through it.
 */
import type { Logger } from "../common/log.js";
import { Channel } from "./server-segment.js";

export const CHANGEFEED_CHANNEL = "_changes";

const CHANNEL_NAME_PATTERN = /^[A-Za-z0-9._~!$&'()*+,;=:@-]{1,256}$/;

/** True if `name` is acceptable as a channel name (one path segment, see server.ts's header comment). */
export function isValidChannelName(name: string): boolean {
  return CHANNEL_NAME_PATTERN.test(name) && name !== "." && name !== "..";
}

export interface ChannelStoreOptions {
  changefeed: boolean;
  idleTimeoutMs: number;
  logger: Logger;
}

export class ChannelStore {
  private readonly changefeed: boolean;
  private readonly idleTimeoutMs: number;
  private readonly logger: Logger;
  private readonly channels = new Map<string, Channel>();
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Set by close(): removals during shutdown are not announced on `_changes`. */
  private closing = false;

  constructor(options: ChannelStoreOptions) {
    this.changefeed = options.changefeed;
    this.idleTimeoutMs = options.idleTimeoutMs;
    this.logger = options.logger;
    if (this.changefeed) this.create(CHANGEFEED_CHANNEL, "application/json");
  }

  /** Starts the idle sweep; separate from the constructor so the server can pre-create channels first. */
  startSweep(intervalMs: number): void {
    this.sweepTimer = setInterval(() => this.sweep(), intervalMs);
    this.sweepTimer.unref();
  }

  get(name: string): Channel | undefined {
    return this.channels.get(name);
  }

  has(name: string): boolean {
    return this.channels.has(name);
  }

  /** Creates a channel if it does not exist (idempotent; the first MIME type wins). Throws on a bad name. */
  create(name: string, mimeType: string): void {
    if (!isValidChannelName(name)) throw new Error(`invalid trickle channel name: ${JSON.stringify(name)}`);
    if (this.channels.has(name)) return;
    this.channels.set(name, new Channel(name, mimeType, Date.now()));
    this.logger.debug({ channel: name, mimeType }, "trickle channel created");
    this.publishChange({ added: [name] });
  }

  /** Closes and removes a channel (§5.3). Returns false if it did not exist. */
  remove(name: string): boolean {
    const channel = this.channels.get(name);
    if (channel === undefined) return false;
    this.channels.delete(name);
    // closeAll marks the channel closed before waking waiters, so they answer with Lp-Trickle-Closed.
    channel.closeAll();
    this.logger.debug({ channel: name }, "trickle channel closed");
    if (name !== CHANGEFEED_CHANNEL) this.publishChange({ removed: [name] });
    return true;
  }

  totals(): { channels: number; segments: number; bufferedBytes: number } {
    let segments = 0;
    let bufferedBytes = 0;
    for (const channel of this.channels.values()) {
      segments += channel.segmentCount();
      bufferedBytes += channel.bufferedBytes();
    }
    return { channels: this.channels.size, segments, bufferedBytes };
  }

  /** Stops the sweep and removes every channel (waiters get their end-of-stream responses). */
  close(): void {
    this.closing = true;
    clearInterval(this.sweepTimer);
    for (const name of [...this.channels.keys()]) this.remove(name);
  }

  /** Removes channels idle longer than idleTimeoutMs; "_"-prefixed ones are exempt (§5.8). */
  private sweep(): void {
    const cutoff = Date.now() - this.idleTimeoutMs;
    for (const channel of [...this.channels.values()]) {
      if (channel.name.startsWith("_") || channel.writeTime >= cutoff) continue;
      this.logger.info({ channel: channel.name }, "trickle channel idle; removing");
      this.remove(channel.name);
    }
  }

  /** Appends one complete segment to `_changes` (§10). */
  private publishChange(change: { added?: string[]; removed?: string[] }): void {
    if (!this.changefeed || this.closing) return;
    const feed = this.channels.get(CHANGEFEED_CHANNEL);
    if (feed === undefined) return;
    const seq = feed.nextWrite;
    const existing = feed.find(seq);
    const segment = existing !== undefined && !existing.closed ? existing : feed.install(seq);
    feed.nextWrite = seq + 1;
    feed.writeTime = Date.now();
    segment.append(Buffer.from(JSON.stringify(change)));
    segment.close();
  }
}
