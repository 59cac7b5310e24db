/** The overview: every session with its phase, fps, latency and output thumbnail; filters. */
import { audioSummary, type AudioView } from "./audio.js";
import { el, fmt } from "./dom.js";

interface OverviewItem {
  id: string;
  namespace: string | null;
  phase: string;
  webrtc_state: string;
  fps: { input: number; output: number };
  latency_ms: { p50: number | null; p95: number | null };
  thumbnail: number | null;
  view?: { audio?: AudioView };
}

const REFRESH_MS = 2000;

export function showOverview(main: HTMLElement, apiBase: string, signal: AbortSignal): void {
  const namespaceFilter = el("select", { id: "filter-namespace" }, el("option", { value: "" }, "all"));
  const phaseFilter = el("select", { id: "filter-phase" }, el("option", { value: "" }, "all"));
  const body = el("tbody");
  const status = el("p", { role: "status", "aria-live": "polite", class: "muted" }, "loading…");
  main.replaceChildren(
    el("h2", {}, "Sessions"),
    el(
      "div",
      { class: "filters" },
      el("label", { for: "filter-namespace" }, "Namespace"),
      namespaceFilter,
      el("label", { for: "filter-phase" }, "Phase"),
      phaseFilter,
    ),
    status,
    el(
      "table",
      { id: "sessions" },
      el("caption", { class: "visually-hidden" }, "Sessions"),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ...[
            "Output",
            "Session",
            "Namespace",
            "Phase",
            "WebRTC",
            "fps in / out",
            "Latency p50 / p95",
            "Audio",
          ].map((h) => el("th", { scope: "col" }, h)),
        ),
      ),
      body,
    ),
  );
  let items: OverviewItem[] = [];
  // The gateway's: namespaces it watches but may not read (RBAC), said rather than hidden.
  let unreadable: { namespace: string; reason: string }[] = [];
  const render = () => {
    const ns = namespaceFilter.value;
    const phase = phaseFilter.value;
    const shown = items.filter((i) => (!ns || (i.namespace ?? "") === ns) && (!phase || i.phase === phase));
    body.replaceChildren(...shown.map((item) => row(item, apiBase)));
    const missing = unreadable.map((u) => `${u.namespace} (${u.reason})`).join(", ");
    status.textContent =
      `${shown.length} of ${items.length} sessions` +
      (missing ? `; could not read namespace ${missing}` : "");
  };
  const setOptions = (select: HTMLSelectElement, values: string[]) => {
    const current = select.value;
    select.replaceChildren(
      el("option", { value: "" }, "all"),
      ...values.map((v) => el("option", { value: v }, v)),
    );
    select.value = values.includes(current) ? current : "";
  };
  namespaceFilter.addEventListener("change", render);
  phaseFilter.addEventListener("change", render);
  const refresh = async () => {
    try {
      const res = await fetch(`${apiBase}/sessions`, { signal });
      const body = (await res.json()) as {
        sessions: OverviewItem[];
        unreadable_namespaces?: { namespace: string; reason: string }[];
      };
      items = body.sessions;
      unreadable = body.unreadable_namespaces ?? [];
      setOptions(namespaceFilter, [...new Set(items.map((i) => i.namespace ?? ""))].filter(Boolean).sort());
      setOptions(phaseFilter, [...new Set(items.map((i) => i.phase))].sort());
      render();
    } catch (err) {
      if (!signal.aborted) status.textContent = `could not load the sessions: ${(err as Error).message}`;
    }
  };
  void refresh();
  const timer = setInterval(() => void refresh(), REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}

function row(item: OverviewItem, apiBase: string): HTMLTableRowElement {
  const href = `#/session/${encodeURIComponent(item.id)}`;
  const thumb =
    item.thumbnail !== null
      ? el("img", {
          src: `${apiBase}/sessions/${encodeURIComponent(item.id)}/thumbnails/output?v=${item.thumbnail}`,
          alt: `output of ${item.id}`,
          width: "96",
        })
      : el("span", { class: "muted" }, "none yet");
  return el(
    "tr",
    { "data-session": item.id },
    el("td", {}, thumb),
    el("th", { scope: "row" }, el("a", { href }, item.id)),
    el("td", {}, item.namespace ?? "–"),
    el("td", {}, el("span", { class: `phase phase-${item.phase.toLowerCase()}` }, item.phase)),
    el("td", {}, item.webrtc_state),
    el("td", {}, `${fmt(item.fps.input)} / ${fmt(item.fps.output)}`),
    el("td", {}, `${fmt(item.latency_ms.p50, 0, " ms")} / ${fmt(item.latency_ms.p95, 0, " ms")}`),
    el("td", { class: "audio" }, audioSummary(item.view?.audio)),
  );
}
