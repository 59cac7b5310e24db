// A live-encoder imitation for the relay benchmarks: pre-encoded TS segments published to a trickle
// channel frame by frame at real-time pace, and the TS helpers both ends of a measurement need.
import { setTimeout as sleep } from "node:timers/promises";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { FrameStartScanner } from "../../relay-pod/src/demo/measure.js";
import { parsePesHeader, TS_PACKET_SIZE, TS_SYNC_BYTE } from "../../relay-pod/src/media/ts-packet.js";

/**
 * Streams the input like a live encoder: each video frame's TS packets are written at that frame's
 * time (one every 1/fps s), so what the relay adds is not confused with pacing a bursty input.
 * `onFrame` gets each frame's PTS and the moment its bytes were handed to the publisher.
 */
export async function publishLive(
  url: string,
  segments: Buffer[],
  options: { frameRate?: number; onFrame?: (pts: number | undefined, at: number) => void } = {},
): Promise<void> {
  const frameMs = 1000 / (options.frameRate ?? 30);
  const publisher = new TricklePublisher(url, { contentType: "video/MP2T" });
  await publisher.start();
  const started = performance.now();
  let frame = 0;
  for (const segment of segments) {
    const writer = await publisher.nextSegment();
    const starts = videoPesStarts(segment);
    for (let k = 0; k < starts.length; k++) {
      // Everything before the second frame start belongs with the first frame (PAT/PMT, etc.).
      const from = k === 0 ? 0 : starts[k]!;
      const to = starts[k + 1] ?? segment.length;
      options.onFrame?.(videoPesPts(segment, starts[k]!), performance.now());
      await writer.write(segment.subarray(from, to));
      frame++;
      const wait = started + frame * frameMs - performance.now();
      if (wait > 0) await sleep(wait);
    }
    await writer.end();
  }
  await publisher.close();
}

/** Byte offsets of the TS packets that start a video PES (PUSI set, PES stream id 0xE0-0xEF). */
export function videoPesStarts(segment: Buffer): number[] {
  const starts: number[] = [];
  for (let offset = 0; offset + TS_PACKET_SIZE <= segment.length; offset += TS_PACKET_SIZE) {
    if (videoPesPayload(segment, offset) !== undefined) starts.push(offset);
  }
  return starts.length > 0 ? starts : [0];
}

/** The PTS of the video PES that starts in the TS packet at `offset`, if one starts there. */
export function videoPesPts(data: Buffer, offset: number): number | undefined {
  const payload = videoPesPayload(data, offset);
  if (payload === undefined) return undefined;
  return parsePesHeader(data, payload, offset + TS_PACKET_SIZE)?.pts;
}

function videoPesPayload(data: Buffer, offset: number): number | undefined {
  if (data[offset] !== TS_SYNC_BYTE || (data[offset + 1]! & 0x40) === 0) return undefined;
  let payload = offset + 4;
  if (data[offset + 3]! & 0x20) payload += 1 + data[offset + 4]!;
  if (
    payload + 4 <= offset + TS_PACKET_SIZE &&
    data[payload] === 0 &&
    data[payload + 1] === 0 &&
    data[payload + 2] === 1 &&
    (data[payload + 3]! & 0xf0) === 0xe0
  ) {
    return payload;
  }
  return undefined;
}

/**
 * Reads an output channel from its first segment (keeps the relay's POSTs flowing) and, with
 * `recordArrivals`, notes when each video PES starts arriving: its PTS, timed on the packet's arrival, so a frame is timed when
 * its first bytes come in rather than when the next one completes it.
 */
export function drainOutput(
  url: string,
  options: { recordArrivals?: boolean } = {},
): { arrivals: PesArrival[]; close(): void } {
  const subscriber = new TrickleSubscriber(url, { startSeq: 0 });
  const arrivals: PesArrival[] = [];
  void (async () => {
    for await (const segment of subscriber) {
      const scanner = options.recordArrivals
        ? new FrameStartScanner(({ pts }) => arrivals.push({ pts, at: performance.now() }))
        : undefined;
      for await (const chunk of segment.body) scanner?.push(chunk);
    }
  })().catch(() => undefined);
  return { arrivals, close: () => subscriber.close() };
}

export interface PesArrival {
  pts: number;
  at: number;
}

/** p50/p95/max of `values` (null when empty), rounded to 0.1 ms. */
export function latencySummary(values: number[]): {
  p50: number | null;
  p95: number | null;
  max: number | null;
} {
  if (values.length === 0) return { p50: null, p95: null, max: null };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) =>
    Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 10) / 10;
  return { p50: at(0.5), p95: at(0.95), max: Math.round(sorted.at(-1)! * 10) / 10 };
}

/**
 * End-to-end latency per frame: a PTS handed to the input publisher → a PES with that PTS starting
 * in the output channel. Frames never seen in the output are left out (counted elsewhere).
 */
export function endToEndLatencies(input: PesArrival[], output: PesArrival[]): number[] {
  const firstOut = new Map<number, number>();
  for (const o of output) if (!firstOut.has(o.pts)) firstOut.set(o.pts, o.at);
  const latencies: number[] = [];
  for (const i of input) {
    const out = firstOut.get(i.pts);
    if (out !== undefined) latencies.push(out - i.at);
  }
  return latencies;
}
