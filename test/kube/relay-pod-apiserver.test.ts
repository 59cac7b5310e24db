// `trickle-relay run --session NS/NAME` as the relay pod runs it, against a real kube-apiserver (1.20,
// test/infra/apiserver.ts), with a real trickle server, real ffmpeg input and the TypeScript
// stand-in ComfyStream peer over real WebRTC. The CLI runs as a child process whose kube identity is
// a ServiceAccount bound to exactly the per-session Role of operator/README.md, so what passes here
// is what RBAC allows a relay pod.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  ApiException,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  Watch,
} from "@kubernetes/client-node";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { freePorts, resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../infra/apiserver.js";
import { findRepositoryRoot } from "../../crds/src/generate.js";
import {
  RELAY_POD_FIELD_MANAGER,
  RELAY_SESSION_API_VERSION,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_KIND,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelaySession,
  type RelaySessionSpecInput,
} from "../../crds/src/index.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import { configFromKubeconfig, kubeAccess } from "../../relay-pod/src/kube/api-client.js";
import { RelaySessionWatch } from "../../relay-pod/src/kube/resource-watch.js";
import {
  collectOutput,
  makeInputSegments,
  publishPaced,
  startPeer,
  startTrickle,
  waitFor,
  type Peer,
} from "../session/relay-harness.js";

const root = findRepositoryRoot();
const cli = join(root, "dist/relay-pod/src/cli.js");
const namespace = "relay-pod-test";
const assets = await resolveEnvtestAssets();
const skip = needsLoopbackNamespace || assets.skipReason;

const cleanups: Array<() => Promise<unknown> | unknown> = [];
let cp: ControlPlane;
let admin: CustomObjectsApi;
let adminConfig: KubeConfig;
let trickleBase: string;
let workDir: string;
let inputSegments: Buffer[];

const resourceApi = {
  group: RELAY_SESSION_GROUP,
  version: RELAY_SESSION_VERSION,
  plural: RELAY_SESSION_PLURAL,
};
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

/** A workflow ComfyStream (the stand-in) accepts, told apart from the others by its title. */
function workflow(title: string): Record<string, unknown> {
  return {
    ...PASSTHROUGH_WORKFLOW,
    "1": { ...PASSTHROUGH_WORKFLOW["1"], _meta: { title } },
  };
}

async function createSession(name: string, peer: Peer, extra: Partial<RelaySessionSpecInput> = {}) {
  const spec: RelaySessionSpecInput = {
    trickle: { inputUrl: `${trickleBase}${name}` }, // output: the default, NAME-out
    comfystream: { url: peer.url, offerTimeoutSeconds: 30 },
    prompts: [workflow("first")],
    width: 256,
    height: 256,
    frameRate: 30,
    ...extra,
  };
  await admin.createNamespacedCustomObject({
    ...resourceApi,
    namespace,
    body: { apiVersion: RELAY_SESSION_API_VERSION, kind: RELAY_SESSION_KIND, metadata: { name }, spec },
  });
}

async function getSession(name: string): Promise<RelaySession> {
  return (await admin.getNamespacedCustomObject({ ...resourceApi, namespace, name })) as RelaySession;
}

/** The per-session ServiceAccount, Role and RoleBinding of operator/README.md; returns a kubeconfig path. */
async function podIdentity(name: string): Promise<string> {
  const sa = `${name}-relay`;
  const manifests = [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: sa, namespace } },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: { name: sa, namespace },
      rules: [
        {
          apiGroups: [RELAY_SESSION_GROUP],
          resources: [RELAY_SESSION_PLURAL],
          resourceNames: [name],
          verbs: ["get", "list", "watch"],
        },
        {
          apiGroups: [RELAY_SESSION_GROUP],
          resources: [`${RELAY_SESSION_PLURAL}/status`],
          resourceNames: [name],
          verbs: ["get", "patch"],
        },
      ],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: sa, namespace },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: sa },
      subjects: [{ kind: "ServiceAccount", name: sa, namespace }],
    },
  ];
  const applied = await cp.kubectl(["apply", "-f", "-"], {
    input: JSON.stringify({ apiVersion: "v1", kind: "List", items: manifests }),
  });
  assert.equal(applied.code, 0, applied.stderr);
  const token = await cp.createServiceAccountToken(namespace, sa);
  const adminKubeconfig = await readFile(cp.kubeconfigPath, "utf8");
  assert.ok(adminKubeconfig.includes(cp.token));
  const path = join(workDir, `${name}.kubeconfig`);
  await writeFile(
    path,
    adminKubeconfig.replace(cp.token, token).replace(/namespace: \S+/, `namespace: ${namespace}`),
  );
  return path;
}

interface RelayPod {
  child: ChildProcess;
  exit: Promise<number | null>;
  /** The tail of its output, for failure messages. */
  log(): string;
  fullLog(): string;
  /** Its /healthz, /readyz and /metrics (pod-endpoints.ts), on a port of its own. */
  endpoints: string;
}

function startRelayPod(ref: string, kubeconfig: string, endpointsPort = 0): RelayPod {
  const portArgs = endpointsPort > 0 ? ["--ready-port", String(endpointsPort)] : ["--ready-port", "0"];
  const child = spawn(process.execPath, [cli, "run", "--session", ref, ...portArgs], {
    env: {
      ...process.env,
      KUBECONFIG: kubeconfig,
      TRICKLE_RELAY_ICE_ADDRESSES: "127.0.0.2",
      TRICKLE_RELAY_LOG_JSON: "1",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  cleanups.push(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  return {
    child,
    exit,
    log: () => output.split("\n").slice(-40).join("\n"),
    fullLog: () => output,
    endpoints: `http://127.0.0.1:${endpointsPort}`,
  };
}

async function exitWithin(pod: RelayPod, ms: number): Promise<number | null> {
  const code = await Promise.race([pod.exit, sleep(ms).then(() => "timeout" as const)]);
  assert.notEqual(code, "timeout", `relay pod still running after ${ms} ms:\n${pod.log()}`);
  return code as number | null;
}

async function waitForReport(
  name: string,
  check: (relay: NonNullable<NonNullable<RelaySession["status"]>["relay"]>) => boolean,
  timeoutMs: number,
  what: string,
  pod: RelayPod,
): Promise<RelaySession> {
  let latest: RelaySession | undefined;
  try {
    await waitFor(
      async () => {
        latest = await getSession(name);
        const relay = latest.status?.relay;
        return relay !== undefined && check(relay);
      },
      timeoutMs,
      what,
    );
  } catch (err) {
    throw new Error(
      `${(err as Error).message}; status.relay: ${JSON.stringify(latest?.status?.relay)}\n${pod.log()}`,
    );
  }
  return latest!;
}

/** Counts MODIFIED events of one RelaySession (every status.relay write changes lastUpdateTime). */
async function countModifications(
  name: string,
  durationMs: number,
  resourceVersion: string,
): Promise<number> {
  let modified = 0;
  const abort = await new Watch(adminConfig).watch(
    `/apis/${RELAY_SESSION_GROUP}/${RELAY_SESSION_VERSION}/namespaces/${namespace}/${RELAY_SESSION_PLURAL}`,
    { fieldSelector: `metadata.name=${name}`, resourceVersion },
    (type) => {
      if (type === "MODIFIED") modified++;
    },
    () => undefined,
  );
  await sleep(durationMs);
  abort.abort();
  return modified;
}

async function httpStatusOf(call: () => Promise<unknown>): Promise<number> {
  try {
    await call();
    return 200;
  } catch (err) {
    if (err instanceof ApiException) return err.code;
    throw err;
  }
}

describe("relay pod: trickle-relay run --session against a real kube-apiserver", { skip }, () => {
  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), "relay-pod-k8s-"));
    cleanups.push(() => rm(workDir, { recursive: true, force: true }));
    const [controlPlane, input, trickle] = await Promise.all([
      startControlPlane({ crdPaths: [join(root, "crds/trickle-relay.io_relaysessions.yaml")] }),
      makeInputSegments({ seconds: 40, size: "256x256" }),
      startTrickle([
        "main",
        "main-out",
        "sigterm",
        "sigterm-out",
        "deleted",
        "deleted-out",
        "audio",
        "audio-out",
      ]),
    ]);
    cp = controlPlane;
    cleanups.push(() => cp.stop());
    cleanups.push(() => trickle.server.close());
    trickleBase = trickle.base;
    inputSegments = input.segments;
    adminConfig = new KubeConfig();
    adminConfig.loadFromFile(cp.kubeconfigPath);
    admin = adminConfig.makeApiClient(CustomObjectsApi);
    const created = await cp.kubectl(["create", "namespace", namespace]);
    assert.equal(created.code, 0, created.stderr);
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  });

  test(
    "reports status.relay at most ~1/s with WebRTC connected and fps > 0, keeps the operator's fields, " +
      "applies a spec.prompts edit live, cannot write other sessions or the spec, exits 0 with a final report when the input ends",
    { timeout: 90_000 },
    async (t) => {
      const peer = await startPeer("ts");
      cleanups.push(() => peer.stop());
      await createSession("main", peer);
      await createSession("other", peer);
      // What the operator writes: it must survive the pod's merge patches.
      const operatorStatus = {
        phase: "Starting",
        conditions: [
          {
            type: "Ready",
            status: "False",
            reason: "PodStarting",
            message: "",
            lastTransitionTime: new Date().toISOString(),
          },
        ],
        observedGeneration: 1,
      };
      await admin.patchNamespacedCustomObjectStatus(
        {
          ...resourceApi,
          namespace,
          name: "main",
          body: { status: operatorStatus },
          fieldManager: "relay-operator",
        },
        mergePatch,
      );
      const kubeconfig = await podIdentity("main");
      const output = collectOutput(`${trickleBase}main-out`);
      cleanups.push(() => output.close());

      const [endpointsPort] = await freePorts(1);
      const pod = startRelayPod(`${namespace}/main`, kubeconfig, endpointsPort);
      // The kubelet's startup and liveness probe: answered from the first moments.
      await waitFor(
        async () => (await fetch(`${pod.endpoints}/healthz`).catch(() => undefined))?.status === 200,
        10_000,
        "/healthz",
      );
      // 16 s of input, then the publisher closes the channel: the session completes.
      const publishing = publishPaced(`${trickleBase}main`, inputSegments.slice(0, 16));

      const running = await waitForReport(
        "main",
        (r) => r.webrtc?.connectionState === "connected" && (r.inputFps ?? 0) > 0 && (r.outputFps ?? 0) > 0,
        30_000,
        "status.relay with WebRTC connected and frames flowing",
        pod,
      );
      const relay = running.status!.relay!;
      assert.equal(relay.webrtc?.iceConnectionState, "connected");
      // The pod's readiness probe and Prometheus: ready while connected; the session's metrics.
      assert.equal((await fetch(`${pod.endpoints}/readyz`)).status, 200);
      const metrics = await (await fetch(`${pod.endpoints}/metrics`)).text();
      assert.match(metrics, /trickle_relay_frames_in_total\{session="[^"]*main"\} [1-9]/);
      assert.equal(relay.appliedPromptsGeneration, 1);
      assert.equal(relay.queues?.decodedFrames?.capacity, 100);
      // spec.video.encoder defaults to auto; without a GPU here the probe falls back, and says why.
      if (relay.encoder === "x264") assert.match(relay.codecReason ?? "", /^x264: /);
      else assert.equal(relay.encoder, "nvenc", JSON.stringify(relay));
      assert.ok(["software", "nvdec"].includes(relay.decoder ?? ""), `decoder ${relay.decoder}`);
      assert.ok(Date.now() - Date.parse(relay.lastUpdateTime!) < 5000, "report is fresh");
      assert.equal(running.status!.phase, "Starting", "phase is the operator's");
      assert.equal(running.status!.conditions?.[0]?.reason, "PodStarting", "conditions are the operator's");
      const managers = (running.metadata.managedFields ?? []).map((f) => f.manager);
      assert.ok(managers.includes(RELAY_POD_FIELD_MANAGER), `managedFields: ${managers.join(", ")}`);

      // Write rate: steady state, 4 s of watching.
      const writes = await countModifications("main", 4000, running.metadata.resourceVersion!);
      t.diagnostic(`status.relay writes in 4 s of steady state: ${writes}`);
      assert.ok(writes >= 2 && writes <= 6, `status writes in 4 s: ${writes} (expected about one a second)`);

      // The pod's identity: its own status only.
      const podConfig = new KubeConfig();
      podConfig.loadFromFile(kubeconfig);
      const asPod = podConfig.makeApiClient(CustomObjectsApi);
      const otherStatus = await httpStatusOf(() =>
        asPod.patchNamespacedCustomObjectStatus(
          { ...resourceApi, namespace, name: "other", body: { status: { relay: { framesIn: 1 } } } },
          mergePatch,
        ),
      );
      assert.equal(otherStatus, 403, "patching another RelaySession's status");
      const ownSpec = await httpStatusOf(() =>
        asPod.patchNamespacedCustomObject(
          { ...resourceApi, namespace, name: "main", body: { spec: { width: 512 } } },
          mergePatch,
        ),
      );
      assert.equal(ownSpec, 403, "patching its own spec");
      const otherRead = await httpStatusOf(() =>
        asPod.getNamespacedCustomObject({ ...resourceApi, namespace, name: "other" }),
      );
      assert.equal(otherRead, 403, "reading another RelaySession");

      // A prompts edit reaches ComfyStream without a restart.
      const updatesBefore = await peer.promptUpdates();
      await admin.patchNamespacedCustomObject(
        { ...resourceApi, namespace, name: "main", body: { spec: { prompts: [workflow("edited")] } } },
        mergePatch,
      );
      const edited = await waitForReport(
        "main",
        (r) => r.appliedPromptsGeneration === 2,
        15_000,
        "appliedPromptsGeneration 2",
        pod,
      );
      assert.equal(edited.metadata.generation, 2);
      assert.equal(await peer.promptUpdates(), updatesBefore + 1, "one update_prompts reached the peer");
      assert.equal(pod.child.exitCode, null, "the relay kept running");
      assert.equal(edited.status!.relay!.webrtc?.connectionState, "connected");

      // An edit ComfyStream refuses (it keeps the number of workflows): said in lastError, not applied.
      await admin.patchNamespacedCustomObject(
        {
          ...resourceApi,
          namespace,
          name: "main",
          body: { spec: { prompts: [workflow("one"), workflow("two")] } },
        },
        mergePatch,
      );
      const refused = await waitForReport(
        "main",
        (r) => /generation 3 not applied/.test(r.lastError?.message ?? ""),
        15_000,
        "lastError about generation 3",
        pod,
      );
      assert.equal(refused.status!.relay!.lastError!.component, "comfystream");
      assert.match(refused.status!.relay!.lastError!.message!, /Number of updated prompts/);
      assert.equal(refused.status!.relay!.appliedPromptsGeneration, 2);

      // Input ends → session completes → exit 0, output channel closed, final report.
      await publishing;
      const code = await exitWithin(pod, 30_000);
      assert.equal(code, 0, pod.log());
      const final = (await getSession("main")).status!;
      assert.equal(final.relay?.webrtc?.connectionState, "closed", "final report written");
      assert.ok((final.relay?.framesOut ?? 0) > 100, `framesOut ${final.relay?.framesOut}`);
      assert.equal(final.relay?.appliedPromptsGeneration, 2);
      assert.equal(final.conditions?.[0]?.reason, "PodStarting", "conditions still the operator's");
      const done = await Promise.race([output.done, sleep(10_000).then(() => undefined)]);
      assert.deepEqual(done, { closedByServer: true }, "the output channel was closed");
      assert.ok(output.segments.length >= 5, `output segments: ${output.segments.length}`);
      // The edit came through the watch (fieldSelector metadata.name, allowed by resourceNames).
      assert.doesNotMatch(
        pod.fullLog(),
        /watch failed|re-listing the RelaySession failed|writing status.relay failed/,
      );
    },
  );

  test(
    "SIGTERM while the RelaySession lives on (the pod is being replaced): closes the peer, writes a final " +
      "report, exits 0, leaves the output channel open, and the next pod publishes on",
    { timeout: 90_000 },
    async () => {
      const peer = await startPeer("ts");
      cleanups.push(() => peer.stop());
      await createSession("sigterm", peer, { video: { mode: "Passthrough" } });
      const kubeconfig = await podIdentity("sigterm");
      const output = collectOutput(`${trickleBase}sigterm-out`);
      cleanups.push(() => output.close());
      const pod = startRelayPod(`${namespace}/sigterm`, kubeconfig);
      const stopInput = new AbortController();
      cleanups.push(() => stopInput.abort());
      void publishPaced(`${trickleBase}sigterm`, inputSegments, { signal: stopInput.signal, close: false });

      await waitForReport(
        "sigterm",
        (r) => r.webrtc?.connectionState === "connected" && (r.outputFps ?? 0) > 0,
        30_000,
        "WebRTC connected, frames back",
        pod,
      );
      pod.child.kill("SIGTERM");
      const code = await exitWithin(pod, 15_000);
      assert.equal(code, 0, pod.log());
      assert.match(pod.log(), /"endOutput":false/);
      const final = (await getSession("sigterm")).status!.relay!;
      assert.equal(final.webrtc?.connectionState, "closed", "final report written");
      const done = await Promise.race([output.done, sleep(3000).then(() => "open")]);
      assert.equal(done, "open", "the output channel stays open for the pod that replaces this one");

      // The replacement, on a trickle server that creates no channel on publish (as go-livepeer's
      // orchestrator): it publishes on the same output channel.
      const next = startRelayPod(`${namespace}/sigterm`, kubeconfig);
      await waitForReport(
        "sigterm",
        (r) =>
          r.webrtc?.connectionState === "connected" &&
          (r.outputFps ?? 0) > 0 &&
          Date.parse(r.lastUpdateTime ?? "") > Date.parse(final.lastUpdateTime ?? ""),
        30_000,
        "the next pod connected, frames back",
        next,
      );
      stopInput.abort();
      next.child.kill("SIGTERM");
      assert.equal(await exitWithin(next, 15_000), 0, next.log());
      assert.doesNotMatch(next.log(), /trickle stream not found|OutputFailed/);
    },
  );

  test(
    "spec.audio {mode: comfystream, codec: opus}: status.relay.audio says which mode runs, the codecs and the frames",
    { timeout: 90_000 },
    async () => {
      const peer = await startPeer("ts");
      cleanups.push(() => peer.stop());
      await createSession("audio", peer, { audio: { mode: "comfystream", codec: "opus" } });
      const kubeconfig = await podIdentity("audio");
      const output = collectOutput(`${trickleBase}audio-out`);
      cleanups.push(() => output.close());
      const pod = startRelayPod(`${namespace}/audio`, kubeconfig);
      const { segments } = await makeInputSegments({ seconds: 8, size: "256x256", audio: "aac" });
      const stopInput = new AbortController();
      cleanups.push(() => stopInput.abort());
      void publishPaced(`${trickleBase}audio`, segments, { signal: stopInput.signal, close: false });
      const session = await waitForReport(
        "audio",
        (r) => (r.audio?.framesOut ?? 0) > 0,
        40_000,
        "audio back from ComfyStream in the output",
        pod,
      );
      stopInput.abort();
      pod.child.kill("SIGTERM");
      await exitWithin(pod, 15_000);
      const report = session.status!.relay!;
      assert.equal(report.audio?.mode, "comfystream");
      assert.equal(report.audio?.reason, "comfystream: asked for");
      assert.equal(report.audio?.codecIn, "aac");
      assert.equal(report.audio?.codecOut, "opus");
      assert.ok((report.audio?.framesIn ?? 0) > 0 && report.audio!.queue!.capacity! > 0);
    },
  );

  test("RelaySession deleted: the relay stops and exits 0", { timeout: 60_000 }, async () => {
    const peer = await startPeer("ts");
    cleanups.push(() => peer.stop());
    await createSession("deleted", peer, { video: { mode: "Passthrough" } });
    const kubeconfig = await podIdentity("deleted");
    const output = collectOutput(`${trickleBase}deleted-out`);
    cleanups.push(() => output.close());
    const pod = startRelayPod(`${namespace}/deleted`, kubeconfig);
    const stopInput = new AbortController();
    cleanups.push(() => stopInput.abort());
    void publishPaced(`${trickleBase}deleted`, inputSegments, { signal: stopInput.signal, close: false });

    await waitForReport(
      "deleted",
      (r) => r.webrtc?.connectionState === "connected",
      30_000,
      "WebRTC connected",
      pod,
    );
    await admin.deleteNamespacedCustomObject({ ...resourceApi, namespace, name: "deleted" });
    const code = await exitWithin(pod, 15_000);
    stopInput.abort();
    assert.equal(code, 0, pod.log());
    const done = await Promise.race([output.done, sleep(10_000).then(() => undefined)]);
    assert.deepEqual(done, { closedByServer: true }, "the output channel was closed");
  });

  test(
    "exit code 2 when the RelaySession is missing or not the pod's to read",
    { timeout: 30_000 },
    async () => {
      const missing = startRelayPod(`${namespace}/no-such-session`, cp.kubeconfigPath);
      assert.equal(await exitWithin(missing, 15_000), 2, missing.log());
      assert.match(missing.log(), /not found/);

      // A pod identity asking for a session that is not its own: 403 from RBAC.
      const kubeconfig = await podIdentity("someone-else");
      const forbidden = startRelayPod(`${namespace}/main`, kubeconfig);
      assert.equal(await exitWithin(forbidden, 15_000), 2, forbidden.log());
      assert.match(forbidden.log(), /not allowed to read/);
    },
  );

  test(
    "the pod's watch (its own RBAC) survives an apiserver crash: an edit after the restart arrives, then the deletion",
    { timeout: 60_000 },
    async (t) => {
      const peer = await startPeer("ts"); // only its URL is used: nothing connects to it here
      cleanups.push(() => peer.stop());
      await createSession("watched", peer);
      // The relay's own cluster access (api-client.ts) with the pod's identity.
      const podConfig = kubeAccess(configFromKubeconfig(await podIdentity("watched")));
      const seen: number[] = [];
      let deleted = false;
      const watch = new RelaySessionWatch(
        podConfig,
        { namespace, name: "watched" },
        {
          onObject: (object) => seen.push(object.metadata.generation ?? 0),
          onDeleted: () => (deleted = true),
          backoffMs: [200, 1000],
        },
      );
      cleanups.push(() => watch.stop());
      watch.start((await getSession("watched")).metadata.resourceVersion);
      await sleep(500);

      await cp.restartApiserver({ crash: true });
      await admin.patchNamespacedCustomObject(
        {
          ...resourceApi,
          namespace,
          name: "watched",
          body: { spec: { prompts: [workflow("after restart")] } },
        },
        mergePatch,
      );
      await waitFor(() => seen.includes(2), 20_000, "generation 2 through the re-established watch");
      t.diagnostic(`watch stats after the restart: ${JSON.stringify(watch.stats)}`);
      assert.ok(watch.stats.watches >= 2, "the watch was re-established");
      assert.ok(watch.stats.relists <= 3, "no relist loop (410 after the restart → one list, then a watch)");

      await admin.deleteNamespacedCustomObject({ ...resourceApi, namespace, name: "watched" });
      await waitFor(() => deleted, 10_000, "the deletion");
    },
  );
});
