/**
 * The gateway's session pages across namespaces, on a real kube-apiserver, with the gateway acting
 * as a ServiceAccount whose RBAC is what the chart gives the operator: read in the watched
 * namespaces, change in the gateway's own. The overview lists the watched namespaces' sessions
 * (and names the one it may not read instead of failing), leaves unwatched namespaces out, and a
 * session of another namespace gets a read-only page (no edit, no stop) in a real browser.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { chromium } from "playwright-core";
import { buildGatewayServer, type GatewayServer } from "../../operator/src/gateway/gateway.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../infra/apiserver.js";
import { repoRoot } from "../operator/operator-harness.js";

const assets = await resolveEnvtestAssets();
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const home = "ui-home";
const watched = "ui-watched";
const denied = "ui-denied";
const unwatched = "ui-unwatched";
const token = "gateway-ui-cluster-token-0123456789";

const session = (namespace: string, name: string) => `
apiVersion: trickle-relay.io/v1alpha1
kind: RelaySession
metadata: {name: ${name}, namespace: ${namespace}}
spec:
  trickle: {inputUrl: "http://127.0.0.1:9/live/${name}"}
  comfystream: {url: "http://127.0.0.1:9"}
`;

const role = (namespace: string, verbs: string[]) => `
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: relay-gateway, namespace: ${namespace}}
rules:
  - apiGroups: [trickle-relay.io]
    resources: [relaysessions]
    verbs: [${verbs.join(", ")}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: relay-gateway, namespace: ${namespace}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: relay-gateway}
subjects: [{kind: ServiceAccount, name: relay-gateway, namespace: ${home}}]
`;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

describe("gateway session pages across namespaces", { skip: assets.skipReason, timeout: 180_000 }, () => {
  let cp: ControlPlane;
  let gateway: GatewayServer;
  let baseUrl: string;

  before(async () => {
    cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds/trickle-relay.io_relaysessions.yaml")] });
    const ok = async (args: string[], input?: string) => {
      const result = await cp.kubectl(args, input === undefined ? {} : { input });
      assert.equal(result.code, 0, `kubectl ${args.join(" ")}: ${result.stderr}`);
    };
    for (const namespace of [home, watched, denied, unwatched]) await ok(["create", "namespace", namespace]);
    await ok(["create", "serviceaccount", "relay-gateway", "-n", home]);
    await ok(["apply", "-f", "-"], role(home, ["get", "list", "watch", "create", "patch", "delete"]));
    await ok(["apply", "-f", "-"], role(watched, ["get", "list", "watch"]));
    await ok(["apply", "-f", "-"], role(unwatched, ["get", "list", "watch"]));
    for (const namespace of [watched, denied, unwatched])
      await ok(["apply", "-f", "-"], session(namespace, "cam-x"));
    await ok(["apply", "-f", "-"], session(home, "cam-home"));

    const kubeConfig = new KubeConfig();
    const caData = cp.caFile ? (await readFile(cp.caFile)).toString("base64") : undefined;
    kubeConfig.loadFromOptions({
      clusters: [{ name: "envtest", server: cp.server, ...(caData ? { caData } : { skipTLSVerify: true }) }],
      users: [{ name: "gateway", token: await cp.createServiceAccountToken(home, "relay-gateway") }],
      contexts: [{ name: "gateway", cluster: "envtest", user: "gateway" }],
      currentContext: "gateway",
    });
    // As the operator wires it: the pages list the watched namespaces (the home one is added).
    gateway = buildGatewayServer({ kubeConfig, namespace: home, token, uiNamespaces: [watched, denied] });
    baseUrl = (await gateway.listen({ host: "127.0.0.1", port: 0 })).replace(/\/$/, "");
  });

  after(async () => {
    await gateway?.close();
    await cp?.stop();
  });

  it("lists the watched namespaces' sessions and names the namespace its RBAC does not let it read", async () => {
    const res = await fetch(`${baseUrl}/ui/api/sessions`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as Any;
    const listed = (body.sessions as Any[]).map((s) => [s.id, s.namespace, s.view.rest_id]);
    assert.deepEqual(listed.sort(), [
      ["cam-home", home, "cam-home"],
      [`${watched}/cam-x`, watched, null],
    ]);
    assert.equal(body.unreadable_namespaces.length, 1);
    assert.equal(body.unreadable_namespaces[0].namespace, denied);
    assert.match(body.unreadable_namespaces[0].reason, /403/);
  });

  it("lists every namespace's sessions when the operator watches the whole cluster", async () => {
    const admin = new KubeConfig();
    admin.loadFromFile(cp.kubeconfigPath);
    const clusterWide = buildGatewayServer({ kubeConfig: admin, namespace: home, token, uiNamespaces: [] });
    try {
      const url = (await clusterWide.listen({ host: "127.0.0.1", port: 0 })).replace(/\/$/, "");
      const body = (await (await fetch(`${url}/ui/api/sessions`)).json()) as Any;
      assert.deepEqual((body.sessions as Any[]).map((s) => s.id).sort(), [
        "cam-home",
        `${denied}/cam-x`,
        `${unwatched}/cam-x`,
        `${watched}/cam-x`,
      ]);
      assert.deepEqual(body.unreadable_namespaces, []);
    } finally {
      await clusterWide.close();
    }
  });

  it("streams a watched namespace's session; unwatched and unreadable ones are not found", async () => {
    const events = (key: string) => fetch(`${baseUrl}/ui/api/sessions/${encodeURIComponent(key)}/events`);
    const res = await events(`${watched}/cam-x`);
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const { value } = await reader.read();
    const text = new TextDecoder().decode(value);
    assert.match(text, /event: snapshot\ndata: .*"namespace":"ui-watched"/);
    assert.match(text, /"rest_id":null/);
    await reader.cancel();
    // A relay pod's metrics call its session NAMESPACE/NAME (the alerts link to that): it works for
    // the gateway's own namespace too, where the overview uses the REST API's id.
    const homeSession = await events(`${home}/cam-home`);
    assert.equal(homeSession.status, 200);
    assert.match(
      new TextDecoder().decode((await homeSession.body!.getReader().read()).value),
      /"rest_id":"cam-home"/,
    );
    assert.equal((await events(`${unwatched}/cam-x`)).status, 404, "readable, but not watched");
    assert.equal((await events(`${denied}/cam-x`)).status, 404, "watched, but not readable");
    assert.equal((await events(`${watched}/cam-x/../x`)).status, 404);
  });

  it(
    "gives another namespace's session a read-only page in a real browser",
    { skip: !existsSync(CHROMIUM) },
    async () => {
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
      try {
        const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
        await page.goto(`${baseUrl}/ui/`);
        await page.locator(`tr[data-session="${watched}/cam-x"]`).waitFor({ timeout: 10_000 });
        await page.selectOption("#filter-namespace", watched);
        assert.equal(await page.locator("#sessions tbody tr").count(), 1);
        assert.match(
          await page.innerText("main [role=status]"),
          new RegExp(`^1 of 2 sessions; could not read namespace ${denied} \\(HTTP 403\\)$`),
        );
        await page.click(`a[href="#/session/${encodeURIComponent(`${watched}/cam-x`)}"]`);
        await page.locator("#read-only-note").waitFor({ state: "visible", timeout: 10_000 });
        assert.match(
          await page.innerText("#read-only-note"),
          /gateway changes only the sessions of its own namespace/,
        );
        assert.equal(await page.isDisabled("#apply-prompts"), true);
        assert.equal(await page.isDisabled("#stop"), true);
        // The home namespace's session stays editable (the REST API decides, with the token).
        await page.goto(`${baseUrl}/ui/#/session/cam-home`);
        await page.locator("#fact-audio").waitFor({ timeout: 10_000 });
        assert.equal(await page.isDisabled("#apply-prompts"), false);
        assert.equal(await page.isHidden("#read-only-note"), true);
      } finally {
        await browser.close();
      }
    },
  );
});
