// The stand-in's copy of libsrtp's replay check (aiortc's SRTP, hence ComfyStream's): what it drops.
import assert from "node:assert/strict";
import { test } from "node:test";
import { SrtpReplayWindow } from "../../relay-pod/src/demo/standin-peer/srtp-replay.js";

test("in order and slightly reordered packets pass; a repeat does not", () => {
  const window = new SrtpReplayWindow();
  for (const seq of [100, 101, 103, 102, 104]) assert.equal(window.accept(seq), true, `seq ${seq}`);
  assert.equal(window.accept(103), false, "seen before");
  assert.equal(window.drops, 1);
});

test("across the 16-bit wrap, ahead is ahead", () => {
  const window = new SrtpReplayWindow();
  assert.equal(window.accept(65_530), true);
  assert.equal(window.accept(3), true);
  assert.equal(window.accept(65_531), true, "within the window behind the new highest");
});

test("a restart of the numbering lower than the highest seen is dropped until it passes it", () => {
  const window = new SrtpReplayWindow();
  for (let seq = 40_000; seq < 41_000; seq++) if (seq !== 40_900) window.accept(seq);
  assert.equal(window.accept(20_000), false, "20 000 behind: a replay to libsrtp");
  assert.equal(window.accept(40_900), true, "99 behind, late but not seen: inside the window");
  assert.equal(window.accept(60_000), true, "ahead by less than 2^15: new");
  assert.ok(window.drops >= 1);
});
