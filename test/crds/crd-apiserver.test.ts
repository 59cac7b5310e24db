// The generated CRD against a real kube-apiserver (1.20, envtest style, test/infra/apiserver.ts):
// `kubectl apply -f crds/` installs it, the examples pass server-side validation and come back with
// the schema defaults, `kubectl explain` reads well, invalid sessions are rejected with a message
// naming the field, and the status subresource and printer columns work.
// Skipped only when the control plane cannot be started here.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import {
  ApiException,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { parse } from "yaml";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../infra/apiserver.js";
import { findRepositoryRoot } from "../../crds/src/generate.js";
import {
  RELAY_SESSION_CRD_NAME,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelaySession,
} from "../../crds/src/index.js";

const root = findRepositoryRoot();
const namespace = "default";
const assets = await resolveEnvtestAssets();

let controlPlane: ControlPlane | undefined;
let unavailable: string | undefined = assets.skipReason || undefined;

/** Skips the test when there is no control plane, and otherwise returns it. */
function requireControlPlane(t: TestContext): ControlPlane | undefined {
  if (!controlPlane) t.skip(unavailable ?? "control plane not started");
  return controlPlane;
}

async function kubectlOk(cp: ControlPlane, args: string[], input?: string): Promise<string> {
  const result = await cp.kubectl(args, input === undefined ? {} : { input });
  assert.equal(result.code, 0, `kubectl ${args.join(" ")} failed:\n${result.stderr}`);
  return result.stdout;
}

/** Merge-patches `status` through the /status subresource, as the operator and relay pod do. */
async function patchStatus(cp: ControlPlane, name: string, status: object): Promise<void> {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(cp.kubeconfigPath);
  await kubeConfig.makeApiClient(CustomObjectsApi).patchNamespacedCustomObjectStatus(
    {
      group: RELAY_SESSION_GROUP,
      version: RELAY_SESSION_VERSION,
      namespace,
      plural: RELAY_SESSION_PLURAL,
      name,
      body: { status },
    },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}

async function getSession(cp: ControlPlane, name: string): Promise<RelaySession> {
  return JSON.parse(await kubectlOk(cp, ["get", "relaysession", name, "-n", namespace, "-o", "json"]));
}

/** A RelaySession manifest derived from basic.yaml with `spec` replaced by `mutate(spec)`. */
function variant(name: string, mutate: (spec: Record<string, unknown>) => Record<string, unknown>): string {
  const basic = parse(readFileSync(join(root, "crds/examples/basic.yaml"), "utf8")) as {
    spec: Record<string, unknown>;
  };
  return JSON.stringify({ ...basic, metadata: { name }, spec: mutate(structuredClone(basic.spec)) });
}

/** `kubectl apply` without client-side validation, so the apiserver's verdict is what we see. */
async function applyRejected(cp: ControlPlane, manifest: string): Promise<string> {
  const result = await cp.kubectl(["apply", "-n", namespace, "--validate=false", "-f", "-"], {
    input: manifest,
  });
  assert.notEqual(result.code, 0, `the apiserver accepted ${manifest}`);
  return result.stderr;
}

describe("RelaySession CRD on a real kube-apiserver", { skip: assets.skipReason }, () => {
  before(async () => {
    try {
      controlPlane = await startControlPlane();
    } catch (error) {
      unavailable = `control plane did not start: ${(error as Error).message}`;
      return;
    }
    await kubectlOk(controlPlane, ["apply", "-f", join(root, "crds")]);
    await kubectlOk(controlPlane, [
      "wait",
      "--for=condition=Established",
      `crd/${RELAY_SESSION_CRD_NAME}`,
      "--timeout=60s",
    ]);
  });

  after(async () => {
    await controlPlane?.stop();
  });

  test("kubectl apply -f crds/ installs exactly the CRD, accepted as structural", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    const crd = JSON.parse(await kubectlOk(cp, ["get", "crd", RELAY_SESSION_CRD_NAME, "-o", "json"])) as {
      status: { conditions: { type: string; status: string; message: string }[] };
    };
    const byType = new Map(crd.status.conditions.map((c) => [c.type, c]));
    assert.equal(byType.get("Established")?.status, "True");
    assert.equal(byType.get("NamesAccepted")?.status, "True");
    assert.notEqual(
      byType.get("NonStructuralSchema")?.status,
      "True",
      byType.get("NonStructuralSchema")?.message,
    );
    const resources = await kubectlOk(cp, ["api-resources", "--api-group=trickle-relay.io", "-o", "wide"]);
    assert.match(resources, /relaysessions\s+rls\s+.*\bRelaySession\b/);
  });

  test("both examples are accepted and come back with the schema defaults", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    for (const example of ["basic.yaml", "sidecar-gpu.yaml"]) {
      await kubectlOk(cp, ["apply", "-n", namespace, "-f", join(root, "crds/examples", example)]);
    }
    const basic = await getSession(cp, "basic");
    assert.equal(basic.spec.width, 512);
    assert.equal(basic.spec.height, 512);
    assert.equal(basic.spec.frameRate, 30);
    assert.equal(basic.spec.comfystream?.offerTimeoutSeconds, 300);
    assert.deepEqual(basic.spec.video, {
      mode: "Transcode",
      encoder: "auto",
      bitrateKbps: 2000,
      keyframeIntervalSeconds: 1,
      segmentDurationSeconds: 1,
      peerWindowFrames: 2,
    });
    assert.deepEqual(basic.spec.lifetime, { startupTimeoutSeconds: 600, maxRestarts: 3 });
    assert.deepEqual(basic.spec.inputStall, { statusAfterSeconds: 10, policy: "end", endAfterSeconds: 300 });
    const written = parse(readFileSync(join(root, "crds/examples/basic.yaml"), "utf8")) as RelaySession;
    assert.deepEqual(basic.spec.prompts, written.spec.prompts, "prompts are stored verbatim");

    const gpu = await getSession(cp, "sidecar-gpu");
    const gpuWritten = parse(
      readFileSync(join(root, "crds/examples/sidecar-gpu.yaml"), "utf8"),
    ) as RelaySession;
    assert.deepEqual(gpu.spec, gpuWritten.spec, "a fully specified session is stored unchanged");
  });

  test("kubectl explain relaysession.spec reads well", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    // The apiserver publishes a new CRD's OpenAPI a few seconds after it is established.
    let explained = "";
    for (let attempt = 0; attempt < 30; attempt++) {
      const result = await cp.kubectl(["explain", "relaysession.spec"]);
      if (result.code === 0 && result.stdout.includes("comfystream")) {
        explained = result.stdout;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    assert.match(explained, /KIND:\s+RelaySession/);
    assert.match(explained, /Desired session: where the video comes from/);
    for (const field of [
      "trickle",
      "comfystream",
      "prompts",
      "width",
      "height",
      "frameRate",
      "video",
      "pod",
      "lifetime",
    ]) {
      assert.match(explained, new RegExp(`^\\s+${field}\\s+<`, "m"), `explain lists ${field}`);
    }
    const width = await kubectlOk(cp, ["explain", "relaysession.spec.width"]);
    assert.match(width, /64–2048, a multiple of 8/);
    const sidecar = await kubectlOk(cp, ["explain", "relaysession.spec.comfystream.sidecar.resources"]);
    assert.match(sidecar, /nvidia\.com\/gpu/);
  });

  test("invalid sessions are rejected with a message naming the field", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    const cases: [string, (spec: Record<string, unknown>) => Record<string, unknown>, RegExp][] = [
      ["bad-width", (spec) => ({ ...spec, width: 100 }), /spec\.width.*multiple of 8/],
      ["too-tall", (spec) => ({ ...spec, height: 4096 }), /spec\.height.*less than or equal to 2048/],
      [
        "bad-mode",
        (spec) => ({ ...spec, video: { mode: "Turbo" } }),
        /spec\.video\.mode.*Unsupported value: "Turbo"/,
      ],
      [
        "bad-encoder",
        (spec) => ({ ...spec, video: { encoder: "h264_nvenc" } }),
        /spec\.video\.encoder.*Unsupported value: "h264_nvenc"/,
      ],
      ["no-input", (spec) => ({ ...spec, trickle: {} }), /spec\.trickle\.inputUrl: Required value/],
      [
        "bad-url",
        (spec) => ({ ...spec, trickle: { inputUrl: "ftp://gw/live/s" } }),
        /spec\.trickle\.inputUrl.*should match/,
      ],
      [
        "two-comfystreams",
        (spec) => ({ ...spec, comfystream: { url: "http://c:8889", sidecar: { image: "comfystream" } } }),
        /spec\.comfystream.*(oneOf|one and only one)/,
      ],
      [
        "no-comfystream",
        (spec) => ({ ...spec, comfystream: {} }),
        /spec\.comfystream.*(oneOf|one and only one)/,
      ],
    ];
    for (const [name, mutate, expected] of cases) {
      const message = await applyRejected(cp, variant(name, mutate));
      assert.match(message, expected, `${name}: ${message}`);
    }
  });

  test("status is a subresource and fills the printer columns", async (t) => {
    const cp = requireControlPlane(t);
    if (!cp) return;
    const before = await getSession(cp, "basic");
    const status = {
      phase: "Running",
      restarts: 1,
      observedGeneration: before.metadata.generation,
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "MediaFlowing",
          message: "",
          lastTransitionTime: "2025-01-01T00:00:00Z",
        },
      ],
      relay: {
        webrtc: { connectionState: "connected" },
        outputFps: 29.5,
        queues: { decodedFrames: { size: 3, capacity: 100 } },
        lastUpdateTime: "2025-01-01T00:00:01Z",
      },
    };
    // Through the main resource the status is ignored...
    await kubectlOk(cp, [
      "patch",
      "rls",
      "basic",
      "-n",
      namespace,
      "--type=merge",
      "-p",
      JSON.stringify({ status }),
    ]);
    assert.equal((await getSession(cp, "basic")).status, undefined);
    // ...through /status it is stored (kubectl 1.20 has no --subresource, so client-node writes it),
    // and the generation does not move.
    await patchStatus(cp, "basic", status);
    const after = await getSession(cp, "basic");
    assert.equal(after.status?.phase, "Running");
    assert.deepEqual(after.status?.conditions, status.conditions, "an empty condition message is accepted");
    assert.equal(after.metadata.generation, before.metadata.generation);

    const table = await kubectlOk(cp, ["get", "rls", "basic", "-n", namespace]);
    const [header, row] = table.trim().split("\n");
    assert.deepEqual(header!.trim().split(/\s+/), [
      "NAME",
      "PHASE",
      "WEBRTC",
      "FPS",
      "QUEUE",
      "RESTARTS",
      "AGE",
    ]);
    assert.deepEqual(row!.trim().split(/\s+/).slice(0, 6), [
      "basic",
      "Running",
      "connected",
      "29.5",
      "3",
      "1",
    ]);

    await assert.rejects(patchStatus(cp, "basic", { phase: "Exploded" }), (error: unknown) => {
      assert.ok(error instanceof ApiException);
      assert.equal(error.code, 422);
      assert.match(String(error.body), /status\.phase.*Unsupported value: \\?"Exploded\\?"/);
      return true;
    });
  });
});
