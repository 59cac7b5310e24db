// Shared by the audio suites (issue 13): ffprobe's view of a TS stream, and a relay run of input
// with audio through the werift stand-in (or another ComfyStream), collecting the output.
import { execFile } from "node:child_process";
import { startTsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import type { AudioMode, AudioOutputCodecChoice, SessionStatus } from "../../relay-pod/src/session/types.js";
import { FFPROBE, ICE_ADDRESSES, makeInputSegments, relaySegmentsThrough } from "./relay-harness.js";

type Cleanups = Array<() => Promise<unknown> | unknown>;

export interface ProbedStream {
  codec_type: string;
  codec_name: string;
}

/** Streams and audio packet PTS (90 kHz) of a TS byte stream, as ffprobe reads them. */
export async function probeTs(
  data: Buffer,
): Promise<{ streams: ProbedStream[]; audioPts: number[]; videoPts: number[] }> {
  const probe = (args: string[]) =>
    new Promise<string>((resolve, reject) => {
      const child = execFile(
        FFPROBE,
        ["-v", "error", "-f", "mpegts", "-i", "pipe:0", ...args, "-of", "json"],
        {
          maxBuffer: 64 * 1024 * 1024,
        },
      );
      let text = "";
      child.stdout!.on("data", (d: Buffer) => (text += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => (code === 0 ? resolve(text) : reject(new Error(`ffprobe exited ${code}`))));
      child.stdin!.on("error", () => undefined);
      child.stdin!.end(data);
    });
  const streams = (JSON.parse(await probe(["-show_streams"])) as { streams: ProbedStream[] }).streams;
  const packets = (
    JSON.parse(await probe(["-show_entries", "packet=codec_type,pts"])) as {
      packets: Array<{ codec_type: string; pts: number }>;
    }
  ).packets;
  return {
    streams,
    audioPts: packets.filter((p) => p.codec_type === "audio").map((p) => p.pts),
    videoPts: packets.filter((p) => p.codec_type === "video").map((p) => p.pts),
  };
}

export async function relayWithAudio(
  cleanups: Cleanups,
  options: {
    audio?: "aac" | "opus" | "mp2";
    mode?: AudioMode;
    audioCodec?: AudioOutputCodecChoice;
    seconds?: number;
    /** Input parts made one after the other (clock continuous), instead of `audio` and `seconds`. */
    parts?: Array<{ seconds: number; audio?: "aac" | "opus" }>;
    /** Beeps and flashes at every whole second, for measuring lip-sync on the output. */
    beepFlash?: boolean;
    /** Default: the werift stand-in in passthrough. */
    comfystream?: { url: string; prompts: object[]; connectTimeoutMs: number };
  },
): Promise<{
  final: SessionStatus;
  input: Buffer;
  output: Array<{ seq: number; data: Buffer }>;
  inputPts: number[];
}> {
  const parts = options.parts ?? [
    { seconds: options.seconds ?? 6, ...(options.audio ? { audio: options.audio } : {}) },
  ];
  const segments: Buffer[] = [];
  const pts: number[] = [];
  let startSeconds = 10;
  for (const part of parts) {
    const made = await makeInputSegments({
      bFrames: 0,
      startSeconds,
      ...part,
      ...(options.beepFlash ? { beepFlash: true } : {}),
    });
    segments.push(...made.segments);
    pts.push(...made.pts);
    startSeconds += part.seconds;
  }
  let comfystream = options.comfystream;
  if (!comfystream) {
    const standin = await startTsStandin({
      host: "127.0.0.1",
      port: 0,
      iceAddresses: ICE_ADDRESSES,
      mode: "passthrough",
    });
    cleanups.push(() => standin.close());
    comfystream = { url: standin.url, prompts: [PASSTHROUGH_WORKFLOW], connectTimeoutMs: 20_000 };
  }
  const { final, output } = await relaySegmentsThrough(
    segments,
    {
      id: "audio",
      comfystreamUrl: comfystream.url,
      prompts: comfystream.prompts,
      width: 256,
      height: 256,
      ...(options.mode ? { audio: options.mode } : {}),
      ...(options.audioCodec ? { audioCodec: options.audioCodec } : {}),
    },
    { connectTimeoutMs: comfystream.connectTimeoutMs, cleanups },
  );
  return { final, input: Buffer.concat(segments), output, inputPts: pts };
}

export type AudioRun = Awaited<ReturnType<typeof relayWithAudio>>;
