// Audio end to end (issue 13), passthrough: a stream's sound comes out of the relay in the same
// segments as the processed video, unchanged and in sync by PTS. Real trickle over HTTP, real
// ffmpeg making AAC / Opus / MP2 input, real WebRTC to the werift stand-in, ffprobe reading the
// output as a viewer's player would. Skipped outside the loopback-only namespace (WebRTC).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, describe, test } from "node:test";
import { needsLoopbackNamespace } from "../infra/netns.js";
import {
  REAL_WORKFLOWS,
  realComfyStreamUnavailable,
  startRealComfyStream,
} from "../peers/real-comfystream.js";
import { startTsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { RelaySession } from "../../relay-pod/src/session/relay-session.js";
import { buildSessionConfig } from "../../relay-pod/src/session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import type { AudioMode, SessionStatus } from "../../relay-pod/src/session/types.js";
import {
  FFPROBE,
  ICE_ADDRESSES,
  checkOutputAgainstInput,
  makeInputSegments,
  startTrickle,
  relaySegmentsThrough,
} from "./relay-harness.js";

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

interface ProbedStream {
  codec_type: string;
  codec_name: string;
}

/** Streams and audio packet PTS (90 kHz) of a TS byte stream, as ffprobe reads them. */
async function probeTs(
  data: Buffer,
): Promise<{ streams: ProbedStream[]; audioPts: number[]; videoPts: number[] }> {
  const probe = (args: string[]) =>
    new Promise<string>((resolve, reject) => {
      const child = execFile(
        FFPROBE,
        ["-v", "error", "-f", "mpegts", "-i", "pipe:0", ...args, "-of", "json"],
        {
          maxBuffer: 64 * 1024 * 1024,
        },
      );
      let text = "";
      child.stdout!.on("data", (d: Buffer) => (text += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => (code === 0 ? resolve(text) : reject(new Error(`ffprobe exited ${code}`))));
      child.stdin!.on("error", () => undefined);
      child.stdin!.end(data);
    });
  const streams = (JSON.parse(await probe(["-show_streams"])) as { streams: ProbedStream[] }).streams;
  const packets = (
    JSON.parse(await probe(["-show_entries", "packet=codec_type,pts"])) as {
      packets: Array<{ codec_type: string; pts: number }>;
    }
  ).packets;
  return {
    streams,
    audioPts: packets.filter((p) => p.codec_type === "audio").map((p) => p.pts),
    videoPts: packets.filter((p) => p.codec_type === "video").map((p) => p.pts),
  };
}

async function relayWithAudio(options: {
  audio?: "aac" | "opus" | "mp2";
  mode?: AudioMode;
  seconds?: number;
  /** Input parts made one after the other (clock continuous), instead of `audio` and `seconds`. */
  parts?: Array<{ seconds: number; audio?: "aac" | "opus" }>;
  /** Default: the werift stand-in in passthrough. */
  comfystream?: { url: string; prompts: object[]; connectTimeoutMs: number };
}): Promise<{
  final: SessionStatus;
  input: Buffer;
  output: Array<{ seq: number; data: Buffer }>;
  inputPts: number[];
}> {
  const parts = options.parts ?? [
    { seconds: options.seconds ?? 6, ...(options.audio ? { audio: options.audio } : {}) },
  ];
  const segments: Buffer[] = [];
  const pts: number[] = [];
  let startSeconds = 10;
  for (const part of parts) {
    const made = await makeInputSegments({ bFrames: 0, startSeconds, ...part });
    segments.push(...made.segments);
    pts.push(...made.pts);
    startSeconds += part.seconds;
  }
  let comfystream = options.comfystream;
  if (!comfystream) {
    const standin = await startTsStandin({
      host: "127.0.0.1",
      port: 0,
      iceAddresses: ICE_ADDRESSES,
      mode: "passthrough",
    });
    cleanups.push(() => standin.close());
    comfystream = { url: standin.url, prompts: [PASSTHROUGH_WORKFLOW], connectTimeoutMs: 20_000 };
  }
  const { final, output } = await relaySegmentsThrough(
    segments,
    {
      id: "audio",
      comfystreamUrl: comfystream.url,
      prompts: comfystream.prompts,
      width: 256,
      height: 256,
      ...(options.mode ? { audio: options.mode } : {}),
    },
    { connectTimeoutMs: comfystream.connectTimeoutMs, cleanups },
  );
  return { final, input: Buffer.concat(segments), output, inputPts: pts };
}

type AudioRun = Awaited<ReturnType<typeof relayWithAudio>>;

/** What a viewer checks: the input's audio, unchanged, beside the video it belongs to. */
async function checkAudioCarried(
  t: { diagnostic(message: string): void },
  run: AudioRun,
  codec: "aac" | "opus",
  options: { videoRatio: number },
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
}

describe("audio passthrough", { skip: needsLoopbackNamespace }, () => {
  for (const codec of ["aac", "opus"] as const) {
    test(
      `${codec} input: the output carries it unchanged in the video's segments, every audio PTS an input one, in sync`,
      { timeout: 90_000 },
      async (t) => {
        await checkAudioCarried(t, await relayWithAudio({ audio: codec }), codec, { videoRatio: 0.8 });
      },
    );
  }

  test(
    "audio that appears mid-stream is carried from then on; audio that disappears leaves the video going",
    { timeout: 90_000 },
    async (t) => {
      const appearing = await relayWithAudio({ parts: [{ seconds: 3 }, { seconds: 3, audio: "aac" }] });
      await checkAudioCarried(t, appearing, "aac", { videoRatio: 0.8 });
      const disappearing = await relayWithAudio({ parts: [{ seconds: 3, audio: "aac" }, { seconds: 3 }] });
      await checkAudioCarried(t, disappearing, "aac", { videoRatio: 0.8 });
    },
  );

  test(
    "an unsupported codec (MP2): status says why, the output is video only, the session runs on",
    { timeout: 90_000 },
    async () => {
      const { final, output, inputPts } = await relayWithAudio({ audio: "mp2", seconds: 4 });
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
    const { final, output } = await relayWithAudio({ audio: "aac", mode: "none", seconds: 4 });
    assert.equal(final.state, "completed");
    assert.equal(final.audio.mode, "none");
    const probe = await probeTs(Buffer.concat(output.map((s) => s.data)));
    assert.deepEqual(
      probe.streams.map((s) => s.codec_type),
      ["video"],
    );
  });

  test("mode comfystream: the session fails at once and says why", { timeout: 30_000 }, async () => {
    const { server, base } = await startTrickle(["in", "in-out"]);
    cleanups.push(() => server.close());
    const session = new RelaySession(
      buildSessionConfig({
        id: "audio-comfystream",
        inputUrl: `${base}in`,
        comfystreamUrl: "http://127.0.0.1:9",
        prompts: [PASSTHROUGH_WORKFLOW],
        audio: "comfystream",
        iceAddresses: ICE_ADDRESSES,
      }),
    );
    cleanups.push(() => session.stop());
    await assert.rejects(session.start(), /audio mode comfystream .* not implemented/);
    const status = session.status();
    assert.equal(status.state, "failed");
    assert.equal(status.lastError?.reason, "AudioUnsupported");
  });
});

const realUnavailable = needsLoopbackNamespace || realComfyStreamUnavailable();
describe("audio passthrough through the real ComfyStream server", { skip: realUnavailable ?? false }, () => {
  test(
    "its processed video comes back and the input's AAC goes out beside it, unchanged and in sync",
    { timeout: 240_000 },
    async (t) => {
      const server = await startRealComfyStream();
      cleanups.push(() => server.stop());
      const run = await relayWithAudio({
        audio: "aac",
        seconds: 10,
        comfystream: { url: server.url, prompts: [REAL_WORKFLOWS.passthrough], connectTimeoutMs: 120_000 },
      });
      // The real server on a CPU drops frames of its own; the sound must not have gaps for that.
      await checkAudioCarried(t, run, "aac", { videoRatio: 0.5 });
    },
  );
});
