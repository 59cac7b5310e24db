/** Shared helpers for the media tests: make real inputs with ffmpeg, read ground truth with ffprobe. */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/**
 * Suites that need real ffmpeg/ffprobe pass this as their options: they skip with a clear reason
 * when the binaries are missing (npm test installs them via test/infra/setup-system.sh).
 */
export const needsFfmpeg: { skip: string | false } = await Promise.all([
  execFileAsync(process.env.FFMPEG_BIN || "ffmpeg", ["-version"], { timeout: 10_000 }),
  execFileAsync(process.env.FFPROBE_BIN || "ffprobe", ["-version"], { timeout: 10_000 }),
]).then(
  () => ({ skip: false as const }),
  () => ({
    skip: "ffmpeg/ffprobe not installed (apt-get install ffmpeg, or set FFMPEG_BIN and FFPROBE_BIN)",
  }),
);

export const FFMPEG = process.env.FFMPEG_BIN || "ffmpeg";
export const FFPROBE = process.env.FFPROBE_BIN || "ffprobe";

export async function makeTempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), `trickle-relay-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function runFfmpeg(args: string[]): Promise<void> {
  await execFileAsync(FFMPEG, ["-hide_banner", "-loglevel", "error", "-nostdin", "-y", ...args], {
    timeout: 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
}

/** A short synthetic H.264 clip as MPEG-TS. */
export async function makeH264Ts(
  file: string,
  options: {
    seconds?: number;
    size?: string;
    rate?: number;
    gop?: number;
    bFrames?: number;
    extra?: string[];
  } = {},
): Promise<Buffer> {
  const rate = options.rate ?? 30;
  await runFfmpeg([
    "-f",
    "lavfi",
    "-i",
    `testsrc2=size=${options.size ?? "320x240"}:rate=${rate}`,
    "-t",
    String(options.seconds ?? 4),
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-g",
    String(options.gop ?? rate),
    "-bf",
    String(options.bFrames ?? 0),
    "-pix_fmt",
    "yuv420p",
    ...(options.extra ?? []),
    "-f",
    "mpegts",
    file,
  ]);
  return readFile(file);
}

/** The same kind of clip cut by ffmpeg's segment muxer: one TS per ~1 s GOP, as trickle carries them. */
export async function makeSegmentFiles(dir: string, options: { seconds?: number } = {}): Promise<Buffer[]> {
  await runFfmpeg([
    "-f",
    "lavfi",
    "-i",
    "testsrc2=size=320x240:rate=30",
    "-t",
    String(options.seconds ?? 4),
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-g",
    "30",
    "-bf",
    "0",
    "-pix_fmt",
    "yuv420p",
    "-f",
    "segment",
    "-segment_time",
    "1",
    "-segment_format",
    "mpegts",
    path.join(dir, "seg-%03d.ts"),
  ]);
  const names = (await readdir(dir)).filter((name) => name.startsWith("seg-")).sort();
  return Promise.all(names.map((name) => readFile(path.join(dir, name))));
}

export interface ProbedPacket {
  pts: number | undefined;
  dts: number | undefined;
  keyframe: boolean;
}

/** Video packets as ffprobe sees them (decode order). */
export async function probeVideoPackets(file: string): Promise<ProbedPacket[]> {
  const { stdout } = await execFileAsync(
    FFPROBE,
    [
      "-v",
      "error",
      "-select_streams",
      "v:0",
      "-show_packets",
      "-show_entries",
      "packet=pts,dts,flags",
      "-of",
      "json",
      file,
    ],
    { timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
  );
  const parsed = JSON.parse(stdout) as { packets?: { pts?: number; dts?: number; flags: string }[] };
  return (parsed.packets ?? []).map((packet) => ({
    pts: packet.pts,
    dts: packet.dts,
    keyframe: packet.flags.startsWith("K"),
  }));
}

/** Decoded frames as ffprobe sees them (presentation order), with decode errors on stderr. */
export async function probeDecodedFrames(
  file: string,
): Promise<{ frames: { pts: number | undefined; keyframe: boolean; pictType: string }[]; stderr: string }> {
  const { stdout, stderr } = await execFileAsync(
    FFPROBE,
    [
      "-v",
      "error",
      "-select_streams",
      "v:0",
      "-show_frames",
      "-show_entries",
      "frame=pts,key_frame,pict_type",
      "-of",
      "json",
      file,
    ],
    { timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
  );
  const parsed = JSON.parse(stdout) as { frames?: { pts?: number; key_frame: number; pict_type: string }[] };
  return {
    frames: (parsed.frames ?? []).map((frame) => ({
      pts: frame.pts,
      keyframe: frame.key_frame === 1,
      pictType: frame.pict_type,
    })),
    stderr,
  };
}

export async function probeStream(file: string): Promise<Record<string, unknown>> {
  const { stdout } = await execFileAsync(
    FFPROBE,
    ["-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", file],
    { timeout: 60_000 },
  );
  const parsed = JSON.parse(stdout) as { streams?: Record<string, unknown>[] };
  return parsed.streams?.[0] ?? {};
}

/** Deterministic pseudo-random bytes (tests must be reproducible). */
export function pseudoRandomBytes(length: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(length);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    out[i] = state & 0xff;
  }
  return out;
}

/** Splits a buffer at pseudo-random points (sizes 1..maxChunk). */
export function splitRandomly(data: Buffer, maxChunk: number, seed = 7): Buffer[] {
  const sizes = pseudoRandomBytes(4099, seed);
  const chunks: Buffer[] = [];
  let offset = 0;
  let i = 0;
  while (offset < data.length) {
    const size = 1 + ((sizes[i++ % sizes.length] * 2654435761) % maxChunk);
    chunks.push(data.subarray(offset, offset + size));
    offset += size;
  }
  return chunks;
}
