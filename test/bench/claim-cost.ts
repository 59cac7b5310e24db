// What one warm-pod claim costs on a real apiserver: an update of the whole pod (the claim until the
// sixth session) against an update-shaped write of a small Lease (a create here; the claim Lease
// update costs the same order), each while a burst of 100 RelaySession creates competes for the
// same CPU (or alone with `alone`). Client-side latency of the claim writes, p50/p95/max, 4 rounds
// of each, alternating. No operator: isolates the apiserver's cost of the write itself.
//   npm run bench:pool:claim-cost [-- alone]
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type V1Pod,
} from "@kubernetes/client-node";
import { join } from "node:path";
import { startControlPlane } from "../infra/apiserver.js";
import { repoRoot } from "../operator/operator-harness.js";
import { withRequestTimeout } from "../../operator/src/kube/client.js";
if (process.argv.includes("--help")) {
  console.log(
    "npm run bench:pool:claim-cost [-- alone]\n" +
      "Claim write latency: whole-pod update vs Lease, with 100 session creates competing (or alone).",
  );
  process.exit(0);
}
const WITH_CREATES = process.argv[2] !== "alone";

const N = 100;
const cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds")] });
try {
  const raw = new KubeConfig();
  raw.loadFromFile(cp.kubeconfigPath);
  const kc = withRequestTimeout(raw, 60_000);
  const core = kc.makeApiClient(CoreV1Api);
  const leases = kc.makeApiClient(CoordinationV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const ns = "exp";
  await core.createNamespace({ body: { metadata: { name: ns } } });
  const pct = (xs: number[], p: number) =>
    [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
  let round = 0;
  for (const mode of ["pod", "lease", "pod", "lease", "pod", "lease", "pod", "lease"] as const) {
    round++;
    const pods: V1Pod[] = [];
    await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const name = `r${round}-p${i}`;
        const pod = await core.createNamespacedPod({
          namespace: ns,
          body: {
            metadata: {
              name,
              labels: { "trickle-relay.io/pool": "p", "trickle-relay.io/pod-state": "ready" },
              annotations: { a: "b" },
            },
            spec: {
              containers: [
                {
                  name: "relay",
                  image: "trickle-relay:dev",
                  args: ["run", "--pool-pod", "--comfystream", "http://127.0.0.1:8889"],
                  env: Array.from({ length: 8 }, (_, k) => ({ name: `E${k}`, value: "v".repeat(20) })),
                  resources: { limits: { cpu: "1", memory: "1Gi" }, requests: { cpu: "1", memory: "1Gi" } },
                  readinessProbe: { httpGet: { path: "/ready", port: 8080 } },
                },
                { name: "comfystream", image: "comfystream:dev", ports: [{ containerPort: 8889 }] },
              ],
            },
          },
        });
        pods[i] = pod;
      }),
    );
    await new Promise((r) => setTimeout(r, 1000));
    const claimMs: number[] = [];
    const t0 = performance.now();
    const creates = Array.from({ length: WITH_CREATES ? N : 0 }, (_, i) =>
      custom.createNamespacedCustomObject({
        group: "trickle-relay.io",
        version: "v1alpha1",
        namespace: ns,
        plural: "relaysessions",
        body: {
          apiVersion: "trickle-relay.io/v1alpha1",
          kind: "RelaySession",
          metadata: { name: `r${round}-s${i}` },
          spec: { trickle: { inputUrl: `http://127.0.0.1:9/live/s${i}` }, poolRef: { name: "p" } },
        },
      }),
    );
    const claims = pods.map(async (pod, i) => {
      await new Promise((r) => setTimeout(r, i * 3)); // the claims trail the creates, as the operator's do
      const start = performance.now();
      if (mode === "pod") {
        const claimed = structuredClone(pod);
        claimed.metadata!.labels!["trickle-relay.io/pod-state"] = "allocated";
        claimed.metadata!.annotations!["trickle-relay.io/allocated-session"] = `${ns}/r${round}-s${i}`;
        await core.replaceNamespacedPod({ namespace: ns, name: pod.metadata!.name!, body: claimed });
      } else {
        await leases.createNamespacedLease({
          namespace: ns,
          body: {
            metadata: {
              name: pod.metadata!.name!,
              ownerReferences: [
                { apiVersion: "v1", kind: "Pod", name: pod.metadata!.name!, uid: pod.metadata!.uid! },
              ],
            },
            spec: { holderIdentity: `${ns}/r${round}-s${i}` },
          },
        });
      }
      claimMs.push(performance.now() - start);
    });
    const results = await Promise.allSettled([...creates, ...claims]);
    const failed = results.filter((r) => r.status === "rejected");
    const wall = performance.now() - t0;
    console.log(
      `${mode.padEnd(6)} claim ms p50 ${pct(claimMs, 50).toFixed(0)} p95 ${pct(claimMs, 95).toFixed(0)} max ${Math.max(...claimMs).toFixed(0)}; burst wall ${wall.toFixed(0)} ms; failed ${failed.length}${failed.length ? " " + String((failed[0] as PromiseRejectedResult).reason).slice(0, 200) : ""}`,
    );
  }
} finally {
  await cp.stop();
}
