import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { execFile } from "node:child_process";
import { mkdir, readFile, symlink } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import {
  FfmpegProcess,
  forwardTranscodeArgs,
  resolveFfmpeg,
  resolveFfprobe,
  type FfmpegExit,
} from "../../relay-pod/src/media/ffmpeg.js";
import { findSps, isIdrAccessUnit, type SpsInfo } from "../../relay-pod/src/media/h264.js";
import { TsDemuxer } from "../../relay-pod/src/media/ts-demux.js";
import { makeH264Ts, makeTempDir, needsFfmpeg, runFfmpeg } from "./media-helpers.js";

const execFileAsync = promisify(execFile);
const ffmpegModuleUrl = new URL("../../relay-pod/src/media/ffmpeg.js", import.meta.url).href;

/** Runs resolveFfmpeg()/resolveFfprobe() in a fresh Node process with exactly the given environment. */
async function resolveInChild(
  env: Record<string, string>,
  which: "ffmpeg" | "ffprobe" = "ffmpeg",
): Promise<Record<string, string>> {
  const fn = which === "ffmpeg" ? "resolveFfmpeg" : "resolveFfprobe";
  const script =
    `import(${JSON.stringify(ffmpegModuleUrl)}).then((m) => m.${fn}()).then(` +
    `(r) => console.log(JSON.stringify(r)), (e) => console.log(JSON.stringify({ error: e.message })));`;
  const { stdout } = await execFileAsync(process.execPath, ["--input-type=module", "-e", script], {
    env,
    timeout: 30_000,
  });
  return JSON.parse(stdout) as Record<string, string>;
}

function waitForExit(process: FfmpegProcess): Promise<FfmpegExit> {
  return new Promise((resolve) => process.once("exit", resolve));
}

describe("resolveFfmpeg", needsFfmpeg, () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let emptyPath: string;
  let linkedFfmpeg: string;
  let pathWithFfmpeg: string;
  before(async () => {
    tmp = await makeTempDir("resolve");
    emptyPath = path.join(tmp.dir, "empty-bin");
    await mkdir(emptyPath);
    const linkDir = path.join(tmp.dir, "custom");
    await mkdir(linkDir);
    linkedFfmpeg = path.join(linkDir, "my-ffmpeg");
    const real = (await resolveFfmpeg()).path;
    await symlink(real, linkedFfmpeg);
    await symlink(path.join(path.dirname(real), "ffprobe"), path.join(linkDir, "ffprobe"));
    pathWithFfmpeg = path.join(tmp.dir, "path-bin");
    await mkdir(pathWithFfmpeg);
    await symlink(real, path.join(pathWithFfmpeg, "ffmpeg"));
  });
  after(() => tmp.cleanup());

  it("finds a working ffmpeg here, with its version, and caches it", async () => {
    const first = await resolveFfmpeg();
    assert.match(first.version, /^ffmpeg version /);
    assert.ok(["FFMPEG_BIN", "ffmpeg-static", "PATH"].includes(first.source));
    assert.equal(await resolveFfmpeg(), first, "the same cached object");
    const probe = await resolveFfprobe();
    assert.match(probe.version, /^ffprobe version /);
  });

  it("prefers FFMPEG_BIN over PATH", async () => {
    const result = await resolveInChild({ FFMPEG_BIN: linkedFfmpeg, PATH: "/usr/bin:/bin" });
    assert.equal(result.source, "FFMPEG_BIN");
    assert.equal(result.path, linkedFfmpeg);
    assert.match(result.version, /^ffmpeg version /);
  });

  it("uses ffmpeg on PATH when FFMPEG_BIN is unset or unusable", async () => {
    const unset = await resolveInChild({ PATH: emptyPath + ":" + pathWithFfmpeg });
    assert.equal(unset.error, undefined);
    if (unset.source === "PATH") assert.equal(unset.path, path.join(pathWithFfmpeg, "ffmpeg"));
    // ffmpeg-static is an optional dependency that is normally absent offline.
    assert.ok(unset.source === "PATH" || unset.source === "ffmpeg-static", JSON.stringify(unset));
    const broken = await resolveInChild({ FFMPEG_BIN: "/bin/false", PATH: "/usr/bin:/bin" });
    assert.ok(broken.source === "PATH" || broken.source === "ffmpeg-static", JSON.stringify(broken));
  });

  it("fails with a clear what-to-do message when nothing works", async () => {
    const result = await resolveInChild({
      FFMPEG_BIN: path.join(tmp.dir, "nowhere", "ffmpeg"),
      PATH: emptyPath,
    });
    assert.ok(result.error, JSON.stringify(result));
    assert.match(result.error, /apt-get install ffmpeg/);
    assert.match(result.error, /FFMPEG_BIN/);
    assert.match(result.error, /nowhere\/ffmpeg \(no such file\)/, "says what was tried");
  });

  it("finds ffprobe next to FFMPEG_BIN", async () => {
    const result = await resolveInChild({ FFMPEG_BIN: linkedFfmpeg, PATH: emptyPath }, "ffprobe");
    assert.equal(result.source, "next to ffmpeg");
    const missing = await resolveInChild({ PATH: emptyPath }, "ffprobe");
    assert.match(missing.error ?? "", /apt-get install ffmpeg/);
  });
});

describe("FfmpegProcess", needsFfmpeg, () => {
  let ffmpegPath: string;
  before(async () => {
    ffmpegPath = (await resolveFfmpeg()).path;
  });

  it("reports a failing command's exit code and stderr tail, and enforces the restart budget", async () => {
    const child = new FfmpegProcess({
      ffmpegPath,
      args: ["-hide_banner", "-i", "/nonexistent/input.ts", "-f", "null", "-"],
      maxRestarts: 2,
      restartWindowMs: 60_000,
      stderrTailBytes: 64,
    });
    let exit = waitForExit(child);
    child.start();
    let info = await exit;
    assert.notEqual(info.code, 0);
    assert.equal(info.requested, false);
    assert.match(child.stderrTail, /No such file or directory/);
    assert.ok(Buffer.byteLength(child.stderrTail) <= 64, "the tail is bounded");
    assert.equal(child.running, false);

    for (let i = 1; i <= 2; i++) {
      exit = waitForExit(child);
      assert.equal(await child.restart(), true, `restart ${i} is within budget`);
      info = await exit;
      assert.notEqual(info.code, 0);
      assert.equal(child.restartsInWindow, i);
    }
    assert.equal(await child.restart(), false, "the third restart within the window is refused");
    assert.equal(child.running, false);
  });

  it("the restart budget frees up as the window passes", async () => {
    // A fake clock: with a real 200 ms window, a slow ffmpeg start on a busy machine let the
    // "refused" restart through.
    let now = 1_000_000;
    const child = new FfmpegProcess({
      ffmpegPath,
      args: ["-hide_banner", "-version"],
      maxRestarts: 1,
      restartWindowMs: 60_000,
      now: () => now,
    });
    child.start();
    await waitForExit(child);
    const exit = waitForExit(child);
    assert.equal(await child.restart(), true);
    await exit;
    now += 59_999;
    assert.equal(await child.restart(), false, "refused within the window");
    assert.equal(child.restartsInWindow, 1);
    now += 1;
    assert.equal(child.restartsInWindow, 0, "the window has passed");
    const again = waitForExit(child);
    assert.equal(await child.restart(), true);
    assert.equal((await again).code, 0);
  });

  it("reports a binary that cannot be spawned", async () => {
    const child = new FfmpegProcess({ ffmpegPath: "/nonexistent/ffmpeg", args: [] });
    const exit = waitForExit(child);
    child.start();
    const info = await exit;
    assert.match(String(info.error?.message), /ENOENT/);
    assert.equal(await child.write(Buffer.from("x")), false);
  });

  it("applies stdin backpressure and stops with SIGTERM, resolving pending writes with false", async () => {
    const { dir, cleanup } = await makeTempDir("ffproc");
    try {
      const clip = await makeH264Ts(path.join(dir, "clip.ts"), { seconds: 2 });
      // -re reads at the native frame rate, so stdin backs up.
      const child = new FfmpegProcess({
        ffmpegPath,
        args: ["-hide_banner", "-re", "-f", "mpegts", "-i", "pipe:0", "-f", "null", "-"],
      });
      child.start();
      const writes: Promise<boolean>[] = [];
      for (let i = 0; i < 20; i++) writes.push(child.write(clip));
      assert.ok(child.stdinBacklogBytes > 0, "bytes wait in the stdin buffer");
      const settled: boolean[] = [];
      writes.forEach((write, i) => void write.then((value) => (settled[i] = value)));
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.ok(
        settled.filter((v) => v !== undefined).length < writes.length,
        "later writes wait for 'drain'",
      );
      const exit = waitForExit(child);
      await child.stop();
      const info = await exit;
      assert.equal(info.requested, true);
      const results = await Promise.all(writes);
      assert.ok(results.includes(false), "writes still pending at stop resolve false");
    } finally {
      await cleanup();
    }
  });

  it("kills with SIGKILL when SIGTERM is ignored", async () => {
    const child = new FfmpegProcess({
      ffmpegPath: process.execPath,
      args: ["-e", "process.on('SIGTERM', () => {}); setInterval(() => {}, 1000); console.error('ready')"],
      killGraceMs: 300,
    });
    const ready = new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (child.stderrTail.includes("ready")) {
          clearInterval(poll);
          resolve();
        }
      }, 20);
    });
    const exit = waitForExit(child);
    child.start();
    await ready;
    const started = Date.now();
    await child.stop();
    const info = await exit;
    assert.equal(info.signal, "SIGKILL");
    assert.ok(Date.now() - started >= 250);
  });
});

interface PipeCapture {
  /** Access units in output order. */
  frames: { pts: number; keyframe: boolean }[];
  payloadBytes: number;
  idrs: number;
  sps?: SpsInfo;
  /** All of ffmpeg's stdout. */
  output: Buffer;
}

/** Runs the forward transcode as the session does: TS in on stdin, TS out on stdout, demuxed. */
async function transcodeThroughPipe(
  input: Buffer,
  options: { width: number; height: number; frameRate: number; bitrate?: string; gopFrames?: number },
): Promise<PipeCapture> {
  const capture: PipeCapture = { frames: [], payloadBytes: 0, idrs: 0, output: Buffer.alloc(0) };
  const chunks: Buffer[] = [];
  const demuxer = new TsDemuxer({
    alignedSource: true,
    onAccessUnit: (au) => {
      capture.frames.push({ pts: au.pts!, keyframe: au.keyframe });
      capture.payloadBytes += au.data.length;
      if (isIdrAccessUnit(au.data)) capture.idrs++;
      capture.sps ??= findSps(au.data);
    },
  });
  const args = forwardTranscodeArgs({ bitrate: "500k", ...options });
  const child = new FfmpegProcess({ ffmpegPath: (await resolveFfmpeg()).path, args, stdout: "pipe" });
  child.on("stdout", (chunk: Buffer) => {
    chunks.push(chunk);
    demuxer.push(chunk);
  });
  const exit = waitForExit(child);
  child.start();
  for (let offset = 0; offset < input.length; offset += 32 * 1024) {
    assert.equal(await child.write(input.subarray(offset, offset + 32 * 1024)), true);
  }
  child.endInput();
  const info = await exit;
  assert.equal(info.code, 0, info.stderrTail);
  assert.equal(info.requested, true, "finishing its input after endInput() is an exit asked for");
  demuxer.flush();
  capture.output = Buffer.concat(chunks);
  return capture;
}

/** Byte offset just past the first video PES of a TS buffer: its last packet, before the next PES starts. */
function endOfFirstVideoPes(ts: Buffer): number {
  const pmtPid = 0x1000; // ffmpeg's mpegts muxer; PIDs below 0x20 are PAT and service information
  let videoPid = -1;
  let end = -1;
  for (let offset = 0; offset + 188 <= ts.length; offset += 188) {
    const pid = ((ts[offset + 1]! & 0x1f) << 8) | ts[offset + 2]!;
    const unitStart = (ts[offset + 1]! & 0x40) !== 0;
    if (pid < 0x20 || pid === pmtPid || pid === 0x1fff) continue;
    if (videoPid < 0) videoPid = pid;
    if (pid !== videoPid) continue;
    if (unitStart && end > 0) return end;
    end = offset + 188;
  }
  return end;
}

describe("forward transcode (ffmpeg -> MPEG-TS on a pipe)", needsFfmpeg, () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let input: Buffer;
  let inputPts: number[];
  before(async () => {
    tmp = await makeTempDir("forward");
    // High profile with B-frames and a 16:9 size: the transcode must normalise all of that.
    input = await makeH264Ts(path.join(tmp.dir, "in.ts"), {
      seconds: 3,
      size: "480x270",
      bFrames: 2,
      extra: ["-preset", "fast", "-profile:v", "high"],
    });
    inputPts = [];
    const demuxer = new TsDemuxer({ onAccessUnit: (au) => inputPts.push(au.pts!) });
    demuxer.push(input);
    demuxer.flush();
    inputPts.sort((a, b) => a - b);
  });
  after(() => tmp.cleanup());

  it("builds the §3.6 command line", () => {
    const args = forwardTranscodeArgs({ width: 512, height: 512, frameRate: 24 });
    const joined = args.join(" ");
    for (const expected of [
      "-f mpegts -i pipe:0",
      "-an",
      "-c:v libx264",
      "-preset superfast",
      "-tune zerolatency",
      "-threads 1",
      "-filter_threads 1",
      "-profile:v baseline",
      "-bf 0",
      "-g 24 -keyint_min 24",
      "-sc_threshold 0",
      "-copyts",
      "-f mpegts -muxdelay 0 -muxpreload 0 -omit_video_pes_length 0 -flush_packets 1",
      "scale=512:512:force_original_aspect_ratio=increase,crop=512:512",
    ]) {
      assert.ok(joined.includes(expected), `has "${expected}"`);
    }
    assert.equal(args.at(-1), "pipe:1");
    assert.throws(() => forwardTranscodeArgs({ width: 511, height: 512, frameRate: 24 }), RangeError);
    assert.throws(() => forwardTranscodeArgs({ width: 512, height: 512, frameRate: 0 }), RangeError);
  });

  it("produces constrained-baseline H.264 with ~1 s GOPs, every frame, each with its input PTS", async () => {
    const capture = await transcodeThroughPipe(input, { width: 256, height: 256, frameRate: 30 });
    assert.ok(capture.sps, "SPS sent in band");
    assert.equal(capture.sps.profileIdc, 66);
    assert.equal(capture.sps.constrainedBaseline, true);
    assert.equal(capture.sps.width, 256);
    assert.equal(capture.sps.height, 256);
    assert.equal(capture.sps.bFramesPossible, false);
    // A pipe loses nothing (the UDP hop it replaced dropped datagrams under load).
    assert.equal(capture.frames.length, inputPts.length, "every input frame comes out");
    assert.ok(capture.idrs >= 3 && capture.idrs <= 4, `IDRs: ${capture.idrs}`);
    const outputPts = capture.frames.map((frame) => frame.pts);
    assert.deepEqual(outputPts, inputPts, "output PTS = input PTS, in order");
    assert.ok(capture.frames[0]!.keyframe, "starts on a keyframe");
  });

  it("hands each frame over whole: the demuxer emits it at its last byte, not when the next one starts", async () => {
    const capture = await transcodeThroughPipe(input, { width: 160, height: 120, frameRate: 30 });
    const end = endOfFirstVideoPes(capture.output);
    assert.ok(end > 0 && end < capture.output.length, `first frame ends at byte ${end}`);
    const firstFrameOnly = capture.output.subarray(0, end);
    const seen = (alignedSource: boolean) => {
      let frames = 0;
      new TsDemuxer({ alignedSource, onAccessUnit: () => frames++ }).push(firstFrameOnly);
      return frames;
    };
    assert.equal(seen(true), 1, "with the PES length written, the first frame is complete");
    assert.equal(seen(false), 0, "an unaligned source waits for the next sync byte");
  });

  it("follows the session's bitrate and keyframe interval (RelaySession spec.video)", async (t) => {
    // What the relay session passes for keyframeIntervalSeconds 0.5 at 30 fps: a 15-frame GOP.
    const low = await transcodeThroughPipe(input, {
      width: 256,
      height: 256,
      frameRate: 30,
      bitrate: "100k",
      gopFrames: 15,
    });
    const high = await transcodeThroughPipe(input, {
      width: 256,
      height: 256,
      frameRate: 30,
      bitrate: "1000k",
    });
    const seconds = (inputPts.at(-1)! - inputPts[0]! + 3000) / 90_000;
    assert.ok(
      low.idrs >= 2 * seconds - 1 && low.idrs <= 2 * seconds + 1,
      `IDRs every 0.5 s: ${low.idrs} in ${seconds} s`,
    );
    const kbps = (capture: PipeCapture) => Math.round((capture.payloadBytes * 8) / seconds / 1000);
    t.diagnostic(`IDRs ${low.idrs} in ${seconds} s; 100k → ${kbps(low)}, 1000k → ${kbps(high)} kbit/s`);
    assert.ok(kbps(low) < 200, `100k asked, ${kbps(low)} kbit/s sent`);
    assert.ok(kbps(high) > 3 * kbps(low), `1000k asked, ${kbps(high)} kbit/s sent (100k: ${kbps(low)})`);
  });

  it("caps the frame rate by dropping frames, keeping input timestamps", async () => {
    const capture = await transcodeThroughPipe(input, { width: 160, height: 120, frameRate: 15 });
    const outputPts = capture.frames.map((frame) => frame.pts);
    const expected = inputPts.length / 2;
    assert.ok(
      Math.abs(outputPts.length - expected) <= 3,
      `about half the frames: ${outputPts.length} of ${inputPts.length}`,
    );
    const known = new Set(inputPts);
    for (const pts of outputPts) assert.ok(known.has(pts));
    for (let i = 1; i < outputPts.length; i++) assert.ok(outputPts[i] - outputPts[i - 1] >= 6000 - 1);
  });
  it("keeps off-grid input PTS exactly (no rounding to the frame rate)", async () => {
    // Every other frame 7 ms late: 630 ticks off the 1/30 s grid.
    const file = path.join(tmp.dir, "jitter.ts");
    await runFfmpeg([
      ...["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "1"],
      ...["-vf", "settb=1/90000,setpts='PTS+if(mod(N\\,2)\\,0.007/TB\\,0)'", "-fps_mode", "passthrough"],
      ...[
        "-enc_time_base",
        "1:90000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-bf",
        "0",
        "-f",
        "mpegts",
        file,
      ],
    ]);
    const jittered = await readFile(file);
    const pts: number[] = [];
    const demuxer = new TsDemuxer({ onAccessUnit: (au) => pts.push(au.pts!) });
    demuxer.push(jittered);
    demuxer.flush();
    assert.ok(
      pts.some((value) => (value - pts[0]) % 3000 !== 0),
      "the input really is off-grid",
    );
    const capture = await transcodeThroughPipe(jittered, { width: 160, height: 120, frameRate: 30 });
    const outputPts = capture.frames.map((frame) => frame.pts);
    assert.equal(outputPts.length, pts.length);
    const known = new Set(pts);
    for (const value of outputPts) assert.ok(known.has(value), `output PTS ${value} is an input PTS`);
  });
});
