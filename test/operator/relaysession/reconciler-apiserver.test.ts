// The RelaySession reconciler against a real kube-apiserver (1.20, envtest style): RBAC and pod
// creation from crds/examples/basic.yaml, phases from pod status and the relay report, restarts with
// backoff and budget, pod replacement on spec changes, deadline, startup timeout, TTL, the orphan
// sweep, Events, and that the operator writes nothing but its own part of the status.
//
// There is no kubelet and no scheduler here: the tests play the kubelet by patching pods/status and
// the relay pod by patching status.relay (field manager relay-pod). The reconciler reads snapshots
// listed straight from the API (refreshed before each call) instead of the kube/ informers, and runs
// on a clock the test can move forward, so backoffs and timeouts take no wall time.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  RbacAuthorizationV1Api,
  setHeaderOptions,
  type V1Pod,
} from "@kubernetes/client-node";
import { stringify } from "yaml";
import {
  RELAY_POD_FIELD_MANAGER,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelaySession,
  type RelaySessionStatus,
} from "../../../crds/src/index.js";
import { desiredRelayPod } from "../../../operator/src/relaysession/desired-pod.js";
import { EventRecorder } from "../../../operator/src/relaysession/events.js";
import {
  RelaySessionReconciler,
  podOwnerUid,
  sweepOrphanPods,
} from "../../../operator/src/relaysession/reconciler.js";
import { silentLogger } from "../../../relay-pod/src/common/log.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../../infra/apiserver.js";
import { RELAY_IMAGE, containerStatus, readExample, repositoryRoot } from "./fixtures.js";

const assets = await resolveEnvtestAssets();
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
const crdPath = join(repositoryRoot, "crds/trickle-relay.io_relaysessions.yaml");

let controlPlane: ControlPlane | undefined;
let unavailable: string | undefined = assets.skipReason || undefined;
let kubeConfig: KubeConfig;
let core: CoreV1Api;
let rbac: RbacAuthorizationV1Api;
let custom: CustomObjectsApi;

/** Informer stand-ins: snapshots listed from the API, refreshed before every reconcile. */
class ListedCaches {
  private sessionSnapshot = new Map<string, RelaySession>();
  private podSnapshot: V1Pod[] = [];
  readonly sessions = {
    get: (namespace: string, name: string) => this.sessionSnapshot.get(`${namespace}/${name}`),
  };
  readonly pods = {
    list: (namespace?: string) =>
      this.podSnapshot.filter((pod) => !namespace || pod.metadata?.namespace === namespace),
    byOwner: (uid: string) => this.podSnapshot.filter((pod) => podOwnerUid(pod) === uid),
  };

  async refresh(): Promise<void> {
    const sessions = (await custom.listClusterCustomObject({
      group: RELAY_SESSION_GROUP,
      version: RELAY_SESSION_VERSION,
      plural: RELAY_SESSION_PLURAL,
    })) as { items: RelaySession[] };
    this.sessionSnapshot = new Map(
      sessions.items.map((s) => [`${s.metadata.namespace}/${s.metadata.name}`, s]),
    );
    this.podSnapshot = (await core.listPodForAllNamespaces({})).items;
  }
}

/** One test's operator: its own caches, clock and event recorder. */
class Harness {
  readonly caches = new ListedCaches();
  offsetMs = 0;
  readonly events = new EventRecorder({ kubeConfig, logger: silentLogger, now: () => this.now() });
  readonly reconciler = new RelaySessionReconciler({
    sessions: this.caches.sessions,
    pods: this.caches.pods,
    kubeConfig,
    events: this.events,
    relayImage: RELAY_IMAGE,
    now: () => this.now(),
    logger: silentLogger,
  });

  constructor(readonly namespace: string) {}

  now(): Date {
    return new Date(Date.now() + this.offsetMs);
  }

  advance(ms: number): void {
    this.offsetMs += ms;
  }

  async reconcile(name: string) {
    await this.caches.refresh();
    return this.reconciler.reconcile(`${this.namespace}/${name}`);
  }

  async session(name: string): Promise<RelaySession> {
    return (await custom.getNamespacedCustomObject({
      group: RELAY_SESSION_GROUP,
      version: RELAY_SESSION_VERSION,
      namespace: this.namespace,
      plural: RELAY_SESSION_PLURAL,
      name,
    })) as RelaySession;
  }

  async pods(): Promise<V1Pod[]> {
    return (await core.listNamespacedPod({ namespace: this.namespace })).items;
  }

  async pod(name: string): Promise<V1Pod | undefined> {
    return (await this.pods()).find((pod) => pod.metadata?.name === name);
  }

  /** Plays the kubelet. */
  async setPodStatus(name: string, status: object): Promise<void> {
    await core.patchNamespacedPodStatus({ namespace: this.namespace, name, body: { status } }, mergePatch);
  }

  async podRunning(name: string): Promise<void> {
    const now = new Date().toISOString();
    await this.setPodStatus(name, {
      phase: "Running",
      startTime: now,
      conditions: [{ type: "PodScheduled", status: "True", lastTransitionTime: now }],
    });
  }

  async podFailed(name: string, extra: object = {}): Promise<void> {
    // Rounded up to the next second (metav1.Time has no fractions), so that a 1 s backoff from it
    // is still running when the test looks, however slow the machine.
    const now = new Date(Math.ceil(Date.now() / 1000) * 1000).toISOString();
    await this.setPodStatus(name, {
      phase: "Failed",
      conditions: [{ type: "PodScheduled", status: "True", lastTransitionTime: now }],
      containerStatuses: [containerStatus({ terminated: { exitCode: 1, reason: "Error", finishedAt: now } })],
      ...extra,
    });
  }

  /** Plays the relay pod: merge-patches status.relay as field manager relay-pod. */
  async relayReport(name: string, relay: NonNullable<RelaySessionStatus["relay"]>): Promise<void> {
    await custom.patchNamespacedCustomObjectStatus(
      {
        group: RELAY_SESSION_GROUP,
        version: RELAY_SESSION_VERSION,
        namespace: this.namespace,
        plural: RELAY_SESSION_PLURAL,
        name,
        body: { status: { relay } },
        fieldManager: RELAY_POD_FIELD_MANAGER,
      },
      mergePatch,
    );
  }

  async patchSpec(name: string, spec: object): Promise<void> {
    await custom.patchNamespacedCustomObject(
      {
        group: RELAY_SESSION_GROUP,
        version: RELAY_SESSION_VERSION,
        namespace: this.namespace,
        plural: RELAY_SESSION_PLURAL,
        name,
        body: { spec },
      },
      mergePatch,
    );
  }

  /** `kubectl apply` of basic.yaml under `name`, with `lifetime` merged in. */
  async apply(name: string, lifetime: object = {}): Promise<RelaySession> {
    const example = readExample("basic.yaml");
    const manifest = {
      ...example,
      metadata: { name, namespace: this.namespace },
      spec: { ...example.spec, lifetime: { ...example.spec.lifetime, ...lifetime } },
    };
    const result = await controlPlane!.kubectl(["apply", "-f", "-"], { input: stringify(manifest) });
    assert.equal(result.code, 0, result.stderr);
    return this.session(name);
  }
}

async function newHarness(t: TestContext, namespace: string): Promise<Harness | undefined> {
  if (!controlPlane) {
    t.skip(unavailable ?? "control plane not started");
    return undefined;
  }
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  return new Harness(namespace);
}

/** client-node returns model class instances; compare them as JSON. */
const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

const readyOf = (session: RelaySession) => session.status?.conditions?.find((c) => c.type === "Ready");

async function expectNotFound(promise: Promise<unknown>): Promise<void> {
  await assert.rejects(promise, (error) => error instanceof ApiException && error.code === 404);
}

/** Everything about a session that the operator must never write. */
function userOwned(session: RelaySession) {
  const { resourceVersion: _rv, managedFields: _mf, ...metadata } = session.metadata;
  void _rv;
  void _mf;
  return { metadata, spec: session.spec };
}

describe("RelaySessionReconciler on a real kube-apiserver", { skip: assets.skipReason }, () => {
  before(async () => {
    try {
      controlPlane = await startControlPlane({ crdPaths: [crdPath] });
    } catch (error) {
      unavailable = `control plane did not start: ${(error as Error).message}`;
      return;
    }
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(controlPlane.kubeconfigPath);
    core = kubeConfig.makeApiClient(CoreV1Api);
    rbac = kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    custom = kubeConfig.makeApiClient(CustomObjectsApi);
  });

  after(async () => {
    await controlPlane?.stop();
  });

  test("basic.yaml → per-session RBAC, the relay pod, Pending; spec and metadata untouched", async (t) => {
    const h = await newHarness(t, "create");
    if (!h) return;
    const applied = await h.apply("basic");
    await h.reconcile("basic");

    const pod = await h.pod("basic-relay-0");
    assert.ok(pod, "pod basic-relay-0 created");
    const expected = desiredRelayPod(applied, { relayImage: RELAY_IMAGE, attempt: 0 });
    assert.deepEqual(pod.metadata?.labels, expected.metadata?.labels);
    // (1.20 adds its seccomp annotations next to ours.)
    assert.equal(
      pod.metadata?.annotations?.["trickle-relay.io/pod-spec-hash"],
      expected.metadata?.annotations?.["trickle-relay.io/pod-spec-hash"],
    );
    assert.deepEqual(plain(pod.metadata?.ownerReferences), expected.metadata?.ownerReferences);
    assert.equal(pod.spec?.restartPolicy, "Never");
    assert.equal(pod.spec?.serviceAccountName, "basic-relay");
    const relay = pod.spec?.containers[0];
    assert.deepEqual(relay?.args, ["run", "--session", "create/basic"]);
    assert.equal(relay?.image, RELAY_IMAGE);
    assert.equal(relay?.securityContext?.readOnlyRootFilesystem, true);
    assert.deepEqual(relay?.securityContext?.capabilities?.drop, ["ALL"]);

    const serviceAccount = await core.readNamespacedServiceAccount({
      namespace: "create",
      name: "basic-relay",
    });
    const role = await rbac.readNamespacedRole({ namespace: "create", name: "basic-relay" });
    const binding = await rbac.readNamespacedRoleBinding({ namespace: "create", name: "basic-relay" });
    for (const object of [serviceAccount, role, binding]) {
      const owner = object.metadata?.ownerReferences?.[0];
      assert.deepEqual(
        [owner?.kind, owner?.uid, owner?.controller],
        ["RelaySession", applied.metadata.uid, true],
      );
    }
    assert.deepEqual(
      role.rules?.map((r) => [r.resources, r.resourceNames, r.verbs]),
      [
        [["relaysessions"], ["basic"], ["get", "list", "watch"]],
        [["relaysessions/status"], ["basic"], ["get", "patch"]],
      ],
    );
    assert.deepEqual(plain(binding.subjects), [
      { kind: "ServiceAccount", name: "basic-relay", namespace: "create" },
    ]);

    const session = await h.session("basic");
    assert.equal(session.status?.phase, "Pending");
    assert.equal(session.status?.podName, "basic-relay-0");
    assert.equal(session.status?.observedGeneration, 1);
    assert.equal(session.status?.restarts, 0);
    assert.equal(session.status?.conditions?.[0]?.type, "Ready");
    assert.equal(readyOf(session)?.status, "False");
    assert.deepEqual(userOwned(session), userOwned(applied), "spec and metadata unchanged");
    // managedFields: the operator's entry covers status only.
    const operatorFields =
      session.metadata.managedFields?.filter((f) => f.manager === "relay-operator") ?? [];
    assert.equal(operatorFields.length, 1);
    assert.deepEqual(Object.keys(operatorFields[0]!.fieldsV1 as object), ["f:status"]);

    // Idempotent: a second round with nothing new writes nothing.
    const before = session.metadata.resourceVersion;
    await h.reconcile("basic");
    assert.equal((await h.session("basic")).metadata.resourceVersion, before);
    assert.equal((await h.pods()).length, 1);

    await h.events.flush();
    const events = (await core.listNamespacedEvent({ namespace: "create" })).items;
    const created = events.find((e) => e.reason === "PodCreated");
    assert.ok(created, "PodCreated event");
    assert.equal(created.involvedObject.kind, "RelaySession");
    assert.equal(created.involvedObject.uid, applied.metadata.uid);
    assert.equal(created.type, "Normal");
    assert.equal(created.reportingComponent, "trickle-relay-operator");
  });

  test("pod Running + relay connected → Running, Ready True; status.relay is never clobbered", async (t) => {
    const h = await newHarness(t, "running");
    if (!h) return;
    await h.apply("live");
    await h.reconcile("live");
    await h.podRunning("live-relay-0");
    await h.reconcile("live");
    assert.equal((await h.session("live")).status?.phase, "Starting");

    const report = {
      lastUpdateTime: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
      webrtc: { connectionState: "connecting" as const },
      framesIn: 10,
    };
    await h.relayReport("live", report);
    await h.reconcile("live");
    assert.equal((await h.session("live")).status?.phase, "Connecting");

    await h.relayReport("live", { ...report, webrtc: { connectionState: "connected" } });
    const beforeOperator = await h.session("live");
    await h.reconcile("live");
    const running = await h.session("live");
    assert.equal(running.status?.phase, "Running");
    assert.equal(readyOf(running)?.status, "True");
    assert.equal(readyOf(running)?.reason, "WebRTCConnected");
    assert.deepEqual(running.status?.relay, beforeOperator.status?.relay, "relay report intact");
    const relayPodFields = running.metadata.managedFields?.find((f) => f.manager === "relay-pod");
    assert.ok(
      JSON.stringify(relayPodFields?.fieldsV1).includes("f:relay"),
      "relay-pod still owns status.relay",
    );
    assert.deepEqual(userOwned(running), userOwned(beforeOperator));

    // The report goes stale → Degraded (the reconciler asks to be called back for it).
    const result = await h.reconcile("live");
    assert.ok(result && result.requeueAfterMs !== undefined && result.requeueAfterMs <= 30_001);
    h.advance(31_000);
    await h.reconcile("live");
    const degraded = await h.session("live");
    assert.equal(degraded.status?.phase, "Degraded");
    assert.equal(readyOf(degraded)?.reason, "RelayReportStale");
    assert.equal(degraded.status?.conditions?.find((c) => c.type === "Degraded")?.status, "True");
  });

  test("a decision from a stale session snapshot is refused (409) and retried, not written", async (t) => {
    const h = await newHarness(t, "stale");
    if (!h) return;
    await h.apply("stale");
    await h.reconcile("stale");
    await h.podRunning("stale-relay-0");
    await h.caches.refresh();
    // The relay reports after the snapshot was taken: the cached resourceVersion is now old.
    await h.relayReport("stale", {
      lastUpdateTime: new Date().toISOString(),
      webrtc: { connectionState: "new" },
    });
    const fresh = await h.session("stale");
    const result = await h.reconciler.reconcile("stale/stale");
    assert.deepEqual(result, { requeueAfterMs: 1000 });
    assert.equal((await h.session("stale")).metadata.resourceVersion, fresh.metadata.resourceVersion);
    await h.reconcile("stale");
    assert.equal((await h.session("stale")).status?.phase, "Connecting");
  });

  test("pod Failed → attempt 1 after the backoff, restarts counted; budget spent → Failed", async (t) => {
    const h = await newHarness(t, "restart");
    if (!h) return;
    await h.apply("flaky", { maxRestarts: 1 });
    await h.reconcile("flaky");
    await h.podFailed("flaky-relay-0");

    const first = await h.reconcile("flaky");
    let session = await h.session("flaky");
    assert.equal(session.status?.restarts, 1);
    assert.equal(session.status?.phase, "Pending");
    assert.equal(session.status?.podName, undefined);
    assert.equal(readyOf(session)?.reason, "PodFailed");
    assert.match(readyOf(session)?.message ?? "", /exited with code 1/);
    assert.ok(
      first?.requeueAfterMs !== undefined && first.requeueAfterMs > 0 && first.requeueAfterMs <= 2000,
    );

    // Within the backoff nothing is created, however often the key comes back.
    const waiting = await h.reconcile("flaky");
    assert.ok(waiting?.requeueAfterMs !== undefined && waiting.requeueAfterMs <= 2000);
    assert.equal(await h.pod("flaky-relay-1"), undefined);

    h.advance(2100);
    await h.reconcile("flaky");
    const retry = await h.pod("flaky-relay-1");
    assert.ok(retry, "attempt 1 created after the backoff");
    assert.equal(retry.metadata?.labels?.["trickle-relay.io/attempt"], "1");
    assert.ok(await h.pod("flaky-relay-0"), "the failed pod is kept for its logs");
    session = await h.session("flaky");
    assert.equal(session.status?.podName, "flaky-relay-1");
    assert.equal(session.status?.restarts, 1);

    await h.podFailed("flaky-relay-1");
    await h.reconcile("flaky");
    session = await h.session("flaky");
    assert.equal(session.status?.phase, "Failed");
    assert.equal(readyOf(session)?.reason, "RestartBudgetExhausted");
    assert.ok(session.status?.completionTime);
    h.advance(120_000);
    await h.reconcile("flaky");
    assert.equal((await h.pods()).length, 2, "no attempt after the budget is spent");

    await h.events.flush();
    const reasons = (await core.listNamespacedEvent({ namespace: "restart" })).items.map((e) => [
      e.type,
      e.reason,
    ]);
    assert.deepEqual(reasons.filter(([, reason]) => reason !== "PodCreated").sort(), [
      ["Warning", "PodFailed"],
      ["Warning", "RestartBudgetExhausted"],
    ]);
  });

  test("a pod deleted from outside counts as a failure and is re-created at once", async (t) => {
    const h = await newHarness(t, "deleted");
    if (!h) return;
    await h.apply("gone");
    await h.reconcile("gone");
    await core.deleteNamespacedPod({ namespace: "deleted", name: "gone-relay-0" });
    await h.reconcile("gone");
    const session = await h.session("gone");
    assert.equal(session.status?.restarts, 1);
    assert.equal(readyOf(session)?.reason, "PodDeleted");
    await h.reconcile("gone");
    assert.ok(await h.pod("gone-relay-1"));

    // Pods are the durable record of attempts: a lost restart count is recovered from them.
    await custom.patchNamespacedCustomObjectStatus(
      {
        group: RELAY_SESSION_GROUP,
        version: RELAY_SESSION_VERSION,
        namespace: "deleted",
        plural: RELAY_SESSION_PLURAL,
        name: "gone",
        body: { status: { restarts: 0, podName: "gone-relay-0" } },
      },
      mergePatch,
    );
    await h.reconcile("gone");
    const recovered = await h.session("gone");
    assert.equal(recovered.status?.restarts, 1);
    assert.equal(recovered.status?.podName, "gone-relay-1");
    assert.deepEqual(
      (await h.pods()).map((p) => p.metadata?.name),
      ["gone-relay-1"],
    );
  });

  test("a width change replaces the pod (same attempt); a prompts edit does not", async (t) => {
    const h = await newHarness(t, "replace");
    if (!h) return;
    await h.apply("edit");
    await h.reconcile("edit");
    const original = await h.pod("edit-relay-0");
    const applied = await h.session("edit");

    await h.patchSpec("edit", { prompts: [{ "1": { class_type: "LoadTensor", inputs: {} } }] });
    await h.reconcile("edit");
    assert.equal((await h.pod("edit-relay-0"))?.metadata?.uid, original?.metadata?.uid, "prompts: same pod");
    assert.equal((await h.session("edit")).status?.observedGeneration, 2);

    await h.patchSpec("edit", { width: 640 });
    await h.reconcile("edit");
    let session = await h.session("edit");
    assert.equal(readyOf(session)?.reason, "PodSpecChanged");
    await h.reconcile("edit");
    const replacement = await h.pod("edit-relay-0");
    assert.ok(replacement);
    assert.notEqual(replacement.metadata?.uid, original?.metadata?.uid);
    assert.notEqual(
      replacement.metadata?.annotations?.["trickle-relay.io/pod-spec-hash"],
      original?.metadata?.annotations?.["trickle-relay.io/pod-spec-hash"],
    );
    session = await h.session("edit");
    assert.equal(session.status?.restarts, 0, "a replacement is not a restart");
    assert.equal(session.status?.podName, "edit-relay-0");
    assert.equal(session.status?.observedGeneration, 3);
    assert.equal(session.metadata.generation, 3, "only the two spec edits bumped the generation");
    assert.equal(session.metadata.uid, applied.metadata.uid);
  });

  test("DeadlineExceeded → Failed at once, whatever the budget", async (t) => {
    const h = await newHarness(t, "deadline");
    if (!h) return;
    await h.apply("long", { maxDurationSeconds: 60, maxRestarts: 3 });
    await h.reconcile("long");
    assert.equal((await h.pod("long-relay-0"))?.spec?.activeDeadlineSeconds, 60);
    await h.podFailed("long-relay-0", {
      reason: "DeadlineExceeded",
      message: "Pod was active on the node longer than the specified deadline",
      containerStatuses: [],
    });
    await h.reconcile("long");
    const session = await h.session("long");
    assert.equal(session.status?.phase, "Failed");
    assert.equal(readyOf(session)?.reason, "DeadlineExceeded");
    assert.equal(session.status?.restarts, 0);
    await h.reconcile("long");
    assert.equal((await h.pods()).length, 1);
  });

  test("startup timeout: not streaming within startupTimeoutSeconds → pod deleted, counted as a failure", async (t) => {
    const h = await newHarness(t, "startup");
    if (!h) return;
    await h.apply("slow", { startupTimeoutSeconds: 10, maxRestarts: 0 });
    const started = await h.reconcile("slow");
    assert.ok(started?.requeueAfterMs !== undefined && started.requeueAfterMs <= 10_000);
    await h.podRunning("slow-relay-0");
    h.advance(11_000);
    await h.reconcile("slow");
    const session = await h.session("slow");
    assert.equal(session.status?.phase, "Failed");
    assert.equal(readyOf(session)?.reason, "RestartBudgetExhausted");
    assert.match(readyOf(session)?.message ?? "", /StartupTimeout/);
    assert.equal(session.status?.conditions?.find((c) => c.type === "Progressing")?.reason, "StartupTimeout");
    assert.equal(await h.pod("slow-relay-0"), undefined, "the pod was deleted");
  });

  test("Succeeded, then the TTL deletes the session", async (t) => {
    const h = await newHarness(t, "ttl");
    if (!h) return;
    await h.apply("done", { ttlSecondsAfterFinished: 30 });
    await h.reconcile("done");
    const now = new Date().toISOString();
    await h.setPodStatus("done-relay-0", {
      phase: "Succeeded",
      containerStatuses: [
        containerStatus({ terminated: { exitCode: 0, reason: "Completed", finishedAt: now } }),
      ],
    });
    const finished = await h.reconcile("done");
    const session = await h.session("done");
    assert.equal(session.status?.phase, "Succeeded");
    assert.equal(readyOf(session)?.reason, "Completed");
    assert.ok(session.status?.completionTime);
    assert.ok(finished?.requeueAfterMs !== undefined && finished.requeueAfterMs > 25_000);

    const waiting = await h.reconcile("done");
    assert.ok(waiting?.requeueAfterMs !== undefined && waiting.requeueAfterMs <= 30_000);
    assert.ok(await h.session("done"));
    h.advance(31_000);
    await h.reconcile("done");
    await expectNotFound(h.session("done"));
  });

  test("sidecar-gpu.yaml: a refused create shows in status; the relay's exit ends the session and stops the sidecar", async (t) => {
    const h = await newHarness(t, "sidecar");
    if (!h) return;
    const example = readExample("sidecar-gpu.yaml");
    const applied = await controlPlane!.kubectl(["apply", "-n", "sidecar", "-f", "-"], {
      input: stringify(example),
    });
    assert.equal(applied.code, 0, applied.stderr);

    // The PriorityClass does not exist yet: admission refuses the pod; the queue will retry.
    await assert.rejects(h.reconcile("sidecar-gpu"), (error) => error instanceof ApiException);
    let session = await h.session("sidecar-gpu");
    assert.equal(session.status?.phase, "Pending");
    assert.equal(readyOf(session)?.reason, "PodCreateFailed");
    assert.match(readyOf(session)?.message ?? "", /live-video/);

    // What the example's comment says to apply first.
    const prerequisites = await controlPlane!.kubectl([
      "apply",
      "-f",
      join(repositoryRoot, "crds/examples/sidecar-gpu-prerequisites.yaml"),
    ]);
    assert.equal(prerequisites.code, 0, prerequisites.stderr);
    await h.reconcile("sidecar-gpu");
    const pod = await h.pod("sidecar-gpu-relay-0");
    assert.ok(pod, "created once the PriorityClass exists");
    assert.deepEqual(
      pod.spec?.containers.map((c) => [c.name, c.resources?.limits?.["nvidia.com/gpu"]]),
      [
        ["relay", undefined],
        ["comfystream", "1"],
      ],
    );
    assert.equal(pod.spec?.priorityClassName, "live-video");
    assert.equal(pod.spec?.runtimeClassName, "nvidia");

    // restartPolicy Never: the relay's exit 0 is final even though ComfyStream keeps the pod Running.
    const now = new Date().toISOString();
    await h.setPodStatus("sidecar-gpu-relay-0", {
      phase: "Running",
      conditions: [{ type: "PodScheduled", status: "True", lastTransitionTime: now }],
      containerStatuses: [
        containerStatus({ terminated: { exitCode: 0, reason: "Completed", finishedAt: now } }),
        containerStatus(
          { running: { startedAt: now } },
          { name: "comfystream", image: "livepeer/comfystream:0.1.8", ready: true },
        ),
      ],
    });
    await h.reconcile("sidecar-gpu");
    session = await h.session("sidecar-gpu");
    assert.equal(session.status?.phase, "Succeeded");
    assert.equal(await h.pod("sidecar-gpu-relay-0"), undefined, "the pod (and its GPU) released");
  });

  test("orphan sweep deletes relay pods whose session is gone and keeps the others", async (t) => {
    const h = await newHarness(t, "orphans");
    if (!h) return;
    const live = await h.apply("alive");
    await h.reconcile("alive");
    // A relay pod whose session (this uid) no longer exists, as after operator downtime without GC.
    const ghost = structuredClone(live);
    ghost.metadata.name = "ghost";
    ghost.metadata.uid = "11111111-2222-4333-8444-555555555555";
    await core.createNamespacedPod({
      namespace: "orphans",
      body: desiredRelayPod(ghost, { relayImage: RELAY_IMAGE, attempt: 0 }),
    });
    // Also not a relay pod of ours: must be left alone.
    await core.createNamespacedPod({
      namespace: "orphans",
      body: { metadata: { name: "bystander" }, spec: { containers: [{ name: "c", image: "busybox" }] } },
    });

    await h.caches.refresh();
    const deleted = await sweepOrphanPods({
      kubeConfig,
      pods: h.caches.pods.list("orphans"),
      sessions: [], // an unsynced cache: the live read still saves "alive"
    });
    assert.deepEqual(deleted, ["orphans/ghost-relay-0"]);
    assert.deepEqual((await h.pods()).map((p) => p.metadata?.name).sort(), ["alive-relay-0", "bystander"]);
  });

  test("Event aggregation: repeats of one event become one Event with a count", async (t) => {
    const h = await newHarness(t, "events");
    if (!h) return;
    const session = await h.apply("noisy");
    for (let i = 0; i < 3; i++) h.events.record(session, "Warning", "RelayReportStale", "no report");
    h.events.record(session, "Normal", "Other", "different");
    await h.events.flush();
    const events = (await core.listNamespacedEvent({ namespace: "events" })).items;
    const stale = events.filter((e) => e.reason === "RelayReportStale");
    assert.equal(stale.length, 1);
    assert.equal(stale[0]?.count, 3);
    assert.equal(events.filter((e) => e.reason === "Other").length, 1);
  });
});
