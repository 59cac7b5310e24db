/**
 * Which H.264 encoder and decoder the forward transcode uses: NVENC/NVDEC on an NVIDIA GPU, libx264
 * and software decoding otherwise. Listing `-encoders` is not enough (Debian's ffmpeg lists
 * h264_nvenc on every machine), so `auto` and `nvenc` run ffmpeg itself: a one-frame h264_nvenc
 * encode of a test pattern, then a one-frame H.264 decode with `-hwaccel cuda` on an explicitly
 * created CUDA device (which fails hard, where `-hwaccel cuda` alone would quietly decode in
 * software). A few hundred ms once per process; the answer is cached per ffmpeg binary.
 */
import { execFile } from "node:child_process";
import { VIDEO_ENCODER_PREFERENCES } from "../../../crds/src/index.js";
import { silentLogger, type Logger } from "../common/log.js";

/** What a session asks for: `auto` probes, `nvenc` requires NVENC, `x264` never probes. */
export type EncoderPreference = (typeof VIDEO_ENCODER_PREFERENCES)[number];

export type VideoEncoder = "nvenc" | "x264";
export type VideoDecoder = "nvdec" | "software";

/** The choice, with why, e.g. "x264: no CUDA device (h264_nvenc: Cannot load libcuda.so.1)". */
export interface VideoCodecChoice {
  encoder: VideoEncoder;
  decoder: VideoDecoder;
  reason: string;
}

/** `nvenc` was required and this machine cannot encode with it; the message says why. */
export class EncoderUnavailableError extends Error {
  override readonly name = "EncoderUnavailableError";
}

/** How long one probe step may take (CUDA initialisation on a cold GPU takes a second or so). */
export const PROBE_TIMEOUT_MS = 10_000;

export interface GpuProbeResult {
  nvenc: { ok: boolean; detail: string };
  nvdec: { ok: boolean; detail: string };
}

const probes = new Map<string, Promise<GpuProbeResult>>();

/**
 * The encoder and decoder for `preference`. `x264` returns at once; `auto` falls back to x264 when
 * the NVENC test encode fails; `nvenc` throws EncoderUnavailableError then.
 */
export async function chooseVideoCodecs(
  preference: EncoderPreference,
  options: { ffmpegPath: string; logger?: Logger; timeoutMs?: number },
): Promise<VideoCodecChoice> {
  if (preference === "x264") {
    return { encoder: "x264", decoder: "software", reason: "x264: forced (encoder x264), no GPU probe" };
  }
  const probe = await probeGpuCodecs(options.ffmpegPath, options);
  if (!probe.nvenc.ok) {
    const why = `${nvencFailureKind(probe.nvenc.detail)} (${probe.nvenc.detail})`;
    if (preference === "nvenc") {
      throw new EncoderUnavailableError(`encoder nvenc was required but NVENC is unusable: ${why}`);
    }
    return { encoder: "x264", decoder: "software", reason: `x264: ${why}` };
  }
  const how = preference === "nvenc" ? "forced (encoder nvenc)" : "CUDA device found";
  if (!probe.nvdec.ok) {
    return {
      encoder: "nvenc",
      decoder: "software",
      reason: `nvenc: ${how}, test encode passed; software decode: CUDA decode check failed (${probe.nvdec.detail})`,
    };
  }
  return {
    encoder: "nvenc",
    decoder: "nvdec",
    reason: `nvenc + nvdec: ${how}, test encode and decode passed`,
  };
}

/**
 * The two GPU checks for `ffmpegPath`, run once per process (a failure is cached too: a GPU does
 * not appear while the pod runs).
 */
export function probeGpuCodecs(
  ffmpegPath: string,
  options: { logger?: Logger; timeoutMs?: number } = {},
): Promise<GpuProbeResult> {
  let probe = probes.get(ffmpegPath);
  if (!probe) {
    const logger = options.logger ?? silentLogger;
    probe = runProbe(ffmpegPath, options.timeoutMs ?? PROBE_TIMEOUT_MS).then((result) => {
      logger.info({ ffmpeg: ffmpegPath, ...result }, "GPU codec probe");
      return result;
    });
    probes.set(ffmpegPath, probe);
  }
  return probe;
}

/** Forgets cached probes (tests). */
export function clearEncoderProbeCache(): void {
  probes.clear();
}

async function runProbe(ffmpegPath: string, timeoutMs: number): Promise<GpuProbeResult> {
  const encode = await runFfmpeg(
    ffmpegPath,
    [
      ...["-hide_banner", "-nostdin", "-loglevel", "error"],
      ...["-f", "lavfi", "-i", "testsrc=size=256x256:rate=30", "-frames:v", "1"],
      ...["-c:v", "h264_nvenc", "-preset", "p1", "-tune", "ull", "-f", "h264", "pipe:1"],
    ],
    timeoutMs,
  );
  if (!encode.ok) return { nvenc: encode, nvdec: { ok: false, detail: "not checked: NVENC failed" } };
  if (encode.stdout.length === 0) {
    return {
      nvenc: { ok: false, detail: "h264_nvenc produced no frame" },
      nvdec: { ok: false, detail: "not checked: NVENC failed" },
    };
  }
  // Decode the frame just made on the GPU; frames come back to system memory as in the transcode.
  const decode = await runFfmpeg(
    ffmpegPath,
    [
      ...["-hide_banner", "-nostdin", "-loglevel", "warning"],
      ...["-init_hw_device", "cuda=probe", "-hwaccel", "cuda", "-hwaccel_device", "probe"],
      ...["-f", "h264", "-i", "pipe:0", "-f", "null", "-"],
    ],
    timeoutMs,
    encode.stdout,
  );
  // ffmpeg falls back to software decoding with only a warning when the hwaccel cannot start.
  const fellBack = /hwaccel|failed setup/i.test(decode.stderr);
  return {
    nvenc: { ok: true, detail: "one-frame h264_nvenc encode passed" },
    nvdec:
      decode.ok && !fellBack
        ? { ok: true, detail: "one-frame -hwaccel cuda decode passed" }
        : { ok: false, detail: decode.ok ? firstErrorLine(decode.stderr) : decode.detail },
  };
}

interface FfmpegRun {
  ok: boolean;
  detail: string;
  stdout: Buffer;
  stderr: string;
}

function runFfmpeg(
  ffmpegPath: string,
  args: string[],
  timeoutMs: number,
  input?: Buffer,
): Promise<FfmpegRun> {
  return new Promise((resolve) => {
    const child = execFile(
      ffmpegPath,
      args,
      { timeout: timeoutMs, encoding: "buffer", maxBuffer: 16 * 1024 * 1024, killSignal: "SIGKILL" },
      (error, stdout, stderrBuffer) => {
        const stderr = stderrBuffer.toString();
        if (!error) {
          resolve({ ok: true, detail: "", stdout, stderr });
          return;
        }
        const timedOut = (error as { killed?: boolean }).killed === true;
        const detail = timedOut
          ? `timed out after ${timeoutMs} ms`
          : (error as NodeJS.ErrnoException).code === "ENOENT"
            ? `${ffmpegPath}: no such file`
            : firstErrorLine(stderr) || error.message.split("\n")[0]!;
        resolve({ ok: false, detail, stdout, stderr });
      },
    );
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input);
  });
}

/** ffmpeg's first error line, without the "[h264_nvenc @ 0x55…]" address, e.g. "h264_nvenc: Cannot load libcuda.so.1". */
export function firstErrorLine(stderr: string): string {
  const line = stderr
    .split("\n")
    .map((l) => l.trim())
    .find((l) => l !== "");
  if (!line) return "ffmpeg failed without a message";
  return line.replace(/^\[([\w-]+) @ 0x[0-9a-f]+\]\s*/i, "$1: ").slice(0, 300);
}

/** What a failed NVENC test encode means, in the words the status shows. */
function nvencFailureKind(detail: string): string {
  if (/timed out/.test(detail)) return "NVENC test encode timed out";
  if (/unknown encoder|encoder not found/i.test(detail)) return "this ffmpeg has no h264_nvenc";
  if (/libcuda|cuda|no (nvenc capable )?devices?|no device/i.test(detail)) return "no CUDA device";
  if (/nvenc|libnvidia-encode/i.test(detail)) return "NVENC unusable";
  return "NVENC test encode failed";
}
