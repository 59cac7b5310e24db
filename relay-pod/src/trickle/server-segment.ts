/**
 * Server-side storage of one trickle segment and of one channel's ring of segments
 * (trickle-protocol.md §1, §4). Kept free of HTTP so the server logic stays readable.
 */

/** Segments held per channel; slot = seq % RING_SIZE (spec §1 "Ring", §4.4). */
export const RING_SIZE = 5;

/**
 * One segment: an append-only list of the chunks received, plus a closed flag. Readers keep a
 * chunk index as their cursor, so a late joiner replays from the segment start (spec §5.2).
 */
export class Segment {
  readonly seq: number;
  private readonly chunks: Buffer[] = [];
  private readonly listeners = new Set<() => void>();
  private byteCount = 0;
  private isClosed = false;

  constructor(seq: number) {
    this.seq = seq;
  }

  get size(): number {
    return this.byteCount;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get chunkCount(): number {
    return this.chunks.length;
  }

  chunkAt(index: number): Buffer {
    const chunk = this.chunks[index];
    if (chunk === undefined) throw new RangeError(`segment ${this.seq} has no chunk ${index}`);
    return chunk;
  }

  /** Appends bytes. Bytes arriving after close are still kept (spec §5.1: close does not stop a started POST). */
  append(data: Buffer): void {
    if (data.length === 0) return;
    this.chunks.push(data);
    this.byteCount += data.length;
    this.notify();
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.notify();
  }

  /** Calls `listener` after every append and on close. Returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }
}

/** Per-channel state (spec §4). */
export class Channel {
  readonly name: string;
  readonly mimeType: string;
  readonly ring: Array<Segment | undefined> = new Array<Segment | undefined>(RING_SIZE).fill(undefined);
  /** 1 + seq of the most recent segment that started receiving bytes (or completed empty). */
  nextWrite = 0;
  /** Last time a segment started; drives the idle sweep (spec §4.3, §5.8). */
  writeTime: number;
  closed = false;

  constructor(name: string, mimeType: string, now: number) {
    this.name = name;
    this.mimeType = mimeType;
    this.writeTime = now;
  }

  /** The segment with exactly this seq, if its slot still holds it. */
  find(seq: number): Segment | undefined {
    const segment = this.ring[seq % RING_SIZE];
    return segment !== undefined && segment.seq === seq ? segment : undefined;
  }

  /** Installs a fresh segment for `seq`, closing (evicting) whatever held the slot (spec §4.1 step 3). */
  install(seq: number): Segment {
    const slot = seq % RING_SIZE;
    this.ring[slot]?.close();
    const segment = new Segment(seq);
    this.ring[slot] = segment;
    return segment;
  }

  /** Spec §4.1: reuse the segment with this seq (even if complete), else evict and install. */
  getForWrite(seq: number): Segment {
    return this.find(seq) ?? this.install(seq);
  }

  closeAll(): void {
    this.closed = true;
    for (const segment of this.ring) segment?.close();
  }

  bufferedBytes(): number {
    let total = 0;
    for (const segment of this.ring) total += segment?.size ?? 0;
    return total;
  }

  segmentCount(): number {
    return this.ring.filter((segment) => segment !== undefined).length;
  }
}
