/**
 * The standalone service's REST API: the older Python "Trickle Relay Service" routes and field
 * names (comfystream-webrtc.md §3.1), so its callers work unchanged, made honest: real status codes
 * (400/404/409/429 instead of 500 for everything), every error as `{success: false, error}` naming
 * what was wrong, bounded sessions, and status that includes failures.
 *
 *   POST   /session/start          start a session
 *   DELETE /session/{id}           stop it (or forget it, if it has already ended)
 *   GET    /session/{id}/status    one session
 *   POST   /session/{id}/prompts   new prompts, sent to ComfyStream without a restart
 *   GET    /sessions               all sessions, ended ones included until their retention passes
 *   GET    /health                 {"status":"healthy"}
 *   GET    /metrics                Prometheus text
 *   GET    /ui/...                 the session pages, read-only without the token (ui-routes.ts)
 *   *      /ai/trickle/...         the in-process trickle server, when one is given
 *
 * Hardening, each optional: HTTPS (`tls`); a bearer token on every route but GET /health and the
 * trickle mount (`apiToken`; trickle clients such as go-livepeer send no Authorization header); a
 * per-client token bucket on POST /session/start (`startRateLimit`). Every body is capped at
 * API_BODY_LIMIT_BYTES (413). Once the session manager is draining (shutdown), starts are 503 and
 * /health says "shutting down" with a 503, so load balancers stop sending work here.
 */
import http from "node:http";
import https from "node:https";
import Fastify, {
  LogController,
  type FastifyHttpOptions,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from "fastify";
import type { Registry } from "prom-client";
import { silentLogger, type Logger } from "../common/log.js";
import { renderMetrics } from "../report/metrics.js";
import {
  DuplicateSessionError,
  SessionLimitError,
  ShuttingDownError,
  SessionNotFoundError,
  SessionStartError,
  type SessionManager,
} from "./session-manager.js";
import { sessionView } from "../report/session-view.js";
import { parsePromptUpdate, parseStartRequest } from "./validation.js";
import {
  API_BODY_LIMIT_BYTES,
  installErrorReplies,
  installJsonBodyParser,
  sendError,
} from "./http-replies.js";
import { bearerTokenChecker } from "./bearer-auth.js";
import { TokenBucketLimiter, type StartRateLimit } from "./rate-limit.js";
import { TRICKLE_MOUNT_PATH } from "./trickle-mount.js";
import { installUiRoutes, isUiRead } from "./ui-routes.js";

export { TRICKLE_MOUNT_PATH };

/** Something that serves raw HTTP requests under /ai/trickle/ (trickle/TrickleServer does). */
export interface RawRequestHandler {
  /** Handles the request and returns true, or returns false without touching it. */
  handle(req: http.IncomingMessage, res: http.ServerResponse): boolean;
}

export interface ApiServerOptions {
  sessions: SessionManager;
  metricsRegistry: Registry;
  logger?: Logger;
  /**
   * Mounted under /ai/trickle/: such requests go to it before fastify sees them, because trickle
   * streams chunked bodies for a long time and needs the raw request and response.
   */
  trickleServer?: RawRequestHandler;
  /** Serve HTTPS with this PEM certificate (chain) and private key; the trickle mount too. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /**
   * Require `Authorization: Bearer <apiToken>` on every route except GET/HEAD /health (401 with
   * `WWW-Authenticate: Bearer` otherwise). The trickle mount is not covered: it never reaches fastify.
   */
  apiToken?: string;
  /** Limit POST /session/start per client IP (429 with Retry-After); unlimited when absent. */
  startRateLimit?: StartRateLimit;
  /** The session pages under /ui/ (ui-routes.ts); on unless false. */
  ui?: boolean | { assetsDir?: string };
}

/** The realm named in WWW-Authenticate. */
export const API_AUTH_REALM = "trickle-relay";

/** The fastify instance serving the API (listen, close, inject). */
export type ApiServer = FastifyInstance<http.Server, http.IncomingMessage, http.ServerResponse, Logger>;

export function buildApiServer(options: ApiServerOptions): ApiServer {
  const { sessions, metricsRegistry, trickleServer } = options;
  const logger = options.logger ?? silentLogger;

  const { tls, apiToken, startRateLimit } = options;
  const serverOptions: FastifyHttpOptions<http.Server, Logger> = {
    loggerInstance: logger,
    // Request logging at info would log every /metrics scrape and status poll; see onResponse below.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: API_BODY_LIMIT_BYTES,
    // Trickle subscribers hold GETs open indefinitely; close() must not wait for them.
    forceCloseConnections: true,
    serverFactory: (fastifyHandler) => {
      const handler: http.RequestListener = (req, res) => {
        if (trickleServer && isUnderTrickleMount(req.url) && trickleServer.handle(req, res)) return;
        fastifyHandler(req, res);
      };
      // An https.Server hands out the same IncomingMessage and ServerResponse as an http.Server,
      // which is all fastify and the trickle server use of it.
      return tls
        ? (https.createServer({ cert: tls.cert, key: tls.key }, handler) as unknown as http.Server)
        : http.createServer(handler);
    },
  };
  // With a serverFactory, fastify reads `https` only to write https:// in the address listen() returns.
  const app = Fastify(tls ? ({ ...serverOptions, https: tls } as typeof serverOptions) : serverOptions);

  installJsonBodyParser(app);

  const isAuthorized = apiToken !== undefined ? bearerTokenChecker(apiToken) : () => true;
  if (apiToken !== undefined) {
    app.addHook("onRequest", async (request, reply) => {
      if (isHealthCheck(request.method, request.url)) return;
      if (options.ui !== false && isUiRead(request.method, request.url)) return;
      if (isAuthorized(request.headers.authorization)) return;
      void reply.header("WWW-Authenticate", `Bearer realm="${API_AUTH_REALM}"`);
      return sendError(
        reply,
        401,
        request.headers.authorization === undefined
          ? "authentication required: send Authorization: Bearer <token>"
          : "the bearer token is not valid",
      );
    });
  }

  const startLimiter = startRateLimit ? new TokenBucketLimiter(startRateLimit) : undefined;

  app.addHook("onResponse", async (request, reply) => {
    request.log.debug(
      {
        method: request.method,
        url: request.url,
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
      },
      "request",
    );
  });

  installErrorReplies(app);

  if (options.ui !== false) {
    installUiRoutes(app, {
      sessions,
      isAuthorized,
      tokenRequired: apiToken !== undefined,
      logger,
      ...(typeof options.ui === "object" ? options.ui : {}),
    });
  }

  app.get("/health", async (_request, reply) =>
    sessions.shuttingDown ? reply.code(503).send({ status: "shutting down" }) : { status: "healthy" },
  );

  app.get("/metrics", async (_request, reply) => {
    const { contentType, body } = await renderMetrics(metricsRegistry);
    return reply.type(contentType).send(body);
  });

  // Checked before the body is read, so refused starts are not parsed. Every start request takes a
  // token, invalid ones included; during a drain none is taken.
  const admitStart = async (request: FastifyRequest, reply: FastifyReply) => {
    if (sessions.shuttingDown) return sendError(reply, 503, new ShuttingDownError().message);
    const taken = startLimiter?.take(request.ip);
    if (taken && !taken.ok) {
      const { perMinute, burst } = startLimiter!.limit;
      void reply.header("Retry-After", String(taken.retryAfterSec));
      return sendError(
        reply,
        429,
        `too many session starts from ${request.ip}: at most ${burst} at once and ${perMinute} a minute; retry in ${taken.retryAfterSec} s`,
      );
    }
  };

  app.post("/session/start", { onRequest: admitStart }, async (request, reply) => {
    const startRequest = parseStartRequest(request.body);
    try {
      const { config } = await sessions.start(startRequest);
      return {
        success: true,
        session_id: config.id,
        input_stream_url: config.inputUrl,
        output_stream_url: config.outputUrl,
        comfystream_url: config.comfystreamUrl,
      };
    } catch (err) {
      if (err instanceof DuplicateSessionError)
        return sendError(reply, 409, err.message, { session_id: err.id });
      if (err instanceof SessionLimitError) return sendError(reply, 429, err.message);
      if (err instanceof ShuttingDownError) return sendError(reply, 503, err.message);
      if (err instanceof SessionStartError) {
        request.log.error({ err, session: err.id }, "session failed to start");
        return sendError(reply, 500, err.message, { session_id: err.id });
      }
      throw err;
    }
  });

  app.get<{ Params: { id: string } }>("/session/:id/status", async (request, reply) => {
    const session = sessions.get(request.params.id);
    if (!session) return sendError(reply, 404, notFoundMessage(request.params.id));
    return { success: true, session: sessionView(session.status()) };
  });

  app.delete<{ Params: { id: string } }>("/session/:id", async (request, reply) => {
    const id = request.params.id;
    try {
      const outcome = await sessions.stop(id);
      const message =
        outcome === "stopped"
          ? `Session ${id} stopped; its final status stays visible for ${Math.round(sessions.endedRetentionMs / 1000)} s`
          : `Session ${id} had already ended and has been removed`;
      return { success: true, message };
    } catch (err) {
      if (err instanceof SessionNotFoundError) return sendError(reply, 404, notFoundMessage(id));
      throw err;
    }
  });

  app.post<{ Params: { id: string } }>("/session/:id/prompts", async (request, reply) => {
    const id = request.params.id;
    const session = sessions.get(id);
    if (!session) return sendError(reply, 404, notFoundMessage(id));
    const prompts = parsePromptUpdate(request.body);
    if (sessions.hasSessionEnded(id)) {
      return sendError(
        reply,
        409,
        `session ${JSON.stringify(id)} has ended (${session.status().state}); start a new one`,
      );
    }
    const result = await session.updatePrompts(prompts);
    if (!result.ok) {
      return sendError(
        reply,
        502,
        `ComfyStream did not accept the prompts: ${result.error ?? "no reason given"}`,
        {
          reply: result.reply ?? null,
        },
      );
    }
    return { success: true, reply: result.reply ?? null };
  });

  app.get("/sessions", async () => ({
    success: true,
    sessions: sessions.statuses().map(sessionView),
  }));

  return app;
}

function isHealthCheck(method: string, url: string): boolean {
  return (method === "GET" || method === "HEAD") && url.split("?")[0] === "/health";
}

function isUnderTrickleMount(url: string | undefined): boolean {
  return url !== undefined && url.startsWith(TRICKLE_MOUNT_PATH);
}

function notFoundMessage(id: string): string {
  return `session ${JSON.stringify(id)} not found (it may have ended and been removed; see GET /sessions)`;
}
