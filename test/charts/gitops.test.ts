/**
 * GitOps material under charts/gitops/: the generated files are not stale (render.sh --check), the
 * Argo CD Lua health checks give the right health for sample RelaySessions when run by a real Lua
 * interpreter (Argo CD embeds gopher-lua, a Lua 5.1; lua5.1 is preferred, then 5.4/5.3), the Argo CD
 * and Flux manifests say what the docs promise and their chart values pass the chart's schema, and
 * the kustomize overlay builds. (Applying the kustomize base to a real apiserver is in
 * chart-install.test.ts.)
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parse as parseYaml } from "yaml";
import { ensureHelm, parseManifests, render, repoRoot, run, type K8sObject } from "./helm.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

const gitops = join(repoRoot, "charts/gitops");
const readYaml = (path: string) => parseYaml(readFileSync(join(gitops, path), "utf8")) as Any;

test("generated files are fresh: CRD template, kustomize base, argocd-cm (charts/scripts/render.sh --check)", async () => {
  const result = await run("bash", ["charts/scripts/render.sh", "--check"], {
    env: { ...process.env, HELM: await ensureHelm() },
  });
  assert.equal(result.code, 0, result.stderr);
});

// --- Lua health checks -----------------------------------------------------------------------

function findLua(): string | undefined {
  for (const name of ["lua5.1", "lua5.4", "lua5.3", "lua"]) {
    for (const dir of (process.env.PATH ?? "").split(":"))
      if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}
const lua = findLua();
const luaSkip = lua ? false : "no Lua interpreter (apt-get install lua5.1)";

/** A JSON value as a Lua literal: objects → tables with string keys, arrays → sequences, null → nil. */
function toLua(value: unknown): string {
  if (value === null || value === undefined) return "nil";
  if (typeof value === "string") {
    assert.ok(/^[\x20-\x7e]*$/.test(value), "fixtures are printable ASCII");
    return JSON.stringify(value); // printable ASCII: JSON escapes (\" \\) are Lua escapes
  }
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) return `{${value.map(toLua).join(", ")}}`;
  return `{${Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `[${JSON.stringify(k)}] = ${toLua(v)}`)
    .join(", ")}}`;
}

/** Runs a health script as Argo CD does: global `obj`, the script's return value is the health. */
async function health(script: string, obj: object): Promise<{ status: string; message: string }> {
  const program = [
    `obj = ${toLua(obj)}`,
    `local check = function() ${script}\nend`,
    "local hs = check()",
    'io.write(hs.status, "\\n", hs.message or "")',
  ].join("\n");
  const result = await run(lua!, ["-"], { input: program });
  assert.equal(result.code, 0, result.stderr);
  const [status, ...message] = result.stdout.split("\n");
  return { status: status!, message: message.join("\n") };
}

const argocdCm = readYaml("argocd/argocd-cm.yaml");
const sessionHealth: string = argocdCm.data["resource.customizations.health.trickle-relay.io_RelaySession"];
const applicationHealth: string = argocdCm.data["resource.customizations.health.argoproj.io_Application"];

function session(status?: object, generation = 1): object {
  return {
    apiVersion: "trickle-relay.io/v1alpha1",
    kind: "RelaySession",
    metadata: { name: "demo", namespace: "team-a", generation },
    spec: { trickle: { inputUrl: "https://gw.example.com/live/s" } },
    ...(status ? { status } : {}),
  };
}
function ready(status: "True" | "False" | "Unknown", reason: string, message = ""): object {
  return {
    type: "Ready",
    status,
    reason,
    message,
    lastTransitionTime: "2026-01-01T00:00:00Z",
    observedGeneration: 1,
  };
}

describe(
  "Argo CD health check for RelaySession (argocd-cm.yaml, run by a real Lua)",
  { skip: luaSkip },
  () => {
    const cases: Array<[string, object, string, RegExp?]> = [
      ["no status yet", session(), "Progressing", /operator/],
      [
        "Pending",
        session({ phase: "Pending", observedGeneration: 1, conditions: [ready("False", "PodPending")] }),
        "Progressing",
        /Pending/,
      ],
      ["Starting", session({ phase: "Starting", observedGeneration: 1 }), "Progressing", /Starting/],
      [
        "Connecting",
        session({
          phase: "Connecting",
          observedGeneration: 1,
          conditions: [ready("False", "Connecting", "offer sent to ComfyStream")],
        }),
        "Progressing",
        /Connecting: offer sent/,
      ],
      [
        "Running and Ready",
        session({
          phase: "Running",
          observedGeneration: 1,
          conditions: [{ type: "Other", status: "False" }, ready("True", "Running", "WebRTC connected")],
          relay: { webrtc: "connected", fps: 30 },
        }),
        "Healthy",
        /WebRTC connected/,
      ],
      [
        "Degraded",
        session({
          phase: "Degraded",
          observedGeneration: 1,
          conditions: [ready("False", "ReportStale", "no relay report for 30s")],
        }),
        "Degraded",
        /no relay report/,
      ],
      [
        "Failed",
        session({
          phase: "Failed",
          observedGeneration: 1,
          conditions: [ready("False", "RestartBudgetExhausted", "")],
        }),
        "Degraded",
        /RestartBudgetExhausted/,
      ],
      [
        "Succeeded",
        session({
          phase: "Succeeded",
          observedGeneration: 1,
          conditions: [ready("False", "Succeeded", "input stream ended")],
        }),
        "Healthy",
        /input stream ended/,
      ],
      [
        "Running, but a spec edit not yet observed",
        session({ phase: "Running", observedGeneration: 1, conditions: [ready("True", "Running")] }, 2),
        "Progressing",
        /generation 2/,
      ],
    ];
    for (const [what, obj, status, message] of cases) {
      test(`${what} → ${status}`, async () => {
        const hs = await health(sessionHealth, obj);
        assert.equal(hs.status, status, hs.message);
        if (message) assert.match(hs.message, message);
      });
    }

    test("argocd-cm embeds relaysession-health.lua verbatim", () => {
      assert.equal(sessionHealth, readFileSync(join(gitops, "argocd/relaysession-health.lua"), "utf8"));
    });

    test("child Application health mirrors its status.health (app of apps waves)", async () => {
      assert.equal(
        (await health(applicationHealth, { status: { health: { status: "Healthy" } } })).status,
        "Healthy",
      );
      assert.equal(
        (await health(applicationHealth, { status: { health: { status: "Degraded", message: "x" } } }))
          .status,
        "Degraded",
      );
      assert.equal((await health(applicationHealth, {})).status, "Progressing");
    });
  },
);

// --- Argo CD and Flux manifests -------------------------------------------------------------

describe("Argo CD manifests", () => {
  const apps = ["trickle-relay-crds", "trickle-relay-operator", "trickle-relay-sessions"].map(
    (name) => readYaml(`argocd/apps/${name}.yaml`) as K8sObject,
  );
  const [crds, operator, sessions] = apps as [K8sObject, K8sObject, K8sObject];

  test("sync waves: CRDs -1, operator 0, sessions 1", () => {
    assert.deepEqual(
      apps.map((a) => [a.metadata.name, a.metadata.annotations["argocd.argoproj.io/sync-wave"]]),
      [
        ["trickle-relay-crds", "-1"],
        ["trickle-relay-operator", "0"],
        ["trickle-relay-sessions", "1"],
      ],
    );
  });

  test("every source path exists in this repository", () => {
    const root = readYaml("argocd/root-application.yaml");
    for (const app of [...apps, root])
      assert.ok(existsSync(join(repoRoot, app.spec.source.path)), app.spec.source.path);
    assert.ok(existsSync(join(repoRoot, crds.spec.source.path, crds.spec.source.directory.include)));
  });

  test("one owner of the CRD: the CRD app never prunes it, the chart app has crds.install=false", () => {
    assert.equal(crds.spec.syncPolicy.automated.prune, false);
    assert.equal(operator.spec.source.helm.valuesObject.crds.install, false);
  });

  test("sessions sync with SkipDryRunOnMissingResource (app and sample)", () => {
    assert.ok(sessions.spec.syncPolicy.syncOptions.includes("SkipDryRunOnMissingResource=true"));
    const sample = readYaml("samples/relaysession.yaml");
    assert.equal(sample.metadata.annotations["argocd.argoproj.io/sync-wave"], "1");
    assert.equal(
      sample.metadata.annotations["argocd.argoproj.io/sync-options"],
      "SkipDryRunOnMissingResource=true",
    );
  });

  test("the operator app's Helm values pass the chart's schema and render", async () => {
    const objects = await render(operator.spec.source.helm.valuesObject, {
      namespace: "trickle-relay-system",
    });
    assert.equal(objects.filter((o) => o.kind === "CustomResourceDefinition").length, 0);
  });

  test("argocd-cm ignores /status/relay updates of RelaySessions", () => {
    const ignore = parseYaml(
      argocdCm.data["resource.customizations.ignoreResourceUpdates.trickle-relay.io_RelaySession"],
    );
    assert.deepEqual(ignore, { jsonPointers: ["/status/relay"] });
  });
});

describe("Flux manifests", () => {
  const release = readYaml("flux/helmrelease.yaml") as K8sObject;
  const repository = readYaml("flux/helmrepository.yaml") as K8sObject;

  test("HelmRelease: GA API, CRDs CreateReplace on install and upgrade, source is the HelmRepository", () => {
    assert.equal(release.apiVersion, "helm.toolkit.fluxcd.io/v2");
    assert.equal(release.spec.install.crds, "CreateReplace");
    assert.equal(release.spec.upgrade.crds, "CreateReplace");
    assert.deepEqual(release.spec.chart.spec.sourceRef, {
      kind: "HelmRepository",
      name: repository.metadata.name,
      namespace: repository.metadata.namespace,
    });
    assert.equal(repository.apiVersion, "source.toolkit.fluxcd.io/v1");
  });

  test("the HelmRelease values pass the chart's schema and render", async () => {
    const objects = await render(release.spec.values, { namespace: release.metadata.namespace });
    const crd = objects.find((o) => o.kind === "CustomResourceDefinition");
    assert.equal(crd?.metadata.annotations["helm.sh/resource-policy"], "keep");
  });
});

// --- kustomize -----------------------------------------------------------------------------

describe("kustomize", () => {
  test("the base is the default render plus its namespace", () => {
    const kustomization = readYaml("kustomize/base/kustomization.yaml");
    assert.deepEqual(kustomization.resources, ["namespace.yaml", "trickle-relay.yaml"]);
    const base = parseManifests(readFileSync(join(gitops, "kustomize/base/trickle-relay.yaml"), "utf8"));
    for (const o of base)
      if (!["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"].includes(o.kind))
        assert.equal(o.metadata.namespace, readYaml("kustomize/base/namespace.yaml").metadata.name);
  });

  // kubectl on PATH (1.32 with kustomize v5 here); the test control plane's kubectl 1.20 embeds a
  // kustomize too old for `patches` (the overlay says so).
  test("the example overlay builds with kubectl's kustomize and changes images and memory", async (t) => {
    const built = await run("kubectl", ["kustomize", join(gitops, "kustomize/overlays/example")]);
    if (built.code === -1) return t.skip("no kubectl on PATH");
    assert.equal(built.code, 0, built.stderr);
    const deployment = parseManifests(built.stdout).find((o) => o.kind === "Deployment")!;
    const container = deployment.spec.template.spec.containers[0];
    assert.equal(container.image, "registry.example.com/trickle-relay/operator:0.1.0");
    assert.ok(container.args.includes("--relay-image=registry.example.com/trickle-relay/relay:0.1.0"));
    assert.equal(container.resources.limits.memory, "512Mi");
  });
});
