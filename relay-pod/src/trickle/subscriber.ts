/**
 * Trickle subscriber: reads a channel segment by segment over streaming GETs
 * (spec trickle-protocol.md §5.2, §5.6, §11.2, §11.3, §11.5, §13, §14 Client).
 */
import type http from "node:http";
import { silentLogger, type Logger } from "../common/log.js";
import { TrickleHttpError, TrickleRetryBudgetError } from "./errors.js";
import {
  TrickleHeader,
  channelChildUrl,
  createTrickleAgent,
  hasClosedHeader,
  integerHeader,
  parseChannelUrl,
  readSmallBody,
  sleep,
  startRequest,
  toError,
} from "./http.js";

export interface TrickleSubscriberOptions {
  /** -1 (default, Go): wait for the next segment; -2: the current one; n >= 0: that seq (spec §3). */
  startSeq?: number;
  /** Skip certificate verification (orchestrators use self-signed certs, spec §8). */
  insecureTls?: boolean;
  /** A GET with no response headers after this long is aborted and re-issued (spec §5.6, C10). */
  refreshAfterMs?: number;
  /** Consecutive failed attempts before next() throws (spec §11.2, §11.3). */
  maxConsecutiveFailures?: number;
  /** Pause before retrying after a failed attempt (AR/PG: 0.5 s, spec §11.3). */
  retryDelayMs?: number;
  /** Pause before re-asking for a seq the writer has not reached yet (PG rule, spec §11.5, C7). */
  aheadOfEdgeWaitMs?: number;
  /**
   * How long a channel that does not exist yet (404 before any segment was read) is waited for,
   * asking again every 500 ms. Default 0: a 404 is the end of the stream at once, as in the
   * reference clients (spec §11). A relay session started before its input's publisher sets this.
   */
  waitForChannelMs?: number;
  logger?: Logger;
  signal?: AbortSignal;
}

export interface SubscribedSegment {
  /** From `Lp-Trickle-Seq`. */
  seq: number;
  contentType: string | undefined;
  /** Streamed as it arrives; iterate it fully or call discard(). */
  body: AsyncIterable<Buffer>;
  discard(): void;
}

export interface TrickleSubscriberStats {
  /** Segments handed out. */
  segments: number;
  /** Segments skipped between two handed-out ones (evicted or jumped over on resync). */
  gaps: number;
  /** 470 answers that moved the reader to `Lp-Trickle-Latest`. */
  resyncs: number;
  /** Attempts re-issued after a failure. */
  retries: number;
  /** Headerless GETs aborted and re-issued after refreshAfterMs. */
  refreshes: number;
}

/** How often a channel that does not exist yet is asked for again (waitForChannelMs). */
const CHANNEL_POLL_MS = 500;

/** Go's `preconnectRefreshTimeout` (spec §5.6, §15). */
export const DEFAULT_REFRESH_AFTER_MS = 20_000;
const DEFAULT_MAX_CONSECUTIVE_FAILURES = 5;
const DEFAULT_RETRY_DELAY_MS = 500;
const DEFAULT_AHEAD_OF_EDGE_WAIT_MS = 250;
const STATUS_SEQUENCE_NONEXISTENT = 470;

type GetOutcome = { kind: "response"; res: http.IncomingMessage } | { kind: "error"; error: Error };

/**
 * One logical GET for one seq. Re-issues itself while no response headers arrive within
 * refreshAfterMs (the server sends no headers before a segment's first byte, spec §5.2), so a GET
 * parked on a dead connection is noticed (spec §5.6, C10).
 */
class PendingGet {
  readonly outcome: Promise<GetOutcome>;
  private resolveOutcome!: (outcome: GetOutcome) => void;
  private request: http.ClientRequest | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private settled = false;
  private response: http.IncomingMessage | undefined;

  constructor(
    readonly seq: number,
    private readonly url: URL,
    private readonly agent: http.Agent,
    private readonly refreshAfterMs: number,
    private readonly onRefresh: () => void,
  ) {
    this.outcome = new Promise((resolve) => (this.resolveOutcome = resolve));
    this.issue();
  }

  private issue(): void {
    const request = startRequest(this.url, { method: "GET", agent: this.agent });
    this.request = request;
    request.on("response", (res) => {
      if (this.request !== request || this.settled) {
        res.destroy();
        return;
      }
      clearTimeout(this.refreshTimer);
      this.response = res;
      this.settle({ kind: "response", res });
    });
    // Always listened to: a socket error after the response arrives surfaces on the body instead.
    request.on("error", (error) => {
      if (this.request !== request || this.settled) return;
      clearTimeout(this.refreshTimer);
      this.settle({ kind: "error", error });
    });
    this.refreshTimer = setTimeout(() => {
      if (this.request !== request || this.settled) return;
      this.onRefresh();
      request.destroy();
      this.issue();
    }, this.refreshAfterMs);
    request.end();
  }

  private settle(outcome: GetOutcome): void {
    this.settled = true;
    this.resolveOutcome(outcome);
  }

  /** Aborts the request (and an unconsumed response). */
  cancel(): void {
    clearTimeout(this.refreshTimer);
    this.request?.destroy();
    this.response?.destroy();
    if (!this.settled) this.settle({ kind: "error", error: new Error("GET cancelled") });
  }
}

/**
 * Reads a trickle channel. `next()` resolves as soon as a segment's response headers arrive, and at
 * that moment the GET for the following seq is already issued (preconnect, spec §5.6, C8), so it
 * is waiting server-side while the current body streams in.
 */
export class TrickleSubscriber implements AsyncIterable<SubscribedSegment> {
  readonly stats: TrickleSubscriberStats = { segments: 0, gaps: 0, resyncs: 0, retries: 0, refreshes: 0 };

  private readonly channel: URL;
  private readonly agent: http.Agent;
  private readonly logger: Logger;
  private readonly refreshAfterMs: number;
  private readonly maxConsecutiveFailures: number;
  private readonly retryDelayMs: number;
  private readonly aheadOfEdgeWaitMs: number;
  private readonly waitForChannelMs: number;
  private channelWaitStartedAt: number | undefined;
  private readonly closeController = new AbortController();
  private readonly openBodies = new Set<http.IncomingMessage>();
  private nextSeq: number;
  private pending: PendingGet | undefined;
  private lastDeliveredSeq: number | undefined;
  private ended = false;
  private closed = false;
  private consecutiveFailures = 0;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(channelUrl: string, options: TrickleSubscriberOptions = {}) {
    this.channel = parseChannelUrl(channelUrl);
    this.agent = createTrickleAgent(this.channel, options.insecureTls ?? false);
    this.logger = (options.logger ?? silentLogger).child({
      component: "trickle-subscriber",
      channel: this.channel.href,
    });
    this.nextSeq = options.startSeq ?? -1;
    if (!Number.isInteger(this.nextSeq) || this.nextSeq < -2) {
      throw new RangeError(`startSeq must be an integer >= -2, got ${options.startSeq}`);
    }
    this.refreshAfterMs = options.refreshAfterMs ?? DEFAULT_REFRESH_AFTER_MS;
    this.maxConsecutiveFailures = options.maxConsecutiveFailures ?? DEFAULT_MAX_CONSECUTIVE_FAILURES;
    this.retryDelayMs = options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
    this.aheadOfEdgeWaitMs = options.aheadOfEdgeWaitMs ?? DEFAULT_AHEAD_OF_EDGE_WAIT_MS;
    this.waitForChannelMs = options.waitForChannelMs ?? 0;
    if (options.signal) {
      if (options.signal.aborted) this.close();
      else options.signal.addEventListener("abort", () => this.close(), { once: true });
    }
  }

  /**
   * The next segment, as soon as its headers arrive; null at end of stream (404 or
   * `Lp-Trickle-Closed`, spec §5.3) or after close(). Throws TrickleRetryBudgetError once
   * maxConsecutiveFailures attempts in a row failed. Calls are served one at a time.
   */
  next(): Promise<SubscribedSegment | null> {
    const result = this.queue.then(() => this.readNext());
    this.queue = result.catch(() => undefined);
    return result;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<SubscribedSegment> {
    for (;;) {
      const segment = await this.next();
      if (segment === null) return;
      yield segment;
    }
  }

  /** Aborts pending GETs and open segment bodies; next() then resolves null. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closeController.abort();
    this.pending?.cancel();
    this.pending = undefined;
    for (const body of this.openBodies) body.destroy();
    this.openBodies.clear();
    this.agent.destroy();
  }

  /** True while a not-yet-existing channel is still being waited for (logs once when the wait starts). */
  private waitingForChannel(): boolean {
    const waitMs = this.waitForChannelMs;
    if (waitMs <= 0 || this.closed) return false;
    if (this.channelWaitStartedAt === undefined) {
      this.channelWaitStartedAt = Date.now();
      this.logger.info({ waitMs }, "input channel does not exist yet; waiting for its publisher");
    }
    return Date.now() - this.channelWaitStartedAt < waitMs;
  }

  private open(seq: number): PendingGet {
    return new PendingGet(seq, channelChildUrl(this.channel, seq), this.agent, this.refreshAfterMs, () => {
      this.stats.refreshes++;
      this.logger.debug(
        { seq, refreshAfterMs: this.refreshAfterMs },
        "no response headers yet, re-issuing GET",
      );
    });
  }

  private async readNext(): Promise<SubscribedSegment | null> {
    for (;;) {
      if (this.closed || this.ended) return null;
      const get = this.pending ?? this.open(this.nextSeq);
      this.pending = undefined;
      const outcome = await get.outcome;
      if (this.closed) {
        get.cancel();
        return null;
      }
      if (outcome.kind === "error") {
        await this.recordFailure(get.seq, outcome.error);
        continue;
      }
      const res = outcome.res;
      const status = res.statusCode ?? 0;

      if (status === 404) {
        res.resume();
        if (this.stats.segments === 0 && this.waitingForChannel()) {
          await new Promise((resolve) => setTimeout(resolve, CHANNEL_POLL_MS));
          continue;
        }
        this.logger.info({ seq: get.seq }, "stream not found, end of stream");
        this.ended = true;
        return null;
      }
      if (hasClosedHeader(res.headers)) {
        // EOS on any status (spec §5.3, C9); the body of an EOS reply is empty.
        res.resume();
        this.logger.info({ seq: get.seq }, "end of stream signalled by the server");
        this.ended = true;
        return null;
      }
      if (status === STATUS_SEQUENCE_NONEXISTENT) {
        res.resume();
        await this.handleNonexistent(get.seq, integerHeader(res.headers, TrickleHeader.latest));
        continue;
      }
      if (status !== 200) {
        const body = await readSmallBody(res).catch(() => "");
        await this.recordFailure(
          get.seq,
          new TrickleHttpError(channelChildUrl(this.channel, get.seq).href, status, body),
        );
        continue;
      }
      return this.deliver(get.seq, res);
    }
  }

  private deliver(requestedSeq: number, res: http.IncomingMessage): SubscribedSegment {
    this.consecutiveFailures = 0;
    const servedSeq = integerHeader(res.headers, TrickleHeader.seq);
    // Next seq = Lp-Trickle-Seq + 1; a missing/negative header is ignored (spec §5.6, §11.2).
    const seq = servedSeq !== undefined && servedSeq >= 0 ? servedSeq : requestedSeq;
    if (seq >= 0) {
      this.nextSeq = seq + 1;
      if (this.lastDeliveredSeq !== undefined && seq > this.lastDeliveredSeq + 1) {
        const missed = seq - this.lastDeliveredSeq - 1;
        this.stats.gaps += missed;
        this.logger.warn({ seq, missed }, "segments skipped");
      }
      this.lastDeliveredSeq = seq;
    }
    this.stats.segments++;
    // Preconnect right after the headers (spec §5.6, C8): the server parks it until seq+1 starts.
    this.pending = this.open(this.nextSeq);

    this.openBodies.add(res);
    const forget = () => this.openBodies.delete(res);
    res.once("end", forget);
    res.once("close", forget);
    const contentType = res.headers["content-type"];
    return {
      seq,
      contentType,
      body: res as AsyncIterable<Buffer>,
      discard: () => {
        if (!res.complete) res.destroy();
        else res.resume();
      },
    };
  }

  /** 470: the seq is evicted or not yet reachable (spec §5.2, §11.5, C6, C7). */
  private async handleNonexistent(requestedSeq: number, latest: number | undefined): Promise<void> {
    // A reader can legitimately be ahead by one: the server pre-creates only seq == nextWrite (or 1
    // on a fresh channel, spec §4.2). Further ahead means the writer restarted its numbering (a
    // restarted server or publisher): waiting would stall until the writer catches up, so resync.
    const slightlyAhead = latest !== undefined && requestedSeq - latest === 1;
    if (latest !== undefined && latest >= 0 && requestedSeq >= 0 && latest < requestedSeq && slightlyAhead) {
      // Reader ahead of the writer: the seq will exist soon; ask again for the same one.
      this.logger.debug({ seq: requestedSeq, latest }, "ahead of the writer, waiting");
      await sleep(this.aheadOfEdgeWaitMs, this.closeController.signal);
      this.nextSeq = requestedSeq;
      return;
    }
    if (latest !== undefined && latest >= 0 && latest !== requestedSeq) {
      this.stats.resyncs++;
      this.logger.info({ seq: requestedSeq, latest }, "segment not available, resyncing to the live edge");
      this.nextSeq = latest;
      return;
    }
    // No usable Latest (or it names the seq just refused): go to the live edge, as AR does, and
    // count it against the budget so a misbehaving server cannot keep us looping.
    this.nextSeq = -1;
    await this.recordFailure(
      requestedSeq,
      new Error(`segment ${requestedSeq} not available (470, latest ${latest})`),
    );
  }

  private async recordFailure(seq: number, error: Error): Promise<void> {
    this.consecutiveFailures++;
    this.logger.warn(
      { seq, err: error, consecutiveFailures: this.consecutiveFailures },
      "trickle GET failed",
    );
    if (this.consecutiveFailures >= this.maxConsecutiveFailures) {
      const url = channelChildUrl(this.channel, seq).href;
      this.ended = true;
      throw new TrickleRetryBudgetError(url, this.consecutiveFailures, toError(error));
    }
    this.stats.retries++;
    // The next attempt asks for this.nextSeq again, i.e. the same seq (or the edge after a 470).
    await sleep(this.retryDelayMs, this.closeController.signal);
  }
}
