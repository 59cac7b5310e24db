// Mid-stream changes (issue 12 part 4): the input's resolution, frame rate and H.264 profile change
// (new SPS/PPS), its clock jumps back and forward, and its 33-bit PTS wraps, all within one session.
// Real trickle over HTTP, real ffmpeg, real WebRTC to the werift stand-in. What a user checks: the
// session keeps running to the input's end, at most one segment is lost per change, every output
// segment decodes and starts on an IDR, and the output PTS never goes back (trickle-protocol.md:
// segments are MPEG-TS, whose PTS is 33 bits, so "never back" is modulo 2^33).
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { RelaySession } from "../../relay-pod/src/session/relay-session.js";
import { buildSessionConfig } from "../../relay-pod/src/session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import {
  ICE_ADDRESSES,
  checkOutputAgainstInput,
  collectOutput,
  demuxPts,
  makeInputSegments,
  publishPaced,
  startPeer,
  startTrickle,
  waitFor,
} from "./relay-harness.js";

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

const PTS_WRAP = 2 ** 33;
/** The TS muxer's default delay, added to -output_ts_offset (see makeInputSegments). */
const MUX_DELAY_SECONDS = 1.4;

/** Output PTS in order, unwrapped across 2^33: how far each one moved from the one before. */
function ptsSteps(pts: number[]): number[] {
  const steps: number[] = [];
  for (let i = 1; i < pts.length; i++) {
    let step = (pts[i]! - pts[i - 1]!) % PTS_WRAP;
    if (step > PTS_WRAP / 2) step -= PTS_WRAP;
    if (step < -PTS_WRAP / 2) step += PTS_WRAP;
    steps.push(step);
  }
  return steps;
}

describe("mid-stream input changes", { skip: needsLoopbackNamespace }, () => {
  for (const mode of ["transcode", "passthrough"] as const)
    test(
      `${mode}: resolution, frame rate and profile change, the clock jumps back and forward and wraps at 2^33: " +
      "the session runs on, at most one segment lost per change, output PTS never goes back`,
      { timeout: 120_000 },
      async (t) => {
        const wrapSeconds = PTS_WRAP / 90_000;
        // Each part is what an encoder restart or a new ingest would send: its own SPS/PPS and clock.
        const parts = [
          // Offset 0 so far: ffmpeg itself meets the 33-bit wrap.
          {
            name: "320x240@30 high, across the 33-bit wrap",
            seconds: 4,
            startSeconds: wrapSeconds - MUX_DELAY_SECONDS - 2,
          },
          {
            name: "640x360@25 main: new SPS/PPS, clock continuous",
            seconds: 3,
            startSeconds: 2 - MUX_DELAY_SECONDS,
            size: "640x360",
            frameRate: 25,
            profile: "main" as const,
          },
          { name: "320x240@30, clock 4996 s ahead", seconds: 3, startSeconds: 5000 },
          {
            name: "320x240@30 baseline, clock 4990 s back",
            seconds: 3,
            startSeconds: 10,
            profile: "baseline" as const,
          },
        ];
        const made = [];
        for (const part of parts) made.push(await makeInputSegments({ bFrames: 0, ...part }));
        const segments = made.flatMap((m) => m.segments);
        const inputFrames = made.reduce((sum, m) => sum + m.pts.length, 0);

        const { server, base } = await startTrickle(["in", "in-out"]);
        cleanups.push(() => server.close());
        const peer = await startPeer("ts");
        cleanups.push(() => peer.stop());
        const output = collectOutput(`${base}in-out`);
        cleanups.push(() => output.close());
        const session = new RelaySession(
          buildSessionConfig({
            id: "changes",
            mode,
            inputUrl: `${base}in`,
            comfystreamUrl: peer.url,
            prompts: [PASSTHROUGH_WORKFLOW],
            width: 256,
            height: 256,
            frameRate: 30,
            iceAddresses: ICE_ADDRESSES,
          }),
          { reconnectBackoffMs: [300, 2000], drainTimeoutMs: 3000 },
        );
        cleanups.push(() => session.stop());
        await session.start();
        await waitFor(() => session.status().webrtcState === "connected", 20_000, "WebRTC connected");
        await publishPaced(`${base}in`, segments);
        await session.whenEnded();
        await output.done;

        const final = session.status();
        t.diagnostic(
          `final ${JSON.stringify({ state: final.state, frames: final.frames, error: final.lastError })}`,
        );
        assert.equal(
          final.state,
          "completed",
          `the session ran to the input's end: ${final.lastError?.message}`,
        );
        const check = await checkOutputAgainstInput(output.segments, []);
        assert.deepEqual(check.undecodable, [], "every output segment decodes");
        assert.deepEqual(check.notIdrFirst, [], "every output segment starts with an IDR");
        // At most one segment (1 s) lost per change (wrap, new SPS/PPS, two jumps).
        const allowedLoss = 4 * 30;
        t.diagnostic(`output ${check.frames} of ${inputFrames} input frames`);
        assert.ok(
          check.frames >= inputFrames - allowedLoss,
          `output ${check.frames} of ${inputFrames} frames`,
        );
        assert.ok(
          check.frames + final.frames.dropped >= inputFrames,
          `every frame missing from the output is counted as dropped: ${JSON.stringify(final.frames)}`,
        );

        const outputPts = demuxPts(Buffer.concat(output.segments.map((s) => s.data)));
        const steps = ptsSteps(outputPts);
        steps.forEach((step, i) => {
          if (step <= 0 || step > 90_000)
            t.diagnostic(
              `step ${i}: ${outputPts
                .slice(Math.max(0, i - 3), i + 4)
                .map((p) => (p / 90000).toFixed(3))
                .join(" ")}`,
            );
        });
        const backwards = steps.filter((step) => step <= 0);
        assert.deepEqual(backwards, [], "the output PTS only moves forward (modulo 2^33)");
        const leaps = steps.filter((step) => step > 90_000);
        assert.deepEqual(leaps, [], "and never leaps ahead by a second or more");
        assert.equal(
          final.inputClockJumps,
          2,
          "status counts the jump back and the jump forward, not the wrap",
        );
      },
    );
});
