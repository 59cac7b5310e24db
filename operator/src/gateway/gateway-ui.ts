/**
 * The session pages (relay-pod/web, bundled into dist/web) served by the REST gateway under /ui/,
 * over the RelaySessions of the namespaces the operator watches (gateway-ui-sessions.ts: which ones,
 * and how a page names one). The same reads as the standalone service's
 * (relay-pod/src/server/ui-routes.ts), answered from the resources instead of live sessions:
 *
 *   GET /ui/api/access                 whether the caller's Authorization header carries the token
 *   GET /ui/api/sessions               every RelaySession the pages show: phase, WebRTC state, fps,
 *                                      latency, audio; and the namespaces that could not be read
 *   GET /ui/api/sessions/{key}/events  server-sent events: a snapshot, then a tick a second with
 *                                      the resource as it is then (status.relay, phase, conditions)
 *
 * The figures are as fresh as the relay pod's last status.relay report, not a second old as on
 * the standalone service, and there are no thumbnails: the relay pod serves no HTTP to fetch them
 * from. Reads need no token (the page is read-only without one) and leave the stream URLs out;
 * prompt edits and stops go to the gateway's own POST /session/{id}/prompts and DELETE
 * /session/{id}, which need the token as always and reach only the gateway's namespace.
 */
import path from "node:path";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fastifyStatic from "@fastify/static";
import type { CustomObjectsApi } from "@kubernetes/client-node";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { RelaySession } from "../../../crds/src/index.js";
import { sendError, type Logger } from "../../../relay-pod/src/index.js";
import { UiSessions, type UiResource } from "./gateway-ui-sessions.js";
import { relaySessionView } from "./session-view.js";

const UI_PATH = "/ui/";
const TICK_MS = 1000;
/** dist/web, beside dist/operator (this file is dist/operator/src/gateway/gateway-ui.js). */
const DEFAULT_ASSETS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../web");
const STREAM_URL_FIELDS = [
  "input_stream_url",
  "output_stream_url",
  "comfystream_url",
  "control_url",
  "events_url",
];

/** Reads under /ui/ need no token; the gateway's auth hook asks this. */
export function isGatewayUiRead(method: string, url: string): boolean {
  return (method === "GET" || method === "HEAD") && (url === "/ui" || url.startsWith(UI_PATH));
}

export interface GatewayUiOptions {
  customObjects: CustomObjectsApi;
  resource: UiResource;
  /** The namespaces the operator watches ([]: all); the gateway's own is always listed. */
  watchNamespaces?: readonly string[];
  isAuthorized: (authorizationHeader: string | undefined) => boolean;
  logger: Logger;
  assetsDir?: string;
}

// The server type is the gateway's; only register, get, hooks and inject are used here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyFastify = any;

export function installGatewayUi(app: AnyFastify, options: GatewayUiOptions): void {
  const { customObjects, resource, isAuthorized, logger } = options;
  const sessions = new UiSessions(customObjects, resource, options.watchNamespaces ?? [resource.namespace]);
  const assetsDir = options.assetsDir ?? DEFAULT_ASSETS_DIR;
  // Open event streams, ended before the server closes: close() would otherwise wait for them.
  const streams = new Set<() => void>();
  app.addHook("preClose", async () => {
    for (const stop of [...streams]) stop();
  });

  if (existsSync(path.join(assetsDir, "index.html"))) {
    void app.register(fastifyStatic, { root: assetsDir, prefix: UI_PATH, decorateReply: false });
  } else {
    logger.warn({ assetsDir }, "the session pages are not built (npm run build bundles them)");
    app.get(UI_PATH, async (_request: FastifyRequest, reply: FastifyReply) =>
      sendError(reply, 503, `the session pages are not built: no ${assetsDir}/index.html`),
    );
  }
  app.get("/ui", async (_request: FastifyRequest, reply: FastifyReply) => reply.redirect(UI_PATH));

  app.get("/ui/api/access", async (request: FastifyRequest) => ({
    token_required: true,
    authorized: isAuthorized(request.headers.authorization),
  }));

  app.get("/ui/api/sessions", async (request: FastifyRequest) => {
    const showUrls = isAuthorized(request.headers.authorization);
    const list = await sessions.list();
    return {
      unreadable_namespaces: list.unreadable,
      sessions: list.sessions.map((session) => {
        const view = pageView(session, showUrls, sessions.restIdOf(session));
        return {
          id: sessions.keyOf(session),
          namespace: session.metadata.namespace ?? resource.namespace,
          phase: session.status?.phase ?? "Pending",
          webrtc_state: view.webrtc_state,
          fps: view.fps,
          latency_ms: view.latency_ms,
          thumbnail: null,
          view,
        };
      }),
    };
  });

  app.get(
    "/ui/api/sessions/:id/events",
    async (request: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
      const { id } = request.params;
      const first = await sessions.read(id);
      if (!first) return sendError(reply, 404, `session ${JSON.stringify(id)} not found`);
      const restId = sessions.restIdOf(first);
      const showUrls = isAuthorized(request.headers.authorization);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
      });
      const send = (event: string, data: unknown) =>
        res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      const history = new ViewHistory();
      const firstView = pageView(first, showUrls, restId);
      send("snapshot", {
        view: firstView,
        history: { samples: [], markers: history.record(firstView).markers },
        prompts: first.spec.prompts ?? null,
        thumbnails: { input: null, output: null },
      });
      let prompts = JSON.stringify(first.spec.prompts ?? null);
      let busy = false;
      const timer = setInterval(() => {
        if (busy) return;
        busy = true;
        void sessions
          .read(id)
          .then((session) => {
            if (!session) {
              send("gone", {});
              stop();
              return;
            }
            const view = pageView(session, showUrls, restId);
            const newPrompts = JSON.stringify(session.spec.prompts ?? null);
            send("tick", {
              view,
              ...history.record(view),
              thumbnails: { input: null, output: null },
              ...(newPrompts !== prompts ? { prompts: session.spec.prompts ?? null } : {}),
            });
            prompts = newPrompts;
          })
          .finally(() => (busy = false));
      }, TICK_MS);
      const stop = () => {
        clearInterval(timer);
        streams.delete(stop);
        res.end();
      };
      streams.add(stop);
      request.raw.on("close", stop);
    },
  );
}

type View = Record<string, unknown> & {
  status: string;
  webrtc_state: string;
  reconnects: number;
  fps: { input: number; output: number };
  latency_ms: { p50: number | null; p95: number | null };
  queue_sizes: Record<string, number>;
  queue_capacity: Record<string, number>;
  frames: { dropped: number };
  phase: string | null;
};

/**
 * The gateway's session view with the resource's conditions, minus stream URLs for readers, and
 * `rest_id`: the REST API's id of the session, null where the REST API does not reach it (another
 * namespace), so the page offers no edit or stop there.
 */
function pageView(session: RelaySession, showUrls: boolean, restId: string | null): View {
  const view = relaySessionView(session) as View;
  view.conditions = session.status?.conditions ?? [];
  view.rest_id = restId;
  if (!showUrls) for (const field of STREAM_URL_FIELDS) if (view[field]) view[field] = "(hidden)";
  return view;
}

/** The page's samples and markers from successive views (relay-pod's SessionHistory, for views). */
class ViewHistory {
  private last: { phase: string | null; webrtc: string; reconnects: number } | undefined;

  record(view: View) {
    const t = Math.round(Date.now() / 100) / 10;
    const fill = (queue: string) =>
      (view.queue_capacity?.[queue] ?? 0) > 0
        ? (view.queue_sizes?.[queue] ?? 0) / view.queue_capacity[queue]!
        : 0;
    const sample = {
      t,
      latencyP50: view.latency_ms.p50,
      latencyP95: view.latency_ms.p95,
      fpsIn: view.fps.input,
      fpsOut: view.fps.output,
      queueFill: {
        decodedFrames: fill("decoded_frames"),
        processedFrames: fill("processed_frames"),
        outputSegments: fill("output_segments"),
      },
      dropped: view.frames?.dropped ?? 0,
    };
    const markers: { t: number; kind: string; label: string }[] = [];
    const previous = this.last;
    if (!previous || previous.phase !== view.phase)
      markers.push({ t, kind: "state", label: `phase ${view.phase ?? "Pending"}` });
    if (!previous || previous.webrtc !== view.webrtc_state)
      markers.push({ t, kind: "webrtc", label: `WebRTC ${view.webrtc_state}` });
    if (previous && view.reconnects > previous.reconnects)
      markers.push({ t, kind: "reconnect", label: `reconnect #${view.reconnects}` });
    this.last = { phase: view.phase, webrtc: view.webrtc_state, reconnects: view.reconnects };
    return { sample, markers };
  }
}
