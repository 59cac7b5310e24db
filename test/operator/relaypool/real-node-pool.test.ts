/**
 * A RelayPool on the real kubelet 1.20.2 of test/infra/real-node/ with the operator in cluster from
 * its chart (real-node-faults.ts sets it up: the TS stand-in ComfyStream and a trickle server with a
 * live paced input run in the test process, on the node's loopback-only network).
 *
 * 1. A pool of one: the warm pod's relay image runs `run --pool-pod`, warms up through ComfyStream
 *    and only then passes its own readiness probe (httpGet /readyz, run by the kubelet): the pod's
 *    Ready condition turns True after the relay logged "warm and idle", not before; the pool says
 *    1 ready.
 * 2. A RelaySession with spec.poolRef gets that pod (status.allocation names it; the pod carries the
 *    session's label and state allocated), `kubectl wait --for=condition=Ready` returns, and output
 *    frames flow (status.relay from the pooled pod: fps > 5, segments growing).
 * 3. The session deleted: its pod is deleted (its containers gone from the node) and the pool
 *    refills with a new warm pod, Ready by its own probe again.
 *
 * Heavy (dockerd + kubelet + the operator image): run it alone. Skipped with the reason where the
 * real node cannot run. Timings go to a `# …` line, not asserted.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import type { RelayPool, RelaySession } from "../../../crds/src/index.js";
import { needsLoopbackNamespace } from "../../infra/netns.js";
import { waitFor } from "../../session/relay-harness.js";
import { chooseNode } from "../e2e-node.js";
import { NAMESPACE, POLL_MS, startFaultCluster, type FaultCluster } from "../real-node-faults.js";

const choice = await chooseNode();
console.log(`# ${choice.line} (test/operator/relaypool/real-node-pool.test.ts)`);
const skip =
  needsLoopbackNamespace || (choice.kind === "real" ? false : `needs the real node (${choice.line})`);
const POOL = "gpu";
const WARMUP_SECONDS = 2;
const POOL_LABEL = `trickle-relay.io/pool=${POOL}`;

describe(`a RelayPool on the real node: ${choice.label}`, { skip }, () => {
  let f: FaultCluster;

  before(async () => {
    f = await startFaultCluster({ choice, outputs: ["pooled-out"], inputSeconds: 240 });
  });

  after(async () => {
    if (!f) return;
    await f.kubectl(["delete", "rlp", POOL, "-n", NAMESPACE, "--wait=false"]).catch(() => undefined);
    await f.stop();
  });

  const livePoolPods = async () =>
    ((await f.getJson<{ items: V1Pod[] }>(["pods", "-n", NAMESPACE, "-l", POOL_LABEL]))?.items ?? []).filter(
      (p) => !p.metadata?.deletionTimestamp,
    );
  const pool = async () => (await f.getJson<RelayPool>(["rlp", POOL, "-n", NAMESPACE]))!;
  const readyCondition = (pod: V1Pod) => pod.status?.conditions?.find((c) => c.type === "Ready");
  const relayLog = (pod: string) =>
    f.cluster.containerLog(NAMESPACE, pod, "relay").catch((err: Error) => `(no log: ${err.message})`);
  const context = async (pod: string) =>
    `${await f.context(pod)}\n--- ${pod} relay log ---\n${(await relayLog(pod)).slice(-3000)}`;

  /** The pool's one live pod, Ready by the kubelet's probe, pool status 1 ready. */
  async function warmPodReady(what: string, notUid?: string): Promise<V1Pod> {
    let found: V1Pod | undefined;
    await waitFor(
      async () => {
        const pods = (await livePoolPods()).filter((p) => p.metadata?.uid !== notUid);
        found = pods.find((p) => readyCondition(p)?.status === "True");
        return !!found && (await pool()).status?.readyReplicas === 1;
      },
      120_000,
      what,
      POLL_MS,
    ).catch(async (err: Error) => {
      const name = (await livePoolPods())[0]?.metadata?.name ?? `${POOL}-warm-0`;
      throw new Error(`${err.message}${await context(name)}`);
    });
    const pod = found!;
    const name = pod.metadata!.name!;
    const container = pod.spec!.containers.find((c) => c.name === "relay")!;
    assert.equal(container.readinessProbe?.httpGet?.path, "/readyz");
    assert.equal(pod.metadata?.labels?.["trickle-relay.io/pool-state"], "ready");
    // Ready came from the probe after the warm-up: the relay says it warmed up, and the condition
    // turned True at least the warm-up's length after the container started.
    assert.match(await relayLog(name), /warm and idle: ready for a session/);
    const startedAt = pod.status?.containerStatuses?.find((c) => c.name === "relay")?.state?.running
      ?.startedAt;
    const readyAt = readyCondition(pod)?.lastTransitionTime;
    assert.ok(startedAt && readyAt, `container start and Ready times: ${startedAt} ${readyAt}`);
    assert.ok(
      Date.parse(String(readyAt)) - Date.parse(String(startedAt)) >= WARMUP_SECONDS * 1000,
      `Ready at ${readyAt}, container started ${startedAt}: not after a ${WARMUP_SECONDS} s warm-up`,
    );
    return pod;
  }

  test("warm pod Ready by its own probe after warm-up; a pooled session gets it and streams; deleted → pod gone, pool refilled", async () => {
    const t0 = Date.now();
    const marks: Record<string, number> = {};
    const mark = (name: string) => (marks[name] = Math.round((Date.now() - t0) / 100) / 10);

    const applied = await f.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "trickle-relay.io/v1alpha1",
        kind: "RelayPool",
        metadata: { name: POOL, namespace: NAMESPACE },
        spec: {
          replicas: 1,
          template: {
            comfystream: { url: f.peer.url },
            width: 320,
            height: 240,
            frameRate: 15,
            warmup: { durationSeconds: WARMUP_SECONDS },
          },
        },
      }),
    });
    assert.equal(applied.code, 0, applied.stderr);
    const warm = await warmPodReady("the pool's warm pod Ready by its readiness probe");
    mark("warmPodReady");

    const sessionApplied = await f.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "trickle-relay.io/v1alpha1",
        kind: "RelaySession",
        metadata: { name: "pooled", namespace: NAMESPACE },
        spec: {
          trickle: { inputUrl: `${f.trickleBase}demo-stream`, outputUrl: `${f.trickleBase}pooled-out` },
          poolRef: { name: POOL },
        },
      }),
    });
    assert.equal(sessionApplied.code, 0, sessionApplied.stderr);
    const applyAt = Date.now();
    const wait = await f.kubectl(
      ["wait", "-n", NAMESPACE, "--for=condition=Ready", "rls/pooled", "--timeout=90s"],
      { timeoutMs: 100_000 },
    );
    assert.equal(wait.code, 0, `${wait.stderr}${await context(warm.metadata!.name!)}`);
    mark("sessionReady");
    const session = (await f.getJson<RelaySession>(["rls", "pooled", "-n", NAMESPACE]))!;
    assert.equal(session.status?.allocation?.pool, POOL);
    assert.equal(session.status?.allocation?.podName, warm.metadata!.name);
    assert.equal(session.status?.podName, warm.metadata!.name);
    const claimed = (await f.getPod(warm.metadata!.name!))!;
    assert.equal(claimed.metadata?.uid, warm.metadata!.uid, "the warm pod itself, no new pod");
    assert.equal(claimed.metadata?.labels?.["trickle-relay.io/session"], "pooled");
    assert.equal(claimed.metadata?.labels?.["trickle-relay.io/pool-state"], "allocated");
    assert.equal(claimed.status?.containerStatuses?.find((c) => c.name === "relay")?.restartCount, 0);
    await f.outputFlowsSince("pooled", applyAt);
    mark("outputFlowing");
    assert.match(await relayLog(warm.metadata!.name!), /claimed: starting the session/);

    mark("sessionDeleted");
    assert.equal((await f.kubectl(["delete", "rls", "pooled", "-n", NAMESPACE, "--wait=false"])).code, 0);
    // For the record: when the pod was marked for deletion and when its relay exited.
    const seconds = (time: unknown) => Math.round((Date.parse(String(time)) - t0) / 100) / 10;
    await waitFor(
      async () => {
        const pod = await f.getPod(warm.metadata!.name!);
        if (!pod || pod.metadata?.uid !== warm.metadata!.uid) return true;
        // deletionTimestamp is the deadline: request + grace period.
        if (pod.metadata?.deletionTimestamp)
          marks.podDeleteRequested ??=
            Math.round(
              (seconds(pod.metadata.deletionTimestamp) - (pod.metadata.deletionGracePeriodSeconds ?? 0)) * 10,
            ) / 10;
        const finished = pod.status?.containerStatuses?.find((c) => c.name === "relay")?.state?.terminated;
        if (finished) marks.relayExited ??= seconds(finished.finishedAt);
        return false;
      },
      90_000,
      "the pooled session's pod deleted",
      POLL_MS,
    );
    mark("claimedPodGone");
    const node = f.cluster.realNode!;
    await waitFor(
      async () =>
        (
          await node.docker(["ps", "-aq", "--filter", `label=io.kubernetes.pod.uid=${warm.metadata!.uid}`])
        ).stdout.trim() === "",
      60_000,
      "the deleted pod's containers gone from the node",
      POLL_MS,
    );
    const refill = await warmPodReady(
      "the pool refilled: a new warm pod Ready by its probe",
      warm.metadata!.uid,
    );
    mark("refilledReady");
    const status = (await pool()).status!;
    assert.equal(status.allocatedReplicas, 0);
    assert.equal(status.replicas, 1);
    assert.notEqual(refill.metadata?.uid, warm.metadata?.uid);
    assert.equal(await f.getJson(["rls", "pooled", "-n", NAMESPACE]), undefined, "the session is gone");
    console.log(`# pool on the real node (s since the pool was applied): ${JSON.stringify(marks)}`);
  });
});
