/**
 * The session page's two data sources on their own: SessionThumbnails with the real ffmpeg on real
 * H.264 and HEVC keyframes (made by ffmpeg here), and SessionHistory's samples and markers.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { silentLogger } from "../../relay-pod/src/common/log.js";
import { SessionHistory } from "../../relay-pod/src/report/session-history.js";
import { SessionThumbnails, THUMBNAIL_WIDTH } from "../../relay-pod/src/report/thumbnails.js";
import type { KeyframeCodec, LatestKeyframe } from "../../relay-pod/src/session/latest-keyframes.js";
import type { SessionStatus } from "../../relay-pod/src/session/types.js";
import { waitFor } from "../infra/wait-for.js";
import { FFMPEG, FFPROBE } from "../session/relay-harness.js";

const run = promisify(execFile);

/** One keyframe (an IDR access unit with its parameter sets) of a test pattern, Annex B. */
async function keyframe(codec: KeyframeCodec, pattern: string): Promise<Buffer> {
  // Without reordering, as the relay's streams are (a B-frame stream is held longer: thumbnails.ts).
  const encoder =
    codec === "h264"
      ? ["-c:v", "libx264", "-profile:v", "baseline", "-bsf:v", "h264_mp4toannexb"]
      : ["-c:v", "libx265", "-x265-params", "bframes=0:log-level=error"];
  const { stdout } = await run(
    FFMPEG,
    [
      ...["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", `${pattern}=size=320x240:rate=30`],
      ...["-frames:v", "1", ...encoder, "-f", codec, "pipe:1"],
    ],
    { encoding: "buffer", maxBuffer: 16 * 1024 * 1024 },
  );
  return stdout;
}

async function jpegSize(jpeg: Buffer): Promise<string> {
  const child = execFile(FFPROBE, [
    ...["-v", "error", "-f", "jpeg_pipe", "-i", "pipe:0"],
    ...["-show_entries", "stream=width,height", "-of", "csv=p=0:s=x"],
  ]);
  const out = new Promise<string>((resolve, reject) => {
    let text = "";
    child.stdout!.on("data", (d: Buffer) => (text += d.toString()));
    child.on("close", (code) => (code === 0 ? resolve(text.trim()) : reject(new Error(`ffprobe ${code}`))));
  });
  child.stdin!.end(jpeg);
  return out;
}

describe("thumbnails from keyframes", () => {
  for (const codec of ["h264", "hevc"] as const) {
    it(`turns ${codec} keyframes into ${THUMBNAIL_WIDTH}-pixel JPEGs, one keyframe behind`, async () => {
      const frames = [await keyframe(codec, "testsrc2"), await keyframe(codec, "smptebars")];
      let latest: LatestKeyframe | undefined;
      const thumbnails = new SessionThumbnails(
        FFMPEG,
        (side) => (side === "input" ? latest : undefined),
        silentLogger,
      );
      try {
        // ffmpeg hands a picture on once the next has begun: keyframes arrive once a second here.
        for (let sequence = 1; sequence <= 4; sequence++) {
          latest = { annexB: frames[sequence % 2]!, codec, sequence, at: Date.now() };
          thumbnails.refresh();
          thumbnails.refresh(); // the same keyframe again is not decoded twice
          if (sequence >= 2) {
            await waitFor(
              () => (thumbnails.get("input")?.sequence ?? 0) >= sequence - 1,
              30_000, // bounded, generous: ffmpeg starts slowly on a loaded machine
              `thumbnail of keyframe ${sequence - 1}`,
            );
          }
        }
        const thumbnail = thumbnails.get("input")!;
        assert.equal(await jpegSize(thumbnail.jpeg), `${THUMBNAIL_WIDTH}x144`);
        assert.equal(thumbnails.get("output"), undefined);
      } finally {
        thumbnails.close();
      }
    });
  }

  it("starts a fresh decoder after one that was fed garbage", async () => {
    const good = await keyframe("h264", "testsrc2");
    let latest: LatestKeyframe | undefined = {
      annexB: Buffer.alloc(4096, 0xff),
      codec: "h264",
      sequence: 1,
      at: Date.now(),
    };
    const thumbnails = new SessionThumbnails(FFMPEG, () => latest, silentLogger);
    try {
      thumbnails.refresh();
      for (let sequence = 2; sequence <= 6 && !thumbnails.get("input"); sequence++) {
        latest = { annexB: good, codec: "h264", sequence, at: Date.now() };
        thumbnails.refresh();
        await new Promise((resolve) => setTimeout(resolve, 700));
      }
      assert.ok(thumbnails.get("input"), "a thumbnail once good keyframes follow");
    } finally {
      thumbnails.close();
    }
  });
});

describe("session history", () => {
  const status = (over: { state?: string; webrtc?: string; reconnects?: number; p95?: number }) =>
    ({
      state: over.state ?? "running",
      webrtcState: over.webrtc ?? "connected",
      reconnects: over.reconnects ?? 0,
      latencyMs: { p50: 10, p95: over.p95 ?? 20, samples: 5 },
      fps: { input: 30, output: 29 },
      frames: { dropped: 2 },
      queues: {
        decodedFrames: { size: 25, capacity: 100, dropped: 0 },
        processedFrames: { size: 0, capacity: 100, dropped: 0 },
        outputSegments: { size: 5, capacity: 50, dropped: 0 },
      },
    }) as unknown as SessionStatus;

  it("marks state changes, WebRTC changes and reconnects on the time axis", () => {
    const history = new SessionHistory();
    const t0 = Date.UTC(2026, 0, 1);
    history.record(status({ state: "connecting", webrtc: "connecting" }), t0);
    history.record(status({}), t0 + 1000);
    history.record(status({}), t0 + 2000);
    const { markers: reconnect } = history.record(status({ reconnects: 1, webrtc: "connecting" }), t0 + 3000);
    assert.deepEqual(
      reconnect.map((m) => m.label),
      ["WebRTC connecting", "reconnect #1"],
    );
    const { samples, markers } = history.snapshot();
    assert.equal(samples.length, 4);
    assert.deepEqual(samples[1]!.queueFill, { decodedFrames: 0.25, processedFrames: 0, outputSegments: 0.1 });
    assert.deepEqual(
      markers.map((m) => [m.t - t0 / 1000, m.label]),
      [
        [0, "state connecting"],
        [0, "WebRTC connecting"],
        [1, "state running"],
        [1, "WebRTC connected"],
        [3, "WebRTC connecting"],
        [3, "reconnect #1"],
      ],
    );
  });

  it("keeps the last samples only, and the markers within them", () => {
    const history = new SessionHistory(3);
    const t0 = Date.UTC(2026, 0, 1);
    history.record(status({ state: "connecting" }), t0);
    for (let i = 1; i <= 5; i++) history.record(status({ p95: i }), t0 + i * 1000);
    const { samples, markers } = history.snapshot();
    assert.deepEqual(
      samples.map((s) => s.latencyP95),
      [3, 4, 5],
    );
    assert.deepEqual(markers, []);
  });
});
