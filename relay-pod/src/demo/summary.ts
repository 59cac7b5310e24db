import type { AvSyncFigures } from "./av-sync.js";
import type { SessionStatus } from "../session/types.js";
import { AFTER_IDR_SECONDS, START_UP_SECONDS, type DemoMeasurements } from "./measure.js";
import { formatBytes } from "../common/format-bytes.js";

const LABEL_WIDTH = 17;
/** Lines are printed indented by two spaces. */
const SUMMARY_WIDTH = 98;

export interface SummaryContext {
  outDir: string;
  outputSegmentsWritten: number;
  outputBytes: number;
  /** Seconds between the synthetic input's keyframes (its segments are cut at each). */
  inputKeyframeIntervalSec: number;
  /** The session's shortest output segment (--segment-duration). */
  segmentDurationSec: number;
  /** Stopped by a signal before the input ended. */
  interrupted: boolean;
  /** The peer is the stand-in (its behaviour is known and can be named). */
  standin: boolean;
  /** The machine's 1-minute load average at the end, and its CPUs: a busy machine explains a tail. */
  loadAverage: number;
  cpus: number;
  /** Lip-sync measured on the output (flash vs beep); undefined when not measured. */
  avSync?: AvSyncFigures;
}

/**
 * The demo's closing summary: the session's counters, and with them what explains them (why the
 * output has fewer segments than the input, where the latency tail comes from), from what the demo
 * measured itself.
 */
export function summaryLines(status: SessionStatus, m: DemoMeasurements, context: SummaryContext): string[] {
  const lines: string[] = [];
  // Explanations are wrapped under their label, so the summary reads on an 100-column terminal.
  const add = (label: string, text: string) =>
    wrapWords(text, SUMMARY_WIDTH - LABEL_WIDTH).forEach((line, i) =>
      lines.push(`${(i === 0 ? label : "").padEnd(LABEL_WIDTH)}${line}`),
    );
  const more = (text: string) => add("", text);

  const error = status.lastError
    ? ` (last error: ${status.lastError.reason}: ${status.lastError.message})`
    : "";
  add("session state", `${status.state}${error}`);
  const f = status.frames;
  add("frames", `in ${f.in}, sent ${f.sent}, returned ${f.returned}, out ${f.out}, dropped ${f.dropped}`);
  const stoppedEarly = context.interrupted || status.state !== "completed";
  if (stoppedEarly && f.in > f.out + f.dropped)
    more(`${f.in - f.out - f.dropped} had not come out when the demo stopped (in the relay or at the peer)`);
  else if (f.sent > f.returned)
    more(`${f.sent - f.returned} sent to the peer never came back (the peer dropped them)`);
  if (f.peerLimited > 0)
    more(
      `${f.peerLimited} of the dropped were peer-limited: ComfyStream processed fewer frames than came in, ` +
        `so the relay kept at most ${status.peerWindow.capacity} in flight to it` +
        (status.peerWindow.reason ? ` (${status.peerWindow.reason})` : ""),
    );
  if (status.segments.dropped > 0)
    more(
      `${status.segments.dropped} input ${status.segments.dropped === 1 ? "segment was" : "segments were"} ` +
        "dropped whole: the relay drops a segment that arrives before WebRTC and the transcoder are " +
        "ready, or while it is behind",
    );

  add(
    "segments",
    `in ${status.segments.in}, out ${status.segments.out}; ${context.outputSegmentsWritten} written to ` +
      `${context.outDir} (${formatBytes(context.outputBytes)})`,
  );
  more(`input: cut at every keyframe of the source, one each ${seconds(context.inputKeyframeIntervalSec)}`);
  more(outputSegmentsExplained(m, status.segments, context));
  const keyframes = status.outputKeyframes;
  more(
    keyframes.source === "re-encode"
      ? `output IDRs: the returned video is re-encoded (${keyframes.reason ?? "the peer sent too few IDRs"}); ` +
          `${keyframes.reEncodedFrames} frames re-encoded`
      : "output IDRs: ComfyStream's own, made on the relay's keyframe requests",
  );
  if (m.firstOutputAfterMs !== undefined)
    more(
      `start-up: the first output frame came ${seconds(m.firstOutputAfterMs / 1000)} after the first input frame`,
    );

  const audio = status.audio;
  add(
    "audio",
    `${audio.reason}; ${audio.codecIn ?? "no input audio"} → ${audio.codecOut ?? "none"}; frames in ` +
      `${audio.frames.in}, out ${audio.frames.out}, dropped ${audio.frames.dropped}`,
  );
  const sync = context.avSync;
  if (sync && sync.offsetsMs.length > 0)
    more(
      `lip-sync on the output: beep − flash p50 ${sync.p50AbsMs} ms, p95 ${sync.p95AbsMs} ms over ` +
        `${sync.offsetsMs.length} flashes (a viewer notices from ~40 ms)`,
    );
  else if (audio.codecOut) more("lip-sync on the output: not measured (no flash/beep pair found)");

  const latency = m.latency;
  if (latency) {
    const { all, startUp, afterStartUp, slowest } = latency;
    add(
      "latency",
      `input → output, per frame as the demo saw it: p50 ${ms(all.p50)}, p95 ${ms(all.p95)}, ` +
        `max ${ms(all.max)} (${all.frames} frames)`,
    );
    if (startUp && afterStartUp)
      more(
        `first ${START_UP_SECONDS} s of output (start-up) p50 ${ms(startUp.p50)}; ` +
          `after it p50 ${ms(afterStartUp.p50)}, p95 ${ms(afterStartUp.p95)}`,
      );
    more(
      `slowest 5% (${slowest.frames} frames, ${ms(slowest.fromMs)} and more): ${slowest.inStartUp} in the first ` +
        `${START_UP_SECONDS} s, ${slowest.afterIdr} within ${AFTER_IDR_SECONDS} s after a returned IDR, ` +
        `${slowest.elsewhere} elsewhere`,
    );
    if (context.standin && slowest.afterIdr * 3 >= slowest.frames)
      more("(the stand-in peer makes an IDR by restarting its encoder, and holds frames meanwhile)");
  } else if (m.outputFrames > 0) {
    add("latency", `not measured: none of the ${m.outputFrames} output frames matched an input frame's PTS`);
  }
  const hop = status.hopLatencyMs;
  add(
    "per hop",
    `relay forward p50 ${ms(hop.forward.p50)} / p95 ${ms(hop.forward.p95)}, ` +
      `peer (WebRTC both ways) p50 ${ms(status.latencyMs.p50)} / p95 ${ms(status.latencyMs.p95)}, ` +
      `relay return p50 ${ms(hop.return.p50)} / p95 ${ms(hop.return.p95)} ` +
      `(session status, last ${status.latencyMs.samples} frames)`,
  );
  const hopSum = [hop.forward.p50, status.latencyMs.p50, hop.return.p50];
  const sum = hopSum.every((value) => value !== null) ? hopSum.reduce((a, b) => a! + b!, 0)! : undefined;
  if (latency && sum !== undefined && sum < latency.all.p50) {
    more(
      `their p50s add up to ${ms(sum)} of the ${ms(latency.all.p50)} input → output p50; the rest is ` +
        "the trickle server both ways and, in the relay's input reader, the wait for a frame's end " +
        `(an MPEG-TS frame is complete only when the next one starts: ${ms(1000 / status.frameRate)})`,
    );
  }
  const busy = context.loadAverage > context.cpus;
  add(
    "machine",
    `load average ${context.loadAverage.toFixed(1)} over the last minute, ${context.cpus} CPUs` +
      (busy ? " (busy: frames waited for a CPU, which lengthens every figure and most of all the tail)" : ""),
  );
  add("reconnects", `${status.reconnects}; prompts generation ${status.promptsGeneration}`);
  return lines;
}

function outputSegmentsExplained(
  m: DemoMeasurements,
  counts: SessionStatus["segments"],
  context: SummaryContext,
): string {
  const { count, shortestSec, longestSec, lastSec, idrIntervalSec } = m.segments;
  if (count === 0) return "output: no segment came back";
  const lengths: string[] = [];
  if (shortestSec !== undefined && longestSec !== undefined)
    lengths.push(
      shortestSec.toFixed(2) === longestSec.toFixed(2)
        ? `${shortestSec.toFixed(2)} s`
        : `${shortestSec.toFixed(2)}–${longestSec.toFixed(2)} s`,
    );
  if (lastSec !== undefined) lengths.push(`${count > 1 ? "the last " : ""}${lastSec.toFixed(2)} s`);
  const rule =
    `output: ${count} ${count === 1 ? "segment" : "segments"}${lengths.length ? ` (${lengths.join(", ")})` : ""}; ` +
    `a segment runs from a returned IDR to the first returned IDR at least ` +
    `${seconds(context.segmentDurationSec)} later (--segment-duration)`;
  if (idrIntervalSec === undefined) return `${rule}; the output has only one IDR`;
  const cadence = `the output has an IDR every ${idrIntervalSec.toFixed(2)} s`;
  return counts.out < counts.in
    ? `${rule}; ${cadence}, so the output has fewer, longer segments than the input`
    : `${rule}; ${cadence}`;
}

/** Splits text into lines of at most `width` characters at spaces (a longer word stays whole). */
export function wrapWords(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  lines.push(line);
  return lines;
}

function ms(value: number | null): string {
  if (value === null) return "-";
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
}

function seconds(value: number): string {
  return `${Number.isInteger(value) ? value : value.toFixed(2)} s`;
}
