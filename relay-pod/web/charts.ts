/**
 * The session page's graphs (uPlot): the last minutes, one point a second, with the markers (state
 * and WebRTC changes, reconnects) drawn as labelled vertical lines on every graph's time axis.
 */
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Sample {
  t: number;
  latencyP50: number | null;
  latencyP95: number | null;
  fpsIn: number;
  fpsOut: number;
  queueFill: { decodedFrames: number; processedFrames: number; outputSegments: number };
  dropped: number;
}

export interface Marker {
  t: number;
  kind: "state" | "webrtc" | "reconnect";
  label: string;
}

interface GraphSpec {
  title: string;
  unit: string;
  series: { label: string; color: string; value: (s: Sample) => number | null; dash?: number[] }[];
}

/** Colours with at least 3:1 contrast on white, told apart by dash as well as hue. */
const GRAPHS: GraphSpec[] = [
  {
    title: "End-to-end latency (ms)",
    unit: "ms",
    series: [
      { label: "p50", color: "#1f5fbf", value: (s) => s.latencyP50 },
      { label: "p95", color: "#b3261e", value: (s) => s.latencyP95, dash: [6, 4] },
    ],
  },
  {
    title: "Frames per second",
    unit: "fps",
    series: [
      { label: "input", color: "#1f5fbf", value: (s) => s.fpsIn },
      { label: "output", color: "#1b7a3a", value: (s) => s.fpsOut, dash: [6, 4] },
    ],
  },
  {
    title: "Queue fill (share of capacity)",
    unit: "",
    series: [
      { label: "decoded frames", color: "#1f5fbf", value: (s) => s.queueFill.decodedFrames },
      {
        label: "processed frames",
        color: "#8a4b00",
        value: (s) => s.queueFill.processedFrames,
        dash: [6, 4],
      },
      { label: "output segments", color: "#6b2fa0", value: (s) => s.queueFill.outputSegments, dash: [2, 3] },
    ],
  },
  {
    title: "Dropped frames (total)",
    unit: "",
    series: [{ label: "dropped", color: "#b3261e", value: (s) => s.dropped }],
  },
];

const MARKER_COLORS: Record<Marker["kind"], string> = {
  state: "#444",
  webrtc: "#6b2fa0",
  reconnect: "#b3261e",
};

export class SessionGraphs {
  private samples: Sample[] = [];
  private markers: Marker[] = [];
  private readonly plots: uPlot[] = [];
  private readonly maxSamples = 300;

  constructor(container: HTMLElement) {
    for (const spec of GRAPHS) {
      const figure = document.createElement("figure");
      figure.className = "graph";
      const caption = document.createElement("figcaption");
      caption.textContent = spec.title;
      figure.append(caption);
      container.append(figure);
      const plot = new uPlot(
        {
          width: graphWidth(container),
          height: 160,
          series: [
            {},
            ...spec.series.map((s) => ({
              label: s.label,
              stroke: s.color,
              width: 2,
              ...(s.dash ? { dash: s.dash } : {}),
              value: (_u: uPlot, v: number | null) =>
                v === null ? "–" : `${v.toFixed(spec.unit === "" ? 2 : 1)}`,
            })),
          ],
          axes: [{}, { size: 50 }],
          hooks: { draw: [(u: uPlot) => this.drawMarkers(u)] },
        },
        [[]],
        figure,
      );
      plot.root.setAttribute("aria-label", `${spec.title}, last minutes`);
      plot.root.setAttribute("role", "img");
      this.plots.push(plot);
    }
    window.addEventListener("resize", () => {
      for (const plot of this.plots) plot.setSize({ width: graphWidth(container), height: 160 });
    });
  }

  /** How many points the graphs show (the test reads it from data-points). */
  get points(): number {
    return this.samples.length;
  }

  load(samples: Sample[], markers: Marker[]): void {
    this.samples = samples.slice(-this.maxSamples);
    this.markers = markers;
    this.redraw();
  }

  add(sample: Sample, markers: Marker[]): void {
    this.samples.push(sample);
    if (this.samples.length > this.maxSamples) this.samples.shift();
    this.markers.push(...markers);
    const oldest = this.samples[0]?.t ?? 0;
    this.markers = this.markers.filter((m) => m.t >= oldest);
    this.redraw();
  }

  private redraw(): void {
    const t = this.samples.map((s) => s.t);
    GRAPHS.forEach((spec, i) => {
      const columns = spec.series.map((series) => this.samples.map((s) => series.value(s)));
      this.plots[i]!.setData([t, ...columns] as uPlot.AlignedData);
      this.plots[i]!.root.dataset.points = String(t.length);
    });
  }

  private drawMarkers(u: uPlot): void {
    const { ctx } = u;
    const { top, height } = u.bbox;
    ctx.save();
    ctx.font = `${Math.round(10 * devicePixelRatio)}px sans-serif`;
    // Markers close together (a state change and a WebRTC change in the same second) get their
    // labels on separate lines.
    let lastX = -Infinity;
    let line = 0;
    for (const marker of this.markers) {
      const x = Math.round(u.valToPos(marker.t, "x", true));
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.strokeStyle = ctx.fillStyle = MARKER_COLORS[marker.kind];
      ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      line = x - lastX < 80 * devicePixelRatio ? line + 1 : 0;
      lastX = x;
      ctx.fillText(marker.label, x + 3, top + (12 + 12 * line) * devicePixelRatio);
    }
    ctx.restore();
  }
}

function graphWidth(container: HTMLElement): number {
  const width = container.clientWidth || 600;
  return Math.max(260, Math.min(width - 8, width >= 900 ? width / 2 - 16 : width - 8));
}
