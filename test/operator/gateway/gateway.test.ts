// The REST gateway against a real kube-apiserver, over real HTTP on loopback. The gateway runs as a
// ServiceAccount that may only create/get/list/patch/delete relaysessions in its namespace, so every
// passing route also proves that Role is enough. The operator and relay pod are simulated by merge
// patches on /status. Skipped only when the control plane cannot be started here.

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { findRepositoryRoot } from "../../../crds/src/generate.js";
import {
  RELAY_SESSION_GROUP,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelaySession,
  type RelaySessionStatus,
} from "../../../crds/src/index.js";
import { readGatewayToken } from "../../../operator/src/gateway/auth.js";
import { buildGatewayServer, type GatewayServer } from "../../../operator/src/gateway/gateway.js";
import { sessionNameForId } from "../../../operator/src/gateway/session-names.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../../infra/apiserver.js";

const root = findRepositoryRoot();
const namespace = "relay-gateway";
const gatewayToken = "gateway-test-token-0123456789abcdef";
const assets = await resolveEnvtestAssets();

const workflow = {
  "1": { class_type: "LoadTensor", inputs: {} },
  "2": { class_type: "ImageInvert", inputs: { image: ["1", 0] } },
  "3": { class_type: "SaveTensor", inputs: { images: ["2", 0] } },
};

let controlPlane: ControlPlane | undefined;
let unavailable: string | undefined = assets.skipReason || undefined;
let adminObjects: CustomObjectsApi;
let gatewayKubeConfig: KubeConfig;
let gateway: GatewayServer;
let baseUrl: string;
let scratchDir: string;

function requireControlPlane(t: TestContext): ControlPlane | undefined {
  if (!controlPlane) t.skip(unavailable ?? "control plane not started");
  return controlPlane;
}

async function kubectlOk(cp: ControlPlane, args: string[], input?: string): Promise<string> {
  const result = await cp.kubectl(args, input === undefined ? {} : { input });
  assert.equal(result.code, 0, `kubectl ${args.join(" ")} failed:\n${result.stderr}`);
  return result.stdout;
}

async function getSession(cp: ControlPlane, name: string): Promise<RelaySession> {
  return JSON.parse(await kubectlOk(cp, ["get", "relaysession", name, "-n", namespace, "-o", "json"]));
}

/** What the operator and the relay pod would write, through the /status subresource. */
async function patchStatus(name: string, status: RelaySessionStatus): Promise<void> {
  await adminObjects.patchNamespacedCustomObjectStatus(
    {
      group: RELAY_SESSION_GROUP,
      version: RELAY_SESSION_VERSION,
      namespace,
      plural: RELAY_SESSION_PLURAL,
      name,
      body: { status },
    },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}

interface Reply {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

async function call(
  method: string,
  path: string,
  options: { body?: unknown; token?: string | null } = {},
): Promise<Reply> {
  const headers: Record<string, string> = {};
  const token = options.token === undefined ? gatewayToken : options.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers,
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
  });
  return {
    status: response.status,
    headers: response.headers,
    body: (await response.json()) as Record<string, unknown>,
  };
}

function startBody(sessionId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    session_id: sessionId,
    input_stream_url: `https://gw.example.com:7280/live/${sessionId}`,
    comfystream_url: "http://comfystream.example.com:8889",
    prompts: [workflow],
    ...extra,
  };
}

/** A KubeConfig that authenticates with `token` against the control plane (CA from the harness). */
async function kubeConfigWithToken(cp: ControlPlane, token: string): Promise<KubeConfig> {
  const kubeConfig = new KubeConfig();
  const caData = cp.caFile ? (await readFile(cp.caFile)).toString("base64") : undefined;
  kubeConfig.loadFromOptions({
    clusters: [{ name: "envtest", server: cp.server, ...(caData ? { caData } : { skipTLSVerify: true }) }],
    users: [{ name: "gateway", token }],
    contexts: [{ name: "gateway", cluster: "envtest", user: "gateway", namespace }],
    currentContext: "gateway",
  });
  return kubeConfig;
}

const gatewayRbac = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: relay-gateway, namespace: ${namespace}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: relay-gateway, namespace: ${namespace}}
rules:
- apiGroups: [${RELAY_SESSION_GROUP}]
  resources: [relaysessions]
  verbs: [create, get, list, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: relay-gateway, namespace: ${namespace}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: relay-gateway}
subjects:
- {kind: ServiceAccount, name: relay-gateway, namespace: ${namespace}}
`;

describe("REST gateway on a real kube-apiserver", { skip: assets.skipReason }, () => {
  before(async () => {
    try {
      controlPlane = await startControlPlane({
        crdPaths: [join(root, "crds/trickle-relay.io_relaysessions.yaml")],
      });
    } catch (error) {
      unavailable = `control plane did not start: ${(error as Error).message}`;
      return;
    }
    const cp = controlPlane;
    const admin = new KubeConfig();
    admin.loadFromFile(cp.kubeconfigPath);
    adminObjects = admin.makeApiClient(CustomObjectsApi);
    await kubectlOk(cp, ["create", "namespace", namespace]);
    await kubectlOk(cp, ["apply", "-f", "-"], gatewayRbac);
    gatewayKubeConfig = await kubeConfigWithToken(
      cp,
      await cp.createServiceAccountToken(namespace, "relay-gateway"),
    );

    scratchDir = await mkdtemp(join(tmpdir(), "gateway-test-"));
    const tokenFile = join(scratchDir, "token");
    await writeFile(tokenFile, `${gatewayToken}\n`);
    gateway = buildGatewayServer({
      kubeConfig: gatewayKubeConfig,
      namespace,
      token: readGatewayToken(tokenFile),
      defaults: { lifetime: { ttlSecondsAfterFinished: 600 } },
    });
    await gateway.listen({ host: "127.0.0.1", port: 0 });
    baseUrl = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await gateway?.close();
    await controlPlane?.stop();
    if (scratchDir) await rm(scratchDir, { recursive: true, force: true });
  });

  test("the gateway's identity is the restricted ServiceAccount, not an admin", async (t) => {
    if (!requireControlPlane(t)) return;
    await assert.rejects(
      gatewayKubeConfig.makeApiClient(CoreV1Api).listNamespacedSecret({ namespace }),
      (error: unknown) => error instanceof ApiException && error.code === 403,
    );
  });

  test("GET /health needs no token; everything else needs the right bearer token", async (t) => {
    if (!requireControlPlane(t)) return;
    const health = await call("GET", "/health", { token: null });
    assert.equal(health.status, 200);
    assert.deepEqual(health.body, { status: "healthy" });

    for (const token of [null, "wrong-token-0123456789abcdef", `${gatewayToken}x`, ""]) {
      const reply = await call("GET", "/sessions", { token });
      assert.equal(reply.status, 401, `token ${JSON.stringify(token)}`);
      assert.match(reply.headers.get("www-authenticate") ?? "", /^Bearer\b/);
      assert.equal(reply.body.success, false);
      assert.equal(typeof reply.body.error, "string");
    }
    const basic = await fetch(`${baseUrl}/sessions`, {
      headers: { authorization: `Basic ${Buffer.from(`x:${gatewayToken}`).toString("base64")}` },
    });
    assert.equal(basic.status, 401);
    // Unknown routes do not tell an unauthenticated caller what exists.
    assert.equal((await call("POST", "/session/x/restart", { token: null })).status, 401);
  });

  test("POST /session/start creates a RelaySession whose spec is the request", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    const request = startBody("cam-1", {
      output_stream_url: "https://gw.example.com:7280/live/cam-1-processed",
      control_url: "https://gw.example.com:7280/live/cam-1-control",
      events_url: "https://gw.example.com:7280/live/cam-1-events",
      width: 640,
      height: 384,
      frame_rate: 24,
      peer_window_frames: 6,
    });
    const reply = await call("POST", "/session/start", { body: request });
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.deepEqual(reply.body, {
      success: true,
      session_id: "cam-1",
      input_stream_url: request.input_stream_url,
      output_stream_url: request.output_stream_url,
      comfystream_url: request.comfystream_url,
      name: "cam-1",
      namespace,
    });

    const created = await getSession(cp, "cam-1");
    assert.equal(created.metadata.labels?.["app.kubernetes.io/created-by"], "trickle-relay-gateway");
    assert.deepEqual(created.spec.trickle, {
      inputUrl: request.input_stream_url,
      outputUrl: request.output_stream_url,
      controlUrl: request.control_url,
      eventsUrl: request.events_url,
    });
    assert.equal(created.spec.comfystream?.url, request.comfystream_url);
    assert.deepEqual(created.spec.prompts, [workflow]);
    assert.equal(created.spec.width, 640);
    assert.equal(created.spec.height, 384);
    assert.equal(created.spec.frameRate, 24);
    assert.equal(created.spec.video.peerWindowFrames, 6);
    assert.equal(created.spec.video.bitrateKbps, 2000, "the rest of spec.video keeps the schema's defaults");
    assert.equal(created.spec.lifetime.ttlSecondsAfterFinished, 600, "the gateway's defaults apply");

    // Left out: the schema's defaults, and the output channel the relay will use.
    const minimal = await call("POST", "/session/start", {
      body: { ...startBody("cam-2"), session_id: undefined, prompts: JSON.stringify(workflow) },
    });
    assert.equal(minimal.status, 200, JSON.stringify(minimal.body));
    const generatedId = minimal.body.session_id as string;
    assert.match(generatedId, /^[0-9a-f-]{36}$/);
    assert.equal(minimal.body.output_stream_url, "https://gw.example.com:7280/live/cam-2-out");
    const defaulted = await getSession(cp, generatedId);
    assert.equal(defaulted.spec.width, 512);
    assert.deepEqual(defaulted.spec.prompts, [workflow], "a prompt sent as a JSON string is stored parsed");
  });

  test("a session id that is no DNS-1123 name maps to one, and the id still finds it", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    const id = "Studio_Cam.7";
    const reply = await call("POST", "/session/start", { body: startBody(id) });
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.equal(reply.body.session_id, id);
    const name = reply.body.name as string;
    assert.equal(name, sessionNameForId(id));
    assert.match(name, /^studio-cam-7-[0-9a-f]{8}$/);
    const stored = await getSession(cp, name);
    assert.equal(stored.metadata.annotations?.["trickle-relay.io/session-id"], id);

    const status = await call("GET", `/session/${encodeURIComponent(id)}/status`);
    assert.equal(status.status, 200);
    assert.equal((status.body.session as Record<string, unknown>).session_id, id);
    assert.equal((await call("POST", "/session/start", { body: startBody(id) })).status, 409);
  });

  test("bad requests get 400 naming the field; nothing is created", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    const cases: [Record<string, unknown>, RegExp][] = [
      [startBody("bad-1", { width: 100 }), /^width must be .*multiple of 8/],
      [{ ...startBody("bad-2"), comfystream_url: undefined }, /^comfystream_url is required/],
      [startBody("bad-3", { prompts: [] }), /^prompts must contain at least one workflow/],
      [
        startBody("bad-4", { input_stream_url: "ftp://gw/live/x" }),
        /^input_stream_url must use http or https/,
      ],
      // Caught by the cross-field rules of crds/ (output defaults to input + "-out").
      [
        startBody("bad-5", { output_stream_url: "https://gw.example.com:7280/live/bad-5" }),
        /output_stream_url \(spec\.trickle\.outputUrl\) is the same channel as inputUrl/,
      ],
    ];
    for (const [body, expected] of cases) {
      const reply = await call("POST", "/session/start", { body });
      assert.equal(reply.status, 400, JSON.stringify(reply.body));
      assert.equal(reply.body.success, false);
      assert.match(reply.body.error as string, expected);
    }
    const notJson = await fetch(`${baseUrl}/session/start`, {
      method: "POST",
      headers: { authorization: `Bearer ${gatewayToken}`, "content-type": "application/json" },
      body: "{nope",
    });
    assert.equal(notJson.status, 400);
    const names = await kubectlOk(cp, ["get", "rls", "-n", namespace, "-o", "name"]);
    assert.doesNotMatch(names, /bad-/);
  });

  test("the apiserver's validation errors (422) come back as 400 with its message", async (t) => {
    if (!requireControlPlane(t)) return;
    // Only the gateway's own defaults can get past the request checks and fail the schema.
    const strict = buildGatewayServer({
      kubeConfig: gatewayKubeConfig,
      namespace,
      token: gatewayToken,
      defaults: { lifetime: { maxRestarts: 1000 } },
    });
    try {
      const reply = await strict.inject({
        method: "POST",
        url: "/session/start",
        headers: { authorization: `Bearer ${gatewayToken}` },
        payload: startBody("too-many-restarts"),
      });
      assert.equal(reply.statusCode, 400, reply.body);
      const body = reply.json() as { success: boolean; error: string };
      assert.equal(body.success, false);
      assert.match(body.error, /spec\.lifetime\.maxRestarts.*less than or equal to 100/);
    } finally {
      await strict.close();
    }
  });

  test("starting an id that exists is 409", async (t) => {
    if (!requireControlPlane(t)) return;
    const reply = await call("POST", "/session/start", { body: startBody("cam-1") });
    assert.equal(reply.status, 409);
    assert.equal(reply.body.success, false);
    assert.equal(reply.body.session_id, "cam-1");
    assert.match(reply.body.error as string, /already in use/);
  });

  test("GET /session/{id}/status maps the RelaySession's status into the standalone view", async (t) => {
    if (!requireControlPlane(t)) return;
    const fresh = await call("GET", "/session/cam-1/status");
    assert.equal(fresh.status, 200);
    const pending = fresh.body.session as Record<string, unknown>;
    assert.equal(pending.status, "pending");
    assert.equal(pending.webrtc_state, "new");
    assert.equal(pending.report_updated_at, null);

    await patchStatus("cam-1", {
      phase: "Running",
      observedGeneration: 1,
      podName: "cam-1-relay-0",
      startTime: "2025-01-01T00:00:00Z",
      restarts: 1,
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "MediaFlowing",
          message: "",
          lastTransitionTime: "2025-01-01T00:00:05Z",
        },
      ],
      relay: {
        lastUpdateTime: "2025-01-01T00:01:00Z",
        appliedPromptsGeneration: 1,
        webrtc: { connectionState: "connected", iceConnectionState: "completed" },
        queues: {
          decodedFrames: { size: 90, capacity: 100 },
          processedFrames: { size: 2, capacity: 100 },
          outputSegments: { size: 0, capacity: 8 },
        },
        inputFps: 24,
        outputFps: 23.5,
        framesIn: 1440,
        framesOut: 1400,
        framesDropped: 12,
        framesPeerLimited: 5,
        segmentsIn: 60,
        segmentsOut: 58,
        segmentsDropped: 1,
        latencyMs: { p50: 80, p95: 140 },
        reconnects: 2,
        lastError: { component: "comfystream", message: "peer closed", time: "2025-01-01T00:00:30Z" },
      },
    });
    const reply = await call("GET", "/session/cam-1/status");
    assert.equal(reply.status, 200);
    assert.equal(reply.body.success, true);
    const session = reply.body.session as Record<string, unknown>;
    assert.equal(session.session_id, "cam-1");
    assert.equal(session.status, "running");
    assert.equal(session.phase, "Running");
    assert.equal(session.webrtc_state, "connected");
    assert.equal(session.webrtc_ice_state, "completed");
    assert.equal(session.input_stream_url, "https://gw.example.com:7280/live/cam-1");
    assert.equal(session.output_stream_url, "https://gw.example.com:7280/live/cam-1-processed");
    assert.equal(session.comfystream_url, "http://comfystream.example.com:8889");
    assert.equal(session.width, 640);
    assert.equal(session.height, 384);
    assert.equal(session.frame_rate, 24);
    assert.equal(session.mode, "transcode");
    assert.match(session.created_at as string, /^\d{4}-\d\d-\d\dT/);
    assert.equal(session.started_at, "2025-01-01T00:00:00Z");
    assert.equal(session.ended_at, null);
    assert.deepEqual(session.queue_sizes, { decoded_frames: 90, processed_frames: 2, output_segments: 0 });
    assert.deepEqual(session.queue_capacity, {
      decoded_frames: 100,
      processed_frames: 100,
      output_segments: 8,
    });
    assert.equal(session.queue_dropped, null);
    assert.match(
      (session.processing_health as { bottleneck: string }).bottleneck,
      /decoded_frames queue nearly full/,
    );
    assert.deepEqual(session.fps, { input: 24, output: 23.5 });
    assert.deepEqual(session.frames, {
      in: 1440,
      sent: null,
      returned: null,
      out: 1400,
      dropped: 12,
      peer_limited: 5,
    });
    assert.deepEqual(session.segments, { in: 60, out: 58, dropped: 1, corrupt: null });
    assert.deepEqual(session.latency_ms, { p50: 80, p95: 140, samples: null });
    assert.equal(session.reconnects, 2);
    assert.equal(session.restarts, 1);
    assert.equal(session.pod_name, "cam-1-relay-0");
    assert.equal(session.prompts_generation, 1);
    assert.deepEqual(session.last_error, {
      reason: "comfystream",
      message: "peer closed",
      at: "2025-01-01T00:00:30Z",
    });
    assert.deepEqual(session.ready, { status: "True", reason: "MediaFlowing", message: "" });
    assert.equal(session.managed_by_gateway, true);

    const missing = await call("GET", "/session/no-such-session/status");
    assert.equal(missing.status, 404);
    assert.match(missing.body.error as string, /not found/);
  });

  test("POST /session/{id}/prompts patches spec.prompts and says which generation to wait for", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    const before = await getSession(cp, "cam-1");
    const updated = structuredClone(workflow);
    updated["2"].class_type = "ImageBlur";
    const reply = await call("POST", "/session/cam-1/prompts", { body: { prompts: updated } });
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.equal(reply.body.success, true);
    assert.equal(reply.body.applied, false);
    assert.equal(reply.body.generation, before.metadata.generation! + 1);
    assert.equal(reply.body.applied_prompts_generation, 1);
    assert.match(reply.body.message as string, /asynchronously/);

    const after = await getSession(cp, "cam-1");
    assert.deepEqual(after.spec.prompts, [updated]);
    assert.equal(after.metadata.generation, before.metadata.generation! + 1);
    assert.equal(after.spec.width, 640, "the rest of the spec is untouched");

    // ai-runner's {"prompt": "<json>"} shape is accepted too.
    const aiRunner = await call("POST", "/session/cam-1/prompts", {
      body: { prompt: JSON.stringify(workflow) },
    });
    assert.equal(aiRunner.status, 200, JSON.stringify(aiRunner.body));
    assert.deepEqual((await getSession(cp, "cam-1")).spec.prompts, [workflow]);

    const twoWorkflows = await call("POST", "/session/cam-1/prompts", {
      body: { prompts: [workflow, workflow] },
    });
    assert.equal(twoWorkflows.status, 400);
    assert.match(twoWorkflows.body.error as string, /^prompts: this session runs 1 workflow/);
    const notAWorkflow = await call("POST", "/session/cam-1/prompts", {
      body: { prompts: { "1": { inputs: {} } } },
    });
    assert.equal(notAWorkflow.status, 400);
    assert.match(notAWorkflow.body.error as string, /class_type/);
    assert.equal((await call("POST", "/session/cam-1/prompts", { body: {} })).status, 400);
    assert.equal((await call("POST", "/session/nope/prompts", { body: { prompts: workflow } })).status, 404);
  });

  test("GET /sessions lists every RelaySession in the namespace; only the gateway's may be changed", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    await kubectlOk(cp, ["apply", "-n", namespace, "-f", join(root, "crds/examples/basic.yaml")]);
    await patchStatus("basic", {
      phase: "Failed",
      completionTime: "2025-01-01T01:00:00Z",
      conditions: [
        {
          type: "Ready",
          status: "False",
          reason: "RestartBudgetExhausted",
          message: "the relay pod failed 4 times",
          lastTransitionTime: "2025-01-01T01:00:00Z",
        },
      ],
    });
    const reply = await call("GET", "/sessions");
    assert.equal(reply.status, 200);
    const sessions = reply.body.sessions as Record<string, unknown>[];
    const byId = new Map(sessions.map((session) => [session.session_id, session]));
    for (const id of ["cam-1", "Studio_Cam.7", "basic"]) assert.ok(byId.has(id), `lists ${id}`);
    const basic = byId.get("basic")!;
    assert.equal(basic.managed_by_gateway, false);
    assert.equal(basic.status, "failed");
    assert.equal(basic.ended_at, "2025-01-01T01:00:00Z");
    assert.deepEqual(basic.last_error, {
      reason: "RestartBudgetExhausted",
      message: "the relay pod failed 4 times",
      at: "2025-01-01T01:00:00Z",
    });

    const foreignDelete = await call("DELETE", "/session/basic");
    assert.equal(foreignDelete.status, 403);
    assert.match(foreignDelete.body.error as string, /not created by this gateway/);
    assert.equal((await call("POST", "/session/basic/prompts", { body: { prompts: workflow } })).status, 403);
    await getSession(cp, "basic"); // still there
  });

  test("DELETE /session/{id} deletes the RelaySession; then it is 404", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    const reply = await call("DELETE", "/session/cam-1");
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.equal(reply.body.success, true);
    assert.match(reply.body.message as string, /being deleted/);

    const gone = await cp.kubectl(["get", "rls", "cam-1", "-n", namespace]);
    assert.notEqual(gone.code, 0);
    assert.match(gone.stderr, /NotFound/);
    assert.equal((await call("GET", "/session/cam-1/status")).status, 404);
    assert.equal((await call("DELETE", "/session/cam-1")).status, 404);
    const ids = ((await call("GET", "/sessions")).body.sessions as { session_id: string }[]).map(
      (session) => session.session_id,
    );
    assert.ok(!ids.includes("cam-1"));
  });

  test("readGatewayToken explains a missing, empty or weak token file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "gateway-token-"));
    try {
      assert.throws(() => readGatewayToken(join(dir, "absent")), /absent does not exist/);
      await writeFile(join(dir, "empty"), "\n");
      assert.throws(() => readGatewayToken(join(dir, "empty")), /empty is empty/);
      await writeFile(join(dir, "short"), "abc");
      assert.throws(() => readGatewayToken(join(dir, "short")), /3 characters; use at least 16/);
      await writeFile(join(dir, "two"), "0123456789abcdef 0123456789abcdef");
      assert.throws(() => readGatewayToken(join(dir, "two")), /more than one word/);
      assert.throws(() => readGatewayToken(dir), /is a directory/);
      await writeFile(join(dir, "good"), "  0123456789abcdef\r\n");
      assert.equal(readGatewayToken(join(dir, "good")), "0123456789abcdef");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
