// The relay's own Kubernetes access (relay-pod/src/kube/api-client.ts): which kube config it reads
// and how, and its requests and watches against a real kube-apiserver (refusals as KubeApiError
// with the apiserver's message, a watch's events, its clean end, its abort). The session's own
// calls through it (read, watch, status.relay, the claim Lease) are in relay-pod-apiserver.test.ts
// and the pool pod tests.

import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  configFromKubeconfig,
  KubeApiError,
  kubeAccess,
  loadKubeAccess,
  type KubeAccess,
} from "../../relay-pod/src/kube/api-client.js";
import { waitForClaim } from "../../relay-pod/src/kube/pool-claim.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../infra/apiserver.js";

const kubeconfig = (user: string, cluster = "server: https://127.0.0.1:6443") =>
  [
    "apiVersion: v1",
    "kind: Config",
    "current-context: c",
    "contexts: [{name: c, context: {cluster: k, user: u}}]",
    `clusters: [{name: k, cluster: {${cluster}}}]`,
    `users: [{name: u, user: {${user}}}]`,
  ].join("\n");

describe("the relay's kube config", () => {
  let dir: string;
  const saved = process.env.KUBECONFIG;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "api-client-"));
  });
  after(async () => {
    if (saved === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = saved;
    await rm(dir, { recursive: true, force: true });
  });

  test("the current context's server, CA and token; files named relative to the kubeconfig", async () => {
    await writeFile(join(dir, "ca.crt"), "not really a CA");
    await writeFile(join(dir, "token"), "file-token\n");
    const file = join(dir, "relative");
    await writeFile(
      file,
      kubeconfig("tokenFile: token", "server: https://10.0.0.1:6443/, certificate-authority: ca.crt"),
    );
    const config = configFromKubeconfig(file);
    assert.equal(config.server, "https://10.0.0.1:6443/");
    assert.equal(String(config.ca), "not really a CA");
    assert.equal(config.tokenFile, join(dir, "token"));
  });

  test("KUBECONFIG's first existing file is the one read", async () => {
    const file = join(dir, "env");
    await writeFile(file, kubeconfig("token: abc", "server: https://env.example:6443"));
    process.env.KUBECONFIG = [join(dir, "missing"), file].join(":");
    assert.equal(loadKubeAccess().server, "https://env.example:6443");
    process.env.KUBECONFIG = join(dir, "missing");
    assert.throws(() => loadKubeAccess(), /KUBECONFIG names no existing file/);
  });

  test("a user that authenticates through a plugin is refused with what to do instead", async () => {
    const file = join(dir, "exec");
    await writeFile(file, kubeconfig("exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}"));
    assert.throws(
      () => configFromKubeconfig(file),
      /through a plugin .* give it a token or a client certificate/,
    );
  });

  test("a context that names no cluster is refused", async () => {
    const file = join(dir, "no-cluster");
    await writeFile(file, kubeconfig("token: abc").replace("cluster: k,", "cluster: other,"));
    assert.throws(() => configFromKubeconfig(file), /names no cluster with a server/);
  });
});

const assets = await resolveEnvtestAssets();

describe("the relay's requests and watches (real apiserver)", { skip: assets.skipReason }, () => {
  let cp: ControlPlane;
  let access: KubeAccess;
  const configMaps = "/api/v1/namespaces/default/configmaps";

  before(async () => {
    cp = await startControlPlane();
    access = kubeAccess({ ...configFromKubeconfig(cp.kubeconfigPath), idleTimeoutMs: 60_000 });
  });
  after(async () => {
    await cp?.stop();
  });

  test("a refusal is a KubeApiError with the status and the apiserver's message", async () => {
    await assert.rejects(access.request("GET", `${configMaps}/absent`), (err: unknown) => {
      assert.ok(err instanceof KubeApiError);
      assert.equal(err.code, 404);
      assert.match(err.message, /configmaps "absent" not found/);
      return true;
    });
    const anonymous = kubeAccess({ ...configFromKubeconfig(cp.kubeconfigPath), token: "wrong" });
    await assert.rejects(anonymous.request("GET", configMaps), (err: unknown) => {
      assert.ok(err instanceof KubeApiError);
      assert.equal(err.code, 401);
      return true;
    });
  });

  test("a watch delivers each change, ends cleanly at the server's timeout, and abort() ends it without a callback", async () => {
    const created = await access.request<{ metadata: { resourceVersion: string } }>("POST", configMaps, {
      body: { metadata: { name: "watched" }, data: { n: "0" } },
    });
    const seen: string[] = [];
    const ended = new Promise<Error | null>((resolve) => {
      void access.watch(
        configMaps,
        {
          fieldSelector: "metadata.name=watched",
          resourceVersion: created.metadata.resourceVersion,
          timeoutSeconds: 2,
        },
        (type, object) => seen.push(`${type} ${(object as { data?: { n?: string } }).data?.n}`),
        resolve,
      );
    });
    await access.request("PATCH", `${configMaps}/watched`, { body: { data: { n: "1" } }, patch: "merge" });
    assert.equal(await ended, null, "the server's timeout is a clean end");
    assert.deepEqual(seen, ["MODIFIED 1"]);

    let doneCalls = 0;
    const handle = await access.watch(
      configMaps,
      { timeoutSeconds: 60 },
      () => undefined,
      () => doneCalls++,
    );
    handle.abort();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(doneCalls, 0, "the caller's abort ends it without a callback");
  });

  test("a warm pod's waitForClaim takes the claim off its Lease watch: one list, no re-list", async () => {
    const leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    const idle = await access.request<Record<string, unknown>>("POST", leases, {
      body: { metadata: { name: "gpu-warm-0" }, spec: { holderIdentity: "" } },
    });
    const requests: string[] = [];
    const counted: KubeAccess = {
      server: access.server,
      request: (method, path, options) => {
        requests.push(`${method} ${path}`);
        return access.request(method, path, options);
      },
      watch: (path, query, onEvent, onDone) => access.watch(path, query, onEvent, onDone),
    };
    const waiting = waitForClaim(
      counted,
      { namespace: "default", name: "gpu-warm-0" },
      AbortSignal.timeout(20_000),
    );
    while (requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    await new Promise((resolve) => setTimeout(resolve, 300)); // the watch is open
    await access.request("PUT", `${leases}/gpu-warm-0`, {
      body: { ...idle, spec: { holderIdentity: "studio/cam-1" } },
    });
    const claim = await waiting;
    assert.deepEqual(claim?.session, { namespace: "studio", name: "cam-1" });
    // A claim taken from a second list means the watch event was lost (it once was: the watch's
    // abort called back into the waiter, which settled without the claim).
    assert.deepEqual(requests, [`GET ${leases}`]);
  });
});
