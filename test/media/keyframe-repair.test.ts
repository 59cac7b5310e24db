// The return path's keyframe repair with real ffmpeg. The peer streams here imitate what the real
// ComfyStream (aiortc 1.4.0, PLIs ignored, x264's 250-frame GOP) and a well-behaved peer send back.
import assert from "node:assert/strict";
import path from "node:path";
import { writeFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import {
  KeyframeRepair,
  reEncodeArgs,
  type KeyframeRepairStatus,
  type ReturnedFrame,
} from "../../relay-pod/src/media/keyframe-repair.js";
import { TsDemuxer, type VideoAccessUnit } from "../../relay-pod/src/media/ts-demux.js";
import { TsMuxer } from "../../relay-pod/src/media/ts-mux.js";
import { FFMPEG, makeH264Ts, makeTempDir, needsFfmpeg, probeDecodedFrames } from "./media-helpers.js";
import { waitFor } from "../infra/wait-for.js";

const FPS = 30;
const FRAME_TICKS = 90_000 / FPS;

function demux(data: Buffer): VideoAccessUnit[] {
  const aus: VideoAccessUnit[] = [];
  const demuxer = new TsDemuxer({ onAccessUnit: (au) => aus.push(au) });
  demuxer.push(data);
  demuxer.flush();
  return aus;
}

/** Feeds frames at (about) their real pace, as they come back from a peer. */
async function feedPaced(repair: KeyframeRepair, frames: ReturnedFrame[], speedup = 4): Promise<void> {
  for (const frame of frames) {
    repair.push(frame);
    await new Promise((resolve) => setTimeout(resolve, 1000 / FPS / speedup));
  }
}

/** A KeyframeRepair for 1 s segments that collects what it emits into `out`. */
function repairInto(
  out: ReturnedFrame[],
  onSourceChange?: (status: KeyframeRepairStatus) => void,
): KeyframeRepair {
  return new KeyframeRepair({
    segmentDurationSec: 1,
    bitrateKbps: 1000,
    ffmpegPath: FFMPEG,
    emit: (frame) => out.push(frame),
    ...(onSourceChange ? { onSourceChange } : {}),
  });
}

function idrGapsSec(frames: ReturnedFrame[]): number[] {
  const idrs = frames.filter((frame) => frame.keyframe).map((frame) => frame.pts);
  return idrs.slice(1).map((pts, index) => (pts - idrs[index]!) / 90_000);
}

describe("KeyframeRepair (return path IDRs)", needsFfmpeg, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let longGop: ReturnedFrame[];
  let shortGop: ReturnedFrame[];

  before(async () => {
    ({ dir, cleanup } = await makeTempDir("keyframe-repair-"));
    // 8 s with one IDR (x264's GOP of 250, what the real ComfyStream returns) ...
    const long = await makeH264Ts(path.join(dir, "long-gop.ts"), { seconds: 8, gop: 250, size: "256x256" });
    longGop = demux(long).map((au) => ({ annexB: au.data, pts: au.pts!, keyframe: au.keyframe }));
    // ... and 4 s with an IDR every second (a peer that answers PLIs).
    const short = await makeH264Ts(path.join(dir, "short-gop.ts"), { seconds: 4, gop: FPS, size: "256x256" });
    shortGop = demux(short).map((au) => ({ annexB: au.data, pts: au.pts!, keyframe: au.keyframe }));
  });
  after(async () => cleanup?.());

  it("the inputs are what they claim: one IDR in 8 s, and one a second", () => {
    assert.equal(longGop.filter((frame) => frame.keyframe).length, 1);
    assert.equal(shortGop.filter((frame) => frame.keyframe).length, 4);
  });

  it("a peer that answers keyframe requests is passed on untouched", async () => {
    const out: ReturnedFrame[] = [];
    const repair = repairInto(out);
    await feedPaced(repair, shortGop, 20);
    await repair.close();
    assert.equal(repair.status().source, "peer");
    assert.equal(out.length, shortGop.length);
    assert.ok(
      out.every((frame, index) => frame.annexB === shortGop[index]!.annexB),
      "the same bytes",
    );
    assert.equal(repair.status().peerMaxIdrGapSec, 1);
  });

  it("a peer without IDRs is re-encoded: every frame out once, in order, PTS kept, an IDR every segment", async () => {
    const out: ReturnedFrame[] = [];
    const changes: string[] = [];
    const repair = repairInto(out, (status) => changes.push(status.source));
    await feedPaced(repair, longGop);
    await repair.close(3000);
    const status = repair.status();
    assert.equal(status.source, "re-encode");
    assert.match(status.reason ?? "", /no IDR for 2\.5 s/);
    assert.deepEqual(changes, ["re-encode"]);

    const ptsOut = out.map((frame) => frame.pts);
    assert.deepEqual(
      ptsOut,
      [...ptsOut].sort((a, b) => a - b),
      "output PTS rises",
    );
    assert.equal(new Set(ptsOut).size, ptsOut.length, "no frame twice");
    // The handover may skip the frames between the last one passed on and the re-encoder's IDR.
    const missing = longGop.length - out.length;
    assert.ok(missing >= 0 && missing <= 1, `${missing} frames lost at the handover`);
    assert.ok(status.reEncodedFrames > longGop.length * 0.6, `re-encoded ${status.reEncodedFrames}`);
    const gaps = idrGapsSec(out);
    assert.ok(gaps.length >= 5, `IDR gaps ${gaps.join(", ")}`);
    // Before the switch the peer's one IDR covers 2.5 s; afterwards one IDR per second.
    assert.ok(
      gaps.slice(1).every((gap) => Math.abs(gap - 1) < 1.5 / FPS),
      `IDR gaps after the switch: ${gaps.join(", ")}`,
    );
    // The switch comes on the first frame past 2.5 s, the forced IDR on the frame after it.
    assert.ok(gaps[0]! <= 2.5 + 2 / FPS, `first gap ${gaps[0]}`);

    // The output decodes cleanly end to end: the handover broke no reference.
    const muxer = new TsMuxer();
    const file = path.join(dir, "repaired.ts");
    await writeFile(file, Buffer.concat(out.map((frame, index) => muxer.muxAccessUnit(frame, index === 0))));
    const decoded = await probeDecodedFrames(file);
    assert.equal(decoded.frames.length, out.length, `decoded ${decoded.frames.length} of ${out.length}`);
    assert.equal(decoded.stderr.trim(), "", "no decoder errors");
  });

  it("while re-encoding, each frame comes out without waiting for the next one to be fed", async () => {
    // The re-encoder's output was demuxed as if it could end mid-packet, so each frame's last TS
    // packet waited for the next frame: a whole frame (33 ms at 30 fps) of latency on every frame
    // returned through the real ComfyStream (bench-results/relay-real-comfystream.md).
    const out: ReturnedFrame[] = [];
    const repair = repairInto(out);
    const start = 100; // past 2.5 s without an IDR: re-encoding by then
    await feedPaced(repair, longGop.slice(0, start));
    await waitFor(() => repair.status().reEncodedFrames > 0, 10_000, "re-encoder output");
    await waitFor(() => out.at(-1)?.pts === longGop[start - 1]!.pts, 10_000, "the frames fed so far");
    for (const frame of longGop.slice(start, start + 8)) {
      repair.push(frame);
      // Stop and wait: the next frame is fed only once this one is out.
      await waitFor(
        () => out.at(-1)?.pts === frame.pts,
        5_000,
        `frame ${frame.pts} out before the next is fed`,
      );
    }
    assert.equal(repair.status().source, "re-encode");
    await repair.close(3000);
  });

  it("a new peer stream after a reconnect is re-encoded from its first IDR, without asking the peer again", async () => {
    const out: ReturnedFrame[] = [];
    const repair = repairInto(out);
    await feedPaced(repair, longGop.slice(0, 120));
    await waitFor(() => repair.status().reEncodedFrames > 0, 10_000, "re-encoder output");
    repair.resetStream();
    const later = longGop.map((frame) => ({ ...frame, pts: frame.pts + 200 * FRAME_TICKS }));
    const before = out.length;
    await feedPaced(repair, later.slice(0, 90));
    await repair.close(3000);
    const second = out.slice(before).filter((frame) => frame.pts >= later[0]!.pts);
    assert.ok(second.length >= 85, `${second.length} of 90 frames of the new stream`);
    assert.equal(second[0]!.keyframe, true);
    assert.deepEqual(
      idrGapsSec(second).map((gap) => Math.round(gap)),
      [1, 1],
      "one IDR a second from the start",
    );
  });

  it("reEncodeArgs: t counts from the first frame fed; PTS and frame count are kept", () => {
    const args = reEncodeArgs(2.5, 1, 1500);
    assert.ok(args.includes("expr:gte(t,2.5000+n_forced*1.0000)"));
    for (const flag of ["-copyts", "-muxdelay", "-omit_video_pes_length"])
      assert.ok(args.includes(flag), flag);
    assert.equal(args[args.indexOf("-fps_mode") + 1], "passthrough");
  });
});
