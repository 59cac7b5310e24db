/**
 * JSON message channels on top of the trickle clients: the control channel (one JSON document per
 * segment, `{"keep":"alive"}` keep-alives, spec §12.3) and the events channel (ai-runner wrapper
 * `{"event": {...}, "queue_event_type": "..."}`, spec §12.4).
 */
import { silentLogger, type Logger } from "../common/log.js";
import { TricklePublisher, type TricklePublisherOptions } from "./publisher.js";
import { TrickleSubscriber, type SubscribedSegment, type TrickleSubscriberOptions } from "./subscriber.js";

/** PG caps event segments at 1 MiB (spec §9). */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;
/** Queue type the gateway assumes when an event is not wrapped (spec §12.4). */
export const DEFAULT_QUEUE_EVENT_TYPE = "ai_stream_events";

export type TrickleJsonReaderOptions = TrickleSubscriberOptions & { maxMessageBytes?: number };

export interface TrickleJsonReaderStats {
  /** Messages delivered. */
  messages: number;
  /** `{"keep":"alive"}` segments dropped. */
  keepAlives: number;
  /** Segments skipped: over maxMessageBytes, not valid JSON, or unreadable. */
  rejected: number;
}

function isKeepAlive(message: unknown): boolean {
  if (typeof message !== "object" || message === null || Array.isArray(message)) return false;
  const keys = Object.keys(message);
  return keys.length === 1 && (message as Record<string, unknown>).keep === "alive";
}

type ReadOutcome = { kind: "message"; value: unknown } | { kind: "skip" };

/**
 * Reads one JSON message per segment. The whole segment is read (not just its first chunk, which
 * is all AR/PT look at, spec §12.3, §17.4), bounded by maxMessageBytes; bad segments are counted
 * and skipped, never fatal (DESIGN §5).
 */
export class TrickleControlReader implements AsyncIterable<unknown> {
  readonly stats: TrickleJsonReaderStats = { messages: 0, keepAlives: 0, rejected: 0 };
  private readonly subscriber: TrickleSubscriber;
  private readonly maxMessageBytes: number;
  private readonly logger: Logger;

  constructor(channelUrl: string, options: TrickleJsonReaderOptions = {}) {
    const { maxMessageBytes, ...subscriberOptions } = options;
    this.subscriber = new TrickleSubscriber(channelUrl, subscriberOptions);
    this.maxMessageBytes = maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.logger = (options.logger ?? silentLogger).child({
      component: "trickle-json-reader",
      channel: channelUrl,
    });
  }

  /** Subscriber counters (segments, gaps, resyncs, retries, refreshes). */
  get subscriberStats(): TrickleSubscriber["stats"] {
    return this.subscriber.stats;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<unknown> {
    for await (const segment of this.subscriber) {
      const outcome = await this.readMessage(segment);
      if (outcome.kind === "message") yield outcome.value;
    }
  }

  close(): void {
    this.subscriber.close();
  }

  private async readMessage(segment: SubscribedSegment): Promise<ReadOutcome> {
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of segment.body) {
        size += chunk.length;
        if (size > this.maxMessageBytes) {
          segment.discard();
          this.stats.rejected++;
          this.logger.error(
            { seq: segment.seq, maxMessageBytes: this.maxMessageBytes },
            "JSON message larger than the limit, skipped",
          );
          return { kind: "skip" };
        }
        chunks.push(chunk);
      }
    } catch (error) {
      this.stats.rejected++;
      this.logger.warn({ seq: segment.seq, err: error }, "JSON segment body failed, skipped");
      return { kind: "skip" };
    }
    // An empty segment is a zero-byte completion (spec §5.1), not a message.
    if (size === 0) return { kind: "skip" };
    let value: unknown;
    try {
      value = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (error) {
      this.stats.rejected++;
      this.logger.error({ seq: segment.seq, err: error }, "malformed JSON message, skipped");
      return { kind: "skip" };
    }
    if (isKeepAlive(value)) {
      this.stats.keepAlives++;
      return { kind: "skip" };
    }
    this.stats.messages++;
    return { kind: "message", value };
  }
}

export interface UnwrappedEvent {
  event: Record<string, unknown>;
  queueEventType: string;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Accepts the ai-runner wrapper or a bare event object (spec §12.4, C12). Throws TypeError for
 * anything that is not a JSON object.
 */
export function unwrapEvent(body: unknown): UnwrappedEvent {
  if (!isPlainObject(body)) throw new TypeError("event body is not a JSON object");
  if (isPlainObject(body.event)) {
    const queueEventType =
      typeof body.queue_event_type === "string" && body.queue_event_type !== ""
        ? body.queue_event_type
        : DEFAULT_QUEUE_EVENT_TYPE;
    return { event: body.event, queueEventType };
  }
  return { event: body, queueEventType: DEFAULT_QUEUE_EVENT_TYPE };
}

/** Reads an events channel and yields unwrapped events; non-object messages count as rejected. */
export class TrickleEventsReader implements AsyncIterable<UnwrappedEvent> {
  private readonly reader: TrickleControlReader;

  constructor(channelUrl: string, options: TrickleJsonReaderOptions = {}) {
    this.reader = new TrickleControlReader(channelUrl, options);
  }

  get stats(): TrickleJsonReaderStats {
    return this.reader.stats;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<UnwrappedEvent> {
    for await (const message of this.reader) {
      if (!isPlainObject(message)) {
        this.reader.stats.messages--;
        this.reader.stats.rejected++;
        continue;
      }
      yield unwrapEvent(message);
    }
  }

  close(): void {
    this.reader.close();
  }
}

/**
 * Writes events in the ai-runner wrapper, one segment per event with a single body write
 * (spec §12.3, §12.4). Writes are serialised so events keep their order.
 */
export class TrickleEventsWriter {
  private readonly publisher: TricklePublisher;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(channelUrl: string, options: TricklePublisherOptions = {}) {
    this.publisher = new TricklePublisher(channelUrl, { contentType: "application/json", ...options });
  }

  get stats(): TricklePublisher["stats"] {
    return this.publisher.stats;
  }

  get closed(): boolean {
    return this.publisher.closed;
  }

  /** Adds `timestamp` (ms) unless the event has one (spec §12.4). */
  write(event: Record<string, unknown>, queueEventType: string = DEFAULT_QUEUE_EVENT_TYPE): Promise<void> {
    const body = JSON.stringify({
      event: { ...event, timestamp: event.timestamp ?? Date.now() },
      queue_event_type: queueEventType,
    });
    const result = this.queue.then(() => this.publisher.writeSegment(Buffer.from(body, "utf8")));
    this.queue = result.catch(() => undefined);
    return result;
  }

  close(): Promise<void> {
    const result = this.queue.then(() => this.publisher.close());
    this.queue = result.catch(() => undefined);
    return result;
  }
}
