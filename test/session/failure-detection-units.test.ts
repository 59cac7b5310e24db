/**
 * The decisions behind fast failure detection, on a given clock: when the peer counts as lost
 * (silent, or frames stopped while sending), how an outage's gap is counted, and the input-stall
 * policy (report, resume, end). The same classes run in the sessions of
 * test/session/peer-failure.test.ts and test/webrtc/comfystream-peer.test.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PeerLiveness } from "../../relay-pod/src/webrtc/peer-liveness.js";
import { OutageMeter } from "../../relay-pod/src/session/outages.js";
import { InputStallWatch } from "../../relay-pod/src/session/input-stall.js";

describe("PeerLiveness", () => {
  it("silence (no RTP, RTCP or control) past the timeout is a loss, and ends when packets come back", () => {
    const live = new PeerLiveness(4000, 15_000);
    live.connected(0);
    live.inbound(1000);
    assert.equal(live.check(5000, false), undefined);
    assert.match((live.check(5001, false) as { reason: string }).reason, /^silent: .* for 4001 ms/);
    live.inbound(6000);
    assert.deepEqual(live.check(6001, true), { kind: "recovered" });
  });

  it("frames stopping while RTCP keeps coming is a loss only while frames are sent, and does not recover by itself", () => {
    const live = new PeerLiveness(4000, 15_000);
    live.connected(0);
    live.returnedFrame(1000);
    for (let t = 1000; t <= 9000; t += 500) live.inbound(t); // RTCP every 0.5 s
    assert.equal(live.check(9000, false), undefined, "nothing sent: a quiet return is no failure");
    live.sent(8500);
    const verdict = live.check(9000, false) as { kind: string; reason: string };
    assert.equal(verdict.kind, "lost");
    assert.match(verdict.reason, /frames stopped: none returned for 8000 ms while sending/);
    live.inbound(9500);
    assert.equal(live.check(9600, true), undefined, "only a new connection ends it");
  });

  it("the first returned frame gets the longer grace", () => {
    const live = new PeerLiveness(4000, 15_000);
    live.connected(0);
    for (let t = 0; t <= 16_000; t += 500) {
      live.inbound(t);
      live.sent(t);
    }
    assert.equal(live.check(14_000, false), undefined);
    assert.equal(live.check(15_001, false)?.kind, "lost");
  });
});

describe("OutageMeter", () => {
  it("a gap runs from the last returned frame to the first after the reconnect; detection is its first part", () => {
    const meter = new OutageMeter();
    meter.frameReturned(1000);
    meter.lost(5200, "silent");
    meter.lost(6000, "connect failed"); // a failed reconnect inside the same outage
    assert.deepEqual(meter.snapshot(7000), {
      count: 0,
      ongoing: true,
      ongoingMs: 6000,
      lastGapMs: null,
      totalGapMs: 6000,
      lastDetectionMs: 4200,
      lastReason: "connect failed",
    });
    meter.frameReturned(9000);
    meter.frameReturned(9033);
    const after = meter.snapshot(10_000);
    assert.equal(after.count, 1);
    assert.equal(after.lastGapMs, 8000);
    assert.equal(after.totalGapMs, 8000);
    assert.equal(after.ongoing, false);
  });
});

describe("InputStallWatch", () => {
  function rig(endAfterSec: number) {
    let now = 0;
    let activity = 0;
    const events: string[] = [];
    const watch = new InputStallWatch(
      { statusAfterSec: 10, endAfterSec },
      {
        activity: () => activity,
        stalled: (idle) => events.push(`stalled ${idle}`),
        resumed: (idle) => events.push(`resumed ${idle}`),
        end: (idle) => events.push(`end ${idle}`),
      },
      () => now,
    );
    watch.start(60_000);
    const at = (ms: number, input = activity) => {
      now = ms;
      activity = input;
      watch.check();
    };
    return { watch, events, at };
  }

  it("reports a stall after statusAfterSec, clears it when input flows again, ends after endAfterSec", () => {
    const { watch, events, at } = rig(30);
    at(5000, 1);
    at(14_000);
    assert.deepEqual(events, []);
    at(15_000);
    assert.deepEqual(events, ["stalled 10"]);
    assert.equal(watch.snapshot().stalled, true);
    at(16_000, 2);
    assert.deepEqual(events, ["stalled 10", "resumed 11"]);
    at(46_000);
    assert.deepEqual(events.slice(2), ["stalled 30", "end 30"]);
    watch.stop();
  });

  it("endAfterSec 0 waits for ever", () => {
    const { watch, events, at } = rig(0);
    at(10_000_000);
    assert.deepEqual(events, ["stalled 10000"]);
    watch.stop();
  });
});
