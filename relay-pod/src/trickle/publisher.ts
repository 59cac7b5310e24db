/**
 * Trickle publisher: one streaming chunked POST per segment, with the next POST preconnected
 * (spec trickle-protocol.md §5.1, §5.4, §5.5, §5.6, §11.1, §11.5, §13, §14 Client).
 *
 * This file owns the stream: the first seq, which seq comes next, the preconnect and the end of
 * stream. Each segment's own POST, queue and retry are in publisher-segment.ts.
 */
import type http from "node:http";
import { silentLogger, type Logger } from "../common/log.js";
import { TrickleEndOfStreamError } from "./errors.js";
import {
  TrickleHeader,
  channelChildUrl,
  createTrickleAgent,
  hasClosedHeader,
  integerHeader,
  parseChannelUrl,
  requestBuffered,
} from "./http.js";
import {
  CONTROL_REQUEST_TIMEOUT_MS,
  PublisherSegment,
  type PublisherContext,
  type SegmentWriter,
  type TricklePublisherStats,
} from "./publisher-segment.js";

// Part of this module's API from before they moved out; importers keep using publisher.js.
export type { SegmentWriter, TricklePublisherStats } from "./publisher-segment.js";

export interface TricklePublisherOptions {
  /** Sent on every POST; the server ignores it unless it autocreates the channel (spec §5.1). */
  contentType?: string;
  /**
   * "zero" (Go, default): `POST /0` preconnected at start. "next" (PG): `GET /next` gives the seq and
   * the first POST carries `Lp-Trickle-Reset: 1`; without `/next` (older server: 400) it posts to
   * `/-1` (spec §5.4, §11.5, §17.6).
   */
  start?: "zero" | "next";
  insecureTls?: boolean;
  /** Bound of the queue between the producer and the POST body; write() waits beyond it. */
  maxQueuedBytes?: number;
  /**
   * A segment's POST that makes no progress this long (the server reads none of the body, or does
   * not answer once it ended) is cut with TricklePostStalledError. Default 10 000 ms.
   */
  stallTimeoutMs?: number;
  logger?: Logger;
}

const DEFAULT_CONTENT_TYPE = "video/MP2T";
const DEFAULT_MAX_QUEUED_BYTES = 4 * 1024 * 1024;
const DEFAULT_STALL_TIMEOUT_MS = 10_000;

/**
 * Publishes a trickle channel. The POST for the next segment is always open ahead of time
 * (preconnect, spec §5.6, C1), so a segment's bytes go out as soon as they are produced.
 */
export class TricklePublisher {
  readonly stats: TricklePublisherStats = { segments: 0, bytes: 0, retries: 0, dropped: 0, stalled: 0 };

  private readonly context: PublisherContext;
  private readonly channel: URL;
  private readonly agent: http.Agent;
  private readonly logger: Logger;
  private readonly startMode: "zero" | "next";
  private starting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private terminal: Error | undefined;
  private closedByOwner = false;
  private preconnected: PublisherSegment | undefined;
  /** After a `POST /-1` fallback, the segment whose acknowledged seq gives the next seq. */
  private seqSource: PublisherSegment | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(channelUrl: string, options: TricklePublisherOptions = {}) {
    this.channel = parseChannelUrl(channelUrl);
    this.agent = createTrickleAgent(this.channel, options.insecureTls ?? false);
    this.logger = (options.logger ?? silentLogger).child({
      component: "trickle-publisher",
      channel: this.channel.href,
    });
    this.startMode = options.start ?? "zero";
    const maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    if (!(maxQueuedBytes > 0)) throw new RangeError(`maxQueuedBytes must be positive, got ${maxQueuedBytes}`);
    this.context = {
      channel: this.channel,
      agent: this.agent,
      contentType: options.contentType ?? DEFAULT_CONTENT_TYPE,
      maxQueuedBytes,
      stallTimeoutMs: options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS,
      logger: this.logger,
      stats: this.stats,
      terminalError: () => this.terminal,
      markTerminal: (error) => this.markTerminal(error),
    };
  }

  /** True once the server signalled end of stream (`Lp-Trickle-Closed` / 404) or after close(). */
  get closed(): boolean {
    return this.closedByOwner || this.terminal !== undefined;
  }

  /** Resolves the first seq and opens its POST (preconnect). Idempotent. */
  start(): Promise<void> {
    this.starting ??= this.openFirstSegment();
    return this.starting;
  }

  /** Hands out the preconnected POST and at once preconnects the next one (C1). */
  nextSegment(): Promise<SegmentWriter> {
    const result = this.queue.then(() => this.takeSegment());
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** One whole segment; a partially written segment is dropped with abort() on failure. */
  async writeSegment(data: Buffer | AsyncIterable<Buffer>): Promise<void> {
    const writer = await this.nextSegment();
    try {
      if (Buffer.isBuffer(data)) await writer.write(data);
      else for await (const chunk of data) await writer.write(chunk);
      await writer.end();
    } catch (error) {
      await writer.abort();
      throw error;
    }
  }

  /**
   * End of stream: `DELETE {ch}` (skipped when the server already ended it), then the idle
   * preconnect is ended. Go's order (spec §11.1): after the DELETE the server answers the waiting
   * preconnect with `Lp-Trickle-Closed` instead of recording an empty segment. Never throws.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown(true);
    return this.closing;
  }

  /**
   * Stops publishing without ending the stream (no DELETE): another publisher, e.g. the relay pod
   * replacing this one, goes on at the server's next sequence number. Never throws.
   */
  leave(): Promise<void> {
    this.closing ??= this.shutdown(false);
    return this.closing;
  }

  private async shutdown(endStream: boolean): Promise<void> {
    this.closedByOwner = true;
    await this.starting?.catch(() => undefined);
    if (!this.terminal && endStream) {
      try {
        const response = await requestBuffered(this.channel, {
          method: "DELETE",
          agent: this.agent,
          timeoutMs: CONTROL_REQUEST_TIMEOUT_MS,
        });
        if (response.status === 200) this.logger.info("channel deleted (end of stream)");
        else this.logger.warn({ status: response.status, body: response.body }, "DELETE channel refused");
      } catch (error) {
        this.logger.warn({ err: error }, "DELETE channel failed");
      }
    }
    const preconnected = this.preconnected;
    this.preconnected = undefined;
    await preconnected?.release();
    this.agent.destroy();
  }

  private async openFirstSegment(): Promise<void> {
    if (this.startMode === "zero") {
      this.preconnected = new PublisherSegment(this.context, 0, false);
      return;
    }
    const seq = await this.fetchNextSeq();
    this.throwIfClosed();
    this.preconnected = new PublisherSegment(this.context, seq, true);
  }

  /** `GET {ch}/next` (spec §3, C2); -1 when the server has no `/next` (spec §17.6). */
  private async fetchNextSeq(): Promise<number> {
    const url = channelChildUrl(this.channel, "next");
    let response;
    try {
      response = await requestBuffered(url, {
        method: "GET",
        agent: this.agent,
        timeoutMs: CONTROL_REQUEST_TIMEOUT_MS,
      });
    } catch (error) {
      this.logger.warn({ err: error }, "GET /next failed, publishing to seq -1");
      return -1;
    }
    if (response.status === 404) {
      // Not a refusal: a server with autocreate makes the channel on its first POST, so the POST
      // decides (and is terminal with a hint if it is refused). A new channel starts at seq 0.
      this.logger.info(
        "output channel does not exist yet; publishing seq 0 creates it where the server allows",
      );
      return 0;
    }
    if (hasClosedHeader(response.headers)) {
      this.markTerminal(new TrickleEndOfStreamError(this.channel.href));
    }
    this.throwIfClosed();
    if (response.status === 200) {
      const latest = integerHeader(response.headers, TrickleHeader.latest) ?? parseDecimal(response.body);
      if (latest !== undefined && latest >= 0) return latest;
    }
    this.logger.info(
      { status: response.status },
      "no usable /next answer (older server?), publishing to seq -1",
    );
    return -1;
  }

  private async takeSegment(): Promise<SegmentWriter> {
    await this.start();
    this.throwIfClosed();
    let segment = this.preconnected;
    this.preconnected = undefined;
    if (!segment) {
      // After a `POST /-1` fallback the next seq is known only once that segment is acknowledged.
      const previous = await this.seqSource?.completedSeq;
      this.throwIfClosed();
      segment = new PublisherSegment(this.context, previous === undefined ? -1 : previous + 1, false);
    }
    if (segment.seq >= 0) {
      this.seqSource = undefined;
      this.preconnected = new PublisherSegment(this.context, segment.seq + 1, false);
    } else {
      this.seqSource = segment;
    }
    return segment;
  }

  private throwIfClosed(): void {
    if (this.terminal) throw this.terminal;
    if (this.closedByOwner) throw new Error(`trickle publisher for ${this.channel.href} is closed`);
  }

  private markTerminal(error: Error): void {
    // After close() the server's end-of-stream answers are the expected echo of our DELETE.
    if (this.terminal || this.closedByOwner) return;
    this.terminal = error;
    this.logger.info({ err: error }, "stream ended by the server");
    // No more POSTs: drop the idle preconnect (C4).
    const preconnected = this.preconnected;
    this.preconnected = undefined;
    if (preconnected) void preconnected.release();
  }
}

function parseDecimal(text: string): number | undefined {
  const trimmed = text.trim();
  return /^-?\d+$/.test(trimmed) ? Number.parseInt(trimmed, 10) : undefined;
}
