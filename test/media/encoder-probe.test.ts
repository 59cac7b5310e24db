// The GPU codec choice with the real ffmpeg of this machine (Debian's, h264_nvenc compiled in, no
// GPU): auto falls back to x264 and says why, nvenc forced fails with that reason, x264 forced runs
// no probe; and the forward transcode's arguments for each encoder and decoder.
import assert from "node:assert/strict";
import { chmod, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { spawn } from "node:child_process";
import {
  EncoderUnavailableError,
  chooseVideoCodecs,
  clearEncoderProbeCache,
  firstErrorLine,
  probeGpuCodecs,
} from "../../relay-pod/src/media/encoder-probe.js";
import {
  forwardTranscodeArgs,
  videoDecoderArgs,
  videoEncoderArgs,
} from "../../relay-pod/src/media/ffmpeg-forward.js";
import { FFMPEG, makeTempDir, needsFfmpeg } from "./media-helpers.js";

/** This machine has no NVIDIA GPU; on one that has, these tests say so and skip. */
const hasNvidiaGpu = await probeGpuCodecs(FFMPEG).then((p) => p.nvenc.ok);
clearEncoderProbeCache();
const needsNoGpu = { skip: hasNvidiaGpu ? "this machine has a working NVENC" : false };

describe("chooseVideoCodecs on a machine without a GPU", needsFfmpeg, () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  before(async () => (tmp = await makeTempDir("encoder-probe")));
  after(() => tmp.cleanup());
  beforeEach(() => clearEncoderProbeCache());

  it(
    "auto: x264 and software decoding, the reason naming the missing CUDA device and ffmpeg's error",
    needsNoGpu,
    async () => {
      const started = performance.now();
      const choice = await chooseVideoCodecs("auto", { ffmpegPath: FFMPEG });
      const elapsedMs = performance.now() - started;
      assert.equal(choice.encoder, "x264");
      assert.equal(choice.decoder, "software");
      assert.match(choice.reason, /^x264: no CUDA device \(h264_nvenc: .+\)$/);
      assert.match(choice.reason, /libcuda|CUDA/);
      assert.doesNotMatch(choice.reason, /0x[0-9a-f]{6,}/, "no pointer addresses from ffmpeg's log prefix");
      assert.ok(elapsedMs < 5000, `the probe took ${elapsedMs} ms`);
    },
  );

  it("nvenc forced: EncoderUnavailableError with the same reason", needsNoGpu, async () => {
    await assert.rejects(chooseVideoCodecs("nvenc", { ffmpegPath: FFMPEG }), (err: unknown) => {
      assert.ok(err instanceof EncoderUnavailableError);
      assert.match(
        err.message,
        /encoder nvenc was required but NVENC is unusable: no CUDA device \(h264_nvenc: /,
      );
      return true;
    });
  });

  it("x264 forced runs no ffmpeg at all; auto probes once per process and binary", async () => {
    // A stand-in ffmpeg that logs each run and fails like ffmpeg without a GPU.
    const log = path.join(tmp.dir, "runs.log");
    const fake = path.join(tmp.dir, "ffmpeg");
    await writeFile(
      fake,
      `#!/bin/sh\necho run >> ${log}\necho '[h264_nvenc @ 0x55d0c0ffee00] Cannot load libcuda.so.1' >&2\nexit 1\n`,
    );
    await chmod(fake, 0o755);
    const runs = async () => (await readFile(log, "utf8").catch(() => "")).split("\n").filter(Boolean).length;

    const forced = await chooseVideoCodecs("x264", { ffmpegPath: fake });
    assert.deepEqual(forced, {
      encoder: "x264",
      decoder: "software",
      reason: "x264: forced (encoder x264), no GPU probe",
    });
    assert.equal(await runs(), 0, "no probe for x264");

    const auto = await chooseVideoCodecs("auto", { ffmpegPath: fake });
    assert.equal(auto.reason, "x264: no CUDA device (h264_nvenc: Cannot load libcuda.so.1)");
    await chooseVideoCodecs("auto", { ffmpegPath: fake });
    await assert.rejects(chooseVideoCodecs("nvenc", { ffmpegPath: fake }), EncoderUnavailableError);
    assert.equal(await runs(), 1, "one test encode, cached for the process");
  });

  it("reports an ffmpeg that hangs as a timeout, and one that is missing by name", async () => {
    const hang = path.join(tmp.dir, "ffmpeg-hang");
    await writeFile(hang, "#!/bin/sh\nexec sleep 30\n");
    await chmod(hang, 0o755);
    const slow = await chooseVideoCodecs("auto", { ffmpegPath: hang, timeoutMs: 300 });
    assert.equal(slow.encoder, "x264");
    assert.match(slow.reason, /^x264: NVENC test encode timed out \(timed out after 300 ms\)$/);
    const missing = await chooseVideoCodecs("auto", { ffmpegPath: path.join(tmp.dir, "nope") });
    assert.match(missing.reason, /^x264: NVENC test encode failed \(.*nope: no such file\)$/);
  });

  it("firstErrorLine keeps ffmpeg's component and drops the address", () => {
    assert.equal(
      firstErrorLine("\n[AVHWDeviceContext @ 0x5585597edbc0] Cannot load libcuda.so.1\nmore"),
      "AVHWDeviceContext: Cannot load libcuda.so.1",
    );
    assert.equal(firstErrorLine(""), "ffmpeg failed without a message");
  });
});

describe("forward transcode arguments per encoder and decoder", needsFfmpeg, () => {
  const base = { width: 512, height: 512, frameRate: 30, rtpPort: 5004, gopFrames: 30, bitrate: "2000k" };

  it("x264 (the default): exactly the libx264 line as before, no hwaccel", () => {
    const implicit = forwardTranscodeArgs(base);
    const explicit = forwardTranscodeArgs({ ...base, codecs: { encoder: "x264", decoder: "software" } });
    assert.deepEqual(implicit, explicit);
    const joined = implicit.join(" ");
    assert.ok(
      joined.includes(
        "-c:v libx264 -preset superfast -tune zerolatency -threads 1 -profile:v baseline -pix_fmt yuv420p -bf 0 " +
          "-g 30 -keyint_min 30 -sc_threshold 0 -b:v 2000k",
      ),
      joined,
    );
    assert.ok(!joined.includes("hwaccel"));
  });

  it("nvenc + nvdec: h264_nvenc low-latency, no B-frames, the same GOP and bitrate; -hwaccel cuda before the input", () => {
    const args = forwardTranscodeArgs({
      ...base,
      gopFrames: 15,
      codecs: { encoder: "nvenc", decoder: "nvdec" },
    });
    const joined = args.join(" ");
    for (const expected of [
      "-c:v h264_nvenc",
      "-preset p1 -tune ull",
      "-zerolatency 1",
      "-delay 0",
      "-rc cbr",
      "-profile:v baseline",
      "-bf 0",
      "-g 15",
      "-b:v 2000k",
      "-enc_time_base 1:90000",
    ]) {
      assert.ok(joined.includes(expected), `has "${expected}" in ${joined}`);
    }
    assert.ok(!joined.includes("libx264") && !joined.includes("-sc_threshold"));
    assert.ok(
      args.indexOf("-hwaccel") >= 0 && args.indexOf("-hwaccel") < args.indexOf("-i"),
      "hwaccel is an input option",
    );
    assert.equal(args[args.indexOf("-hwaccel") + 1], "cuda");
    assert.ok(!args.includes("-hwaccel_output_format"), "frames come back to system memory for the filters");
    assert.deepEqual(videoDecoderArgs("software"), []);
    assert.deepEqual(videoEncoderArgs("nvenc", 1).slice(-2), ["-g", "1"], "intra-only keeps working");
  });

  it(
    "this ffmpeg accepts every NVENC and NVDEC option: without a GPU it stops at CUDA, not at an option",
    needsNoGpu,
    async () => {
      const args = forwardTranscodeArgs({ ...base, codecs: { encoder: "nvenc", decoder: "nvdec" } });
      // Feed it one second of TS and send the output to null instead of RTP (its last "-f").
      const nullArgs = [...args.slice(0, args.lastIndexOf("-f")), "-f", "null", "-"];
      const input = await new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const child = spawn(FFMPEG, [
          ...["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "1"],
          ...["-c:v", "libx264", "-f", "mpegts", "pipe:1"],
        ]);
        child.stdout.on("data", (d: Buffer) => chunks.push(d));
        child.on("error", reject);
        child.on("close", () => resolve(Buffer.concat(chunks)));
      });
      const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        let text = "";
        const child = spawn(FFMPEG, nullArgs);
        child.stderr.on("data", (d: Buffer) => (text += d.toString()));
        child.stdin.on("error", () => undefined);
        child.stdin.end(input);
        child.on("close", (c) => resolve({ code: c, stderr: text }));
      });
      assert.notEqual(code, 0);
      assert.match(stderr, /libcuda|CUDA/, stderr);
      assert.doesNotMatch(
        stderr,
        /Unrecognized option|Option not found|Error setting option|Unable to parse option/i,
        stderr,
      );
    },
  );
});
