/**
 * The real test node itself (test/infra/real-node/): kubelet 1.20.2 + dockershim + its own dockerd +
 * kube-scheduler against the real control plane, running the relay image with a plain Node HTTP
 * server. Proves what the operator suites rely on: the scheduler binds the pod, startup/readiness/
 * liveness probes run against the container on the node's loopback, the kubelet mounts a real
 * ServiceAccount token with which the pod reaches the apiserver through the `kubernetes` Service
 * address, `docker kill` is counted as a restart, and stop() leaves no container, mount, cgroup or
 * process behind. Skipped (with the reason) where the real node cannot run; see the suite line.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import { startControlPlane, type ControlPlane } from "./apiserver.js";
import {
  REAL_NODE_LABEL,
  realNodeAvailability,
  realNodeControlPlaneOptions,
  startRealNode,
  type RealNode,
} from "./real-node/real-node.js";

const version = (JSON.parse(readFileSync("package.json", "utf8")) as { version: string }).version;
const RELAY_IMAGE = `trickle-relay/relay:${version}`;
const availability = await realNodeAvailability([RELAY_IMAGE]);
const nodeLine = availability.assetsDir ? REAL_NODE_LABEL : `skipped: ${availability.reason}`;
console.log(`# node: ${nodeLine} (test/infra/real-node.test.ts)`);

const namespace = "default";
const server = [
  'const http = require("node:http");',
  'http.createServer((req, res) => res.end(req.url === "/ready" ? "ready" : "ok")).listen(18080, "127.0.0.1");',
  'console.log("listening");',
].join(" ");
const apiProbe = [
  'const fs = require("node:fs"); const dir = "/var/run/secrets/kubernetes.io/serviceaccount";',
  "const host = process.env.KUBERNETES_SERVICE_HOST, port = process.env.KUBERNETES_SERVICE_PORT;",
  'require("node:https").get({ host, port, path: "/api/v1/namespaces/default/pods", ca: fs.readFileSync(dir + "/ca.crt"),',
  '  headers: { authorization: "Bearer " + fs.readFileSync(dir + "/token", "utf8") } },',
  "  (res) => { console.log(host + ':' + port + ' HTTP ' + res.statusCode); res.resume(); })",
  '  .on("error", (err) => { console.log("error " + err.message); });',
].join(" ");

describe(`real test node (${nodeLine})`, { skip: availability.reason ?? false }, () => {
  let cp: ControlPlane;
  let node: RealNode;

  const getPod = async (name: string): Promise<V1Pod> => {
    const result = await cp.kubectl(["get", "pod", name, "-n", namespace, "-o", "json"]);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout) as V1Pod;
  };

  before(async () => {
    cp = await startControlPlane(realNodeControlPlaneOptions());
    node = await startRealNode({
      controlPlane: cp,
      images: [RELAY_IMAGE],
      assetsDir: availability.assetsDir,
    });
    console.log(`# real node started: ${JSON.stringify(node.timings)} ms`);
  });

  after(async () => {
    await node?.stop();
    await cp?.stop();
  });

  test("a pod is bound by the scheduler, passes its probes and is Ready", async () => {
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "web", namespace },
      spec: {
        restartPolicy: "Always",
        containers: [
          {
            name: "web",
            image: RELAY_IMAGE,
            command: ["node", "-e", server],
            securityContext: {
              runAsNonRoot: true,
              readOnlyRootFilesystem: true,
              allowPrivilegeEscalation: false,
            },
            startupProbe: {
              httpGet: { path: "/", port: 18080, host: "127.0.0.1" },
              periodSeconds: 1,
              failureThreshold: 60,
            },
            readinessProbe: { httpGet: { path: "/ready", port: 18080, host: "127.0.0.1" }, periodSeconds: 1 },
            livenessProbe: {
              exec: { command: ["node", "-e", "process.exit(0)"] },
              periodSeconds: 5,
              timeoutSeconds: 5,
            },
          },
        ],
      },
    };
    const created = await cp.kubectl(["apply", "-f", "-"], { input: JSON.stringify(pod) });
    assert.equal(created.code, 0, created.stderr);
    const ready = await cp.kubectl(
      ["wait", "-n", namespace, "--for=condition=Ready", "pod/web", "--timeout=120s"],
      {
        timeoutMs: 130_000,
      },
    );
    assert.equal(ready.code, 0, `${ready.stderr}\n${(await cp.kubectl(["describe", "pod", "web"])).stdout}`);
    const running = await getPod("web");
    assert.equal(running.spec?.nodeName, node.nodeName);
    const events = await cp.kubectl([
      "get",
      "events",
      "-n",
      namespace,
      "--field-selector",
      "involvedObject.name=web",
      "-o",
      "json",
    ]);
    type Event = { reason: string; reportingComponent?: string; source?: { component?: string } };
    const reasons = (JSON.parse(events.stdout) as { items: Event[] }).items.map(
      // The scheduler reports through events.k8s.io (reportingComponent), the kubelet through core/v1.
      (e) => `${e.reportingComponent || e.source?.component}:${e.reason}`,
    );
    assert.ok(reasons.includes("default-scheduler:Scheduled"), reasons.join(", "));
    assert.ok(reasons.includes("kubelet:Started"), reasons.join(", "));
    const logs = await cp.kubectl(["logs", "-n", namespace, "web"]);
    assert.equal(logs.stdout.trim(), "listening", logs.stderr);
  });

  test("the kubelet mounts a ServiceAccount token that reaches the apiserver via the kubernetes Service", async () => {
    const result = await cp.kubectl(["exec", "-n", namespace, "web", "--", "node", "-e", apiProbe], {
      timeoutMs: 60_000,
    });
    assert.equal(result.code, 0, result.stderr);
    // Authenticated as system:serviceaccount:default:default, which RBAC does not let list pods.
    assert.equal(result.stdout.trim(), "10.0.0.1:443 HTTP 403");
  });

  test("docker kill of the container → the kubelet restarts it and counts the restart", async () => {
    const id = await node.containerId(namespace, "web", "web");
    assert.ok(id, "the container runs in the node's engine");
    assert.equal((await node.docker(["kill", id])).code, 0);
    const deadline = Date.now() + 60_000;
    let restarts = 0;
    while (Date.now() < deadline) {
      const status = (await getPod("web")).status?.containerStatuses?.[0];
      restarts = status?.restartCount ?? 0;
      if (restarts >= 1 && status?.ready) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(restarts, 1);
    assert.notEqual(await node.containerId(namespace, "web", "web"), id);
  });

  test("stop() leaves no container, mount, cgroup or process behind", async () => {
    const leftovers = await node.stop();
    assert.deepEqual(leftovers, { containers: [], mounts: [], cgroups: [], processes: [] });
  });
});
