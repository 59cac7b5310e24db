/**
 * Checks the bodies of the REST API's requests. The field names are the older Python service's
 * (snake_case); each failure names the field and says what was expected, so a caller can fix the
 * request without reading our code.
 */
import { PromptShapeError, normalisePrompts, promptsFromControlMessage } from "../session/prompts.js";
import { PEER_WINDOW_LIMITS, type SessionConfigInput } from "../session/config.js";
import { InputStallSettingError, inputStallPolicyFrom } from "../session/input-stall.js";
import type { AudioMode, AudioOutputCodecChoice, EncoderPreference } from "../session/types.js";
import { AUDIO_MODES, AUDIO_OUTPUT_CODECS, VIDEO_ENCODER_PREFERENCES } from "../../../crds/src/index.js";

/** A validated start request; anything left out comes from the defaults (output: input + "-out"). */
export type StartSessionRequest = Pick<
  SessionConfigInput,
  | "inputUrl"
  | "outputUrl"
  | "controlUrl"
  | "eventsUrl"
  | "comfystreamUrl"
  | "prompts"
  | "width"
  | "height"
  | "frameRate"
  | "peerWindowFrames"
  | "encoder"
  | "audio"
  | "audioCodec"
  | "inputStall"
> & { id?: string };

/** A request the API refuses with 400; `field` is the offending body field, when there is one. */
export class RequestValidationError extends Error {
  override readonly name = "RequestValidationError";
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** A body that is not JSON and whose content-type says it is something else: answered with 415. */
export class UnsupportedBodyError extends RequestValidationError {}

const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;

/**
 * Why a request body could not be read as JSON, naming the content-type received and what the API
 * expects. Any content-type is accepted when the body is JSON (the old service read every body as
 * JSON), so the answer depends on the body: something that starts like JSON is malformed JSON (400,
 * with where the parser stopped); anything else is another format, e.g. form fields (415).
 */
export function describeUnreadableBody(
  body: string,
  contentType: string | undefined,
): RequestValidationError {
  const mediaType = contentType?.split(";")[0]!.trim() ?? "";
  const received =
    contentType === undefined ? "no content-type" : `content-type ${JSON.stringify(contentType)}`;
  // Said only when the content-type is part of the problem.
  const expectation = JSON_MEDIA_TYPE.test(mediaType)
    ? "send a JSON object"
    : `received ${received}; expected content-type application/json with a JSON object`;
  if (body.trim() === "") return new RequestValidationError(`the request body is empty (${expectation})`);
  const syntaxError = jsonSyntaxError(body);
  if (syntaxError === undefined) {
    // Valid JSON that fastify refused: a __proto__ or constructor.prototype key.
    return new RequestValidationError(
      "the request body has a __proto__ or constructor.prototype key, which is refused",
    );
  }
  if (JSON_MEDIA_TYPE.test(mediaType) || /^[[{]/.test(body.trimStart())) {
    return new RequestValidationError(`the request body is not valid JSON: ${syntaxError} (${expectation})`);
  }
  const looksLikeForm = /^[\w.%-]+=[^&]*(&|$)/.test(body);
  const start = describe(body.length > 40 ? `${body.slice(0, 40)}…` : body);
  return new UnsupportedBodyError(
    `the request body is not JSON: received ${received} with a body starting ${start}` +
      `${looksLikeForm ? " (form fields)" : ""}; expected content-type application/json with a JSON ` +
      `object, e.g. curl -H 'content-type: application/json' -d '{"…": …}'`,
  );
}

/** fastify's 415 for a content-type header it cannot parse at all (e.g. "json" without a type). */
export function describeUnparseableContentType(contentType: string | undefined): string {
  return (
    `the content-type ${JSON.stringify(contentType ?? "")} is not a valid media type; ` +
    "expected content-type application/json with a JSON object"
  );
}

function jsonSyntaxError(body: string): string | undefined {
  try {
    JSON.parse(body);
    return undefined;
  } catch (err) {
    const message = (err as Error).message;
    // V8 names a position for most errors, but not for a body that simply stops.
    return message.startsWith("Unexpected end of JSON input")
      ? `it ends after ${Buffer.byteLength(body)} bytes, before the JSON value is complete`
      : message;
  }
}

export const DIMENSION_LIMITS = { min: 64, max: 2048, multipleOf: 8 } as const;
export const FRAME_RATE_LIMITS = { min: 1, max: 60 } as const;

/** Session ids appear in URL paths and metric labels, so they are kept to URL-safe characters. */
const SESSION_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;

export function parseStartRequest(body: unknown): StartSessionRequest {
  const fields = requireObject(body);
  const request: StartSessionRequest = {
    inputUrl: requireHttpUrl(fields, "input_stream_url"),
    comfystreamUrl: requireHttpUrl(fields, "comfystream_url"),
    prompts: parsePrompts(fields.prompts, "prompts"),
  };
  const outputUrl = optionalHttpUrl(fields, "output_stream_url");
  if (outputUrl !== undefined) request.outputUrl = outputUrl;
  const controlUrl = optionalHttpUrl(fields, "control_url");
  if (controlUrl !== undefined) request.controlUrl = controlUrl;
  const eventsUrl = optionalHttpUrl(fields, "events_url");
  if (eventsUrl !== undefined) request.eventsUrl = eventsUrl;

  const id = fields.session_id;
  if (id !== undefined && id !== null) {
    if (typeof id !== "string" || !SESSION_ID_PATTERN.test(id)) {
      throw new RequestValidationError(
        `session_id must be 1 to 128 characters of letters, digits, ".", "_" or "-" (got ${describe(id)})`,
        "session_id",
      );
    }
    request.id = id;
  }
  const width = optionalDimension(fields, "width");
  if (width !== undefined) request.width = width;
  const height = optionalDimension(fields, "height");
  if (height !== undefined) request.height = height;

  const frameRate = fields.frame_rate;
  if (frameRate !== undefined && frameRate !== null) {
    if (
      typeof frameRate !== "number" ||
      !Number.isFinite(frameRate) ||
      frameRate < FRAME_RATE_LIMITS.min ||
      frameRate > FRAME_RATE_LIMITS.max
    ) {
      throw new RequestValidationError(
        `frame_rate must be a number from ${FRAME_RATE_LIMITS.min} to ${FRAME_RATE_LIMITS.max} (got ${describe(frameRate)})`,
        "frame_rate",
      );
    }
    request.frameRate = frameRate;
  }

  const window = fields.peer_window_frames;
  if (window !== undefined && window !== null) {
    if (
      !Number.isInteger(window) ||
      (window as number) < PEER_WINDOW_LIMITS.min ||
      (window as number) > PEER_WINDOW_LIMITS.max
    ) {
      throw new RequestValidationError(
        `peer_window_frames must be a whole number from ${PEER_WINDOW_LIMITS.min} to ${PEER_WINDOW_LIMITS.max}: the most frames in flight to ComfyStream (got ${describe(window)})`,
        "peer_window_frames",
      );
    }
    request.peerWindowFrames = window as number;
  }

  const encoder = fields.encoder;
  if (encoder !== undefined && encoder !== null) {
    if (typeof encoder !== "string" || !(VIDEO_ENCODER_PREFERENCES as readonly string[]).includes(encoder)) {
      throw new RequestValidationError(
        `encoder must be "auto" (NVENC when a GPU works, else x264), "nvenc" or "x264" (got ${describe(encoder)})`,
        "encoder",
      );
    }
    request.encoder = encoder as EncoderPreference;
  }

  const audio = fields.audio;
  if (audio !== undefined && audio !== null) {
    if (typeof audio !== "string" || !(AUDIO_MODES as readonly string[]).includes(audio)) {
      throw new RequestValidationError(
        `audio must be "auto" (comfystream when the workflow has an audio node, else passthrough), "comfystream" (through the workflow), "passthrough" (the input's audio remuxed unchanged) or "none" (video only) (got ${describe(audio)})`,
        "audio",
      );
    }
    request.audio = audio as AudioMode;
  }

  const audioCodec = fields.audio_codec;
  if (audioCodec !== undefined && audioCodec !== null) {
    if (typeof audioCodec !== "string" || !(AUDIO_OUTPUT_CODECS as readonly string[]).includes(audioCodec)) {
      throw new RequestValidationError(
        `audio_codec must be "auto" (the input's in passthrough, AAC from ComfyStream), "aac" or "opus" (got ${describe(audioCodec)})`,
        "audio_codec",
      );
    }
    request.audioCodec = audioCodec as AudioOutputCodecChoice;
  }

  const stallFields = ["input_stall_sec", "input_stall_policy", "input_stall_end_sec"] as const;
  if (stallFields.some((field) => fields[field] !== undefined && fields[field] !== null)) {
    const given = (field: (typeof stallFields)[number]) => fields[field] ?? undefined;
    const policy = given("input_stall_policy");
    if (policy !== undefined && typeof policy !== "string") {
      throw new RequestValidationError(
        `input_stall_policy must be "end" or "wait" (got ${describe(policy)})`,
        "input_stall_policy",
      );
    }
    const names = {
      statusAfterSec: "input_stall_sec",
      policy: "input_stall_policy",
      endAfterSec: "input_stall_end_sec",
    } as const;
    try {
      request.inputStall = inputStallPolicyFrom(
        {
          statusAfterSec: given("input_stall_sec") as number | undefined,
          policy,
          endAfterSec: given("input_stall_end_sec") as number | undefined,
        },
        names,
      );
    } catch (err) {
      if (err instanceof InputStallSettingError)
        throw new RequestValidationError(err.message, names[err.setting]);
      throw err;
    }
  }
  return request;
}

/**
 * The prompts of POST /session/{id}/prompts: `{prompts}` (the start request's field, and ComfyStream
 * BYOC's) or ai-runner's `{prompt}`.
 */
export function parsePromptUpdate(body: unknown): unknown[] {
  const fields = requireObject(body);
  let prompts: unknown[] | undefined;
  try {
    prompts = promptsFromControlMessage(fields);
  } catch (err) {
    if (err instanceof PromptShapeError)
      throw new RequestValidationError(namingField(err.message, "prompts"), "prompts");
    throw err;
  }
  if (prompts === undefined) {
    throw new RequestValidationError(
      'prompts is required: send {"prompts": <ComfyUI API-format workflow or list of them>} (or ai-runner\'s {"prompt": ...})',
      "prompts",
    );
  }
  return prompts;
}

function parsePrompts(value: unknown, field: string): unknown[] {
  if (value === undefined || value === null) {
    throw new RequestValidationError(
      `${field} is required: a ComfyUI API-format workflow object, a list of them, or one as a JSON string`,
      field,
    );
  }
  try {
    return normalisePrompts(value);
  } catch (err) {
    if (err instanceof PromptShapeError)
      throw new RequestValidationError(namingField(err.message, field), field);
    throw err;
  }
}

function requireObject(body: unknown): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new RequestValidationError(`the request body must be a JSON object (got ${describe(body)})`);
  }
  return body as Record<string, unknown>;
}

function requireHttpUrl(fields: Record<string, unknown>, field: string): string {
  const value = fields[field];
  if (value === undefined || value === null || value === "") {
    throw new RequestValidationError(`${field} is required (an http or https URL)`, field);
  }
  return checkHttpUrl(value, field);
}

function optionalHttpUrl(fields: Record<string, unknown>, field: string): string | undefined {
  const value = fields[field];
  if (value === undefined || value === null || value === "") return undefined;
  return checkHttpUrl(value, field);
}

function checkHttpUrl(value: unknown, field: string): string {
  if (typeof value !== "string") {
    throw new RequestValidationError(
      `${field} must be an http or https URL string (got ${describe(value)})`,
      field,
    );
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new RequestValidationError(`${field} is not a valid URL: ${JSON.stringify(value)}`, field);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new RequestValidationError(
      `${field} must use http or https (got ${JSON.stringify(url.protocol.slice(0, -1))})`,
      field,
    );
  }
  // Returned as given: the caller's URL (query string included) is used verbatim.
  return value;
}

function optionalDimension(fields: Record<string, unknown>, field: string): number | undefined {
  const value = fields[field];
  if (value === undefined || value === null) return undefined;
  const { min, max, multipleOf } = DIMENSION_LIMITS;
  if (
    typeof value !== "number" ||
    !Number.isInteger(value) ||
    value < min ||
    value > max ||
    value % multipleOf !== 0
  ) {
    throw new RequestValidationError(
      `${field} must be an integer from ${min} to ${max} and a multiple of ${multipleOf} (got ${describe(value)})`,
      field,
    );
  }
  return value;
}

/** Prefixes the field name unless the message already starts with it. */
function namingField(message: string, field: string): string {
  return message.startsWith(field) ? message : `${field}: ${message}`;
}

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  if (typeof value === "string") return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  return String(value);
}
