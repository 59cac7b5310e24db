import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { execFile } from "node:child_process";
import dgram from "node:dgram";
import { mkdir, readFile, symlink } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import {
  FfmpegProcess,
  forwardTranscodeArgs,
  isRtcpPacket,
  parseRtcpSenderReport,
  resolveFfmpeg,
  resolveFfprobe,
  rtpBaseFromSenderReport,
  rtpTimestampToPts,
  type FfmpegExit,
} from "../../relay-pod/src/media/ffmpeg.js";
import { NAL_IDR, NAL_SPS, parseSps, type SpsInfo } from "../../relay-pod/src/media/h264.js";
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

/** H.264 NAL units in one RTP payload (single NAL, STAP-A, FU-A start). */
function nalsInRtpPayload(payload: Buffer): { type: number; nal?: Buffer }[] {
  const type = payload[0] & 0x1f;
  if (type >= 1 && type <= 23) return [{ type, nal: payload }];
  if (type === 24) {
    const nals: { type: number; nal?: Buffer }[] = [];
    for (let offset = 1; offset + 2 <= payload.length;) {
      const size = payload.readUInt16BE(offset);
      const nal = payload.subarray(offset + 2, offset + 2 + size);
      nals.push({ type: nal[0] & 0x1f, nal });
      offset += 2 + size;
    }
    return nals;
  }
  if (type === 28 && payload[1] & 0x80) return [{ type: payload[1] & 0x1f }];
  return [];
}

interface RtpCapture {
  packets: number;
  payloadBytes: number;
  payloadTypes: Set<number>;
  ssrcs: Set<number>;
  frameTimestamps: number[];
  idrTimestamps: Set<number>;
  sps?: SpsInfo;
  senderReports: ReturnType<typeof parseRtcpSenderReport>[];
}

async function transcodeToRtp(
  input: Buffer,
  options: { width: number; height: number; frameRate: number; bitrate?: string; gopFrames?: number },
  /** RTCP on the RTP port (RFC 5761 style), as the session runs it. */
  sharedPort = false,
): Promise<RtpCapture> {
  const rtp = dgram.createSocket({ type: "udp4", recvBufferSize: 8 * 1024 * 1024 });
  const rtcp = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => rtp.bind(0, "127.0.0.1", resolve));
  await new Promise<void>((resolve) => rtcp.bind(0, "127.0.0.1", resolve));
  const capture: RtpCapture = {
    packets: 0,
    payloadBytes: 0,
    payloadTypes: new Set(),
    ssrcs: new Set(),
    frameTimestamps: [],
    idrTimestamps: new Set(),
    senderReports: [],
  };
  rtp.on("message", (packet) => {
    if (isRtcpPacket(packet)) {
      assert.ok(sharedPort, "RTCP only arrives on the RTP port when asked for");
      capture.senderReports.push(parseRtcpSenderReport(packet));
      return;
    }
    capture.packets++;
    capture.payloadBytes += packet.length - 12;
    capture.payloadTypes.add(packet[1] & 0x7f);
    capture.ssrcs.add(packet.readUInt32BE(8));
    const timestamp = packet.readUInt32BE(4);
    const headerLength = 12 + 4 * (packet[0] & 0x0f);
    for (const { type, nal } of nalsInRtpPayload(packet.subarray(headerLength))) {
      if (type === NAL_SPS && nal && capture.sps === undefined) capture.sps = parseSps(nal);
      if (type === NAL_IDR) capture.idrTimestamps.add(timestamp);
    }
    if (packet[1] & 0x80) capture.frameTimestamps.push(timestamp);
  });
  rtcp.on("message", (packet) => {
    if (isRtcpPacket(packet)) capture.senderReports.push(parseRtcpSenderReport(packet));
  });
  try {
    const args = forwardTranscodeArgs({
      bitrate: "500k",
      ...options,
      rtpPort: (rtp.address() as { port: number }).port,
      rtcpPort: ((sharedPort ? rtp : rtcp).address() as { port: number }).port,
      ssrc: 0x12345678,
    });
    const child = new FfmpegProcess({ ffmpegPath: (await resolveFfmpeg()).path, args });
    const exit = waitForExit(child);
    child.start();
    for (let offset = 0; offset < input.length; offset += 32 * 1024) {
      assert.equal(await child.write(input.subarray(offset, offset + 32 * 1024)), true);
    }
    child.endInput();
    const info = await exit;
    assert.equal(info.code, 0, info.stderrTail);
    assert.equal(info.requested, true, "finishing its input after endInput() is an exit asked for");
    await new Promise((resolve) => setTimeout(resolve, 100)); // let the last datagrams arrive
  } finally {
    rtp.close();
    rtcp.close();
  }
  return capture;
}

describe("forward transcode (ffmpeg -> RTP on loopback)", needsFfmpeg, () => {
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
    const args = forwardTranscodeArgs({ width: 512, height: 512, frameRate: 24, rtpPort: 5004 });
    const joined = args.join(" ");
    for (const expected of [
      "-f mpegts -i pipe:0",
      "-an",
      "-c:v libx264",
      "-preset veryfast",
      "-tune zerolatency",
      "-profile:v baseline",
      "-bf 0",
      "-g 24 -keyint_min 24",
      "-sc_threshold 0",
      "-copyts",
      "-f rtp",
      "-payload_type 96",
      "scale=512:512:force_original_aspect_ratio=increase,crop=512:512",
    ]) {
      assert.ok(joined.includes(expected), `has "${expected}"`);
    }
    assert.equal(args.at(-1), "rtp://127.0.0.1:5004?pkt_size=1200");
    assert.throws(
      () => forwardTranscodeArgs({ width: 511, height: 512, frameRate: 24, rtpPort: 5004 }),
      RangeError,
    );
    assert.throws(
      () => forwardTranscodeArgs({ width: 512, height: 512, frameRate: 0, rtpPort: 5004 }),
      RangeError,
    );
  });

  it("produces constrained-baseline H.264 RTP with ~1 s GOPs whose timestamps map back to the input PTS", async () => {
    const capture = await transcodeToRtp(input, { width: 256, height: 256, frameRate: 30 });
    assert.ok(capture.packets > 0);
    assert.deepEqual([...capture.payloadTypes], [96]);
    assert.deepEqual([...capture.ssrcs], [0x12345678]);
    assert.ok(capture.sps, "SPS sent in band");
    assert.equal(capture.sps.profileIdc, 66);
    assert.equal(capture.sps.constrainedBaseline, true);
    assert.equal(capture.sps.width, 256);
    assert.equal(capture.sps.height, 256);
    assert.equal(capture.sps.bFramesPossible, false);
    // UDP on loopback may drop a datagram under load; allow a little.
    assert.ok(
      capture.frameTimestamps.length >= inputPts.length * 0.9,
      `frames: ${capture.frameTimestamps.length}/${inputPts.length}`,
    );
    assert.ok(
      capture.idrTimestamps.size >= 3 && capture.idrTimestamps.size <= 4,
      `IDRs: ${capture.idrTimestamps.size}`,
    );

    const report = capture.senderReports[0];
    assert.ok(report, "a sender report arrived");
    const base = rtpBaseFromSenderReport(report);
    const outputPts = capture.frameTimestamps.map((ts) => rtpTimestampToPts(ts, base, inputPts[0]));
    const known = new Set(inputPts);
    for (const pts of outputPts) assert.ok(known.has(pts), `output PTS ${pts} is an input PTS`);
    assert.equal(outputPts[0], inputPts[0], "the first frame keeps the first input PTS");
    for (let i = 1; i < outputPts.length; i++) assert.ok(outputPts[i] > outputPts[i - 1], "no reordering");
  });

  it("follows the session's bitrate and keyframe interval (RelaySession spec.video)", async (t) => {
    // What the relay session passes for keyframeIntervalSeconds 0.5 at 30 fps: a 15-frame GOP.
    const low = await transcodeToRtp(input, {
      width: 256,
      height: 256,
      frameRate: 30,
      bitrate: "100k",
      gopFrames: 15,
    });
    const high = await transcodeToRtp(input, { width: 256, height: 256, frameRate: 30, bitrate: "1000k" });
    const seconds = (inputPts.at(-1)! - inputPts[0]! + 3000) / 90_000;
    assert.ok(
      low.idrTimestamps.size >= 2 * seconds - 1 && low.idrTimestamps.size <= 2 * seconds + 1,
      `IDRs every 0.5 s: ${low.idrTimestamps.size} in ${seconds} s`,
    );
    const kbps = (capture: RtpCapture) => Math.round((capture.payloadBytes * 8) / seconds / 1000);
    t.diagnostic(
      `IDRs ${low.idrTimestamps.size} in ${seconds} s; 100k → ${kbps(low)}, 1000k → ${kbps(high)} kbit/s`,
    );
    assert.ok(kbps(low) < 200, `100k asked, ${kbps(low)} kbit/s sent`);
    assert.ok(kbps(high) > 3 * kbps(low), `1000k asked, ${kbps(high)} kbit/s sent (100k: ${kbps(low)})`);
  });

  it("caps the frame rate by dropping frames, keeping input timestamps (RTCP on the RTP port)", async () => {
    const capture = await transcodeToRtp(input, { width: 160, height: 120, frameRate: 15 }, true);
    const report = capture.senderReports[0];
    assert.ok(report);
    const base = rtpBaseFromSenderReport(report);
    const outputPts = capture.frameTimestamps.map((ts) => rtpTimestampToPts(ts, base, inputPts[0]));
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
    const capture = await transcodeToRtp(jittered, { width: 160, height: 120, frameRate: 30 });
    const base = rtpBaseFromSenderReport(capture.senderReports[0]!);
    const outputPts = capture.frameTimestamps.map((ts) => rtpTimestampToPts(ts, base, pts[0]));
    assert.ok(outputPts.length >= pts.length * 0.9);
    const known = new Set(pts);
    for (const value of outputPts) assert.ok(known.has(value), `output PTS ${value} is an input PTS`);
  });
});

describe("rtpTimestampToPts", () => {
  it("undoes the base and picks the right 2^32 wrap", () => {
    assert.equal(rtpTimestampToPts(1000 + 126000, 1000, 126000), 126000);
    assert.equal(rtpTimestampToPts((0xffffff00 + 500) >>> 0, 0xffffff00, 0), 500);
    const high = 2 ** 32 + 1234;
    assert.equal(rtpTimestampToPts((7 + high) >>> 0, 7, high - 3000), high);
    assert.equal(rtpTimestampToPts(7 + 1234, 7, 2 ** 33 - 100), 1234, "across the 33-bit wrap");
  });
});
