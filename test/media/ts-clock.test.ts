// TsClock on real MPEG-TS from ffmpeg: a continuous input passes byte for byte (output PTS = input
// PTS until the first jump, DESIGN.md §3.4), a 33-bit wrap is not a jump (trickle segments are
// MPEG-TS, whose PTS/DTS/PCR are 33-bit 90 kHz), and a clock that jumps back or far ahead comes out
// continuous, PTS and PCR alike, however the bytes are chunked.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TsClock, type ClockJump } from "../../relay-pod/src/media/ts-clock.js";
import { TS_PACKET_SIZE, packetPid } from "../../relay-pod/src/media/ts-packet.js";
import { demuxPts, makeInputSegments } from "../session/relay-harness.js";
import { pseudoRandomBytes, splitRandomly } from "./media-helpers.js";

const PTS_WRAP = 2 ** 33;
const WRAP_SECONDS = PTS_WRAP / 90_000;
/** The TS muxer's default delay, added to -output_ts_offset. */
const MUX_DELAY_SECONDS = 1.4;

function signedStep(from: number, to: number): number {
  const step = (((to - from) % PTS_WRAP) + PTS_WRAP) % PTS_WRAP;
  return step >= PTS_WRAP / 2 ? step - PTS_WRAP : step;
}

/** Every PCR base (90 kHz) in a TS byte stream, in order. */
function pcrBases(ts: Buffer): number[] {
  const bases: number[] = [];
  for (let at = 0; at + TS_PACKET_SIZE <= ts.length; at += TS_PACKET_SIZE) {
    if (ts[at] !== 0x47 || packetPid(ts, at) === 0x1fff) continue;
    if ((ts[at + 3] & 0x20) === 0 || ts[at + 4] < 7 || (ts[at + 5] & 0x10) === 0) continue;
    bases.push(
      ts[at + 6] * 2 ** 25 + ts[at + 7] * 2 ** 17 + ts[at + 8] * 2 ** 9 + ts[at + 9] * 2 + (ts[at + 10] >> 7),
    );
  }
  return bases;
}

async function stream(parts: Array<{ seconds: number; startSeconds: number }>): Promise<Buffer> {
  const segments: Buffer[] = [];
  for (const part of parts) segments.push(...(await makeInputSegments({ bFrames: 0, ...part })).segments);
  return Buffer.concat(segments);
}

function mendAll(input: Buffer, chunks: Buffer[]): { output: Buffer; jumps: ClockJump[] } {
  const jumps: ClockJump[] = [];
  const clock = new TsClock({ onJump: (jump) => jumps.push(jump) });
  const output = Buffer.concat([...chunks.map((chunk) => clock.push(chunk)), clock.flush()]);
  assert.equal(output.length, input.length, "every byte comes out");
  return { output, jumps };
}

describe("TsClock", () => {
  test("a continuous stream across the 33-bit wrap passes unchanged, byte for byte", async () => {
    const input = await stream([{ seconds: 4, startSeconds: WRAP_SECONDS - MUX_DELAY_SECONDS - 2 }]);
    const pts = demuxPts(input);
    assert.ok(pts[0]! > PTS_WRAP - 3 * 90_000 && pts.at(-1)! < 3 * 90_000, "the input does wrap");
    const { output, jumps } = mendAll(input, splitRandomly(input, 5000));
    assert.deepEqual(jumps, []);
    assert.ok(output.equals(input));
  });

  test("a jump back and a jump ahead come out continuous in PTS and PCR, chunked any way", async () => {
    const input = await stream([
      { seconds: 2, startSeconds: 100 },
      { seconds: 2, startSeconds: 10 }, // back 92 s: an encoder restart
      { seconds: 2, startSeconds: 5000 }, // ahead 4988 s: a new ingest
    ]);
    for (const chunks of [[input], splitRandomly(input, 700, 3), splitRandomly(input, 10_000, 5)]) {
      const { output, jumps } = mendAll(input, chunks);
      assert.equal(jumps.length, 2, `one mend per jump: ${JSON.stringify(jumps)}`);
      const pts = demuxPts(output);
      assert.equal(pts.length, 180);
      assert.equal(pts[0], demuxPts(input)[0], "before the first jump, PTS = input PTS");
      const steps = pts.slice(1).map((p, i) => signedStep(pts[i]!, p));
      assert.deepEqual(
        steps.filter((step) => step !== 3000),
        [],
        "every frame one 30 fps interval after the one before",
      );
      const pcr = pcrBases(output);
      const pcrSteps = pcr.slice(1).map((base, i) => signedStep(pcr[i]!, base));
      assert.ok(
        pcrSteps.every((step) => step >= 0 && step <= 9000),
        `PCR continuous too: ${pcrSteps.filter((s) => s < 0 || s > 9000).join(",")}`,
      );
    }
  });

  test("bytes that are not TS packets pass through, and the packets after them are still mended", async () => {
    const first = await stream([{ seconds: 1, startSeconds: 100 }]);
    const second = await stream([{ seconds: 1, startSeconds: 10 }]);
    const garbage = pseudoRandomBytes(1000).map((b) => (b === 0x47 ? 0 : b));
    const input = Buffer.concat([first, garbage, second]);
    const { output, jumps } = mendAll(input, splitRandomly(input, 3000, 11));
    assert.equal(jumps.length, 1);
    assert.ok(output.subarray(first.length, first.length + garbage.length).equals(garbage));
    const pts = demuxPts(output);
    assert.equal(signedStep(pts[29]!, pts[30]!), 3000, "the second part continues the first");
  });
});
