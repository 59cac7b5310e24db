/**
 * Prometheus metrics for relay sessions. Every per-session series is derived from the sessions'
 * `SessionStatus` snapshots when /metrics is scraped (prom-client `collect` callbacks), so the
 * pipeline does no metrics work per frame and the numbers are the same ones the status API shows.
 *
 * Monotonic numbers (frames, segments, reconnects, restarts, drops) are real Prometheus counters
 * named `..._total`; they are rebuilt from the snapshot on each scrape, so a session that is removed
 * simply disappears and a new session with the same id looks like a counter reset, which
 * Prometheus' rate() handles.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import type { QueueSnapshot, SessionState, SessionStatus, WebRtcConnectionState } from "../session/types.js";

export const METRIC_PREFIX = "trickle_relay_";

const SESSION_STATES: readonly SessionState[] = [
  "starting",
  "connecting",
  "running",
  "degraded",
  "completed",
  "stopped",
  "failed",
];

const WEBRTC_STATES: readonly WebRtcConnectionState[] = [
  "new",
  "connecting",
  "connected",
  "disconnected",
  "failed",
  "closed",
];

/** Queue label values, in the snake_case the REST API uses for the same queues. */
const QUEUES = {
  decoded_frames: (s: SessionStatus) => s.queues.decodedFrames,
  processed_frames: (s: SessionStatus) => s.queues.processedFrames,
  output_segments: (s: SessionStatus) => s.queues.outputSegments,
} satisfies Record<string, (s: SessionStatus) => QueueSnapshot>;

export interface RelayMetricsOptions {
  /** Add prom-client's default process and Node.js metrics (unprefixed, as dashboards expect). Default true. */
  defaultMetrics?: boolean;
}

/**
 * A registry whose per-session series come from `getStatuses()` at scrape time.
 * `getStatuses` is called once per scrape, not once per metric.
 */
export function createRelayMetrics(
  getStatuses: () => SessionStatus[],
  options: RelayMetricsOptions = {},
): Registry {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const snapshot = oncePerScrape(getStatuses);

  /** A gauge whose series are rebuilt from the snapshot on every scrape. */
  const gauge = <L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    fill: (status: SessionStatus, set: (labels: Record<L, string>, value: number) => void) => void,
  ): void => {
    new Gauge<"session" | L>({
      name: METRIC_PREFIX + name,
      help,
      labelNames: ["session", ...labelNames],
      registers: [registry],
      collect() {
        this.reset();
        for (const status of snapshot()) {
          fill(status, (labels, value) => this.set({ session: status.id, ...labels }, value));
        }
      },
    });
  };

  /** A counter (name ends in _total) whose per-session values are the snapshot's running totals. */
  const counter = <L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    fill: (status: SessionStatus, set: (labels: Record<L, string>, value: number) => void) => void,
  ): void => {
    new Counter<"session" | L>({
      name: METRIC_PREFIX + name,
      help,
      labelNames: ["session", ...labelNames],
      registers: [registry],
      collect() {
        this.reset();
        for (const status of snapshot()) {
          fill(status, (labels, value) => {
            // A counter must never go negative; a broken snapshot must not break the whole scrape.
            if (Number.isFinite(value) && value >= 0) this.inc({ session: status.id, ...labels }, value);
          });
        }
      },
    });
  };

  const perSessionCounter = (name: string, help: string, value: (s: SessionStatus) => number): void =>
    counter(name, help, [], (s, set) => set({}, value(s)));
  const perSessionGauge = (name: string, help: string, value: (s: SessionStatus) => number): void =>
    gauge(name, help, [], (s, set) => set({}, value(s)));

  gauge("session_state", "1 for the session's current state, 0 for the others", ["state"], (s, set) => {
    for (const state of SESSION_STATES) set({ state }, s.state === state ? 1 : 0);
  });
  perSessionGauge(
    "session_start_time_seconds",
    "When the session was created, Unix time in seconds",
    (s) => Date.parse(s.createdAt) / 1000,
  );

  gauge("queue_size", "Items waiting in the queue", ["queue"], (s, set) => {
    for (const [queue, pick] of Object.entries(QUEUES)) set({ queue }, pick(s).size);
  });
  gauge("queue_capacity", "Most items the queue holds before it drops", ["queue"], (s, set) => {
    for (const [queue, pick] of Object.entries(QUEUES)) set({ queue }, pick(s).capacity);
  });
  counter("queue_dropped_total", "Items the queue dropped because it was full", ["queue"], (s, set) => {
    for (const [queue, pick] of Object.entries(QUEUES)) set({ queue }, pick(s).dropped);
  });

  gauge(
    "video_codec_info",
    "1, labelled with the forward transcode's encoder (nvenc, x264, none) and decoder (nvdec, software, none)",
    ["encoder", "decoder"],
    (s, set) => {
      if (s.encoder !== null && s.decoder !== null)
        set({ encoder: s.encoder.split(" ")[0]!, decoder: s.decoder.split(" ")[0]! }, 1);
    },
  );

  gauge(
    "audio_info",
    "1, labelled with the session's audio mode (passthrough, none) and its codecs in and out (none when there is none)",
    ["mode", "codec_in", "codec_out"],
    (s, set) =>
      set(
        { mode: s.audio.mode, codec_in: s.audio.codecIn ?? "none", codec_out: s.audio.codecOut ?? "none" },
        1,
      ),
  );
  counter(
    "audio_frames_total",
    "Audio frames by what became of them: in (read from the input), out (written to the output), dropped (by policy), corrupt (skipped)",
    ["result"],
    (s, set) => {
      for (const result of ["in", "out", "dropped", "corrupt"] as const)
        set({ result }, s.audio.frames[result]);
    },
  );
  perSessionGauge(
    "audio_queue_size",
    "Input audio frames held until the processed video reaches them",
    (s) => s.audio.queue.size,
  );

  perSessionGauge("webrtc_connected", "1 while the WebRTC connection to ComfyStream is connected", (s) =>
    s.webrtcState === "connected" ? 1 : 0,
  );
  gauge(
    "webrtc_state",
    "1 for the WebRTC connection's current state, 0 for the others",
    ["state"],
    (s, set) => {
      for (const state of WEBRTC_STATES) set({ state }, s.webrtcState === state ? 1 : 0);
    },
  );

  perSessionGauge("input_fps", "Frames per second read from the input trickle stream", (s) => s.fps.input);
  perSessionGauge(
    "output_fps",
    "Frames per second written to the output trickle stream",
    (s) => s.fps.output,
  );

  perSessionCounter("frames_in_total", "Frames demuxed from the input stream", (s) => s.frames.in);
  perSessionCounter("frames_sent_total", "Frames sent to ComfyStream over WebRTC", (s) => s.frames.sent);
  perSessionCounter(
    "frames_returned_total",
    "Frames received back from ComfyStream",
    (s) => s.frames.returned,
  );
  perSessionCounter("frames_out_total", "Frames muxed into the output stream", (s) => s.frames.out);
  perSessionCounter(
    "frames_dropped_total",
    "Frames dropped anywhere in the pipeline",
    (s) => s.frames.dropped,
  );

  perSessionCounter(
    "segments_in_total",
    "Segments read from the input trickle channel",
    (s) => s.segments.in,
  );
  perSessionCounter(
    "segments_out_total",
    "Segments published to the output trickle channel",
    (s) => s.segments.out,
  );
  perSessionCounter(
    "segments_dropped_total",
    "Input segments skipped because the relay fell behind",
    (s) => s.segments.dropped,
  );
  perSessionCounter(
    "segments_corrupt_total",
    "Input segments skipped because they could not be parsed",
    (s) => s.segments.corrupt,
  );
  perSessionCounter(
    "input_clock_jumps_total",
    "Jumps of the input's clock that the relay mended to keep the output's timestamps continuous",
    (s) => s.inputClockJumps,
  );

  gauge(
    "frame_latency_seconds",
    "End-to-end frame latency through ComfyStream (matched by RTP timestamp), recent quantiles",
    ["quantile"],
    (s, set) => {
      if (s.latencyMs.p50 !== null) set({ quantile: "0.5" }, s.latencyMs.p50 / 1000);
      if (s.latencyMs.p95 !== null) set({ quantile: "0.95" }, s.latencyMs.p95 / 1000);
    },
  );

  perSessionCounter("reconnects_total", "WebRTC reconnections to ComfyStream", (s) => s.reconnects);
  perSessionCounter(
    "ffmpeg_restarts_total",
    "Restarts of the session's ffmpeg process",
    (s) => s.ffmpegRestarts,
  );
  perSessionGauge(
    "prompts_generation",
    "Generation of the prompts ComfyStream last acknowledged (1 = the initial prompts)",
    (s) => s.promptsGeneration,
  );

  return registry;
}

/** The text exposition of a registry, with the content type to send it under. */
export async function renderMetrics(registry: Registry): Promise<{ contentType: string; body: string }> {
  return { contentType: registry.contentType, body: await registry.metrics() };
}

/**
 * prom-client runs every metric's collect callback in the same turn of the event loop when a scrape
 * starts, so the snapshot is taken once and dropped on the next turn: one scrape, one consistent
 * set of numbers, and nothing cached between scrapes.
 */
function oncePerScrape(getStatuses: () => SessionStatus[]): () => SessionStatus[] {
  let cached: SessionStatus[] | undefined;
  return () => {
    if (cached === undefined) {
      cached = getStatuses();
      setImmediate(() => {
        cached = undefined;
      });
    }
    return cached;
  };
}
