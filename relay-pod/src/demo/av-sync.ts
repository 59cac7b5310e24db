/**
 * Lip-sync as a viewer would judge it (issue 13): the synthetic input flashes the picture and beeps
 * at every whole second; in the output, each flash frame is paired with the nearest beep onset and
 * the difference is the A/V offset. One ffmpeg run reads the output stream: `showinfo` gives each
 * video frame's PTS and mean luma, a high-pass + `astats` over 5 ms windows gives the beep's energy.
 * A flash is a frame whose luma is far from the stream's median (a white flash stays far from it
 * after a negate filter too); a beep onset is the first window well above the median energy.
 */
import { spawn } from "node:child_process";

/** lavfi sources of the synthetic input: a 440 Hz tone beeping at 1760 Hz for 40 ms each second. */
export const BEEP_TONE_SOURCE = "sine=frequency=440:sample_rate=48000:beep_factor=4";
/** A video filter for that input: a white frame at each whole second of the source's clock. */
export const FLASH_FILTER = "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t\\,1)\\,0.03)'";

export interface AvSyncFigures {
  flashes: number;
  beeps: number;
  /** Beep onset minus flash time per paired flash, ms (positive: sound late). */
  offsetsMs: number[];
  p50AbsMs: number | null;
  p95AbsMs: number | null;
}

const WINDOW_SAMPLES = 240; // 5 ms at 48 kHz
const PAIR_WITHIN_SEC = 0.5;

/** Measures flash/beep offsets in a TS byte stream (output segments concatenated). */
export async function measureAvSync(ffmpegPath: string, ts: Buffer): Promise<AvSyncFigures> {
  const log = await new Promise<string>((resolve, reject) => {
    const child = spawn(
      ffmpegPath,
      [
        ...["-hide_banner", "-nostats", "-loglevel", "info", "-copyts", "-f", "mpegts", "-i", "pipe:0"],
        "-filter_complex",
        `[0:v]scale=16:16,showinfo[v];[0:a]pan=mono|c0=c0,highpass=f=1200,asetnsamples=n=${WINDOW_SAMPLES}:p=0,` +
          "astats=metadata=1:reset=1,ametadata=mode=print:key=lavfi.astats.Overall.RMS_level[a]",
        ...["-map", "[v]", "-f", "null", "-", "-map", "[a]", "-f", "null", "-"],
      ],
      { stdio: ["pipe", "ignore", "pipe"] },
    );
    let text = "";
    child.stderr.on("data", (chunk: Buffer) => (text += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve(text) : reject(new Error(`ffmpeg exited ${code}: ${text.slice(-500)}`)),
    );
    child.stdin.on("error", () => undefined);
    child.stdin.end(ts);
  });
  return avSyncFromLog(log);
}

/** The figures from ffmpeg's showinfo/ametadata log (exported for a test of the parsing). */
export function avSyncFromLog(log: string): AvSyncFigures {
  const frames: Array<{ t: number; luma: number }> = [];
  const windows: Array<{ t: number; rms: number }> = [];
  let windowTime: number | undefined;
  for (const line of log.split("\n")) {
    const frame = /showinfo.*\bpts_time:\s*([-\d.]+).*\bmean:\[(\d+)/.exec(line);
    if (frame) {
      frames.push({ t: Number(frame[1]), luma: Number(frame[2]) });
      continue;
    }
    const head = /ametadata.*\bpts_time:\s*([-\d.]+)/.exec(line);
    if (head) {
      windowTime = Number(head[1]);
      continue;
    }
    const rms = /lavfi\.astats\.Overall\.RMS_level=(\S+)/.exec(line);
    if (rms && windowTime !== undefined) {
      const level = Number(rms[1]);
      windows.push({ t: windowTime, rms: Number.isFinite(level) ? level : -120 });
      windowTime = undefined;
    }
  }
  const flashes = onsets(
    frames.map((f) => ({ t: f.t, hit: false, v: f.luma })),
    (v, median) => Math.abs(v - median) > 50,
  );
  const beeps = onsets(
    windows.map((w) => ({ t: w.t, hit: false, v: w.rms })),
    (v, median) => v > median + 12,
  );
  const offsetsMs: number[] = [];
  for (const flash of flashes) {
    let best: number | undefined;
    for (const beep of beeps)
      if (best === undefined || Math.abs(beep - flash) < Math.abs(best - flash)) best = beep;
    if (best !== undefined && Math.abs(best - flash) <= PAIR_WITHIN_SEC)
      offsetsMs.push(Math.round((best - flash) * 1000));
  }
  const sorted = offsetsMs.map(Math.abs).sort((a, b) => a - b);
  const pick = (q: number) =>
    sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : null;
  return {
    flashes: flashes.length,
    beeps: beeps.length,
    offsetsMs,
    p50AbsMs: pick(0.5),
    p95AbsMs: pick(0.95),
  };
}

/** Times where `isHit` turns true after being false (the first of each run). */
function onsets(
  samples: Array<{ t: number; hit: boolean; v: number }>,
  isHit: (value: number, median: number) => boolean,
): number[] {
  if (samples.length === 0) return [];
  const values = samples.map((s) => s.v).sort((a, b) => a - b);
  const median = values[Math.floor(values.length / 2)]!;
  const times: number[] = [];
  let previous = false;
  for (const sample of samples.sort((a, b) => a.t - b.t)) {
    const hit = isHit(sample.v, median);
    if (hit && !previous) times.push(sample.t);
    previous = hit;
  }
  return times;
}
