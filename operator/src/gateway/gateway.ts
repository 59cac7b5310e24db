/**
 * The optional REST gateway: the standalone service's API (relay-pod/src/server/api.ts, the older
 * Python "Trickle Relay Service" routes and field names) served by creating, reading, patching and
 * deleting RelaySessions in one namespace, so callers of that service can use a cluster unchanged.
 * The operator does the work; the gateway only translates. Every route except GET /health and the
 * read-only session pages under /ui/ (gateway-ui.ts) needs `Authorization: Bearer <token>`. See
 * README.md in this folder for the mapping and differences.
 */
import { randomUUID } from "node:crypto";
import type http from "node:http";
import {
  ApiException,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
} from "@kubernetes/client-node";
import Fastify, { LogController, type FastifyInstance, type FastifyReply } from "fastify";
import {
  RELAY_SESSION_API_VERSION,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_KIND,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  validateRelaySessionSpec,
  type RelaySession,
  type RelaySessionInput,
  type RelaySessionSpecInput,
} from "../../../crds/src/index.js";
import {
  silentLogger,
  type Logger,
  API_BODY_LIMIT_BYTES,
  describeError,
  installErrorReplies,
  installJsonBodyParser,
  sendError,
  type StartSessionRequest,
  RequestValidationError,
  parsePromptUpdate,
  parseStartRequest,
} from "../../../relay-pod/src/index.js";
import { bearerTokenChecker } from "./auth.js";
import { installGatewayUi, isGatewayUiRead } from "./gateway-ui.js";
import {
  CREATED_BY_LABEL,
  GATEWAY_CREATED_BY,
  SESSION_ID_ANNOTATION,
  sessionNameForId,
} from "./session-names.js";
import {
  FINISHED_PHASES,
  comfystreamUrlOf,
  isGatewaySession,
  outputUrlOf,
  relaySessionView,
  sessionIdOf,
} from "./session-view.js";

/**
 * Spec fields the start request cannot set, given to every session the gateway creates (pod
 * placement, video settings, lifetime such as ttlSecondsAfterFinished). Width, height and frame
 * rate here apply when the request leaves them out.
 */
export type GatewaySessionDefaults = Pick<
  RelaySessionSpecInput,
  "width" | "height" | "frameRate" | "video" | "pod" | "lifetime"
>;

export interface GatewayOptions {
  /** Credentials the gateway acts with; it needs relaysessions create/get/list/patch/delete. */
  kubeConfig: KubeConfig;
  /** Where sessions are created, and the only namespace the REST API reads (see uiNamespaces). */
  namespace: string;
  /** The bearer token callers must send (see readGatewayToken). */
  token: string;
  logger?: Logger;
  defaults?: GatewaySessionDefaults;
  /** The session pages under /ui/ (gateway-ui.ts): on unless false. */
  ui?: boolean;
  /**
   * Namespaces the session pages list, read-only, besides `namespace` (the operator's watched
   * namespaces; [] means all). Unset: `namespace` only.
   */
  uiNamespaces?: readonly string[];
}

export type GatewayServer = FastifyInstance<http.Server, http.IncomingMessage, http.ServerResponse, Logger>;

/** Realm in the WWW-Authenticate challenge of a 401. */
export const GATEWAY_AUTH_REALM = "trickle-relay-gateway";

/** The JSON shapes of start-request fields in spec paths, so apiserver messages name what the caller sent. */
const REQUEST_FIELD_BY_SPEC_PATH: [string, string][] = [
  ["spec.trickle.inputUrl", "input_stream_url"],
  ["spec.trickle.outputUrl", "output_stream_url"],
  ["spec.trickle.controlUrl", "control_url"],
  ["spec.trickle.eventsUrl", "events_url"],
  ["spec.comfystream.url", "comfystream_url"],
  ["spec.frameRate", "frame_rate"],
  ["spec.video.peerWindowFrames", "peer_window_frames"],
];

export function buildGatewayServer(options: GatewayOptions): GatewayServer {
  const { namespace, defaults = {} } = options;
  const logger = options.logger ?? silentLogger;
  const customObjects = options.kubeConfig.makeApiClient(CustomObjectsApi);
  const isAuthorized = bearerTokenChecker(options.token);
  const resource = {
    group: RELAY_SESSION_GROUP,
    version: RELAY_SESSION_VERSION,
    plural: RELAY_SESSION_PLURAL,
    namespace,
  };

  const app = Fastify({
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: API_BODY_LIMIT_BYTES,
  });

  // As in the standalone API: every body is JSON whatever its Content-Type (the old service did so).
  installJsonBodyParser(app);

  app.addHook("onRequest", async (request, reply) => {
    if ((request.method === "GET" || request.method === "HEAD") && request.url.split("?")[0] === "/health")
      return;
    if (options.ui !== false && isGatewayUiRead(request.method, request.url)) return;
    if (isAuthorized(request.headers.authorization)) return;
    void reply.header("WWW-Authenticate", `Bearer realm="${GATEWAY_AUTH_REALM}"`);
    return sendError(
      reply,
      401,
      request.headers.authorization === undefined
        ? "authentication required: send Authorization: Bearer <token>"
        : "the bearer token is not valid",
    );
  });

  app.addHook("onResponse", async (request, reply) => {
    request.log.debug(
      {
        method: request.method,
        url: request.url,
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
      },
      "gateway request",
    );
  });

  installErrorReplies(app, (err) =>
    err instanceof ApiException
      ? describeKubeError(err)
      : isConnectionError(err)
        ? { status: 503, message: `the Kubernetes API server is unreachable: ${err.message}` }
        : describeError(err),
  );

  if (options.ui !== false)
    installGatewayUi(app, {
      customObjects,
      resource,
      isAuthorized,
      logger,
      ...(options.uiNamespaces ? { watchNamespaces: options.uiNamespaces } : {}),
    });

  /** The session with standalone id `id`, or undefined after a 404 reply has been sent. */
  async function readSession(id: string, reply: FastifyReply): Promise<RelaySession | undefined> {
    try {
      return (await customObjects.getNamespacedCustomObject({
        ...resource,
        name: sessionNameForId(id),
      })) as RelaySession;
    } catch (err) {
      if (apiStatus(err) === 404) {
        await sendError(reply, 404, notFoundMessage(id, namespace));
        return undefined;
      }
      throw err;
    }
  }

  /** Refuses (403) to change sessions created elsewhere: their owner (kubectl, GitOps) would revert it. */
  async function refuseForeign(session: RelaySession, id: string, reply: FastifyReply): Promise<boolean> {
    if (isGatewaySession(session)) return false;
    await sendError(
      reply,
      403,
      `RelaySession ${namespace}/${session.metadata.name} for session ${JSON.stringify(id)} was not created by this gateway (no ${CREATED_BY_LABEL}=${GATEWAY_CREATED_BY} label); change it where it is managed (kubectl, Helm, GitOps)`,
    );
    return true;
  }

  app.get("/health", async () => ({ status: "healthy" }));

  app.post("/session/start", async (request, reply) => {
    const startRequest = parseStartRequest(request.body);
    const id = startRequest.id ?? randomUUID();
    const name = sessionNameForId(id);
    const spec = specFromStartRequest(startRequest, defaults);
    const problems = validateRelaySessionSpec(spec);
    if (problems.length > 0) return sendError(reply, 400, inRequestTerms(problems.join("; ")));

    const body: RelaySessionInput = {
      apiVersion: RELAY_SESSION_API_VERSION,
      kind: RELAY_SESSION_KIND,
      metadata: {
        name,
        namespace,
        labels: { [CREATED_BY_LABEL]: GATEWAY_CREATED_BY },
        annotations: { [SESSION_ID_ANNOTATION]: id },
      },
      spec,
    };
    let created: RelaySession;
    try {
      created = (await customObjects.createNamespacedCustomObject({ ...resource, body })) as RelaySession;
    } catch (err) {
      const status = apiStatus(err);
      if (status === 409) {
        return sendError(
          reply,
          409,
          `session_id ${JSON.stringify(id)} is already in use (RelaySession ${namespace}/${name} exists); delete it first or choose another id`,
          { session_id: id },
        );
      }
      if (status === 422 || status === 400) {
        return sendError(reply, 400, inRequestTerms(apiMessage(err)));
      }
      throw err;
    }
    request.log.info({ session: id, name, namespace }, "gateway created RelaySession");
    return {
      success: true,
      session_id: id,
      input_stream_url: created.spec.trickle.inputUrl,
      output_stream_url: outputUrlOf(created),
      comfystream_url: comfystreamUrlOf(created),
      name,
      namespace,
    };
  });

  app.get<{ Params: { id: string } }>("/session/:id/status", async (request, reply) => {
    const session = await readSession(request.params.id, reply);
    if (!session) return reply;
    return { success: true, session: relaySessionView(session) };
  });

  app.delete<{ Params: { id: string } }>("/session/:id", async (request, reply) => {
    const id = request.params.id;
    const session = await readSession(id, reply);
    if (!session) return reply;
    if (await refuseForeign(session, id, reply)) return reply;
    try {
      await customObjects.deleteNamespacedCustomObject({
        ...resource,
        name: session.metadata.name!,
        propagationPolicy: "Background",
        // Only this object: a session re-created under the same id meanwhile is left alone.
        body: { preconditions: { uid: session.metadata.uid! } },
      });
    } catch (err) {
      const status = apiStatus(err);
      if (status === 404) return sendError(reply, 404, notFoundMessage(id, namespace));
      if (status === 409) {
        return sendError(reply, 409, `session ${JSON.stringify(id)} was replaced while being deleted; retry`);
      }
      throw err;
    }
    request.log.info({ session: id, name: session.metadata.name, namespace }, "gateway deleted RelaySession");
    return {
      success: true,
      message: `Session ${id} is being deleted; the operator's garbage collection stops and removes its pod`,
    };
  });

  app.post<{ Params: { id: string } }>("/session/:id/prompts", async (request, reply) => {
    const id = request.params.id;
    const session = await readSession(id, reply);
    if (!session) return reply;
    const prompts = parsePromptUpdate(request.body);
    if (await refuseForeign(session, id, reply)) return reply;
    if (session.metadata.deletionTimestamp || FINISHED_PHASES.has(session.status?.phase ?? "")) {
      return sendError(
        reply,
        409,
        `session ${JSON.stringify(id)} has ended (${session.metadata.deletionTimestamp ? "being deleted" : session.status!.phase}); start a new one`,
      );
    }
    const current = session.spec.prompts ?? [];
    // The relay updates ComfyStream in place, which keeps the number of workflows (see the CRD).
    if (current.length > 0 && prompts.length !== current.length) {
      throw new RequestValidationError(
        `prompts: this session runs ${current.length} workflow(s); send the same number (got ${prompts.length}), or start a new session`,
        "prompts",
      );
    }
    const problems = validateRelaySessionSpec({
      ...session.spec,
      prompts: prompts as RelaySessionSpecInput["prompts"],
    });
    if (problems.length > 0) return sendError(reply, 400, problems.join("; "));

    let patched: RelaySession;
    try {
      patched = (await customObjects.patchNamespacedCustomObject(
        // A merge patch replaces the list as a whole, which is what a prompt update means.
        { ...resource, name: session.metadata.name!, body: { spec: { prompts } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      )) as RelaySession;
    } catch (err) {
      const status = apiStatus(err);
      if (status === 404) return sendError(reply, 404, notFoundMessage(id, namespace));
      if (status === 422 || status === 400) return sendError(reply, 400, apiMessage(err));
      throw err;
    }
    const generation = patched.metadata.generation ?? null;
    return {
      success: true,
      applied: false,
      session_id: sessionIdOf(patched),
      generation,
      applied_prompts_generation: patched.status?.relay?.appliedPromptsGeneration ?? null,
      message: `accepted; the relay pod sends the prompts to ComfyStream asynchronously — they are applied when prompts_generation in GET /session/${id}/status (status.relay.appliedPromptsGeneration) reaches ${generation}`,
      reply: null,
    };
  });

  app.get("/sessions", async () => {
    const list = (await customObjects.listNamespacedCustomObject(resource)) as { items: RelaySession[] };
    return { success: true, sessions: list.items.map(relaySessionView) };
  });

  return app;
}

/** The RelaySession spec for a start request; request fields win over the gateway's defaults. */
export function specFromStartRequest(
  request: StartSessionRequest,
  defaults: GatewaySessionDefaults = {},
): RelaySessionSpecInput {
  const trickle: RelaySessionSpecInput["trickle"] = { inputUrl: request.inputUrl };
  if (request.outputUrl !== undefined) trickle.outputUrl = request.outputUrl;
  if (request.controlUrl !== undefined) trickle.controlUrl = request.controlUrl;
  if (request.eventsUrl !== undefined) trickle.eventsUrl = request.eventsUrl;
  const spec: RelaySessionSpecInput = {
    ...structuredClone(defaults),
    trickle,
    comfystream: { url: request.comfystreamUrl },
    prompts: request.prompts as RelaySessionSpecInput["prompts"],
  };
  if (request.width !== undefined) spec.width = request.width;
  if (request.height !== undefined) spec.height = request.height;
  if (request.frameRate !== undefined) spec.frameRate = request.frameRate;
  if (request.peerWindowFrames !== undefined) {
    spec.video = {
      ...spec.video,
      peerWindowFrames: request.peerWindowFrames,
    } as RelaySessionSpecInput["video"];
  }
  return spec;
}

function notFoundMessage(id: string, namespace: string): string {
  return `session ${JSON.stringify(id)} not found (no RelaySession ${namespace}/${sessionNameForId(id)}; see GET /sessions)`;
}

/** An apiserver call that failed in a way the route did not expect, as the gateway's caller sees it. */
function describeKubeError(err: unknown): { status: number; message: string } {
  const status = apiStatus(err);
  if (status === 401 || status === 403) {
    return {
      status: 500,
      message: `the gateway's Kubernetes identity is not allowed to do this (HTTP ${status}: ${apiMessage(err)}); grant it relaysessions create, get, list, patch and delete`,
    };
  }
  return { status: 502, message: `the Kubernetes API server answered HTTP ${status}: ${apiMessage(err)}` };
}

/** A failure to reach the apiserver at all (refused, reset, timed out, name not resolved). */
function isConnectionError(err: Error): boolean {
  const codes = [err, (err as { cause?: unknown }).cause].map(
    (e) => (e as { code?: unknown } | undefined)?.code,
  );
  return codes.some(
    (code) =>
      typeof code === "string" && /^(ECONN|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|UND_ERR)/.test(code),
  );
}

/** The HTTP status of a failed apiserver call, or undefined when the call never got an answer. */
function apiStatus(err: unknown): number | undefined {
  return err instanceof ApiException ? (err.code as number) : undefined;
}

/** The apiserver's own message (metav1.Status.message) of a failed call. */
function apiMessage(err: unknown): string {
  if (!(err instanceof ApiException)) return (err as Error).message;
  const body: unknown = err.body;
  let parsed: unknown = body;
  if (typeof body === "string") {
    try {
      parsed = JSON.parse(body);
    } catch {
      return body;
    }
  }
  const message = (parsed as { message?: unknown } | null)?.message;
  return typeof message === "string" ? message : String(body);
}

/** Adds the start request's field name next to each spec path the caller could not know. */
function inRequestTerms(message: string): string {
  let result = message;
  for (const [path, field] of REQUEST_FIELD_BY_SPEC_PATH) {
    result = result.split(path).join(`${field} (${path})`);
  }
  return result;
}
