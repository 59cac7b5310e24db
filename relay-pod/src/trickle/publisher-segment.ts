/**
 * One published segment: its streaming chunked POST, opened ahead of use (preconnect, §5.6), the
 * bounded queue between the producer and the request body, the one retry allowed while no byte
 * has been sent (§11.5), and abort with `DELETE {ch}/{seq}` (§5.5). Separate from publisher.ts,
 * which decides the seqs, keeps one segment preconnected and ends the stream.
 */
import type http from "node:http";
import type { Logger } from "../common/log.js";
import {
  PUBLISH_REFUSED_HINT,
  TrickleEndOfStreamError,
  TrickleHttpError,
  TricklePostStalledError,
  TrickleStreamNotFoundError,
} from "./errors.js";
import {
  TrickleHeader,
  channelChildUrl,
  hasClosedHeader,
  integerHeader,
  readSmallBody,
  requestBuffered,
  startRequest,
  toError,
} from "./http.js";

export interface SegmentWriter {
  /** The segment's seq; -1 until the server resolved it when the publisher fell back to `POST /-1`. */
  readonly seq: number;
  /** Resolves once the chunk is queued under the bound (backpressure); rejects if the segment or stream failed. */
  write(chunk: Buffer): Promise<void>;
  /** Ends the body; resolves when the server's final 200 arrived. */
  end(): Promise<void>;
  /** Drops a partially written segment: ends the POST and sends `DELETE {ch}/{seq}` (spec §5.5). */
  abort(): Promise<void>;
}

export interface TricklePublisherStats {
  /** Segments the server acknowledged with 200. */
  segments: number;
  /** Body bytes handed to the network. */
  bytes: number;
  /** Segments re-POSTed on a fresh request because the first failed before any byte was sent. */
  retries: number;
  /** Segments dropped with abort(). */
  dropped: number;
  /** POSTs cut because they made no progress for the stall timeout (TricklePostStalledError). */
  stalled: number;
}

/** PG: a second POST only if no body byte was consumed by the first (spec §11.5). */
const MAX_POST_ATTEMPTS = 2;
/** Bound on the short control requests (DELETE, GET /next); the publisher uses it too. */
export const CONTROL_REQUEST_TIMEOUT_MS = 10_000;
const PRECONNECT_RELEASE_TIMEOUT_MS = 2_000;

type PostOutcome =
  | {
      kind: "response";
      status: number;
      headers: http.IncomingHttpHeaders;
      body: string;
      /** The final response arrived before the body was ended (spec §5.1: 404, zero-byte close). */
      early: boolean;
    }
  | { kind: "error"; error: Error };

/** One HTTP POST for one segment. Headers go out at once so the request waits server-side (preconnect). */
class PostAttempt {
  readonly request: http.ClientRequest;
  readonly result: Promise<PostOutcome>;
  outcome: PostOutcome | undefined;
  private bodyEnded = false;

  constructor(url: URL, headers: http.OutgoingHttpHeaders, agent: http.Agent, logger: Logger) {
    let settle!: (outcome: PostOutcome) => void;
    this.result = new Promise((resolve) => {
      settle = (outcome) => {
        if (this.outcome) return;
        this.outcome = outcome;
        resolve(outcome);
      };
    });
    // No Content-Length: node streams the body with chunked transfer-encoding (spec §5.1).
    this.request = startRequest(url, { method: "POST", headers, agent });
    // Interim 100 Continue every 10 s while idle is the server's keep-alive (spec §5.1, C3).
    this.request.on("information", (info) => logger.debug({ status: info.statusCode }, "interim response"));
    this.request.on("response", (res) => {
      const early = !this.bodyEnded;
      readSmallBody(res).then(
        (body) => {
          settle({ kind: "response", status: res.statusCode ?? 0, headers: res.headers, body, early });
          // The server stopped reading (spec §5.1); stop uploading.
          if (early) this.request.destroy();
        },
        (error: Error) => settle({ kind: "error", error }),
      );
    });
    this.request.on("error", (error) => settle({ kind: "error", error }));
    this.request.flushHeaders();
  }

  get ended(): boolean {
    return this.bodyEnded;
  }

  endBody(): void {
    if (this.bodyEnded) return;
    this.bodyEnded = true;
    if (!this.outcome) this.request.end();
  }

  destroy(): void {
    this.bodyEnded = true;
    this.request.destroy();
  }

  /** True on 'drain' or once the final outcome is known; false when `timeoutMs` passed first. */
  waitDrain(timeoutMs: number): Promise<boolean> {
    if (this.outcome) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (drained: boolean) => {
        clearTimeout(timer);
        this.request.off("drain", onDrain);
        resolve(drained);
      };
      const onDrain = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.request.once("drain", onDrain);
      void this.result.then(() => done(true));
    });
  }

  /** The final outcome, or undefined when `timeoutMs` passed first. */
  async resultWithin(timeoutMs: number): Promise<PostOutcome | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      this.result,
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs))),
    ]);
    clearTimeout(timer);
    return outcome;
  }
}

/** What the segments need from their publisher. */
export interface PublisherContext {
  readonly channel: URL;
  readonly agent: http.Agent;
  readonly contentType: string;
  readonly maxQueuedBytes: number;
  /** No progress (body not read, or no answer after it ended) for this long cuts the POST. */
  readonly stallTimeoutMs: number;
  readonly logger: Logger;
  readonly stats: TricklePublisherStats;
  terminalError(): Error | undefined;
  markTerminal(error: Error): void;
}

type Classified = { terminal: true; error: Error } | { terminal: false; error: Error | undefined };

/**
 * Maps a POST outcome (spec §11.1): `Lp-Trickle-Closed` → end of stream, 404 → not found (both
 * terminal, C4, C5); a 200 after the body ended → success (error undefined); anything else →
 * a failure that may be retried when no byte was sent.
 */
function classifyOutcome(outcome: PostOutcome, url: string): Classified {
  if (outcome.kind === "error") return { terminal: false, error: outcome.error };
  if (outcome.status === 404)
    return { terminal: true, error: new TrickleStreamNotFoundError(url, PUBLISH_REFUSED_HINT) };
  if (hasClosedHeader(outcome.headers)) return { terminal: true, error: new TrickleEndOfStreamError(url) };
  if (outcome.status !== 200)
    return { terminal: false, error: new TrickleHttpError(url, outcome.status, outcome.body) };
  if (outcome.early) {
    // A zero-byte completion: the segment was closed under the waiting POST (spec §5.1).
    return {
      terminal: false,
      error: new Error(`POST ${url} was completed by the server before the body was sent`),
    };
  }
  return { terminal: false, error: undefined };
}

export class PublisherSegment implements SegmentWriter {
  private attempt: PostAttempt;
  private attempts = 0;
  private readonly chunks: Buffer[] = [];
  private queuedBytes = 0;
  private bytesSent = 0;
  private spaceWaiters: Array<() => void> = [];
  private pumping = false;
  private pumpDone: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private ending: Promise<void> | undefined;
  private completed = false;
  private aborted = false;
  private currentSeq: number;
  private resolveCompletedSeq!: (seq: number | undefined) => void;
  /** The seq the server acknowledged (resolves -1), or undefined when the segment failed. */
  readonly completedSeq: Promise<number | undefined>;

  constructor(
    private readonly context: PublisherContext,
    seq: number,
    private readonly reset: boolean,
  ) {
    this.currentSeq = seq;
    this.completedSeq = new Promise((resolve) => (this.resolveCompletedSeq = resolve));
    this.attempt = this.openAttempt();
  }

  get seq(): number {
    return this.currentSeq;
  }

  private get url(): string {
    return channelChildUrl(this.context.channel, this.currentSeq).href;
  }

  private openAttempt(): PostAttempt {
    this.attempts++;
    const headers: http.OutgoingHttpHeaders = { "Content-Type": this.context.contentType };
    // Restarted publisher: close lower seqs left half-written by a previous life (spec §5.4, C2).
    if (this.reset) headers["Lp-Trickle-Reset"] = "1";
    const attempt = new PostAttempt(
      channelChildUrl(this.context.channel, this.currentSeq),
      headers,
      this.context.agent,
      this.context.logger.child({ seq: this.currentSeq, attempt: this.attempts }),
    );
    // A terminal answer on an idle preconnect ends the stream for the publisher at once (C4, C5).
    void attempt.result.then((outcome) => {
      const classified = classifyOutcome(outcome, this.url);
      if (classified.terminal) this.context.markTerminal(classified.error);
    });
    return attempt;
  }

  async write(chunk: Buffer): Promise<void> {
    this.throwIfUnwritable();
    if (chunk.length === 0) return;
    while (this.queuedBytes > 0 && this.queuedBytes + chunk.length > this.context.maxQueuedBytes) {
      await new Promise<void>((resolve) => this.spaceWaiters.push(resolve));
      this.throwIfUnwritable();
    }
    this.chunks.push(chunk);
    this.queuedBytes += chunk.length;
    if (!this.pumping) {
      this.pumping = true;
      this.pumpDone = this.pump();
    }
  }

  end(): Promise<void> {
    if (!this.ending) {
      if (this.aborted) return Promise.reject(new Error(`segment ${this.url} was aborted`));
      this.ending = this.finish();
      this.wakeWriters();
    }
    return this.ending;
  }

  async abort(): Promise<void> {
    if (this.completed || this.aborted) return;
    this.aborted = true;
    this.failure ??= new Error(`segment ${this.url} was aborted`);
    this.chunks.length = 0;
    this.queuedBytes = 0;
    this.wakeWriters();
    this.context.stats.dropped++;
    const attempt = this.attempt;
    if (!attempt.outcome) {
      // Go ends the body (spec §11.1); a body stuck behind a non-reading server is cut instead.
      if (attempt.request.writableNeedDrain) attempt.destroy();
      else attempt.endBody();
    }
    this.resolveCompletedSeq(undefined);
    this.context.logger.info({ seq: this.currentSeq, bytesSent: this.bytesSent }, "dropping segment");
    if (this.currentSeq < 0 || this.context.terminalError()) return;
    // Wake subscribers waiting on the dropped segment (spec §5.5).
    const url = channelChildUrl(this.context.channel, this.currentSeq);
    try {
      const response = await requestBuffered(url, {
        method: "DELETE",
        agent: this.context.agent,
        timeoutMs: CONTROL_REQUEST_TIMEOUT_MS,
      });
      if (response.status !== 200) {
        this.context.logger.warn(
          { seq: this.currentSeq, status: response.status, body: response.body },
          "DELETE segment refused",
        );
      }
    } catch (error) {
      this.context.logger.warn({ seq: this.currentSeq, err: error }, "DELETE segment failed");
    }
  }

  /** Ends an unused preconnect (publisher shutdown): empty body, then wait briefly for the answer. */
  async release(): Promise<void> {
    this.aborted = true;
    this.resolveCompletedSeq(undefined);
    const attempt = this.attempt;
    attempt.endBody();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      attempt.result,
      new Promise((resolve) => (timer = setTimeout(resolve, PRECONNECT_RELEASE_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    attempt.destroy();
  }

  private throwIfUnwritable(): void {
    if (this.failure) throw this.failure;
    const terminal = this.context.terminalError();
    if (terminal) throw terminal;
    if (this.ending || this.completed) throw new Error(`write after end of segment ${this.url}`);
  }

  private wakeWriters(): void {
    const waiters = this.spaceWaiters;
    this.spaceWaiters = [];
    for (const wake of waiters) wake();
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.chunks.length = 0;
    this.queuedBytes = 0;
    this.wakeWriters();
  }

  /**
   * The attempt to write into. If the current one already has its final answer before the body
   * ended, re-POST on a fresh request when no byte was sent (PG, spec §11.5), else fail.
   */
  private usableAttempt(): PostAttempt {
    const outcome = this.attempt.outcome;
    if (!outcome) return this.attempt;
    const classified = classifyOutcome(outcome, this.url);
    const error =
      classified.error ?? new Error(`POST ${this.url} was completed by the server before the body was sent`);
    if (classified.terminal) throw error;
    return this.retryOrThrow(error);
  }

  private retryOrThrow(error: Error): PostAttempt {
    if (this.bytesSent > 0 || this.attempts >= MAX_POST_ATTEMPTS || this.aborted) throw error;
    this.context.stats.retries++;
    this.context.logger.info(
      { seq: this.currentSeq, err: error },
      "POST failed before any byte was sent, retrying",
    );
    this.attempt.destroy();
    this.attempt = this.openAttempt();
    return this.attempt;
  }

  private stalled(attempt: PostAttempt, phase: "body" | "answer"): TricklePostStalledError {
    const error = new TricklePostStalledError(this.url, this.context.stallTimeoutMs, phase);
    this.context.stats.stalled++;
    this.context.logger.warn({ seq: this.currentSeq, err: error.message }, "output POST stuck; cut");
    attempt.destroy();
    return error;
  }

  private async pump(): Promise<void> {
    try {
      while (this.chunks.length > 0 && !this.failure) {
        const attempt = this.usableAttempt();
        const chunk = this.chunks[0]!;
        const flushed = attempt.request.write(chunk);
        this.chunks.shift();
        this.bytesSent += chunk.length;
        this.context.stats.bytes += chunk.length;
        if (!flushed && !(await attempt.waitDrain(this.context.stallTimeoutMs))) {
          throw this.stalled(attempt, "body");
        }
        this.queuedBytes -= chunk.length;
        this.wakeWriters();
        const outcome = attempt.outcome;
        if (outcome && !this.aborted) {
          // Answered while we were still sending: the server dropped the body.
          throw (
            classifyOutcome(outcome, this.url).error ??
            new Error(`POST ${this.url} ended by the server mid-body`)
          );
        }
      }
    } catch (error) {
      this.fail(toError(error));
    }
    this.pumping = false;
  }

  private async finish(): Promise<void> {
    try {
      while (this.pumping) await this.pumpDone;
      if (this.failure) throw this.failure;
      let attempt = this.usableAttempt();
      for (;;) {
        attempt.endBody();
        const outcome = await attempt.resultWithin(this.context.stallTimeoutMs);
        if (!outcome) throw this.stalled(attempt, "answer");
        if (this.aborted) throw this.failure ?? new Error(`segment ${this.url} was aborted`);
        const classified = classifyOutcome(outcome, this.url);
        if (!classified.error) {
          if (outcome.kind === "response") {
            const acknowledged = integerHeader(outcome.headers, TrickleHeader.seq);
            if (acknowledged !== undefined && acknowledged >= 0) this.currentSeq = acknowledged;
          }
          this.completed = true;
          this.context.stats.segments++;
          this.resolveCompletedSeq(this.currentSeq >= 0 ? this.currentSeq : undefined);
          return;
        }
        if (classified.terminal) throw classified.error;
        attempt = this.retryOrThrow(classified.error);
      }
    } catch (error) {
      const failure = toError(error);
      this.fail(failure);
      this.resolveCompletedSeq(undefined);
      throw failure;
    }
  }
}
