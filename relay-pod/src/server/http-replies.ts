/**
 * How the REST API answers, shared by the standalone service (api.ts) and the operator's gateway:
 * the old service's error body `{success: false, error}`, JSON bodies whatever their Content-Type,
 * and fastify's own errors as readable 4xx. Light on purpose (fastify and validation only), so the
 * operator loads none of the pipeline through it.
 */
import type http from "node:http";
import type {
  FastifyBaseLogger,
  FastifyError,
  FastifyInstance,
  FastifyReply,
  RawServerDefault,
} from "fastify";
import {
  RequestValidationError,
  UnsupportedBodyError,
  describeUnparseableContentType,
  describeUnreadableBody,
} from "./validation.js";

/** ComfyUI workflows can be large; 8 MiB leaves room without inviting abuse. */
export const API_BODY_LIMIT_BYTES = 8 * 1024 * 1024;

type ErrorBody = { success: false; error: string; [extra: string]: unknown };

export function sendError(
  reply: FastifyReply,
  status: number,
  message: string,
  extra: Record<string, unknown> = {},
) {
  const body: ErrorBody = { success: false, error: message, ...extra };
  return reply.code(status).type("application/json; charset=utf-8").send(body);
}

/**
 * Every body is read as JSON whatever its Content-Type: the old service did so (aiohttp's
 * request.json()), and `curl -d` sends form-urlencoded. A body that is not JSON is answered with
 * what was received and what is expected (describeUnreadableBody).
 */
export function installJsonBodyParser<AppLogger extends FastifyBaseLogger>(
  app: FastifyInstance<RawServerDefault, http.IncomingMessage, http.ServerResponse, AppLogger>,
): void {
  // fastify's parser refuses __proto__ and constructor.prototype keys; only its errors are replaced.
  const parseJson = app.getDefaultJsonParser("error", "error");
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "string" }, (request, body, done) => {
    const text = typeof body === "string" ? body : body.toString("utf8");
    parseJson(request, text, (err, parsed) => {
      if (err) done(describeUnreadableBody(text, request.headers["content-type"]));
      else done(null, parsed);
    });
  });
}

/**
 * Errors and unknown routes answered with the old service's error body (5xx also logged). The
 * gateway passes a `describe` that knows Kubernetes API errors before falling back to describeError.
 */
export function installErrorReplies<AppLogger extends FastifyBaseLogger>(
  app: FastifyInstance<RawServerDefault, http.IncomingMessage, http.ServerResponse, AppLogger>,
  describe: (err: FastifyError) => { status: number; message: string } = describeError,
): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE")
      return sendError(reply, 415, describeUnparseableContentType(request.headers["content-type"]));
    const { status, message } = describe(err);
    if (status >= 500) request.log.error({ err, url: request.url, method: request.method }, "request failed");
    return sendError(reply, status, message);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(
      reply,
      404,
      `no route for ${request.method} ${request.url.split("?")[0]}; see GET /sessions, POST /session/start`,
    ),
  );
}

/** fastify's own errors (body parsing, limits) and ours, as a status code and a readable message. */
export function describeError(err: FastifyError): { status: number; message: string } {
  if (err instanceof UnsupportedBodyError) return { status: 415, message: err.message };
  if (err instanceof RequestValidationError) return { status: 400, message: err.message };
  if (err.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
    return {
      status: 413,
      message: `the request body is larger than the limit of ${API_BODY_LIMIT_BYTES / (1024 * 1024)} MiB (${API_BODY_LIMIT_BYTES} bytes)`,
    };
  }
  const status =
    typeof err.statusCode === "number" && err.statusCode >= 400 && err.statusCode < 600
      ? err.statusCode
      : 500;
  return { status, message: status >= 500 ? `internal error: ${err.message}` : err.message };
}
