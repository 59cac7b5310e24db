// The forward hop as the status reports it: from the moment a frame can be shown (it and every frame
// before it in display order are in) to the moment it goes to ComfyStream. H.264 with B-frames
// arrives in decode order (media-pipeline.md: input segments are MPEG-TS with B-frames from RTMP
// encoders), so a P-frame comes in before the B-frames shown ahead of it.
import assert from "node:assert/strict";
import { test } from "node:test";
import { SessionStats } from "../../relay-pod/src/session/session-stats.js";

const FRAME = 3000; // 90 kHz ticks at 30 fps

test("forward hop: a P-frame that arrived before its B-frames counts from the last of them", () => {
  const stats = new SessionStats();
  // Decode order I0 P3 B1 B2, one every 33 ms.
  stats.noteInputFrame(0, 1000);
  stats.noteInputFrame(3 * FRAME, 1033);
  stats.noteInputFrame(1 * FRAME, 1066);
  stats.noteInputFrame(2 * FRAME, 1100);
  // Sent in display order, each 5 ms after it could be shown.
  stats.noteFrameSent(0, 1005);
  stats.noteFrameSent(1 * FRAME, 1071);
  stats.noteFrameSent(2 * FRAME, 1105);
  stats.noteFrameSent(3 * FRAME, 1105);
  assert.equal(stats.forwardHop.percentile(100), 5, "P3 waited for B2 (in at 1100), not since 1033");
  assert.equal(stats.forwardHop.percentile(0), 5, "every frame 5 ms after it could be shown");
  assert.equal(stats.counters.framesSent, 4);
});

test("forward hop without reordering: each frame from its own arrival", () => {
  const stats = new SessionStats();
  for (let i = 0; i < 10; i++) stats.noteInputFrame(i * FRAME, 1000 + i * 33);
  for (let i = 0; i < 10; i++) stats.noteFrameSent(i * FRAME, 1000 + i * 33 + (i === 9 ? 40 : 4));
  assert.equal(stats.forwardHop.percentile(50), 4);
  assert.equal(stats.forwardHop.percentile(100), 40);
});
