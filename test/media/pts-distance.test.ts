// PTS distances on the 33-bit 90 kHz circle (ISO 13818-1 §2.4.3.7): the short way round, across the
// wrap, which the audio path's jump checks and the pacer both rely on.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ptsForwardDistance, ptsSignedDistance } from "../../relay-pod/src/media/ts-packet.js";
import { ptsDeltaMs } from "../../relay-pod/src/session/pacer.js";

const WRAP = 2 ** 33;

test("signed PTS distance: plain, backwards, and across the 33-bit wrap either way", () => {
  assert.equal(ptsSignedDistance(1000, 4000), 3000);
  assert.equal(ptsSignedDistance(4000, 1000), -3000);
  assert.equal(ptsSignedDistance(WRAP - 5, 10), 15, "forward over the wrap");
  assert.equal(ptsSignedDistance(10, WRAP - 5), -15, "backward over the wrap");
  assert.equal(ptsForwardDistance(10, WRAP - 5), WRAP - 15);
});

test("the pacer's millisecond delta is the signed distance in ms", () => {
  assert.equal(ptsDeltaMs(90_000, 0), 1000);
  assert.equal(ptsDeltaMs(0, 90_000), -1000);
  assert.equal(ptsDeltaMs(900, WRAP - 900), 20);
});
