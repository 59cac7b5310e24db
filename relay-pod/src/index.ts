/**
 * relay-pod's public entry: the only module of relay-pod that code outside it (the operator) may
 * import; the lint rule `boundaries/dependencies` (eslint.config.js) rejects any other path.
 *
 * It holds what both sides need: the logger, command-line option parsing, and the REST API's
 * contract (request validation, error replies, the bearer token check, the session view), which
 * the operator's gateway serves over RelaySessions. It is light on purpose: nothing here loads the pipeline (werift,
 * ffmpeg), so the operator process does not either (test/boundaries/boundaries.test.ts).
 */
export { createLogger, silentLogger, type Logger, type LoggerOptions } from "./common/log.js";
export {
  collect,
  onShutdownSignal,
  parseBitrateKbps,
  parseDimension,
  parseHttpUrl,
  parseKeyframeInterval,
  parsePort,
  parsePositiveInteger,
  parsePositiveNumber,
  parseSeq,
} from "./common/cli-options.js";
export {
  API_BODY_LIMIT_BYTES,
  describeError,
  installErrorReplies,
  installJsonBodyParser,
  sendError,
} from "./server/http-replies.js";
export {
  RequestValidationError,
  UnsupportedBodyError,
  parsePromptUpdate,
  parseStartRequest,
  type StartSessionRequest,
} from "./server/validation.js";
export {
  MIN_BEARER_TOKEN_LENGTH,
  bearerTokenChecker,
  describeReadError,
  readBearerTokenFile,
} from "./server/bearer-auth.js";
export { sessionView } from "./report/session-view.js";
export type { SessionState, SessionStatus } from "./session/types.js";
