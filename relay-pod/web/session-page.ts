/**
 * One session, live: thumbnails, status, graphs (server-sent events, a tick a second), the prompts
 * editor and the stop button. Edits and stops go to the REST API's own routes with the token.
 */
import { sendChange } from "./access.js";
import { audioFacts, type AudioView } from "./audio.js";
import { SessionGraphs, type Marker, type Sample } from "./charts.js";
import { el, fmt } from "./dom.js";

type View = Record<string, unknown> & {
  session_id: string;
  status: string;
  webrtc_state: string;
  mode: string;
  encoder: string | null;
  decoder: string | null;
  codec_reason: string;
  width: number;
  height: number;
  fps: { input: number; output: number };
  latency_ms: { p50: number | null; p95: number | null };
  reconnects: number;
  ffmpeg_restarts: number;
  prompts_generation: number;
  last_error: { reason: string; message: string; at: string } | null;
  audio?: AudioView;
  /** The gateway's: the REST API's id of the session, null where its REST API cannot change it. */
  rest_id?: string | null;
  namespace?: string;
  phase?: string;
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
};

interface Snapshot {
  view: View;
  history: { samples: Sample[]; markers: Marker[] };
  prompts: unknown;
  thumbnails: Thumbnails;
}
interface Tick {
  view: View;
  sample: Sample;
  markers: Marker[];
  thumbnails: Thumbnails;
  prompts?: unknown;
}
type Thumbnails = { input: number | null; output: number | null };

export function showSession(main: HTMLElement, apiBase: string, id: string, signal: AbortSignal): void {
  const enc = encodeURIComponent(id);
  const thumbs = {
    input: el("img", { id: "thumb-input", alt: `input of ${id}: no keyframe yet`, width: "192" }),
    output: el("img", { id: "thumb-output", alt: `output of ${id}: no keyframe yet`, width: "192" }),
  };
  const facts = el("dl", { id: "facts", class: "facts" });
  const conditions = el("ul", { id: "conditions", class: "conditions" });
  const graphs = el("div", { id: "graphs", class: "graphs" });
  const live = el("p", { id: "live", role: "status", "aria-live": "polite", class: "muted" }, "connecting…");
  const editor = el("textarea", {
    id: "prompts",
    rows: "12",
    spellcheck: "false",
    "aria-describedby": "prompts-help prompts-result",
  });
  const result = el("p", { id: "prompts-result", role: "alert", class: "result" });
  const apply = el("button", { type: "submit", id: "apply-prompts" }, "Apply prompts");
  const stop = el("button", { type: "button", id: "stop", class: "danger" }, "Stop session…");
  const stopResult = el("p", { id: "stop-result", role: "alert", class: "result" });
  const readOnly = el("p", { id: "read-only-note", class: "muted", hidden: "" });
  // Where changes go: the REST API's id (the gateway's differs from the page's key in other namespaces).
  let restId: string | null = id;
  const form = el(
    "form",
    { id: "prompts-form", class: "prompts" },
    el("label", { for: "prompts" }, "Prompts (ComfyUI API-format workflow JSON)"),
    el(
      "p",
      { id: "prompts-help", class: "muted" },
      "Applied live, without a restart. Needs the API token when the service has one.",
    ),
    editor,
    el("div", { class: "actions" }, apply),
    result,
  );
  main.replaceChildren(
    el("p", {}, el("a", { href: "#/" }, "← all sessions")),
    el("h2", {}, "Session ", el("code", {}, id)),
    live,
    el(
      "section",
      { "aria-labelledby": "thumbs-h", class: "thumbs" },
      el("h3", { id: "thumbs-h" }, "Pictures (newest keyframes)"),
      el("figure", {}, thumbs.input, el("figcaption", {}, "input")),
      el("figure", {}, thumbs.output, el("figcaption", {}, "output")),
    ),
    el("section", { "aria-labelledby": "facts-h" }, el("h3", { id: "facts-h" }, "State"), facts, conditions),
    el("section", { "aria-labelledby": "graphs-h" }, el("h3", { id: "graphs-h" }, "Last minutes"), graphs),
    el(
      "section",
      { "aria-labelledby": "prompts-h" },
      el("h3", { id: "prompts-h" }, "Prompts"),
      readOnly,
      form,
    ),
    el("section", { "aria-labelledby": "stop-h" }, el("h3", { id: "stop-h" }, "Stop"), stop, stopResult),
  );
  const charts = new SessionGraphs(graphs);
  let editorTouched = false;
  editor.addEventListener("input", () => (editorTouched = true));

  const showThumbs = (sequences: Thumbnails) => {
    for (const side of ["input", "output"] as const) {
      const sequence = sequences[side];
      const img = thumbs[side];
      if (sequence === null || img.dataset.sequence === String(sequence)) continue;
      img.src = `${apiBase}/sessions/${enc}/thumbnails/${side}?v=${sequence}`;
      img.alt = `${side} of ${id}, keyframe ${sequence}`;
      img.dataset.sequence = String(sequence);
    }
  };
  const showPrompts = (prompts: unknown) => {
    if (prompts === undefined || editorTouched) return;
    editor.value = JSON.stringify(prompts, null, 2);
  };
  const showView = (view: View) => {
    if (view.rest_id !== undefined && view.rest_id !== restId) {
      restId = view.rest_id;
      apply.disabled = stop.disabled = restId === null;
      readOnly.hidden = restId !== null;
      readOnly.textContent =
        restId === null
          ? `Read-only here: the gateway changes only the sessions of its own namespace. Edit spec.prompts or delete RelaySession ${id} with kubectl.`
          : "";
    }
    const rows: [string, string, string?][] = [
      ["State", view.phase ? `${view.phase} (relay: ${view.status})` : view.status],
      ["WebRTC / ICE", view.webrtc_state],
      ["Mode", view.mode],
      ["Video", `${view.width}×${view.height}`],
      ["Encoder / decoder", `${view.encoder ?? "–"} / ${view.decoder ?? "–"}`],
      ["Codec choice", view.codec_reason || "–"],
      ["fps in / out", `${fmt(view.fps.input)} / ${fmt(view.fps.output)}`],
      ["Latency p50 / p95", `${fmt(view.latency_ms.p50, 0, " ms")} / ${fmt(view.latency_ms.p95, 0, " ms")}`],
      ["Reconnects", String(view.reconnects)],
      ...audioFacts(view.audio).map(([id, label, value]): [string, string, string] => [label, value, id]),
      ["ffmpeg restarts", String(view.ffmpeg_restarts)],
      ["Prompts generation", String(view.prompts_generation)],
      [
        "Last error",
        view.last_error
          ? `${view.last_error.reason}: ${view.last_error.message} (${view.last_error.at})`
          : "none",
      ],
    ];
    facts.replaceChildren(
      ...rows.flatMap(([k, v, id]) => [el("dt", {}, k), el("dd", id ? { id: `fact-${id}` } : {}, v)]),
    );
    conditions.replaceChildren(
      ...(view.conditions ?? []).map((c) =>
        el(
          "li",
          {},
          `${c.type}=${c.status}${c.reason ? ` (${c.reason})` : ""}${c.message ? `: ${c.message}` : ""}`,
        ),
      ),
    );
  };

  const events = new EventSource(`${apiBase}/sessions/${enc}/events`);
  signal.addEventListener("abort", () => events.close());
  events.addEventListener("snapshot", (e) => {
    const data = JSON.parse((e as MessageEvent<string>).data) as Snapshot;
    showView(data.view);
    charts.load(data.history.samples, data.history.markers);
    showThumbs(data.thumbnails);
    showPrompts(data.prompts);
    live.textContent = `live: ${new Date().toLocaleTimeString()}`;
  });
  events.addEventListener("tick", (e) => {
    const data = JSON.parse((e as MessageEvent<string>).data) as Tick;
    showView(data.view);
    charts.add(data.sample, data.markers);
    showThumbs(data.thumbnails);
    showPrompts(data.prompts);
    live.textContent = `live: ${new Date().toLocaleTimeString()}`;
  });
  events.addEventListener("gone", () => {
    live.textContent = "this session is gone (ended and removed)";
    events.close();
  });
  events.onerror = () => {
    if (events.readyState === EventSource.CONNECTING) live.textContent = "reconnecting…";
  };

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    let prompts: unknown;
    try {
      prompts = JSON.parse(editor.value);
    } catch (err) {
      showResult(result, false, `not JSON: ${(err as Error).message}`);
      editor.setAttribute("aria-invalid", "true");
      return;
    }
    apply.disabled = true;
    if (restId === null) return;
    void sendChange("POST", `/session/${encodeURIComponent(restId)}/prompts`, { prompts })
      .then((reply) => {
        editor.setAttribute("aria-invalid", String(!reply.ok));
        if (reply.ok) editorTouched = false;
        showResult(result, reply.ok, reply.ok ? "applied" : explain(reply.status, reply.error));
      })
      .finally(() => (apply.disabled = false));
  });
  stop.addEventListener("click", () => {
    if (restId === null || !window.confirm(`Stop session ${id}? Its output stream ends.`)) return;
    void sendChange("DELETE", `/session/${encodeURIComponent(restId)}`).then((reply) =>
      showResult(stopResult, reply.ok, reply.ok ? "stopped" : explain(reply.status, reply.error)),
    );
  });
}

function explain(status: number, error: string | undefined): string {
  const reason = error ?? `HTTP ${status}`;
  return status === 401 ? `refused: ${reason} (enter the API token above)` : `refused: ${reason}`;
}

function showResult(target: HTMLElement, ok: boolean, text: string): void {
  target.textContent = text;
  target.className = `result ${ok ? "ok" : "error"}`;
}
