/**
 * The last minutes of a session as the session page graphs them: one sample a second (latency
 * p50/p95, input/output fps, each queue's fill and capacity, dropped frames) and markers on the time
 * axis where the state or the WebRTC state changed or ComfyStream was reconnected. Taken from
 * SessionStatus, which the session computes anyway; a ring of bounded size per session.
 */
import type { SessionStatus } from "../session/types.js";

/** Five minutes at one sample a second. */
export const HISTORY_SAMPLES = 300;

export interface HistorySample {
  /** Unix time in seconds (what uPlot's time axis takes). */
  t: number;
  latencyP50: number | null;
  latencyP95: number | null;
  fpsIn: number;
  fpsOut: number;
  /** size/capacity per queue, 0..1. */
  queueFill: { decodedFrames: number; processedFrames: number; outputSegments: number };
  /** Frames dropped so far, all stages together. */
  dropped: number;
}

export interface HistoryMarker {
  t: number;
  kind: "state" | "webrtc" | "reconnect";
  label: string;
}

export class SessionHistory {
  private readonly samples: HistorySample[] = [];
  private readonly markers: HistoryMarker[] = [];
  private last: { state: string; webrtcState: string; reconnects: number } | undefined;

  constructor(private readonly capacity = HISTORY_SAMPLES) {}

  /** Records one sample; returns it and the markers it added. */
  record(status: SessionStatus, nowMs = Date.now()): { sample: HistorySample; markers: HistoryMarker[] } {
    const t = Math.round(nowMs / 100) / 10;
    const q = status.queues;
    const fill = (size: number, capacity: number) => (capacity > 0 ? size / capacity : 0);
    const sample: HistorySample = {
      t,
      latencyP50: status.latencyMs.p50,
      latencyP95: status.latencyMs.p95,
      fpsIn: status.fps.input,
      fpsOut: status.fps.output,
      queueFill: {
        decodedFrames: fill(q.decodedFrames.size, q.decodedFrames.capacity),
        processedFrames: fill(q.processedFrames.size, q.processedFrames.capacity),
        outputSegments: fill(q.outputSegments.size, q.outputSegments.capacity),
      },
      dropped: status.frames.dropped,
    };
    const added: HistoryMarker[] = [];
    const previous = this.last;
    if (!previous || previous.state !== status.state)
      added.push({ t, kind: "state", label: `state ${status.state}` });
    if (!previous || previous.webrtcState !== status.webrtcState)
      added.push({ t, kind: "webrtc", label: `WebRTC ${status.webrtcState}` });
    if (previous && status.reconnects > previous.reconnects)
      added.push({ t, kind: "reconnect", label: `reconnect #${status.reconnects}` });
    this.last = { state: status.state, webrtcState: status.webrtcState, reconnects: status.reconnects };
    push(this.samples, sample, this.capacity);
    for (const marker of added) push(this.markers, marker, this.capacity);
    return { sample, markers: added };
  }

  snapshot(): { samples: HistorySample[]; markers: HistoryMarker[] } {
    const oldest = this.samples[0]?.t ?? 0;
    return { samples: [...this.samples], markers: this.markers.filter((m) => m.t >= oldest) };
  }
}

function push<T>(ring: T[], item: T, capacity: number): void {
  ring.push(item);
  if (ring.length > capacity) ring.splice(0, ring.length - capacity);
}
