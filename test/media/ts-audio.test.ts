// The input's audio as the relay reads it (media/ts-audio.ts) and writes it back (ts-mux.ts), on
// real MPEG-TS from ffmpeg: AAC in ADTS and LATM, Opus (found by its registration descriptor, which
// the output's PMT repeats), a stream whose PMT lists audio before video, damaged ADTS frames
// (counted and skipped, the rest kept), and codecs that are recognised but not carried.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CARRIED_AUDIO_CODECS,
  TsAudioDemuxer,
  keepWholeAdtsFrames,
  type AudioPes,
  type AudioStreamInfo,
} from "../../relay-pod/src/media/ts-audio.js";
import { TsMuxer } from "../../relay-pod/src/media/ts-mux.js";
import { makeTempDir, runFfmpeg, splitRandomly } from "./media-helpers.js";

const execFileAsync = promisify(execFile);
const FFPROBE = process.env.FFPROBE_BIN ?? "ffprobe";

let dir: string;
let cleanup: () => Promise<void>;
before(async () => ({ dir, cleanup } = await makeTempDir("ts-audio-")));
after(async () => cleanup?.());

/** 2 s of test pattern and a 440 Hz tone, audio encoded with `audioArgs`, as MPEG-TS. */
async function clip(name: string, audioArgs: string[], extra: string[] = []): Promise<Buffer> {
  const file = path.join(dir, `${name}.ts`);
  await runFfmpeg([
    ...[
      "-f",
      "lavfi",
      "-i",
      "testsrc2=size=160x120:rate=30",
      "-f",
      "lavfi",
      "-i",
      "sine=frequency=440:sample_rate=48000",
    ],
    ...[
      "-t",
      "2",
      "-c:v",
      "libx264",
      "-preset",
      "ultrafast",
      "-g",
      "30",
      "-bf",
      "0",
      "-ac",
      "2",
      ...audioArgs,
    ],
    ...extra,
    ...["-f", "mpegts", file],
  ]);
  return readFile(file);
}

function demux(
  ts: Buffer,
  chunks = [ts],
): { pes: AudioPes[]; stream: AudioStreamInfo | undefined; demuxer: TsAudioDemuxer } {
  const pes: AudioPes[] = [];
  const demuxer = new TsAudioDemuxer((p) => pes.push(p));
  for (const chunk of chunks) demuxer.push(chunk);
  demuxer.flush();
  return { pes, stream: demuxer.stream, demuxer };
}

describe("TsAudioDemuxer", () => {
  test("AAC in ADTS: every frame, with PTS, however the bytes are chunked", async () => {
    const ts = await clip("adts", ["-c:a", "aac"]);
    const whole = demux(ts);
    assert.equal(whole.stream?.codec, "aac");
    assert.equal(whole.stream?.streamType, 0x0f);
    // 2 s at 48 kHz in 1024-sample frames: 94 (ffmpeg's priming frame included).
    assert.ok(
      whole.demuxer.stats.frames >= 93 && whole.demuxer.stats.frames <= 96,
      `${whole.demuxer.stats.frames}`,
    );
    assert.equal(whole.demuxer.stats.corruptFrames, 0);
    assert.ok(whole.pes.every((p) => p.pts !== undefined && p.streamId === 0xc0));
    const chunked = demux(ts, splitRandomly(ts, 500, 3));
    assert.deepEqual(
      chunked.pes.map((p) => [p.pts, p.payload.length]),
      whole.pes.map((p) => [p.pts, p.payload.length]),
    );
  });

  test("AAC in LATM and Opus are recognised; Opus by its registration descriptor", async () => {
    const latm = demux(await clip("latm", ["-c:a", "aac"], ["-mpegts_flags", "latm"]));
    assert.equal(latm.stream?.codec, "aac-latm");
    assert.ok(latm.pes.length > 10);
    const opus = demux(await clip("opus", ["-c:a", "libopus"]));
    assert.equal(opus.stream?.codec, "opus");
    assert.equal(opus.stream?.streamType, 0x06);
    assert.ok(
      opus.stream!.descriptors.includes(Buffer.from("Opus")),
      "the descriptors are kept for the output",
    );
    assert.ok(opus.pes.length > 10 && opus.pes.every((p) => p.streamId === 0xbd));
  });

  test("audio listed before video in the PMT is found all the same", async () => {
    const ts = await clip("order", ["-c:a", "aac"], ["-map", "1:a", "-map", "0:v"]);
    const { stream, pes } = demux(ts);
    assert.equal(stream?.codec, "aac");
    assert.ok(pes.length > 10);
  });

  test("MP2 and AC-3 are recognised, so the relay can say why it does not carry them", async () => {
    for (const [codec, args] of [
      ["mp2", ["-c:a", "mp2"]],
      ["ac3", ["-c:a", "ac3"]],
    ] as const) {
      const { stream } = demux(await clip(codec, [...args]));
      assert.equal(stream?.codec, codec);
      assert.equal(CARRIED_AUDIO_CODECS.has(stream!.codec), false);
    }
  });

  test("a damaged ADTS frame is counted and skipped; the frames around it are kept whole", () => {
    const frame = (fill: number) => {
      const length = 100;
      const bytes = Buffer.alloc(length, fill);
      bytes.set([
        0xff,
        0xf1,
        0x50,
        0x80 | (length >> 11),
        (length >> 3) & 0xff,
        ((length & 7) << 5) | 0x1f,
        0xfc,
      ]);
      return bytes;
    };
    const damaged = Buffer.from(frame(2));
    damaged[0] = 0x12; // sync lost
    const payload = Buffer.concat([frame(1), damaged, frame(3), frame(4).subarray(0, 60)]);
    const { kept, frames, skipped } = keepWholeAdtsFrames(payload);
    assert.equal(frames, 2);
    assert.equal(skipped, 2, "the damaged frame and the truncated last one");
    assert.deepEqual(kept, Buffer.concat([frame(1), frame(3)]));
  });
});

describe("TsMuxer with audio", () => {
  test("remuxed Opus and AAC come out with their codec, PTS and payload unchanged", async () => {
    for (const [name, args] of [
      ["aac-out", ["-c:a", "aac"]],
      ["opus-out", ["-c:a", "libopus"]],
    ] as const) {
      const input = demux(await clip(name, [...args]));
      const muxer = new TsMuxer();
      muxer.setAudio({ streamType: input.stream!.streamType, descriptors: input.stream!.descriptors });
      const out = Buffer.concat(
        input.pes.map((p) => muxer.muxAudioPes({ payload: p.payload, pts: p.pts!, streamId: p.streamId })),
      );
      // A PMT first (it comes with the first video keyframe in the relay).
      const withPsi = Buffer.concat([
        muxer.muxAccessUnit(
          {
            annexB: Buffer.from([0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00]),
            pts: input.pes[0]!.pts!,
            keyframe: true,
          },
          true,
        ),
        out,
      ]);
      const again = demux(withPsi);
      assert.equal(again.stream?.codec, input.stream!.codec);
      assert.deepEqual(
        again.pes.map((p) => [p.pts, p.payload.toString("base64")]),
        input.pes.map((p) => [p.pts, p.payload.toString("base64")]),
      );
      const file = path.join(dir, `${name}.ts`);
      await writeFile(file, withPsi);
      const { stdout } = await execFileAsync(FFPROBE, [
        ...[
          "-v",
          "error",
          "-select_streams",
          "a:0",
          "-show_entries",
          "stream=codec_name",
          "-of",
          "csv=p=0",
          file,
        ],
      ]);
      assert.equal(
        stdout.trim().split(/\s+/)[0],
        name.startsWith("opus") ? "opus" : "aac",
        "ffprobe reads it",
      );
    }
  });
});
