// Unit tests of the two timing pieces of the session: the pacer (frames out at the pace of their
// PTS) and the frame matcher (returned frames back to input PTS, media-pipeline.md §3.5).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { FramePacer, type PacedFrame } from "../../relay-pod/src/session/pacer.js";
import { FrameMatcher, timestampJitter } from "../../relay-pod/src/session/frame-matcher.js";

const FRAME_TICKS = 3000; // 30 fps at 90 kHz

function frame(index: number, keyframe = index % 30 === 0): PacedFrame {
  return { pts: 900_000 + index * FRAME_TICKS, keyframe, packets: [Buffer.from([index & 0xff])] };
}

describe("FramePacer", () => {
  test("a burst of one second of frames goes out over about one second, in order", async () => {
    const sentAt: number[] = [];
    const order: number[] = [];
    const pacer = new FramePacer({
      capacity: 100,
      send: (f) => (sentAt.push(performance.now()), order.push(f.pts)),
    });
    const start = performance.now();
    for (let i = 0; i < 30; i++) pacer.push(frame(i));
    await sleep(1200);
    pacer.stop();
    assert.equal(sentAt.length, 30);
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
    );
    const spread = sentAt.at(-1)! - start;
    assert.ok(spread > 850 && spread < 1100, `30 frames spread over ${spread.toFixed(0)} ms`);
  });

  test(
    "a late first frame does not hold back steady live input once a window shows the lead",
    { timeout: 10_000 },
    async () => {
      const delays: number[] = [];
      const pushedAt = new Map<number, number>();
      const pacer = new FramePacer({
        capacity: 100,
        send: (f) => delays.push(performance.now() - pushedAt.get(f.pts)!),
      });
      // ffmpeg's start: frames 0..10 come out at once after probing, then one every 33 ms. The
      // schedule set by frame 0 is then ~330 ms later than the steady arrivals.
      for (let i = 0; i <= 10; i++) {
        pushedAt.set(frame(i).pts, performance.now());
        pacer.push(frame(i));
      }
      const steadyStart = performance.now();
      for (let i = 11; i < 110; i++) {
        const wait = steadyStart + (i - 10) * (1000 / 30) - performance.now();
        if (wait > 0) await sleep(wait);
        pushedAt.set(frame(i).pts, performance.now());
        pacer.push(frame(i));
      }
      await sleep(400);
      pacer.stop();
      const lastSecond = delays.slice(-30).sort((a, b) => a - b); // converged within ~2 s
      assert.ok(lastSecond[15]! < 20, `median hold in the second second: ${lastSecond[15]!.toFixed(1)} ms`);
    },
  );

  test("over capacity it drops up to the next keyframe, never a frame in the middle of a GOP", () => {
    const sent: PacedFrame[] = [];
    const pacer = new FramePacer({ capacity: 5, send: (f) => sent.push(f) });
    // Far-future timestamps keep everything queued.
    for (let i = 0; i < 40; i++) pacer.push(frame(i));
    assert.equal(pacer.size, 5);
    assert.equal(pacer.dropped, 35 - 1, "frames 5..29 dropped, frame 30 (keyframe) hits the full queue too");
    pacer.stop();
  });
});

describe("FrameMatcher", () => {
  function sendFrames(matcher: FrameMatcher<number>, count: number, now = 0): number[] {
    const sentTs: number[] = [];
    for (let i = 0; i < count; i++) {
      const pts = 1_000_000 + i * FRAME_TICKS;
      const rtpTimestamp = (pts + timestampJitter(i)) % 2 ** 32;
      sentTs.push(rtpTimestamp);
      matcher.recordSent({ rtpTimestamp, pts, sentAt: now + i * 33 });
    }
    return sentTs;
  }

  test("returned frames map back to their input PTS even when the peer skipped its first frames", () => {
    const matcher = new FrameMatcher<number>();
    const sentTs = sendFrames(matcher, 60);
    const offset = 0x7654_3210;
    const out: Array<{ item: number; pts: number }> = [];
    // The peer skipped frames 0..9 and returns 10..40.
    for (let i = 10; i <= 40; i++) {
      for (const m of matcher.accept((sentTs[i]! + offset) % 2 ** 32, i, 2000)) out.push(m);
    }
    assert.equal(out.length, 31);
    for (const m of out) assert.equal(m.pts, 1_000_000 + m.item * FRAME_TICKS, `frame ${m.item}`);
  });

  test("the first frames back were never sent by this matcher (a taken-over connection): calibrated on the rest", () => {
    // ComfyStream still held the previous session's last frames and pairs them with the first new
    // outputs (peer-handover.ts): those come back first, with timestamps this session never sent.
    const matcher = new FrameMatcher<number>();
    const sentTs = sendFrames(matcher, 60, 0);
    const offset = 0x1234_5678;
    const out: Array<{ item: number; pts: number; latencyMs: number | undefined }> = [];
    const strangers = [777_001, 780_013];
    for (const [n, ts] of strangers.entries()) {
      for (const m of matcher.accept((ts + offset) % 2 ** 32, -1 - n, 100)) out.push({ ...m });
    }
    for (let i = 0; i <= 10; i++) {
      for (const m of matcher.accept((sentTs[i]! + offset) % 2 ** 32, i, i * 33 + 150)) out.push({ ...m });
    }
    const own = out.filter((m) => m.item >= 0);
    assert.equal(own.length, 11);
    for (const m of own) {
      assert.equal(m.pts, 1_000_000 + m.item * FRAME_TICKS, `frame ${m.item}`);
      assert.ok(m.latencyMs !== undefined && Math.abs(m.latencyMs - 150) < 1e-6, `latency of ${m.item}`);
    }
  });

  test("latency is the time from sending to the frame's return", () => {
    const matcher = new FrameMatcher<number>();
    const sentTs = sendFrames(matcher, 10, 1000);
    const results = [0, 1, 2, 3].flatMap((i) => matcher.accept(sentTs[i]! + 5, i, 1000 + i * 33 + 40));
    assert.equal(results.length, 4);
    for (const r of results.slice(-1)) assert.ok(Math.abs(r.latencyMs! - 40) < 1e-6);
  });

  test("without jitter an offset wrong by whole frames would fit equally well; with it only the true one does", () => {
    // The jitter makes consecutive spacings differ, which is what lets calibration tell frames apart.
    const spacings = new Set<number>();
    for (let i = 0; i < 30; i++) spacings.add(timestampJitter(i + 1) - timestampJitter(i));
    assert.ok(spacings.size > 10, `${spacings.size} distinct spacing offsets`);
    for (let i = 0; i < 100; i++) assert.ok(timestampJitter(i) >= 0 && timestampJitter(i) < 32);
  });
});
