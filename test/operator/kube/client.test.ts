/** loadKubeConfig: the documented order (flag, KUBECONFIG, in-cluster, ~/.kube/config) and clear errors. */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadKubeConfig } from "../../../operator/src/kube/client.js";

const kubeconfig = (server: string) => `
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "${server}"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: ctx, context: {cluster: c, user: u}}]
current-context: ctx
`;

describe("loadKubeConfig", () => {
  let dir: string;
  const saved = { ...process.env };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kube-client-test-"));
    await writeFile(join(dir, "flag"), kubeconfig("https://flag.example:6443"));
    await writeFile(join(dir, "env"), kubeconfig("https://env.example:6443"));
    await writeFile(join(dir, "broken"), "clusters: [not: valid: yaml");
    await writeFile(
      join(dir, "nocontext"),
      kubeconfig("https://x.example").replace("current-context: ctx", ""),
    );
  });

  after(async () => {
    process.env = saved;
    await rm(dir, { recursive: true, force: true });
  });

  test("an explicit path wins over KUBECONFIG", () => {
    process.env.KUBECONFIG = join(dir, "env");
    assert.equal(loadKubeConfig(join(dir, "flag")).getCurrentCluster()?.server, "https://flag.example:6443");
    assert.equal(loadKubeConfig().getCurrentCluster()?.server, "https://env.example:6443");
  });

  test("missing, broken and context-less files are named in the error", () => {
    assert.throws(() => loadKubeConfig(join(dir, "absent")), /absent \(from --kubeconfig\) does not exist/);
    process.env.KUBECONFIG = join(dir, "broken");
    assert.throws(() => loadKubeConfig(), /broken \(from KUBECONFIG\) cannot be loaded/);
    assert.throws(() => loadKubeConfig(join(dir, "nocontext")), /no usable current context/);
  });

  test("with nothing configured it says what it tried instead of falling back to localhost:8080", () => {
    delete process.env.KUBECONFIG;
    delete process.env.KUBERNETES_SERVICE_HOST;
    process.env.HOME = dir; // no .kube/config here
    assert.throws(
      () => loadKubeConfig(),
      /no Kubernetes configuration found: pass --kubeconfig or set KUBECONFIG/,
    );
  });
});
