/**
 * The demo's own measurements and output: frames found in a TS byte stream as they arrive, the
 * timeline that explains segment counts and latency, the summary text, the progress line that log
 * lines print above, and the segment file names.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, it } from "node:test";
import { TsMuxer } from "../../relay-pod/src/media/ts-mux.js";
import { PTS_CLOCK_HZ } from "../../relay-pod/src/media/ts-packet.js";
import { DemoTimeline, FrameStartScanner, type FrameStart } from "../../relay-pod/src/demo/measure.js";
import { summaryLines, wrapWords, type SummaryContext } from "../../relay-pod/src/demo/summary.js";
import { ProgressLine } from "../../relay-pod/src/common/progress-line.js";
import { segmentFileName } from "../../relay-pod/src/trickle/segment-files.js";
import { createLogger } from "../../relay-pod/src/common/log.js";
import type { SessionStatus } from "../../relay-pod/src/session/types.js";
import { splitRandomly } from "../media/media-helpers.js";
import { SAMPLE_AUDIO_STATUS } from "../fixtures/session-status.js";

const FRAME_PTS = PTS_CLOCK_HZ / 30;
const IDR = Buffer.from([0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00]);
const SLICE = Buffer.from([0, 0, 0, 1, 0x41, 0x9a, 0x02, 0x00]);

/** A TS stream of `count` frames, an IDR every `gop`, each frame padded to span several packets. */
function muxFrames(count: number, gop: number, firstPts = 126_000): Buffer {
  const muxer = new TsMuxer();
  const parts: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const keyframe = i % gop === 0;
    const annexB = Buffer.concat([keyframe ? IDR : SLICE, Buffer.alloc(400 + i, 0x11)]);
    parts.push(muxer.muxAccessUnit({ annexB, pts: firstPts + i * FRAME_PTS, keyframe }, keyframe));
  }
  return Buffer.concat(parts);
}

describe("FrameStartScanner", () => {
  it("reports every video frame with its PTS and keyframe flag, however the bytes are split", () => {
    const stream = muxFrames(40, 15);
    for (const chunks of [[stream], splitRandomly(stream, 300), splitRandomly(stream, 7, 3)]) {
      const frames: FrameStart[] = [];
      const scanner = new FrameStartScanner((frame) => frames.push(frame));
      for (const chunk of chunks) scanner.push(chunk);
      assert.equal(frames.length, 40);
      assert.deepEqual(
        frames.map((f) => f.pts),
        Array.from({ length: 40 }, (_, i) => 126_000 + i * FRAME_PTS),
      );
      assert.deepEqual(
        frames.flatMap((f, i) => (f.keyframe ? [i] : [])),
        [0, 15, 30],
      );
    }
  });

  it("finds its way back after bytes that are not TS", () => {
    const frames: FrameStart[] = [];
    const scanner = new FrameStartScanner((frame) => frames.push(frame));
    scanner.push(Buffer.from("not a transport stream"));
    scanner.push(muxFrames(5, 5));
    assert.equal(frames.length, 5);
  });
});

describe("DemoTimeline", () => {
  /**
   * 20 s at 30 fps, as the stand-in behaves: the first second of output slow (start-up), an IDR
   * every 45 frames (1.5 s) with it and the next frames held up to 250 ms, 30 ms otherwise; output
   * cut at the IDRs.
   */
  function standinLikeRun(): DemoTimeline {
    const timeline = new DemoTimeline();
    for (let i = 0; i < 600; i++) {
      const pts = 126_000 + i * FRAME_PTS;
      const inputAt = i * (1000 / 30);
      timeline.inputFrame(pts, inputAt);
    }
    for (let i = 0; i < 600; i++) {
      const pts = 126_000 + i * FRAME_PTS;
      const keyframe = i % 45 === 0;
      if (keyframe) timeline.outputSegment();
      const sinceIdr = i % 45;
      const latency = i < 30 ? 200 - i * 3 : sinceIdr < 5 ? 250 - sinceIdr * 40 : 30;
      timeline.outputFrame({ pts, keyframe }, i * (1000 / 30) + latency);
    }
    return timeline;
  }

  it("measures output segments and the returned IDR interval", () => {
    const m = standinLikeRun().measurements();
    assert.equal(m.inputFrames, 600);
    assert.equal(m.outputFrames, 600);
    assert.equal(m.matchedFrames, 600);
    assert.equal(m.segments.count, 14);
    assert.equal(m.segments.shortestSec, 1.5);
    assert.equal(m.segments.longestSec, 1.5);
    assert.ok(Math.abs(m.segments.lastSec! - 15 / 30) < 1e-9, String(m.segments.lastSec));
    assert.equal(m.segments.idrIntervalSec, 1.5);
    assert.equal(m.firstOutputAfterMs, 200);
  });

  it("splits latency into start-up and steady state, and says where the slowest frames were", () => {
    const latency = standinLikeRun().measurements().latency!;
    assert.equal(latency.all.frames, 600);
    assert.equal(latency.afterStartUp!.p50, 30);
    assert.equal(latency.startUp!.frames, 60);
    assert.ok(latency.startUp!.p50 > 100, String(latency.startUp!.p50));
    const { frames, fromMs, inStartUp, afterIdr, elsewhere } = latency.slowest;
    assert.equal(frames, 30, "5% of 600");
    assert.equal(inStartUp + afterIdr + elsewhere, frames);
    assert.ok(fromMs >= 170, String(fromMs));
    assert.equal(elsewhere, 0);
    assert.ok(afterIdr > inStartUp, `${afterIdr} after IDRs, ${inStartUp} in start-up`);
  });

  it("an output frame with no input time is counted but not timed", () => {
    const timeline = new DemoTimeline();
    timeline.inputFrame(1000, 0);
    timeline.outputSegment();
    timeline.outputFrame({ pts: 1000, keyframe: true }, 50);
    timeline.outputFrame({ pts: 4000, keyframe: false }, 60);
    const m = timeline.measurements();
    assert.equal(m.outputFrames, 2);
    assert.equal(m.matchedFrames, 1);
    assert.equal(m.latency!.all.p50, 50);
    assert.equal(m.segments.idrIntervalSec, undefined, "one IDR has no interval");
  });
});

/** The summary's text with its wrapped lines joined again (continuation lines are indented 17). */
function unwrapped(lines: string[]): string {
  return lines.join("\n").replace(/\n {17}/g, " ");
}

describe("summaryLines", () => {
  it("wraps explanations at spaces", () => {
    assert.deepEqual(wrapWords("aa bb cc dd", 5), ["aa bb", "cc dd"]);
    assert.deepEqual(wrapWords("a-very-long-word x", 5), ["a-very-long-word", "x"]);
    assert.deepEqual(wrapWords("short", 80), ["short"]);
  });

  const context: SummaryContext = {
    outDir: "/tmp/demo-output",
    outputSegmentsWritten: 14,
    outputBytes: 4 * 1024 * 1024,
    inputKeyframeIntervalSec: 1,
    segmentDurationSec: 1,
    interrupted: false,
    standin: true,
    loadAverage: 0.5,
    cpus: 2,
  };

  function status(overrides: Partial<SessionStatus> = {}): SessionStatus {
    const queue = { size: 0, capacity: 100, dropped: 0 };
    return {
      id: "demo",
      state: "completed",
      webrtcState: "closed",
      createdAt: "2026-01-01T00:00:00Z",
      inputUrl: "http://127.0.0.1:1/ai/trickle/demo",
      outputUrl: "http://127.0.0.1:1/ai/trickle/demo-out",
      comfystreamUrl: "http://127.0.0.1:2",
      width: 512,
      height: 512,
      frameRate: 30,
      mode: "transcode",
      encoder: "x264",
      decoder: "software",
      codecReason: "x264: no CUDA device (h264_nvenc: Cannot load libcuda.so.1)",
      queues: { decodedFrames: queue, processedFrames: queue, outputSegments: queue },
      fps: { input: 30, output: 30 },
      frames: { in: 600, sent: 600, returned: 600, out: 600, dropped: 0, peerLimited: 0 },
      peerWindow: { capacity: 8, inFlight: 0, transcoderGop: "normal" },
      segments: { in: 20, out: 14, dropped: 0, corrupt: 0 },
      outputKeyframes: { source: "peer", reEncodedFrames: 0, idrIntervalSec: { last: 1.5, max: 1.5 } },
      latencyMs: { p50: 6, p95: 120, samples: 600 },
      hopLatencyMs: { forward: { p50: 45, p95: 90 }, return: { p50: 0.1, p95: 0.3 } },
      reconnects: 0,
      ffmpegRestarts: 0,
      inputClockJumps: 0,
      audio: SAMPLE_AUDIO_STATUS,
      promptsGeneration: 2,
      ...overrides,
    };
  }

  it("explains fewer output segments by the returned IDR cadence", () => {
    const timeline = new DemoTimeline();
    for (let i = 0; i < 600; i++) timeline.inputFrame(i * FRAME_PTS, i * 33);
    for (let i = 0; i < 600; i++) {
      if (i % 45 === 0) timeline.outputSegment();
      timeline.outputFrame({ pts: i * FRAME_PTS, keyframe: i % 45 === 0 }, i * 33 + 40);
    }
    const hopLatencyMs = { forward: { p50: 20, p95: 90 }, return: { p50: 0.1, p95: 0.3 } };
    const lines = summaryLines(status({ hopLatencyMs }), timeline.measurements(), context);
    assert.ok(
      lines.every((line) => line.length <= 98),
      lines.join("\n"),
    );
    const text = unwrapped(lines);
    assert.match(text, /segments +in 20, out 14; 14 written to \/tmp\/demo-output \(4\.00 MiB\)/);
    assert.match(text, /input: cut at every keyframe of the source, one each 1 s/);
    assert.match(text, /output: 14 segments \(1\.50 s, the last 0\.50 s\)/);
    assert.match(text, /the output has an IDR every 1\.50 s, so the output has fewer, longer segments/);
    assert.match(text, /latency +input → output, per frame as the demo saw it: p50 40 ms/);
    assert.match(text, /per hop +relay forward p50 20 ms \/ p95 90 ms, peer .* p50 6\.0 ms \/ p95 120 ms/);
    assert.match(
      text,
      /slowest 5% \(30 frames, 40 ms and more\): 30 in the first 2 s, 0 within 0\.2 s after a returned IDR, 0 elsewhere/,
    );
    assert.match(text, /their p50s add up to 26 ms of the 40 ms input → output p50; the rest .* 33 ms\)/);
    assert.match(text, /machine +load average 0\.5 over the last minute, 2 CPUs\n/);
    assert.doesNotMatch(text, /had not come out/);
  });

  it("says what had not come out when the demo was stopped, and which input segments were dropped", () => {
    const stopped = status({
      state: "stopped",
      frames: { in: 300, sent: 270, returned: 250, out: 240, dropped: 30, peerLimited: 0 },
      segments: { in: 10, out: 7, dropped: 1, corrupt: 0 },
    });
    const text = unwrapped(summaryLines(stopped, new DemoTimeline().measurements(), context));
    assert.match(text, /30 had not come out when the demo stopped/);
    const lost = status({
      frames: { in: 600, sent: 600, returned: 598, out: 598, dropped: 0, peerLimited: 0 },
    });
    const lostText = unwrapped(summaryLines(lost, new DemoTimeline().measurements(), context));
    assert.match(lostText, /2 sent to the peer never came back \(the peer dropped them\)/);
    assert.match(text, /1 input segment was dropped whole/);
    assert.match(text, /output: no segment came back/);
    const busy = summaryLines(stopped, new DemoTimeline().measurements(), { ...context, loadAverage: 8.1 });
    assert.match(
      unwrapped(busy),
      /load average 8\.1 over the last minute, 2 CPUs \(busy: frames waited for a CPU/,
    );
  });

  it("says which frames were peer-limited and where the output's IDRs came from", () => {
    const slowPeer = status({
      frames: { in: 600, sent: 200, returned: 200, out: 200, dropped: 400, peerLimited: 400 },
      peerWindow: {
        capacity: 2,
        inFlight: 1,
        transcoderGop: "intra-only",
        reason: "ComfyStream takes fewer frames than come in: every frame is sent as a keyframe",
      },
      outputKeyframes: {
        source: "re-encode",
        reason: "the peer sent no IDR for 2.5 s although keyframes were requested (PLI)",
        reEncodedFrames: 180,
        idrIntervalSec: { last: 1, max: 2.5 },
      },
    });
    const text = unwrapped(summaryLines(slowPeer, new DemoTimeline().measurements(), context));
    assert.match(
      text,
      /400 of the dropped were peer-limited: .* at most 2 in flight .* every frame is sent as a keyframe/,
    );
    assert.match(text, /output IDRs: the returned video is re-encoded \(the peer sent no IDR for 2\.5 s/);
    const plain = unwrapped(summaryLines(status(), new DemoTimeline().measurements(), context));
    assert.match(plain, /output IDRs: ComfyStream's own/);
    assert.doesNotMatch(plain, /peer-limited/);
  });
});

/** Enough of a terminal stream for ProgressLine: what was written, isTTY and columns. */
class FakeTerminal extends EventEmitter {
  written = "";
  constructor(
    readonly isTTY: boolean,
    readonly columns = 40,
  ) {
    super();
  }
  write(text: string): boolean {
    this.written += text;
    return true;
  }
}

describe("ProgressLine", () => {
  it("on a terminal, text is printed above the progress line, which is redrawn under it", () => {
    const terminal = new FakeTerminal(true);
    const progress = new ProgressLine(terminal as unknown as NodeJS.WriteStream);
    progress.print("starting");
    progress.update("t=1s frames 30");
    progress.print("[12:00:00] WARN something\n    detail: 1\n");
    progress.update("t=2s frames 60");
    progress.finish();
    progress.print("done");
    assert.equal(
      terminal.written,
      "starting\n" +
        "\r\x1b[Kt=1s frames 30" +
        "\r\x1b[K[12:00:00] WARN something\n    detail: 1\nt=1s frames 30" +
        "\r\x1b[Kt=2s frames 60" +
        "\n" +
        "done\n",
    );
  });

  it("cuts a progress line to the terminal width (the last column would wrap)", () => {
    const terminal = new FakeTerminal(true, 10);
    new ProgressLine(terminal as unknown as NodeJS.WriteStream).update("0123456789abc");
    assert.equal(terminal.written, "\r\x1b[K012345678");
  });

  it("keeps the whole line when the width is unknown (0 columns)", () => {
    const terminal = new FakeTerminal(true, 0);
    new ProgressLine(terminal as unknown as NodeJS.WriteStream).update("segments out 12");
    assert.equal(terminal.written, "\r\x1b[Ksegments out 12");
  });

  it("not on a terminal, every update is a line of its own", () => {
    const piped = new FakeTerminal(false);
    const progress = new ProgressLine(piped as unknown as NodeJS.WriteStream);
    progress.update("t=1s");
    progress.print("a log line\n");
    progress.update("t=2s");
    progress.finish();
    assert.equal(piped.written, "t=1s\na log line\nt=2s\n");
  });
});

describe("demo output files and logs", () => {
  it("segment files sort in play order: zero-padded sequence numbers", () => {
    assert.equal(segmentFileName(0), "000000.ts");
    assert.equal(segmentFileName(42), "000042.ts");
    assert.equal(segmentFileName(3, ".jsonl"), "000003.jsonl");
    const names = [2, 10, 1, 11, 0, 100].map((seq) => segmentFileName(seq));
    assert.deepEqual(
      [...names].sort(),
      [0, 1, 2, 10, 11, 100].map((seq) => segmentFileName(seq)),
    );
  });

  it("a pretty logger writes readable lines through the given writer, never JSON", () => {
    const lines: string[] = [];
    const logger = createLogger("demo-test", { pretty: true, writePretty: (text) => lines.push(text) });
    logger.child({ session: "demo" }).warn({ code: 0, stderr: "a warning\n" }, "ffmpeg exited");
    assert.equal(lines.length, 1);
    assert.doesNotMatch(lines[0]!, /^\{/);
    assert.match(lines[0]!, /WARN.*\(demo-test\/\d+\): ffmpeg exited/);
    assert.match(lines[0]!, /session: "demo"/);
    assert.match(lines[0]!, /stderr: "a warning\\n"/);
  });
});
