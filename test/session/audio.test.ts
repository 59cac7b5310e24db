// Audio end to end (issue 13), passthrough: a stream's sound comes out of the relay in the same
// segments as the processed video, unchanged and in sync by PTS. Real trickle over HTTP, real
// ffmpeg making AAC / Opus / MP2 input, real WebRTC to the werift stand-in, ffprobe reading the
// output as a viewer's player would. Skipped outside the loopback-only namespace (WebRTC).
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { needsLoopbackNamespace } from "../infra/netns.js";
import {
  REAL_WORKFLOWS,
  realComfyStreamUnavailable,
  startRealComfyStream,
} from "../peers/real-comfystream.js";
import { FFMPEG, checkOutputAgainstInput } from "./relay-harness.js";
import { measureAvSync } from "../../relay-pod/src/demo/av-sync.js";
import { probeTs, relayWithAudio, type AudioRun } from "./audio-harness.js";

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

/** What a viewer checks: the input's audio, unchanged, beside the video it belongs to. */
async function checkAudioCarried(
  t: { diagnostic(message: string): void },
  run: AudioRun,
  codec: "aac" | "opus",
  options: { videoRatio: number; lipSync?: boolean },
): Promise<void> {
  const { final, input, output, inputPts } = run;
  t.diagnostic(`audio ${JSON.stringify(final.audio)}; frames ${JSON.stringify(final.frames)}`);
  assert.equal(final.state, "completed");
  const video = await checkOutputAgainstInput(output, inputPts);
  assert.deepEqual(video.undecodable, []);
  assert.deepEqual(video.notIdrFirst, [], "segments still start on a video IDR");
  assert.ok(
    video.frames >= inputPts.length * options.videoRatio,
    `${video.frames} of ${inputPts.length} video frames`,
  );

  const inputProbe = await probeTs(input);
  const outputProbe = await probeTs(Buffer.concat(output.map((s) => s.data)));
  assert.deepEqual(
    outputProbe.streams.filter((s) => s.codec_type === "audio").map((s) => s.codec_name),
    [codec],
    "one audio stream, the input's codec",
  );
  const inputAudio = new Set(inputProbe.audioPts);
  assert.deepEqual(
    outputProbe.audioPts.filter((pts) => !inputAudio.has(pts)).slice(0, 5),
    [],
    "every output audio PTS is an input audio PTS (remuxed, not re-encoded)",
  );
  // Everything the output's video covers, its audio covers too: sound goes on where video frames were dropped.
  const videoStart = Math.min(...outputProbe.videoPts);
  const videoEnd = Math.max(...outputProbe.videoPts);
  const expected = inputProbe.audioPts.filter((pts) => pts >= videoStart && pts <= videoEnd);
  const written = new Set(outputProbe.audioPts);
  const missing = expected.filter((pts) => !written.has(pts));
  assert.deepEqual(missing.slice(0, 5), [], `${missing.length} of ${expected.length} audio packets missing`);
  // In sync: interleaved by PTS, never far from the video it is written beside.
  assert.ok(
    final.audio.avOffsetMs !== null && final.audio.avOffsetMs < 200,
    `offset ${final.audio.avOffsetMs}`,
  );
  assert.equal(final.audio.mode, "passthrough");
  assert.equal(final.audio.codecIn, codec);
  assert.equal(final.audio.codecOut, codec);
  const { frames, queue } = final.audio;
  assert.ok(frames.out > 0 && frames.corrupt === 0, JSON.stringify(final.audio));
  assert.ok(queue.size <= queue.capacity);
  assert.equal(
    frames.out + frames.dropped,
    frames.in,
    "every audio frame read is written or counted as dropped",
  );
  if (options.lipSync) {
    // As a viewer judges it: each flash of the picture against the beep of the same instant.
    const sync = await measureAvSync(FFMPEG, Buffer.concat(output.map((s) => s.data)));
    t.diagnostic(`A/V: ${JSON.stringify(sync)}`);
    assert.ok(sync.offsetsMs.length >= 4, `${sync.offsetsMs.length} flash/beep pairs`);
    assert.ok(sync.p95AbsMs !== null && sync.p95AbsMs <= 40, `beep − flash p95 ${sync.p95AbsMs} ms`);
  }
}

describe("audio passthrough", { skip: needsLoopbackNamespace }, () => {
  for (const codec of ["aac", "opus"] as const) {
    test(
      `${codec} input: the output carries it unchanged in the video's segments, every audio PTS an input one, in sync`,
      { timeout: 90_000 },
      async (t) => {
        const run = await relayWithAudio(cleanups, { audio: codec, beepFlash: true });
        await checkAudioCarried(t, run, codec, { videoRatio: 0.8, lipSync: true });
      },
    );
  }

  test(
    "audio that appears mid-stream is carried from then on; audio that disappears leaves the video going",
    { timeout: 90_000 },
    async (t) => {
      const appearing = await relayWithAudio(cleanups, {
        parts: [{ seconds: 3 }, { seconds: 3, audio: "aac" }],
      });
      await checkAudioCarried(t, appearing, "aac", { videoRatio: 0.8 });
      const disappearing = await relayWithAudio(cleanups, {
        parts: [{ seconds: 3, audio: "aac" }, { seconds: 3 }],
      });
      await checkAudioCarried(t, disappearing, "aac", { videoRatio: 0.8 });
    },
  );

  test(
    "an unsupported codec (MP2): status says why, the output is video only, the session runs on",
    { timeout: 90_000 },
    async () => {
      const { final, output, inputPts } = await relayWithAudio(cleanups, { audio: "mp2", seconds: 4 });
      assert.equal(final.state, "completed");
      assert.match(final.audio.reason, /mp2 .* not supported: video only/);
      assert.equal(final.audio.codecIn, "mp2");
      assert.equal(final.audio.codecOut, null);
      assert.equal(final.lastError?.reason, "AudioUnsupported");
      const probe = await probeTs(Buffer.concat(output.map((s) => s.data)));
      assert.deepEqual(
        probe.streams.map((s) => s.codec_type),
        ["video"],
      );
      const video = await checkOutputAgainstInput(output, inputPts);
      assert.ok(video.frames >= inputPts.length * 0.9, `${video.frames} of ${inputPts.length} video frames`);
    },
  );

  test("mode none: video only, as before audio was carried", { timeout: 90_000 }, async () => {
    const { final, output } = await relayWithAudio(cleanups, { audio: "aac", mode: "none", seconds: 4 });
    assert.equal(final.state, "completed");
    assert.equal(final.audio.mode, "none");
    const probe = await probeTs(Buffer.concat(output.map((s) => s.data)));
    assert.deepEqual(
      probe.streams.map((s) => s.codec_type),
      ["video"],
    );
  });

  test(
    "mode comfystream asked for with an input codec it cannot decode (MP2): the session fails and says why",
    { timeout: 60_000 },
    async () => {
      const { final } = await relayWithAudio(cleanups, { audio: "mp2", mode: "comfystream", seconds: 3 });
      assert.equal(final.state, "failed");
      assert.equal(final.lastError?.reason, "AudioUnsupported");
      assert.match(final.lastError?.message ?? "", /mp2 .* not supported/);
    },
  );
});

const realUnavailable = needsLoopbackNamespace || realComfyStreamUnavailable();
describe("audio passthrough through the real ComfyStream server", { skip: realUnavailable ?? false }, () => {
  test(
    "its processed video comes back and the input's AAC goes out beside it, unchanged and in sync",
    { timeout: 240_000 },
    async (t) => {
      const server = await startRealComfyStream();
      cleanups.push(() => server.stop());
      const run = await relayWithAudio(cleanups, {
        audio: "aac",
        seconds: 10,
        comfystream: { url: server.url, prompts: [REAL_WORKFLOWS.passthrough], connectTimeoutMs: 120_000 },
      });
      // The real server on a CPU drops frames of its own; the sound must not have gaps for that.
      await checkAudioCarried(t, run, "aac", { videoRatio: 0.5 });
    },
  );
});
