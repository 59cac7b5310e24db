// Unit tests of the pieces that keep a slow ComfyStream from building up latency (issue 10): the
// window of frames in flight, the matcher's count of them, the pacer's hold, and the switch to
// intra-only. The behaviour they add up to is in slow-peer.test.ts (stand-in) and
// real-comfystream.test.ts (the real server).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { PeerWindow } from "../../relay-pod/src/session/peer-window.js";
import { PeerPace } from "../../relay-pod/src/session/peer-pace.js";
import { FrameMatcher, timestampJitter } from "../../relay-pod/src/session/frame-matcher.js";
import { FramePacer, type PacedFrame } from "../../relay-pod/src/session/pacer.js";
import { waitFor } from "../infra/wait-for.js";

const key = (pts: number) => ({ pts, keyframe: true });
const delta = (pts: number) => ({ pts, keyframe: false });

describe("PeerWindow", () => {
  test("sends while there is room; a full window holds a frame until it is too late, then drops the rest of its GOP", () => {
    const window = new PeerWindow({ capacity: 2, maxHoldMs: 200 });
    assert.equal(window.decide(key(0), 0, 0), "send");
    assert.equal(window.decide(delta(1), 1, 0), "send");
    assert.equal(window.decide(delta(2), 2, 0), "hold");
    assert.equal(window.decide(delta(2), 2, 150), "hold");
    assert.equal(window.saturations, 1, "one frame found it full, however often it asked");
    assert.equal(window.decide(delta(2), 2, 200), "drop");
    // Later frames of the GOP reference the dropped one: dropped even with room.
    assert.equal(window.decide(delta(3), 0, 0), "drop");
    assert.equal(window.decide(delta(4), 0, 0), "drop");
    assert.equal(window.decide(key(5), 0, 0), "send", "a keyframe with room starts again");
    assert.equal(window.decide(delta(6), 1, 0), "send");
    assert.equal(window.peerLimitedDrops, 3);
  });

  test("a keyframe that finds no room is dropped too, and dropping goes on to the next keyframe", () => {
    const window = new PeerWindow({ capacity: 1, maxHoldMs: 0 });
    assert.equal(window.decide(key(0), 1, 0), "drop");
    assert.equal(window.decide(delta(1), 0, 0), "drop");
    assert.equal(window.decide(key(2), 0, 0), "send");
    assert.equal(window.peerLimitedDrops, 2);
  });

  test("with no hold (intra-only) a frame that finds no room is dropped at once and the next one may go", () => {
    const window = new PeerWindow({ capacity: 2, maxHoldMs: 200 });
    window.setMaxHoldMs(0);
    assert.equal(window.decide(key(0), 2, 0), "drop");
    assert.equal(window.decide(key(1), 1, 0), "send");
  });

  test("refuses a window of less than one frame", () => {
    assert.throws(() => new PeerWindow({ capacity: 0 }), /whole number of frames >= 1/);
    assert.throws(() => new PeerWindow({ capacity: 1.5 }), /whole number of frames >= 1/);
  });
});

describe("FrameMatcher.inFlight", () => {
  test("counts frames sent and not back; a frame back clears those sent before it (the peer skipped them)", () => {
    const matcher = new FrameMatcher<string>();
    // As the session sends them: PTS plus the per-frame jitter that makes the offset unambiguous.
    const sentTs = (i: number) => 1000 + i * 3000 + timestampJitter(i);
    for (let i = 0; i < 6; i++)
      matcher.recordSent({ rtpTimestamp: sentTs(i), pts: i * 3000, sentAt: 100 + i });
    assert.equal(matcher.inFlight(200), 6);
    // Back with an offset of 7: two frames calibrate it (the first ones were skipped by the peer).
    matcher.accept(sentTs(2) + 7, "third", 210);
    assert.equal(matcher.inFlight(210), 5, "held for calibration: not in flight any more");
    matcher.accept(sentTs(3) + 7, "fourth", 220);
    assert.equal(matcher.calibrated, true);
    assert.equal(matcher.inFlight(220), 2, "frames 0-3 are done (0 and 1 were skipped)");
  });

  test("frames older than the age limit no longer count (a peer that returns nothing cannot shut the window for good)", () => {
    const matcher = new FrameMatcher<string>();
    matcher.recordSent({ rtpTimestamp: 1, pts: 0, sentAt: 0 });
    matcher.recordSent({ rtpTimestamp: 3002, pts: 3000, sentAt: 9_000 });
    assert.equal(matcher.inFlight(9_500), 2);
    assert.equal(matcher.inFlight(12_000), 1);
    assert.equal(matcher.inFlight(20_000), 0);
  });
});

describe("FramePacer with an admit gate", () => {
  function frame(index: number): PacedFrame {
    return { pts: 900_000 + index * 3000, keyframe: index === 0, packets: [Buffer.from([index])] };
  }

  test("a held frame waits (later frames behind it) and goes when the gate opens; a dropped one never goes", async () => {
    const sent: number[] = [];
    let open = false;
    const asked: Array<{ index: number; lateMs: number }> = [];
    const pacer = new FramePacer({
      capacity: 100,
      send: (f) => sent.push(f.packets[0]![0]!),
      admit: (f, lateMs) => {
        const index = f.packets[0]![0]!;
        asked.push({ index, lateMs });
        if (index === 3) return "drop";
        return open ? "send" : "hold";
      },
    });
    for (let i = 0; i < 5; i++) pacer.push(frame(i));
    await sleep(100);
    // Bounded, not fixed: on a loaded machine the pacer's timer may not have come round yet.
    await waitFor(() => asked.length > 3, 2_000, "the held frame is asked again");
    assert.deepEqual(sent, [], "held: nothing goes while the gate is shut");
    assert.ok(asked.at(-1)!.lateMs >= 80, `it reports how late it is: ${asked.at(-1)!.lateMs}`);
    open = true;
    await sleep(200);
    pacer.stop();
    assert.deepEqual(sent, [0, 1, 2, 4]);
  });

  test("a held frame stays late past the pacer's re-anchoring lag, so a hold has an end", async () => {
    const lateness: number[] = [];
    const pacer = new FramePacer({
      capacity: 100,
      maxLagMs: 50,
      send: () => undefined,
      admit: (_f, lateMs) => {
        lateness.push(lateMs);
        return lateMs < 150 ? "hold" : "drop";
      },
    });
    pacer.push(frame(0));
    await sleep(250);
    pacer.stop();
    assert.ok(Math.max(...lateness) >= 150, `it got as late as ${Math.max(...lateness).toFixed(0)} ms`);
    assert.ok(
      lateness.every((late, i) => i === 0 || late >= lateness[i - 1]!),
      "lateness never went back to 0",
    );
  });
});

describe("PeerPace", () => {
  test("three saturated seconds of four switch to intra-only; quiet for long enough switches back", () => {
    const pace = new PeerPace({ quietMs: 10_000 });
    let pressure = 0;
    const at = (second: number, pressured: boolean) => {
      if (pressured) pressure += 5;
      return pace.sample({ now: second * 1000, windowPressure: pressure });
    };
    assert.equal(at(0, false), undefined);
    assert.equal(at(1, true), undefined);
    assert.equal(at(2, false), undefined);
    assert.equal(at(3, true), undefined);
    assert.equal(at(4, true), true, "saturated in 3 of the last 4 samples");
    assert.equal(pace.intraOnly, true);
    assert.match(pace.reason ?? "", /every frame is sent as a keyframe/);
    // Still saturated: nothing changes.
    for (let second = 5; second < 10; second++) assert.equal(at(second, true), undefined);
    // Quiet from second 10: back after 10 s without pressure.
    for (let second = 10; second < 19; second++) assert.equal(at(second, false), undefined);
    assert.equal(at(19, false), false);
    assert.equal(pace.intraOnly, false);
    assert.equal(pace.reason, undefined);
  });

  test("a return to the normal GOP undone within 10 s makes the next quiet wait twice as long", () => {
    const pace = new PeerPace({ quietMs: 5_000 });
    let pressure = 0;
    let second = 0;
    const tick = (pressured: boolean) => {
      if (pressured) pressure += 1;
      return pace.sample({ now: second++ * 1000, windowPressure: pressure });
    };
    tick(false);
    for (let i = 0; i < 3; i++) tick(true);
    assert.equal(pace.intraOnly, true);
    let quiet = 0;
    while (tick(false) !== false) quiet++;
    assert.equal(quiet, 4, "back to normal after 5 quiet seconds");
    for (let i = 0; i < 3; i++) tick(true);
    assert.equal(pace.intraOnly, true, "undone at once");
    quiet = 0;
    while (tick(false) !== false) quiet++;
    assert.equal(quiet, 9, "now 10 quiet seconds");
  });
});
