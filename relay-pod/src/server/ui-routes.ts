/**
 * The session pages of the standalone service, under /ui/:
 *
 *   GET /ui/                                   the overview and session pages (static, bundled at build)
 *   GET /ui/api/access                         whether a token is needed to change anything, and whether
 *                                              the caller's Authorization header carries it
 *   GET /ui/api/sessions                       the overview: every session, briefly
 *   GET /ui/api/sessions/{id}/events           server-sent events: a snapshot, then a tick a second
 *   GET /ui/api/sessions/{id}/thumbnails/{side}  the newest input/output thumbnail (JPEG)
 *
 * All of these are reads and are served without the bearer token, so the page can be looked at
 * read-only; what would let someone act on a stream (its trickle URLs) is left out unless the
 * caller sends the token. Changes go through the REST API's own routes (POST
 * /session/{id}/prompts, DELETE /session/{id}), which the page calls with the token in an
 * Authorization header, so they are validated and authorized exactly as for any other caller.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import fastifyStatic from "@fastify/static";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Logger } from "../common/log.js";
import { resolveFfmpeg } from "../media/ffmpeg.js";
import { SessionHistory, type HistoryMarker, type HistorySample } from "../report/session-history.js";
import { sessionView } from "../report/session-view.js";
import { SessionThumbnails } from "../report/thumbnails.js";
import type { SessionStatus } from "../session/types.js";
import type { ApiServer } from "./api.js";
import { sendError } from "./http-replies.js";
import type { ManagedSession, SessionManager } from "./session-manager.js";

export const UI_PATH = "/ui/";

/** How often the page's numbers, graphs and thumbnails move on. */
const TICK_MS = 1000;
/** Thumbnail decoders of a session nobody watches any more end after this long. */
const THUMBNAIL_IDLE_MS = 15_000;
/** A session listed in the overview this recently counts as watched (the overview polls every 2 s). */
const LISTED_WATCH_MS = 5_000;

/** dist/web, beside dist/relay-pod (this file is dist/relay-pod/src/server/ui-routes.js). */
export const DEFAULT_UI_ASSETS_DIR = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../../web",
);

export interface UiRoutesOptions {
  sessions: SessionManager;
  /** Whether the caller's Authorization header carries the API token (always true without one). */
  isAuthorized: (authorizationHeader: string | undefined) => boolean;
  tokenRequired: boolean;
  logger: Logger;
  assetsDir?: string;
}

/** Reads under /ui/ need no token (see the file's comment); api.ts asks this in its auth hook. */
export function isUiRead(method: string, url: string): boolean {
  return (method === "GET" || method === "HEAD") && (url === "/ui" || url.startsWith(UI_PATH));
}

interface Watched {
  history: SessionHistory;
  thumbnails?: SessionThumbnails;
  viewers: number;
  lastViewedAt: number;
  /** When the overview last listed it (Date.now()). */
  listedAt: number;
  /** Each open event stream; called with undefined once the session is gone. */
  listeners: Set<(tick: Tick | undefined) => void>;
}

interface Tick {
  sample: HistorySample;
  markers: HistoryMarker[];
}

export function installUiRoutes(app: ApiServer, options: UiRoutesOptions): void {
  const { sessions, isAuthorized, tokenRequired, logger } = options;
  const assetsDir = options.assetsDir ?? DEFAULT_UI_ASSETS_DIR;
  const log = logger.child({ component: "ui" });
  const watched = new Map<string, Watched>();
  // Found when someone first watches a session, so a service nobody looks at never asks.
  let ffmpegPath: string | undefined;
  let ffmpegLookup: Promise<unknown> | undefined;
  const findFfmpeg = () =>
    (ffmpegLookup ??= resolveFfmpeg({ logger: log }).then(
      (found) => (ffmpegPath = found.path),
      (err) => log.warn({ err }, "no ffmpeg: the session pages show no thumbnails"),
    ));

  const entryFor = (id: string): Watched => {
    let entry = watched.get(id);
    if (!entry) {
      entry = {
        history: new SessionHistory(),
        viewers: 0,
        lastViewedAt: Date.now(),
        listedAt: 0,
        listeners: new Set(),
      };
      watched.set(id, entry);
    }
    return entry;
  };

  // One timer for all sessions: history for every session (cheap: the status is computed anyway),
  // thumbnails only for sessions someone watches (their page is open, or the overview lists them).
  const timer = setInterval(() => {
    const now = Date.now();
    for (const session of sessions.list()) {
      const entry = entryFor(session.id);
      const tick = entry.history.record(session.status(), now);
      const watchedNow = entry.viewers > 0 || now - entry.listedAt < LISTED_WATCH_MS;
      if (watchedNow) {
        entry.lastViewedAt = now;
        void findFfmpeg();
      }
      if (watchedNow && ffmpegPath && session.latestKeyframe) {
        const source = session.latestKeyframe.bind(session);
        entry.thumbnails ??= new SessionThumbnails(ffmpegPath, source, log.child({ session: session.id }));
        entry.thumbnails.refresh();
      } else if (entry.thumbnails && now - entry.lastViewedAt > THUMBNAIL_IDLE_MS) {
        entry.thumbnails.close();
        entry.thumbnails = undefined;
      }
      for (const listener of entry.listeners) listener(tick);
    }
    for (const [id, entry] of watched) {
      if (sessions.get(id)) continue;
      entry.thumbnails?.close();
      for (const listener of entry.listeners) listener(undefined);
      watched.delete(id);
    }
  }, TICK_MS);
  timer.unref();
  app.addHook("onClose", async () => {
    clearInterval(timer);
    for (const entry of watched.values()) entry.thumbnails?.close();
  });

  if (existsSync(path.join(assetsDir, "index.html"))) {
    void app.register(fastifyStatic, { root: assetsDir, prefix: UI_PATH, decorateReply: false });
  } else {
    log.warn({ assetsDir }, "the session pages are not built (npm run build bundles them); /ui/ says so");
    app.get(UI_PATH, async (_request, reply) =>
      sendError(
        reply,
        503,
        `the session pages are not built: no ${assetsDir}/index.html (run npm run build)`,
      ),
    );
  }
  app.get("/ui", async (_request, reply) => reply.redirect(UI_PATH));

  const authorized = (request: FastifyRequest) =>
    !tokenRequired || isAuthorized(request.headers.authorization);

  app.get("/ui/api/access", async (request) => ({
    token_required: tokenRequired,
    authorized: authorized(request),
  }));

  app.get("/ui/api/sessions", async (request) => {
    const showUrls = authorized(request);
    return {
      sessions: sessions.list().map((session) => {
        const status = session.status();
        entryFor(session.id).listedAt = Date.now();
        return {
          ...overviewOf(status),
          thumbnail: watched.get(session.id)?.thumbnails?.get("output")?.sequence ?? null,
          view: pageView(status, showUrls),
        };
      }),
    };
  });

  app.get<{ Params: { id: string; side: string } }>(
    "/ui/api/sessions/:id/thumbnails/:side",
    async (request, reply) => {
      const { id, side } = request.params;
      if (side !== "input" && side !== "output")
        return sendError(reply, 404, `no thumbnail side ${JSON.stringify(side)}: input or output`);
      const thumbnail = watched.get(id)?.thumbnails?.get(side);
      if (!thumbnail)
        return sendError(reply, 404, `no ${side} thumbnail of session ${JSON.stringify(id)} yet`);
      return reply.type("image/jpeg").header("Cache-Control", "no-store").send(thumbnail.jpeg);
    },
  );

  app.get<{ Params: { id: string } }>("/ui/api/sessions/:id/events", async (request, reply) => {
    const { id } = request.params;
    const session = sessions.get(id);
    if (!session) return sendError(reply, 404, `session ${JSON.stringify(id)} not found`);
    const showUrls = authorized(request);
    const entry = entryFor(id);
    streamEvents(request, reply, entry, session, showUrls);
  });
}

function streamEvents(
  request: FastifyRequest,
  reply: FastifyReply,
  entry: Watched,
  session: ManagedSession,
  showUrls: boolean,
): void {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    Connection: "keep-alive",
    "X-Accel-Buffering": "no",
  });
  const send = (event: string, data: unknown) =>
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  entry.viewers++;
  entry.lastViewedAt = Date.now();
  let promptsSent = JSON.stringify(session.currentPrompts?.() ?? null);
  send("snapshot", {
    view: pageView(session.status(), showUrls),
    history: entry.history.snapshot(),
    prompts: session.currentPrompts?.() ?? null,
    thumbnails: thumbnailSequences(entry),
  });
  const listener = (tick: Tick | undefined) => {
    if (!tick) {
      send("gone", {});
      res.end();
      return;
    }
    const prompts = JSON.stringify(session.currentPrompts?.() ?? null);
    send("tick", {
      view: pageView(session.status(), showUrls),
      sample: tick.sample,
      markers: tick.markers,
      thumbnails: thumbnailSequences(entry),
      ...(prompts !== promptsSent ? { prompts: JSON.parse(prompts) as unknown } : {}),
    });
    promptsSent = prompts;
  };
  entry.listeners.add(listener);
  request.raw.on("close", () => {
    if (!entry.listeners.delete(listener)) return;
    entry.viewers--;
  });
}

function thumbnailSequences(entry: Watched): { input: number | null; output: number | null } {
  return {
    input: entry.thumbnails?.get("input")?.sequence ?? null,
    output: entry.thumbnails?.get("output")?.sequence ?? null,
  };
}

/** One line of the overview. */
function overviewOf(status: SessionStatus) {
  return {
    id: status.id,
    namespace: null,
    phase: status.state,
    webrtc_state: status.webrtcState,
    fps: { input: status.fps.input, output: status.fps.output },
    latency_ms: { p50: status.latencyMs.p50, p95: status.latencyMs.p95 },
  };
}

const STREAM_URL_FIELDS = [
  "input_stream_url",
  "output_stream_url",
  "comfystream_url",
  "control_url",
  "events_url",
] as const;

/** The REST view, without the stream URLs unless the caller is authorized (they grant access). */
function pageView(status: SessionStatus, showUrls: boolean): Record<string, unknown> {
  const view = sessionView(status);
  if (!showUrls) for (const field of STREAM_URL_FIELDS) if (view[field] !== null) view[field] = "(hidden)";
  return view;
}
