/** The session's audio as the pages show it (the REST view's `audio` block, same for the gateway). */
import { fmt } from "./dom.js";

export interface AudioView {
  mode: string;
  reason: string;
  codec_in: string | null;
  codec_out: string | null;
  frames: { in: number; out: number; dropped: number; corrupt: number };
  queue: { size: number; capacity: number };
  av_offset_ms: number | null;
}

/** "passthrough (aac → aac)", "none": the overview's column and the page's first audio line. */
export function audioSummary(audio: AudioView | undefined): string {
  if (!audio) return "–";
  if (!audio.codec_in && !audio.codec_out) return audio.mode;
  return `${audio.mode} (${audio.codec_in ?? "–"} → ${audio.codec_out ?? "–"})`;
}

/** The page's audio facts: [id, label, value]; ids let tests and people link to one line. */
export function audioFacts(audio: AudioView | undefined): [string, string, string][] {
  if (!audio) return [["audio", "Audio", "–"]];
  const { frames, queue } = audio;
  return [
    ["audio", "Audio", audioSummary(audio)],
    ["audio-reason", "Audio mode chosen because", audio.reason || "–"],
    [
      "audio-frames",
      "Audio frames in / out / dropped / corrupt",
      `${frames.in} / ${frames.out} / ${frames.dropped} / ${frames.corrupt}`,
    ],
    [
      "audio-queue",
      "Audio queue / A-V offset",
      `${queue.size} of ${queue.capacity} / ${fmt(audio.av_offset_ms, 0, " ms")}`,
    ],
  ];
}
