/**
 * The relay of a warm pool pod (`trickle-relay run --pool-pod`), as a real process against a real
 * kube-apiserver: not Ready while its ComfyStream does not answer, Ready (readiness endpoint and
 * state metric) once it does, idle until the pod is claimed, then at once running the claimed
 * session, whose status.relay it writes. The claim is written exactly as the operator writes it
 * (its claim Lease updated with the resourceVersion read, then the pod's labels).
 *
 * ComfyStream here is a plain HTTP server that answers every request with 404 ("stand-in
 * ComfyStream, HTTP only"): enough to be "up"; with --warmup-seconds 0 no stream goes through it,
 * and the claimed session's offer then fails, which the relay reports in status.relay.
 */
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import type { RelayPool, RelaySession } from "../../../crds/src/index.js";
import {
  freePorts,
  resolveEnvtestAssets,
  startControlPlane,
  type ControlPlane,
} from "../../infra/apiserver.js";
import { repoRoot, waitFor } from "../operator-harness.js";
import { claimAsOperator, createPoolPod, startPoolPodProcess } from "./pool-pod-process.js";
import { PoolKubectl, poolYaml, pooledSessionsYaml } from "./pool-harness.js";

const assets = await resolveEnvtestAssets();

describe("warm pool pod relay (real apiserver, relay process)", { skip: assets.skipReason }, () => {
  let cp: ControlPlane;
  let kc: KubeConfig;

  before(async () => {
    cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds")] });
    kc = new KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
  });
  after(async () => cp?.stop());

  test("not Ready until ComfyStream answers; Ready and idle; claimed → runs the session at once", async (t) => {
    const ns = "pool-relay";
    const kubectl = new PoolKubectl(cp);
    await kubectl.ok(["create", "namespace", ns]);
    const [comfyPort, readyPort] = await freePorts(2);
    await kubectl.ok(["apply", "-f", "-"], poolYaml(ns, "gpu", { replicas: 1 }));
    const pool = await kubectl.pool(ns, "gpu");
    const pod = await createPoolPod(kc, pool as RelayPool, 0);

    const relay = startPoolPodProcess({
      comfystreamUrl: `http://127.0.0.1:${comfyPort}`,
      readyPort,
      warmupSeconds: 0,
      kubeconfig: cp.kubeconfigPath,
      namespace: ns,
      podName: pod.metadata!.name!,
    });
    t.after(() => relay.kill());
    const { readyz, metrics, exited } = relay;

    await waitFor("readiness endpoint up", 20_000, async () => (await readyz()) !== 0);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(await readyz(), 503, "not Ready while ComfyStream does not answer");
    assert.match(await metrics(), /trickle_relay_pool_pod_state\{state="warming"\} 1/);

    const comfystream = createServer((_request, response) => response.writeHead(404).end());
    await new Promise<void>((resolve) => comfystream.listen(comfyPort, "127.0.0.1", resolve));
    t.after(() => comfystream.close());
    await waitFor("Ready once ComfyStream answers", 20_000, async () => (await readyz()) === 200);
    assert.match(await metrics(), /trickle_relay_pool_pod_state\{state="ready"\} 1/);

    // The operator's claim, as the allocator writes it.
    await kubectl.ok(["apply", "-f", "-"], pooledSessionsYaml(ns, "gpu", ["claimed"]));
    const session = (await kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
      group: "trickle-relay.io",
      version: "v1alpha1",
      namespace: ns,
      plural: "relaysessions",
      name: "claimed",
    })) as RelaySession;
    const claimedAt = Date.now();
    await claimAsOperator(kc, ns, pod.metadata!.name!, session);

    await waitFor("allocated state", 10_000, async () =>
      /trickle_relay_pool_pod_state\{state="allocated"\} 1/.test(await metrics()),
    );
    assert.notEqual(await readyz(), 200, "no longer offered as idle");
    const reported = await waitFor("the relay reports into the claimed session", 20_000, async () => {
      const sessions = await kubectl.sessions(ns);
      return sessions.find((s) => s.metadata.name === "claimed")?.status?.relay?.lastUpdateTime;
    });
    t.diagnostic(`claim → first status.relay: ${Date.now() - claimedAt} ms (upper bound)`);
    assert.ok(Date.parse(reported) >= claimedAt - 1000, "reported after the claim");
    await relay.logged(/claimed: starting the session/);
    relay.kill("SIGTERM");
    await exited;
  });
});
