// The generated RelaySession CRD: up to date, structurally sound for a Kubernetes 1.20 apiserver,
// documented everywhere, and the examples in crds/examples are valid against it.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse, parseAllDocuments } from "yaml";
import {
  CRD_YAML_PATH,
  RELAY_SESSION_API_VERSION,
  RELAY_SESSION_PHASES,
  applySchemaDefaults,
  buildRelaySessionCrd,
  validateAgainstSchema,
  validateRelaySessionSpec,
  type OpenApiSchema,
  type RelaySessionSpec,
} from "../../crds/src/index.js";
import { checkGeneratedCrd, findRepositoryRoot } from "../../crds/src/generate.js";

const root = findRepositoryRoot();
const crdPath = join(root, CRD_YAML_PATH);
const crd = parse(readFileSync(crdPath, "utf8")) as ReturnType<typeof buildRelaySessionCrd>;
const version = crd.spec.versions[0]!;
const rootSchema = version.schema.openAPIV3Schema as OpenApiSchema;
const specSchema = rootSchema.properties!.spec!;
const statusSchema = rootSchema.properties!.status!;

/** Every schema node below `schema`, with its path (properties, items and map values). */
function* walk(schema: OpenApiSchema, path: string): Generator<[string, OpenApiSchema]> {
  yield [path, schema];
  for (const [name, child] of Object.entries(schema.properties ?? {})) yield* walk(child, `${path}.${name}`);
  if (schema.items) yield* walk(schema.items, `${path}[]`);
  if (schema.additionalProperties) yield* walk(schema.additionalProperties, `${path}{}`);
}

function at(path: string): OpenApiSchema {
  let node: OpenApiSchema = rootSchema;
  for (const part of path.split(".")) {
    const next = part.endsWith("[]") ? node.properties?.[part.slice(0, -2)]?.items : node.properties?.[part];
    assert.ok(next, `schema has no ${path} (stopped at ${part})`);
    node = next;
  }
  return node;
}

function loadExample(name: string): {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: unknown;
} {
  const documents = parseAllDocuments(readFileSync(join(root, "crds/examples", name), "utf8"));
  assert.equal(documents.length, 1, `${name} holds one document`);
  assert.deepEqual(documents[0]!.errors, [], `${name} is valid YAML`);
  return documents[0]!.toJS();
}

test("the committed CRD YAML is what `npm run gen:crds` produces now", () => {
  const state = checkGeneratedCrd(crdPath);
  assert.ok(state.upToDate, `${state.message} (run npm run gen:crds)`);
});

test("gen:crds --check exits 0 on the committed file", () => {
  const result = spawnSync(process.execPath, [join(root, "dist/crds/src/generate.js"), "--check"], {
    encoding: "utf8",
  });
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /up to date/);
});

test("gen:crds --check reports a stale file with the command that fixes it", () => {
  const state = checkGeneratedCrd(join(root, "package.json"));
  assert.equal(state.upToDate, false);
  assert.match(state.message, /stale.*npm run gen:crds/);
});

test("crds/ directly holds only the CRDs, so `kubectl apply -f crds/` installs just the API", () => {
  const applyable = readdirSync(join(root, "crds")).filter(
    (name) => /\.(ya?ml|json)$/.test(name) && statSync(join(root, "crds", name)).isFile(),
  );
  assert.deepEqual(applyable, ["trickle-relay.io_relaypools.yaml", "trickle-relay.io_relaysessions.yaml"]);
  assert.equal(crd.kind, "CustomResourceDefinition");
  assert.equal(crd.apiVersion, "apiextensions.k8s.io/v1");
});

test("names: trickle-relay.io/v1alpha1 RelaySession, namespaced, plural relaysessions, short name rls", () => {
  assert.equal(crd.metadata.name, "relaysessions.trickle-relay.io");
  assert.equal(crd.spec.group, "trickle-relay.io");
  assert.equal(crd.spec.scope, "Namespaced");
  assert.deepEqual(crd.spec.names.shortNames, ["rls"]);
  assert.equal(crd.spec.names.kind, "RelaySession");
  assert.equal(crd.spec.names.plural, "relaysessions");
  assert.equal(crd.spec.versions.length, 1);
  assert.equal(version.name, "v1alpha1");
  assert.ok(version.served && version.storage);
});

test("every property at every depth has a non-empty description", () => {
  // Root metadata is the exception: the apiserver rejects anything but `type: object` there.
  const undocumented = [...walk(rootSchema, "")]
    .filter(([path, node]) => path !== ".metadata" && !node.description?.trim())
    .map(([path]) => path);
  assert.deepEqual(undocumented, []);
});

test("the schema is structural as Kubernetes 1.20 requires", () => {
  for (const [path, node] of walk(rootSchema, "")) {
    const typed = node.type !== undefined;
    const exempt = node["x-kubernetes-preserve-unknown-fields"] || node["x-kubernetes-int-or-string"];
    assert.ok(typed || exempt, `${path || "<root>"} has a type`);
    for (const branch of node.oneOf ?? []) {
      // Value-validation branches may not carry types, descriptions, defaults or extensions.
      assert.deepEqual(
        Object.keys(branch),
        ["required"],
        `${path}: oneOf branches only list required fields`,
      );
      for (const name of branch.required!) assert.ok(node.properties?.[name], `${path}: oneOf names ${name}`);
    }
    if (node.default !== undefined) {
      assert.deepEqual(validateAgainstSchema(node.default, node), [], `${path}: default is valid`);
    }
    for (const name of node.required ?? [])
      assert.ok(node.properties?.[name], `${path}: required ${name} exists`);
  }
  assert.equal(rootSchema.default, undefined, "no default at the root");
  assert.deepEqual(rootSchema.properties!.metadata, { type: "object" }, "metadata is left to the apiserver");
  const noCel = JSON.stringify(rootSchema);
  assert.ok(!noCel.includes("x-kubernetes-validations"), "no CEL rules (1.20 has none)");
});

test("width and height: 64–2048, multiples of 8, default 512; frameRate bounded with a default", () => {
  for (const field of ["width", "height"]) {
    const node = at(`spec.${field}`);
    assert.equal(node.type, "integer");
    assert.equal(node.minimum, 64);
    assert.equal(node.maximum, 2048);
    assert.equal(node.multipleOf, 8);
    assert.equal(node.default, 512);
  }
  const frameRate = at("spec.frameRate");
  assert.equal(frameRate.minimum, 1);
  assert.equal(frameRate.maximum, 60);
  assert.equal(frameRate.default, 30);
});

test("enums: phase, video mode, pull policies, WebRTC states, condition status", () => {
  assert.deepEqual(at("status.phase").enum, [...RELAY_SESSION_PHASES]);
  assert.deepEqual(RELAY_SESSION_PHASES, [
    "Pending",
    "Starting",
    "Connecting",
    "Running",
    "Degraded",
    "Succeeded",
    "Failed",
  ]);
  assert.deepEqual(at("spec.video.mode").enum, ["Transcode", "Passthrough", "Auto"]);
  assert.equal(at("spec.video.mode").default, "Transcode");
  assert.deepEqual(at("spec.video.encoder").enum, ["auto", "nvenc", "x264"]);
  assert.equal(at("spec.video.encoder").default, "auto");
  assert.equal(at("status.relay.encoder").type, "string");
  assert.equal(at("status.relay.decoder").type, "string");
  assert.equal(at("status.relay.codecReason").maxLength, 1024);
  assert.deepEqual(at("spec.pod.imagePullPolicy").enum, ["Always", "IfNotPresent", "Never"]);
  assert.deepEqual(at("spec.comfystream.sidecar.imagePullPolicy").enum, ["Always", "IfNotPresent", "Never"]);
  assert.deepEqual(at("status.relay.webrtc.connectionState").enum, [
    "new",
    "connecting",
    "connected",
    "disconnected",
    "failed",
    "closed",
  ]);
  assert.deepEqual(at("status.conditions[].status").enum, ["True", "False", "Unknown"]);
});

test("URLs are http(s) with a host; inputUrl is required", () => {
  for (const field of ["inputUrl", "outputUrl", "controlUrl", "eventsUrl"]) {
    const pattern = new RegExp(at(`spec.trickle.${field}`).pattern!);
    assert.ok(pattern.test("https://gw.example.com:7280/live/s1?token=x"), field);
    assert.ok(!pattern.test("ftp://gw/live/s1"), field);
    assert.ok(!pattern.test("https:///live/s1"), field);
    assert.ok(!pattern.test("https://gw/live s1"), field);
  }
  assert.ok(at("spec.comfystream.url").pattern);
  assert.deepEqual(at("spec.trickle").required, ["inputUrl"]);
  assert.deepEqual(specSchema.required, ["trickle"]);
  // ComfyStream comes from the session or from the RelayPool it names, never both.
  assert.deepEqual(specSchema.oneOf, [{ required: ["comfystream"] }, { required: ["poolRef"] }]);
});

test("comfystream: exactly one of url and sidecar, as a structural oneOf", () => {
  assert.deepEqual(at("spec.comfystream").oneOf, [{ required: ["url"] }, { required: ["sidecar"] }]);
  assert.deepEqual(at("spec.comfystream.sidecar").required, ["image"]);
  assert.ok(
    at("spec.comfystream.sidecar.resources.limits").additionalProperties!["x-kubernetes-int-or-string"],
  );
});

test("prompts keep unknown fields (ComfyUI workflows are stored verbatim)", () => {
  const prompts = at("spec.prompts");
  assert.equal(prompts.type, "array");
  assert.equal(prompts.items!.type, "object");
  assert.equal(prompts.items!["x-kubernetes-preserve-unknown-fields"], true);
  assert.equal(at("spec.pod.affinity")["x-kubernetes-preserve-unknown-fields"], true);
});

test("pod placement and lifetime fields exist with their defaults", () => {
  for (const field of [
    "image",
    "imagePullPolicy",
    "resources",
    "nodeSelector",
    "tolerations",
    "affinity",
    "runtimeClassName",
    "priorityClassName",
  ]) {
    at(`spec.pod.${field}`);
  }
  assert.deepEqual(at("spec.lifetime").default, {});
  assert.equal(at("spec.lifetime.maxRestarts").default, 3);
  assert.equal(at("spec.lifetime.maxDurationSeconds").default, undefined);
  at("spec.lifetime.ttlSecondsAfterFinished");
  assert.deepEqual(at("spec.video").default, {});
});

test("status: subresource, conditions as a list-map keyed by type in metav1.Condition shape, relay report", () => {
  assert.deepEqual(version.subresources, { status: {} });
  const conditions = at("status.conditions");
  assert.equal(conditions["x-kubernetes-list-type"], "map");
  assert.deepEqual(conditions["x-kubernetes-list-map-keys"], ["type"]);
  assert.deepEqual(conditions.items!.required, ["type", "status", "lastTransitionTime", "reason", "message"]);
  assert.equal(at("status.conditions[].lastTransitionTime").format, "date-time");
  for (const field of ["observedGeneration", "podName", "startTime", "completionTime", "restarts", "relay"]) {
    at(`status.${field}`);
  }
  for (const queue of ["decodedFrames", "processedFrames", "outputSegments"]) {
    at(`status.relay.queues.${queue}.size`);
    at(`status.relay.queues.${queue}.capacity`);
  }
  for (const field of [
    "inputFps",
    "outputFps",
    "framesIn",
    "framesOut",
    "framesDropped",
    "segmentsIn",
    "segmentsOut",
    "latencyMs.p50",
    "latencyMs.p95",
    "reconnects",
    "lastError.message",
    "lastUpdateTime",
    "appliedPromptsGeneration",
    "webrtc.connectionState",
  ]) {
    at(`status.relay.${field}`);
  }
  assert.equal(statusSchema.required, undefined, "status fields are all optional");
});

test("printer columns are exactly Phase, WebRTC, FPS, Queue, Restarts, Age and point at real fields", () => {
  const columns = version.additionalPrinterColumns;
  assert.deepEqual(
    columns.map((c) => c.name),
    ["Phase", "WebRTC", "FPS", "Queue", "Restarts", "Age"],
  );
  assert.deepEqual(
    columns.map((c) => c.jsonPath),
    [
      ".status.phase",
      ".status.relay.webrtc.connectionState",
      ".status.relay.outputFps",
      ".status.relay.queues.decodedFrames.size",
      ".status.restarts",
      ".metadata.creationTimestamp",
    ],
  );
  for (const column of columns.slice(0, 5)) {
    const node = at(column.jsonPath.slice(1));
    assert.equal(column.type, node.type, `${column.name} column type matches the field`);
  }
  assert.equal(columns[5]!.type, "date");
});

for (const name of ["basic.yaml", "sidecar-gpu.yaml"]) {
  test(`example ${name} is a valid RelaySession (schema, no unknown fields, cross-field rules)`, () => {
    const example = loadExample(name);
    assert.equal(example.apiVersion, RELAY_SESSION_API_VERSION);
    assert.equal(example.kind, "RelaySession");
    assert.deepEqual(validateAgainstSchema(example, rootSchema, { reportUnknownFields: true }), []);
    const spec = applySchemaDefaults(example.spec, specSchema) as RelaySessionSpec;
    assert.deepEqual(validateRelaySessionSpec(spec), []);
    assert.deepEqual(validateAgainstSchema(spec, specSchema), [], "defaults keep it valid");
  });
}

test("basic.yaml uses an existing ComfyStream URL and gets the documented defaults", () => {
  const spec = applySchemaDefaults(loadExample("basic.yaml").spec, specSchema) as RelaySessionSpec;
  assert.ok(spec.comfystream?.url && !spec.comfystream.sidecar);
  assert.equal(spec.width, 512);
  assert.equal(spec.height, 512);
  assert.equal(spec.frameRate, 30);
  assert.equal(spec.comfystream?.offerTimeoutSeconds, 300);
  assert.deepEqual(spec.video, {
    mode: "Transcode",
    encoder: "auto",
    bitrateKbps: 2000,
    keyframeIntervalSeconds: 1,
    segmentDurationSeconds: 1,
    peerWindowFrames: 2,
  });
  assert.deepEqual(spec.lifetime, { startupTimeoutSeconds: 600, maxRestarts: 3 });
});

test("sidecar-gpu.yaml runs ComfyStream as a sidecar holding an NVIDIA GPU", () => {
  const spec = loadExample("sidecar-gpu.yaml").spec as RelaySessionSpec;
  assert.ok(spec.comfystream?.sidecar && !spec.comfystream.url);
  assert.equal(spec.comfystream.sidecar.resources?.limits?.["nvidia.com/gpu"], 1);
  assert.equal(spec.pod?.runtimeClassName, "nvidia");
});

test("sidecar-gpu-prerequisites.yaml defines the RuntimeClass and PriorityClass sidecar-gpu.yaml names", () => {
  const spec = loadExample("sidecar-gpu.yaml").spec as RelaySessionSpec;
  const documents = parseAllDocuments(
    readFileSync(join(root, "crds/examples/sidecar-gpu-prerequisites.yaml"), "utf8"),
  ).map((document) => {
    assert.deepEqual(document.errors, []);
    return document.toJS() as { apiVersion: string; kind: string; metadata: { name: string } };
  });
  const defined = documents.map((d) => `${d.apiVersion} ${d.kind} ${d.metadata.name}`).sort();
  assert.deepEqual(defined, [
    `node.k8s.io/v1 RuntimeClass ${spec.pod?.runtimeClassName}`,
    `scheduling.k8s.io/v1 PriorityClass ${spec.pod?.priorityClassName}`,
  ]);
  const example = readFileSync(join(root, "crds/examples/sidecar-gpu.yaml"), "utf8");
  assert.match(example, /kubectl apply -f crds\/examples\/sidecar-gpu-prerequisites\.yaml/);
});

test("the local validator rejects what the apiserver would", () => {
  const basic = loadExample("basic.yaml") as { spec: Record<string, unknown> };
  const withSpec = (patch: Record<string, unknown>) => ({ ...basic, spec: { ...basic.spec, ...patch } });
  const problems = (value: unknown) =>
    validateAgainstSchema(value, rootSchema).map((p) => `${p.path}: ${p.message}`);

  assert.deepEqual(problems(withSpec({ width: 100 })), ["spec.width: must be a multiple of 8"]);
  assert.deepEqual(problems(withSpec({ height: 4096 })), ["spec.height: must be less than or equal to 2048"]);
  assert.match(
    problems(withSpec({ video: { mode: "Turbo" } })).join(),
    /spec\.video\.mode: unsupported value "Turbo"/,
  );
  for (const encoder of ["auto", "nvenc", "x264"]) {
    assert.deepEqual(problems(withSpec({ video: { encoder } })), [], `encoder ${encoder}`);
  }
  for (const encoder of ["NVENC", "h264_nvenc", "libx264", ""]) {
    assert.match(
      problems(withSpec({ video: { encoder } })).join(),
      /spec\.video\.encoder: unsupported value/,
      `encoder ${JSON.stringify(encoder)}`,
    );
  }
  assert.deepEqual(problems(withSpec({ trickle: {} })), ["spec.trickle.inputUrl: Required value"]);
  assert.match(
    problems(withSpec({ comfystream: { url: "http://a:8889", sidecar: { image: "x" } } })).join(),
    /spec\.comfystream: must set exactly one of url, sidecar/,
  );
  assert.match(problems(withSpec({ comfystream: {} })).join(), /exactly one of url, sidecar \(found 0\)/);
});
