// Relay sessions through the real ComfyStream server (test/peers/real-comfystream.ts), the judge of
// what the stand-ins imitate (issue 10). Skipped, with the reason, where it cannot run.
// - It ignores keyframe requests, so the output is cut into segments only because the relay
//   re-encodes the return path (outputKeyframes.source "re-encode").
// - A workflow slower than the input no longer makes latency grow: the window keeps ComfyStream's
//   queue from filling with evicted frames, and what it cannot take is dropped as peer-limited.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import {
  REAL_WORKFLOWS,
  realComfyStreamUnavailable,
  startRealComfyStream,
  type RealComfyStream,
} from "../peers/real-comfystream.js";
import { checkOutputAgainstInput, relaySessionThrough, type RelayedRun } from "./relay-harness.js";

const unavailable = realComfyStreamUnavailable();
const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

type Run = RelayedRun & { server: RealComfyStream };

/** `seconds` of 30 fps 512×512 input through one session and a fresh real ComfyStream running `workflow`. */
async function relayThroughRealComfyStream(workflow: object, seconds: number): Promise<Run> {
  const server = await startRealComfyStream();
  cleanups.push(() => server.stop());
  const run = await relaySessionThrough(server.url, {
    seconds,
    size: "512x512",
    session: { prompts: [workflow] },
    connectTimeoutMs: 120_000, // warm-up runs inside /offer: a few seconds on a CPU
    cleanups,
  });
  return { ...run, server };
}

function describeRun(run: Run): string {
  const { final } = run;
  return (
    `state ${final.state}, frames ${JSON.stringify(final.frames)}, segments ${JSON.stringify(final.segments)}, ` +
    `latency ${JSON.stringify(final.latencyMs)}, keyframes ${JSON.stringify(final.outputKeyframes)}, ` +
    `window ${JSON.stringify(final.peerWindow)}, last error ${JSON.stringify(final.lastError)}\n` +
    `real ComfyStream's log:\n${run.server.logTail()}`
  );
}

describe("through the real ComfyStream server", { skip: unavailable ?? false }, () => {
  test(
    "it ignores PLIs: the relay re-encodes the returned video and every output segment starts on an IDR about a second apart",
    { timeout: 240_000 },
    async (t) => {
      const run = await relayThroughRealComfyStream(REAL_WORKFLOWS.passthrough, 20);
      const { final } = run;
      t.diagnostic(describeRun(run).split("\n")[0]!);
      assert.equal(final.state, "completed", describeRun(run));
      assert.equal(final.outputKeyframes.source, "re-encode", describeRun(run));
      assert.match(final.outputKeyframes.reason ?? "", /no IDR for .* although keyframes were requested/);
      // An IDR falls on a returned frame: a second, plus at most a frame of a slow peer.
      assert.ok(final.outputKeyframes.idrIntervalSec.last! <= 1.6, describeRun(run));
      // Before the repair: one segment for the whole run.
      assert.ok(
        run.output.length >= 12,
        `${run.output.length} output segments for 20 s: ${describeRun(run)}`,
      );
      assert.equal(final.segments.out, run.output.length);
      const check = await checkOutputAgainstInput(run.output, run.inputPts);
      assert.deepEqual(check.undecodable, []);
      assert.deepEqual(check.notIdrFirst, [], "every segment starts with an IDR");
      assert.equal(check.repeatedPts, 0);
      assert.deepEqual(check.foreignPts.slice(0, 5), [], "output PTS = input PTS");
      assert.ok(
        check.frames >= run.inputPts.length * 0.5,
        `${check.frames} of ${run.inputPts.length} frames out`,
      );
    },
  );

  test(
    "a workflow slower than the input: latency stays bounded instead of growing, the rest is dropped as peer-limited",
    { timeout: 240_000 },
    async (t) => {
      const run = await relayThroughRealComfyStream(REAL_WORKFLOWS.slowBlur, 25);
      const { final, samples } = run;
      t.diagnostic(describeRun(run).split("\n")[0]!);
      assert.equal(final.state, "completed", describeRun(run));
      const returnedPerSecond = final.frames.returned / 25;
      assert.ok(
        returnedPerSecond < 20,
        `the blur must be slower than the 30 fps input: ${returnedPerSecond} fps`,
      );
      assert.ok(final.frames.returned >= 10, `frames came back: ${describeRun(run)}`);
      assert.ok(final.frames.peerLimited > 0, describeRun(run));
      // The latency through the peer over the run's second half: without the window it grew by about
      // a second every second (issue 10: 0.6 s → 7–13 s in 20 s); now it holds.
      const p50s = samples
        .slice(Math.floor(samples.length / 2))
        .map((status) => status.latencyMs.p50)
        .filter((value): value is number => value !== null);
      assert.ok(p50s.length >= 5, `latency samples: ${JSON.stringify(p50s)}`);
      const growth = p50s.at(-1)! - p50s[0]!;
      t.diagnostic(`peer latency p50 over the second half: ${p50s.map((v) => Math.round(v)).join(", ")} ms`);
      assert.ok(
        growth < 1500,
        `latency grew by ${Math.round(growth)} ms in the second half: ${JSON.stringify(p50s)}`,
      );
      const check = await checkOutputAgainstInput(run.output, run.inputPts);
      assert.deepEqual(check.undecodable, []);
      assert.deepEqual(check.notIdrFirst, []);
    },
  );
});
