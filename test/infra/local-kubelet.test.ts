/**
 * The local kubelet test harness against the real control plane of test/infra/apiserver.ts: pods
 * are scheduled through pods/binding, run as local processes and reported through pods/status; the
 * service-account kubeconfig is checked with the real kubectl against real RBAC; deletion,
 * activeDeadlineSeconds, crashes, eviction and an apiserver restart behave as on a real node.
 * Skipped only when the control-plane binaries cannot be obtained.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  RbacAuthorizationV1Api,
  type V1Container,
  type V1Pod,
  type V1PodSpec,
} from "@kubernetes/client-node";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "./apiserver.js";
import { startLocalKubelet, type LocalKubelet } from "./local-kubelet.js";

const assets = await resolveEnvtestAssets();
const namespace = "local-kubelet";
const nodeImage = "stand-in/node:22";
/** A process that stays up until signalled. */
const idleScript = `console.log("up"); setInterval(() => {}, 1000);`;

describe("local kubelet test harness (real kube-apiserver + etcd)", { skip: assets.skipReason }, () => {
  let controlPlane: ControlPlane;
  let kubelet: LocalKubelet;
  let core: CoreV1Api;
  let rbac: RbacAuthorizationV1Api;

  before(async () => {
    controlPlane = await startControlPlane();
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(controlPlane.kubeconfigPath);
    core = kubeConfig.makeApiClient(CoreV1Api);
    rbac = kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    kubelet = await startLocalKubelet({
      kubeConfig,
      commands: { node: [process.execPath], kubectl: [controlPlane.kubectlPath] },
      images: {
        "stand-in/sidecar": {
          command: [process.execPath, "-e", `console.log("sidecar", process.argv.slice(1).join(" "))`],
          args: ["default-arg"],
        },
      },
      extraEnv: { LOCAL_KUBELET_EXTRA: "extra-value" },
      gpus: 1,
      heartbeatIntervalMs: 2_000,
    });
  });

  after(async () => {
    await kubelet?.stop();
    await controlPlane?.stop();
  });

  function nodePod(
    name: string,
    script: string,
    spec: Partial<V1PodSpec> = {},
    container: Partial<V1Container> = {},
  ) {
    const pod: V1Pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace, labels: { app: "local-kubelet-test" } },
      spec: {
        restartPolicy: "Never",
        containers: [{ name: "main", image: nodeImage, command: ["node", "-e", script], ...container }],
        ...spec,
      },
    };
    return pod;
  }

  async function create(pod: V1Pod): Promise<V1Pod> {
    return core.createNamespacedPod({ namespace, body: pod });
  }

  /** Polls the pod until `probe` accepts it; the failure message carries the pod and its logs. */
  async function waitForPod(name: string, what: string, probe: (pod: V1Pod) => boolean, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs;
    let last: V1Pod | undefined;
    for (;;) {
      last = await core.readNamespacedPod({ namespace, name }).catch(() => undefined);
      if (last && probe(last)) return last;
      if (Date.now() > deadline) {
        throw new Error(
          `pod ${name}: ${what} not within ${timeoutMs} ms; status ${JSON.stringify(last?.status)}; ` +
            `logs: ${await kubelet.logs(namespace, name)}`,
        );
      }
      await sleep(150);
    }
  }

  async function waitForGone(name: string, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await core.readNamespacedPod({ namespace, name });
      } catch (err) {
        if (err instanceof ApiException && err.code === 404) return;
        throw err;
      }
      if (Date.now() > deadline) throw new Error(`pod ${name} still exists after ${timeoutMs} ms`);
      await sleep(150);
    }
  }

  const phase = (wanted: string) => (pod: V1Pod) => pod.status?.phase === wanted;
  const terminated = (pod: V1Pod) => pod.status?.containerStatuses?.[0]?.state?.terminated;
  const condition = (pod: V1Pod, type: string) => pod.status?.conditions?.find((c) => c.type === type);

  test("registers a Ready node with the configured GPUs", async () => {
    const node = await core.readNode({ name: kubelet.nodeName });
    assert.equal(node.status?.allocatable?.["nvidia.com/gpu"], "1");
    assert.equal(node.status?.conditions?.find((c) => c.type === "Ready")?.status, "True");
    assert.equal(node.metadata?.labels?.["kubernetes.io/hostname"], kubelet.nodeName);
  });

  test("a pod is scheduled, runs and Succeeds with exit code 0", async () => {
    await create(nodePod("succeeds", `console.log("hello from the pod")`));
    const pod = await waitForPod("succeeds", "Succeeded", phase("Succeeded"));
    assert.equal(pod.spec?.nodeName, kubelet.nodeName);
    assert.equal(terminated(pod)?.exitCode, 0);
    assert.equal(terminated(pod)?.reason, "Completed");
    assert.equal(pod.status?.podIP, "127.0.0.1");
    assert.ok(pod.status?.startTime);
    assert.equal(condition(pod, "PodScheduled")?.status, "True");
    assert.equal(condition(pod, "Ready")?.reason, "PodCompleted");
    assert.match(await kubelet.logs(namespace, "succeeds", "main"), /hello from the pod/);
  });

  test("a failing container fails the pod with its exit code (and the log tail as message)", async () => {
    await create(
      nodePod(
        "fails",
        `console.error("something broke"); process.exit(3)`,
        {},
        {
          terminationMessagePolicy: "FallbackToLogsOnError",
        },
      ),
    );
    const pod = await waitForPod("fails", "Failed", phase("Failed"));
    assert.equal(terminated(pod)?.exitCode, 3);
    assert.equal(terminated(pod)?.reason, "Error");
    assert.match(terminated(pod)?.message ?? "", /something broke/);
  });

  test("Running with Ready conditions while the process runs; env with downward API and $(VAR)", async () => {
    const script = `console.log("ENV " + JSON.stringify({ env: process.env, argv: process.argv.slice(1), cwd: process.cwd() })); setInterval(() => {}, 1000);`;
    await create(
      nodePod(
        "env",
        script,
        { serviceAccountName: "not-mounted", automountServiceAccountToken: false },
        {
          args: ["arg-$(POD_NAME)", "$$(POD_NAME)"],
          env: [
            { name: "LITERAL", value: "plain" },
            { name: "EXPANDED", value: "$(LITERAL)-and-more" },
            { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
            { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
            { name: "POD_UID", valueFrom: { fieldRef: { fieldPath: "metadata.uid" } } },
            { name: "NODE_NAME", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
            { name: "SA_NAME", valueFrom: { fieldRef: { fieldPath: "spec.serviceAccountName" } } },
            { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
            { name: "APP_LABEL", valueFrom: { fieldRef: { fieldPath: "metadata.labels['app']" } } },
          ],
        },
      ),
    );
    const pod = await waitForPod("env", "Ready", (p) => condition(p, "Ready")?.status === "True");
    assert.equal(pod.status?.phase, "Running");
    assert.equal(condition(pod, "ContainersReady")?.status, "True");
    assert.equal(condition(pod, "Initialized")?.status, "True");
    assert.ok(pod.status?.containerStatuses?.[0]?.state?.running?.startedAt);
    assert.equal(pod.status?.containerStatuses?.[0]?.ready, true);
    const log = await eventually(async () =>
      (await kubelet.logs(namespace, "env", "main")).match(/^ENV (.*)$/m),
    );
    const seen = JSON.parse(log[1]!) as { env: Record<string, string>; argv: string[]; cwd: string };
    assert.equal(seen.env.LITERAL, "plain");
    assert.equal(seen.env.EXPANDED, "plain-and-more");
    assert.equal(seen.env.POD_NAME, "env");
    assert.equal(seen.env.POD_NAMESPACE, namespace);
    assert.equal(seen.env.POD_UID, pod.metadata?.uid);
    assert.equal(seen.env.NODE_NAME, kubelet.nodeName);
    assert.equal(seen.env.SA_NAME, "not-mounted");
    assert.equal(seen.env.POD_IP, "127.0.0.1");
    assert.equal(seen.env.APP_LABEL, "local-kubelet-test");
    assert.equal(seen.env.LOCAL_KUBELET_EXTRA, "extra-value");
    assert.equal(seen.env.KUBECONFIG, undefined, "automountServiceAccountToken: false mounts nothing");
    assert.equal(seen.env.HOME, seen.cwd, "HOME is the pod's own dir, so no kubeconfig leaks in");
    assert.deepEqual(seen.argv, ["arg-env", "$(POD_NAME)"]);
    assert.equal(kubelet.pods().find((p) => p.name === "env")?.phase, "Running");
    await core.deleteNamespacedPod({ namespace, name: "env", gracePeriodSeconds: 0 });
  });

  test("the service-account kubeconfig can do exactly what the pod's RBAC allows", async () => {
    await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: "reader" } } });
    await core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name: "allowed" }, data: { k: "v" } },
    });
    await core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name: "other" }, data: { k: "v" } },
    });
    await rbac.createNamespacedRole({
      namespace,
      body: {
        metadata: { name: "reader" },
        rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["get"], resourceNames: ["allowed"] }],
      },
    });
    await rbac.createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name: "reader" },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "reader" },
        subjects: [{ kind: "ServiceAccount", name: "reader", namespace }],
      },
    });
    const kubectlPod = (name: string, args: string[]): V1Pod => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace },
      spec: {
        restartPolicy: "Never",
        serviceAccountName: "reader",
        containers: [{ name: "kubectl", image: "bitnami/kubectl:1.20", command: ["kubectl"], args }],
      },
    });
    await create(kubectlPod("sa-allowed", ["get", "configmap", "allowed", "-o", "jsonpath={.data.k}"]));
    await create(kubectlPod("sa-forbidden", ["get", "configmap", "other"]));
    await waitForPod("sa-allowed", "Succeeded", phase("Succeeded"));
    assert.equal((await kubelet.logs(namespace, "sa-allowed", "kubectl")).trim(), "v");
    await waitForPod("sa-forbidden", "Failed", phase("Failed"));
    assert.match(
      await kubelet.logs(namespace, "sa-forbidden", "kubectl"),
      /forbidden: User "system:serviceaccount:local-kubelet:reader" cannot get resource "configmaps"/,
    );
  });

  test("activeDeadlineSeconds → Failed, DeadlineExceeded, processes killed", async () => {
    await create(nodePod("deadline", idleScript, { activeDeadlineSeconds: 2 }));
    const pod = await waitForPod(
      "deadline",
      "DeadlineExceeded",
      (p) => p.status?.reason === "DeadlineExceeded",
    );
    assert.equal(pod.status?.phase, "Failed");
    assert.equal(pod.status?.message, "Pod was active on the node longer than the specified deadline");
    const done = await waitForPod("deadline", "container terminated", (p) => terminated(p) !== undefined);
    assert.equal(terminated(done)?.exitCode, 143);
    assert.equal(terminated(done)?.signal, 15);
    const startedAt = Date.parse(String(done.status?.startTime));
    const finishedAt = Date.parse(String(terminated(done)?.finishedAt));
    assert.ok(finishedAt - startedAt >= 2_000, `killed after ${finishedAt - startedAt} ms`);
  });

  test("delete: SIGTERM reaches the process, then the pod object is gone; the grace period is honoured", async () => {
    const graceful = `process.on("SIGTERM", () => { console.log("got SIGTERM"); setTimeout(() => process.exit(0), 200); }); ${idleScript}`;
    const stubborn = `process.on("SIGTERM", () => console.log("ignoring SIGTERM")); ${idleScript}`;
    await create(nodePod("graceful", graceful));
    await create(nodePod("stubborn", stubborn, { terminationGracePeriodSeconds: 3 }));
    for (const name of ["graceful", "stubborn"]) {
      await waitForPod(name, "Running", phase("Running"));
      await eventually(async () => /up/.test(await kubelet.logs(namespace, name, "main")) || undefined);
    }
    const deletedAt = Date.now();
    await core.deleteNamespacedPod({ namespace, name: "graceful" });
    await core.deleteNamespacedPod({ namespace, name: "stubborn" });
    await waitForGone("graceful");
    assert.match(await kubelet.logs(namespace, "graceful", "main"), /got SIGTERM/);
    await waitForGone("stubborn");
    const lived = Date.now() - deletedAt;
    assert.ok(
      lived >= 3_000 && lived < 10_000,
      `SIGKILL after the pod's 3 s grace period, not 30 s: ${lived} ms`,
    );
    assert.match(await kubelet.logs(namespace, "stubborn", "main"), /ignoring SIGTERM/);
    assert.equal(kubelet.pods().filter((p) => p.name === "graceful" || p.name === "stubborn").length, 0);
  });

  test("killContainer (a crash) → Failed with exit code 137", async () => {
    await create(nodePod("crash", idleScript));
    await waitForPod("crash", "Running", phase("Running"));
    kubelet.killContainer(namespace, "crash");
    const pod = await waitForPod("crash", "Failed", phase("Failed"));
    assert.equal(terminated(pod)?.exitCode, 137);
    assert.equal(terminated(pod)?.signal, 9);
    assert.equal(terminated(pod)?.reason, "Error");
  });

  test("evict → Failed, reason Evicted", async () => {
    await create(nodePod("evicted", idleScript));
    await waitForPod("evicted", "Running", phase("Running"));
    await kubelet.evict(namespace, "evicted");
    const pod = await waitForPod("evicted", "Failed with the container killed", (p) => !!terminated(p));
    assert.equal(pod.status?.phase, "Failed");
    assert.equal(pod.status?.reason, "Evicted");
    assert.equal(terminated(pod)?.exitCode, 137);
  });

  test("scheduling: nodeSelector and GPU misfits stay Pending as Unschedulable; a fitting GPU pod runs", async () => {
    await create(nodePod("wrong-node", idleScript, { nodeSelector: { "example.com/pool": "elsewhere" } }));
    await create(
      nodePod("too-many-gpus", idleScript, {}, { resources: { limits: { "nvidia.com/gpu": "2" } } }),
    );
    await create(
      nodePod("one-gpu", `console.log("gpu pod")`, {}, { resources: { limits: { "nvidia.com/gpu": "1" } } }),
    );
    const unschedulable = (p: V1Pod) => condition(p, "PodScheduled")?.reason === "Unschedulable";
    const wrongNode = await waitForPod("wrong-node", "Unschedulable", unschedulable);
    assert.equal(wrongNode.status?.phase, "Pending");
    assert.equal(wrongNode.spec?.nodeName, undefined);
    assert.match(condition(wrongNode, "PodScheduled")?.message ?? "", /didn't match node selector/);
    const tooMany = await waitForPod("too-many-gpus", "Unschedulable", unschedulable);
    assert.match(condition(tooMany, "PodScheduled")?.message ?? "", /Insufficient nvidia.com\/gpu/);
    await waitForPod("one-gpu", "Succeeded", phase("Succeeded"));
    for (const name of ["wrong-node", "too-many-gpus"]) await core.deleteNamespacedPod({ namespace, name });
  });

  test("unmappable command waits as ErrImageNeverPull; an image entrypoint from options.images runs", async () => {
    await create({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "unmapped", namespace },
      spec: {
        restartPolicy: "Never",
        containers: [{ name: "main", image: "some/image:1", command: ["comfyui"] }],
      },
    });
    const unmapped = await waitForPod(
      "unmapped",
      "ErrImageNeverPull",
      (p) => p.status?.containerStatuses?.[0]?.state?.waiting?.reason === "ErrImageNeverPull",
    );
    assert.equal(unmapped.status?.phase, "Pending");
    assert.match(
      unmapped.status?.containerStatuses?.[0]?.state?.waiting?.message ?? "",
      /"comfyui".*no local command/,
    );
    await core.deleteNamespacedPod({ namespace, name: "unmapped" });
    await waitForGone("unmapped");

    await create({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "two-containers", namespace },
      spec: {
        restartPolicy: "Never",
        containers: [
          { name: "main", image: nodeImage, command: ["node", "-e", `console.log("main")`] },
          { name: "sidecar", image: "stand-in/sidecar:v2" },
        ],
      },
    });
    const pod = await waitForPod("two-containers", "Succeeded", phase("Succeeded"));
    assert.equal(pod.status?.containerStatuses?.length, 2);
    assert.match(await kubelet.logs(namespace, "two-containers", "sidecar"), /sidecar default-arg/);
  });

  test("an apiserver crash loses neither a running pod's exit nor a pod created right after", async () => {
    await create(nodePod("across-restart", `setTimeout(() => process.exit(0), 2000)`));
    await waitForPod("across-restart", "Running", phase("Running"));
    await controlPlane.restartApiserver({ crash: true }); // the pod exits while the apiserver is away
    await create(nodePod("after-restart", `console.log("after")`));
    await waitForPod("across-restart", "Succeeded", phase("Succeeded"), 20_000);
    await waitForPod("after-restart", "Succeeded", phase("Succeeded"), 20_000);
  });

  test("stop() leaves no process behind, grandchildren included", async () => {
    const script = `const c = require("node:child_process").spawn("sleep", ["60"], { stdio: "ignore" }); console.log("PIDS " + process.pid + " " + c.pid); setInterval(() => {}, 1000);`;
    await create(nodePod("orphan-check", script));
    await waitForPod("orphan-check", "Running", phase("Running"));
    const pids = await eventually(async () =>
      (await kubelet.logs(namespace, "orphan-check", "main")).match(/PIDS (\d+) (\d+)/),
    );
    const [pid, grandchild] = [Number(pids[1]), Number(pids[2])];
    assert.ok(isAlive(pid) && isAlive(grandchild));
    await kubelet.stop();
    await eventually(async () => (!isAlive(pid) && !isAlive(grandchild)) || undefined, 5_000);
  });
});

/** Alive and not a zombie (a reparented grandchild may linger unreaped as one). */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

async function eventually<T>(probe: () => Promise<T | undefined | null>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null) return value;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms`);
    await sleep(100);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}
