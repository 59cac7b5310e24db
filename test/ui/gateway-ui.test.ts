/**
 * The session pages served by the operator's REST gateway, over RelaySessions in a real
 * kube-apiserver: the overview and the event stream read the resources without the token (and hide
 * the stream URLs), follow status.relay as the relay pod rewrites it, and the page loads in a real
 * browser (Debian's chromium); changes still need the gateway's token.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path, { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { chromium } from "playwright-core";
import {
  RELAY_SESSION_GROUP,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelaySessionStatus,
} from "../../crds/src/index.js";
import { buildGatewayServer, type GatewayServer } from "../../operator/src/gateway/gateway.js";
import { sessionNameForId } from "../../operator/src/gateway/session-names.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../infra/apiserver.js";
import { repoRoot } from "../operator/operator-harness.js";
import { waitFor } from "../infra/wait-for.js";

const assets = await resolveEnvtestAssets();
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const OUTPUT_DIR = path.resolve(process.env.TEST_OUTPUT_DIR ?? "test-output", "ui");
const namespace = "relay-ui";
const token = "gateway-ui-token-0123456789abcdef";
const workflow = {
  "1": { class_type: "LoadTensor", inputs: {} },
  "2": { class_type: "SaveTensor", inputs: {} },
};

describe("session pages on the operator's gateway", { skip: assets.skipReason, timeout: 180_000 }, () => {
  let cp: ControlPlane;
  let gateway: GatewayServer;
  let baseUrl: string;
  let objects: CustomObjectsApi;
  let adminKubeConfig: KubeConfig;

  /** What the relay pod writes, through the /status subresource. */
  const patchStatus = (status: RelaySessionStatus) =>
    objects.patchNamespacedCustomObjectStatus(
      {
        group: RELAY_SESSION_GROUP,
        version: RELAY_SESSION_VERSION,
        plural: RELAY_SESSION_PLURAL,
        namespace,
        name: sessionNameForId("cam-1"),
        body: { status },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  const relayReport = (outputFps: number) => ({
    phase: "Running" as const,
    conditions: [
      {
        type: "Ready",
        status: "True" as const,
        reason: "Running",
        message: "frames flow",
        lastTransitionTime: new Date().toISOString(),
      },
    ],
    relay: {
      lastUpdateTime: new Date().toISOString(),
      webrtc: { connectionState: "connected" as const },
      inputFps: 30,
      outputFps,
      latencyMs: { p50: 120, p95: 180 },
      reconnects: 0,
      audio: {
        mode: "passthrough" as const,
        reason: "auto → passthrough: the workflow has no audio node",
        codecIn: "opus" as const,
        codecOut: "opus" as const,
        framesIn: 1500,
        framesOut: 1480,
        framesDropped: 2,
        framesCorrupt: 0,
        queue: { size: 3, capacity: 512 },
        avOffsetMs: 20,
      },
    },
  });

  before(async () => {
    cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds/trickle-relay.io_relaysessions.yaml")] });
    const admin = new KubeConfig();
    admin.loadFromFile(cp.kubeconfigPath);
    objects = admin.makeApiClient(CustomObjectsApi);
    adminKubeConfig = admin;
    assert.equal((await cp.kubectl(["create", "namespace", namespace])).code, 0);
    gateway = buildGatewayServer({ kubeConfig: admin, namespace, token });
    baseUrl = (await gateway.listen({ host: "127.0.0.1", port: 0 })).replace(/\/$/, "");
    const started = await fetch(`${baseUrl}/session/start`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({
        session_id: "cam-1",
        input_stream_url: "https://gw.example.com:7280/live/cam-1",
        comfystream_url: "http://comfystream.example.com:8889",
        prompts: [workflow],
      }),
    });
    assert.equal(started.status, 200, await started.text());
    await patchStatus(relayReport(29));
  });

  after(async () => {
    await gateway?.close();
    await cp?.stop();
  });

  it("lists the namespace's sessions without the token, with phase and figures, stream URLs hidden", async () => {
    const res = await fetch(`${baseUrl}/ui/api/sessions`);
    assert.equal(res.status, 200);
    const { sessions } = (await res.json()) as { sessions: Record<string, any>[] }; // eslint-disable-line @typescript-eslint/no-explicit-any
    assert.equal(sessions.length, 1);
    const [item] = sessions;
    assert.equal(item!.id, "cam-1");
    assert.equal(item!.namespace, namespace);
    assert.equal(item!.phase, "Running");
    assert.equal(item!.fps.output, 29);
    assert.equal(item!.view.input_stream_url, "(hidden)");
    // The REST API itself stays behind the token.
    assert.equal((await fetch(`${baseUrl}/sessions`)).status, 401);
    const edit = await fetch(`${baseUrl}/session/cam-1/prompts`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompts: [workflow] }),
    });
    assert.equal(edit.status, 401);
    assert.equal((await fetch(`${baseUrl}/session/cam-1`, { method: "DELETE" })).status, 401);
  });

  it("streams the session as the relay pod updates status.relay", async () => {
    const controller = new AbortController();
    const res = await fetch(`${baseUrl}/ui/api/sessions/cam-1/events`, { signal: controller.signal });
    assert.equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
    const reader = res.body!.getReader();
    let text = "";
    const readUntil = async (pattern: RegExp) =>
      waitFor(
        async () => {
          const { value } = await reader.read();
          text += new TextDecoder().decode(value);
          return pattern.test(text);
        },
        10_000,
        `${pattern} in the event stream`,
      );
    await readUntil(/event: snapshot\ndata: .*"phase":"Running"/);
    assert.match(text, /"prompts":\[\{"1":\{"class_type":"LoadTensor"/);
    await patchStatus(relayReport(12.5));
    await readUntil(/event: tick\ndata: .*"fpsOut":12\.5/);
    controller.abort();
  });

  it("does not keep the gateway from closing while a page is open", async () => {
    const other = buildGatewayServer({ kubeConfig: adminKubeConfig, namespace, token });
    const url = (await other.listen({ host: "127.0.0.1", port: 0 })).replace(/\/$/, "");
    const res = await fetch(`${url}/ui/api/sessions/cam-1/events`);
    const reader = res.body!.getReader();
    await reader.read(); // the snapshot: the stream is open
    const started = performance.now();
    const closed = await Promise.race([other.close().then(() => true), sleep(5000).then(() => false)]);
    assert.ok(closed, "close() returned while a page's event stream was open");
    assert.ok(performance.now() - started < 3000, "closed without waiting for the open page");
    while (!(await reader.read()).done); // and the page's stream ended
  });

  it(
    "loads the overview and the session page in a real browser",
    { skip: !existsSync(CHROMIUM) },
    async () => {
      mkdirSync(OUTPUT_DIR, { recursive: true });
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
      try {
        const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
        await page.goto(`${baseUrl}/ui/`);
        const row = page.locator('tr[data-session="cam-1"]');
        await row.waitFor({ timeout: 10_000 });
        assert.match(await row.innerText(), new RegExp(`${namespace}[\\s\\S]*Running`));
        await page.selectOption("#filter-namespace", namespace);
        await page.screenshot({ path: join(OUTPUT_DIR, "gateway-overview.png") });
        await page.click('a[href="#/session/cam-1"]');
        await page.locator("#facts").getByText("Running").first().waitFor({ timeout: 10_000 });
        assert.match(await page.innerText("#conditions"), /Ready=True \(Running\): frames flow/);
        // The audio as the relay pod reported it in status.relay.audio.
        assert.equal(await page.innerText("#fact-audio"), "passthrough (opus → opus)");
        assert.equal(await page.innerText("#fact-audio-frames"), "1500 / 1480 / 2 / 0");
        assert.equal(await page.innerText("#fact-audio-queue"), "3 of 512 / 20 ms");
        await page.screenshot({ path: join(OUTPUT_DIR, "gateway-session.png"), fullPage: true });
      } finally {
        await browser.close();
      }
    },
  );
});
