import { spawn, type ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import { once } from "node:events";

export const FFMPEG = process.env.FFMPEG_BIN ?? "ffmpeg";
export const ICE_ADDRESSES = ["127.0.0.2"];

/** ComfyStream's smallest valid workflow (LoadTensor → SaveTensor). */
export const PASSTHROUGH_WORKFLOW = {
  "1": { class_type: "SaveTensor", inputs: { images: ["2", 0] } },
  "2": { class_type: "LoadTensor", inputs: {} },
};

export interface RtpSource {
  /** Resolves when ffmpeg has exited and its last datagrams were delivered. */
  done: Promise<void>;
  stop(): void;
}

/**
 * A real ffmpeg encoding testsrc2 to H.264 constrained baseline (no B-frames, 1 s GOP) as RTP on a
 * loopback UDP socket; every datagram goes to `onPacket`.
 */
export async function startRtpSource(options: {
  seconds: number;
  width?: number;
  height?: number;
  fps?: number;
  onPacket: (packet: Buffer) => void;
}): Promise<RtpSource> {
  const { seconds, width = 320, height = 240, fps = 30 } = options;
  const socket = dgram.createSocket("udp4");
  socket.on("message", (message) => {
    const packetType = message[1] ?? 0;
    if (packetType >= 200 && packetType <= 204) return; // RTCP
    options.onPacket(message);
  });
  socket.bind(0, "127.0.0.1");
  await once(socket, "listening");
  const port = socket.address().port;
  const ffmpeg: ChildProcess = spawn(
    FFMPEG,
    [
      ...["-hide_banner", "-loglevel", "error", "-re"],
      ...["-f", "lavfi", "-i", `testsrc2=size=${width}x${height}:rate=${fps}`, "-t", String(seconds)],
      ...[
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-profile:v",
        "baseline",
        "-bf",
        "0",
      ],
      ...[
        "-g",
        String(fps),
        "-keyint_min",
        String(fps),
        "-sc_threshold",
        "0",
        "-b:v",
        "1M",
        "-pix_fmt",
        "yuv420p",
      ],
      ...["-f", "rtp", "-payload_type", "96", `udp://127.0.0.1:${port}?pkt_size=1200`],
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const done = (async () => {
    await once(ffmpeg, "exit");
    await new Promise((resolve) => setTimeout(resolve, 100));
    socket.close();
  })();
  return {
    done,
    stop: () => {
      ffmpeg.kill("SIGKILL");
    },
  };
}

/** Decodes an Annex-B H.264 file with ffmpeg and returns the number of frames and decode errors. */
export async function decodeAnnexB(file: string): Promise<{ frames: number; errors: string }> {
  const ffmpeg = spawn(
    FFMPEG,
    ["-hide_banner", "-loglevel", "error", "-f", "h264", "-i", file, "-f", "framemd5", "-"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  let errors = "";
  ffmpeg.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  ffmpeg.stderr!.on("data", (chunk: Buffer) => (errors += chunk.toString()));
  await once(ffmpeg, "exit");
  const frames = output.split("\n").filter((line) => line && !line.startsWith("#")).length;
  return { frames, errors };
}

export function percentile(values: number[], fraction: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]!;
}

export { waitFor } from "../infra/wait-for.js";
