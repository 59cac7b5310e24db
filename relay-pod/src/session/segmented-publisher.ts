import type { SegmentWriter, TricklePublisher } from "../trickle/publisher.js";
import { TsSegmentCutter } from "../media/ts-cutter.js";

const TS_PACKET = 188;

/** True when the bytes start like an MPEG-TS stream (sync byte every 188 bytes). */
export function looksLikeMpegTs(head: Buffer): boolean {
  if (head.length < TS_PACKET) return head.length > 0 && head[0] === 0x47;
  for (let offset = 0; offset < Math.min(head.length, TS_PACKET * 3); offset += TS_PACKET) {
    if (head[offset] !== 0x47) return false;
  }
  return true;
}

export interface SegmentedPublisherOptions {
  /** MPEG-TS: cut at keyframes, each segment at least this long. */
  mpegTs: boolean;
  segmentDurationSec: number;
  /** Other data: bytes per segment. */
  segmentBytes: number;
  onSegmentEnd?: (info: { seq: number; bytes: number; ms: number }) => void;
}

/**
 * Turns a byte stream into trickle segments: MPEG-TS is cut where a keyframe starts (so every segment
 * decodes on its own, trickle-protocol.md §12.2), anything else every `segmentBytes`. Each segment is
 * streamed into its POST while it is produced; push() resolves once the publisher accepted the bytes,
 * so a caller that awaits it reads its source no faster than the publisher sends (backpressure).
 */
export class SegmentedPublisher {
  private current: { writer: SegmentWriter; bytes: number; startedAt: number } | undefined;
  private readonly pending: Array<() => Promise<void>> = [];
  private readonly feed: (chunk: Buffer) => void;
  private readonly finish: () => void;
  segments = 0;
  bytes = 0;

  constructor(
    private readonly publisher: TricklePublisher,
    private readonly options: SegmentedPublisherOptions,
  ) {
    if (options.mpegTs) {
      // The cutter calls back synchronously; its operations are queued and awaited in order.
      const cutter = new TsSegmentCutter({
        minDurationSec: options.segmentDurationSec,
        onSegmentStart: () => this.pending.push(() => this.startSegment()),
        onData: (chunk) => this.pending.push(() => this.writeData(chunk)),
        onSegmentEnd: () => this.pending.push(() => this.endSegment()),
      });
      this.feed = (chunk) => cutter.push(chunk);
      this.finish = () => cutter.end();
    } else {
      let queuedInSegment = 0;
      this.feed = (chunk) => {
        for (let offset = 0; offset < chunk.length;) {
          const piece = chunk.subarray(offset, offset + options.segmentBytes - queuedInSegment);
          offset += piece.length;
          queuedInSegment += piece.length;
          this.pending.push(() => this.writeData(piece));
          if (queuedInSegment === options.segmentBytes) {
            this.pending.push(() => this.endSegment());
            queuedInSegment = 0;
          }
        }
      };
      this.finish = () => this.pending.push(() => this.endSegment());
    }
  }

  async push(chunk: Buffer): Promise<void> {
    this.feed(chunk);
    await this.drain();
    if (this.publisher.closed) throw new Error("the server closed the channel (end of stream)");
  }

  /** Ends the last segment. */
  async end(): Promise<void> {
    this.finish();
    await this.drain();
  }

  /** Drops the segment being written (DELETE {ch}/{seq}, trickle-protocol.md §5.5). */
  async abort(): Promise<void> {
    this.pending.length = 0;
    const current = this.current;
    this.current = undefined;
    await current?.writer.abort();
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) await this.pending.shift()!();
  }

  private async startSegment(): Promise<void> {
    this.current = { writer: await this.publisher.nextSegment(), bytes: 0, startedAt: Date.now() };
  }

  private async endSegment(): Promise<void> {
    const current = this.current;
    if (!current) return;
    this.current = undefined;
    await current.writer.end();
    this.segments++;
    this.options.onSegmentEnd?.({
      seq: current.writer.seq,
      bytes: current.bytes,
      ms: Date.now() - current.startedAt,
    });
  }

  private async writeData(chunk: Buffer): Promise<void> {
    if (!this.current) await this.startSegment();
    this.current!.bytes += chunk.length;
    this.bytes += chunk.length;
    await this.current!.writer.write(chunk);
  }
}
