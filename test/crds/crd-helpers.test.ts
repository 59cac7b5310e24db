// The pure helpers crds/ exports for the operator and the relay pod.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  RELAY_SESSION_API_VERSION,
  RELAY_SESSION_CRD_NAME,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_SHORT_NAME,
  applySchemaDefaults,
  defaultOutputUrl,
  parseQuantity,
  relaySessionSpecSchema,
  validateRelaySessionSpec,
  type RelaySessionInput,
  type RelaySessionSpec,
  type RelaySessionSpecInput,
  type RelaySessionStatus,
} from "../../crds/src/index.js";

const validSpec: RelaySessionSpecInput = {
  trickle: { inputUrl: "https://gw.example.com/live/s1" },
  comfystream: { url: "http://comfy:8889" },
};

test("constants name the API", () => {
  assert.equal(RELAY_SESSION_API_VERSION, "trickle-relay.io/v1alpha1");
  assert.equal(RELAY_SESSION_PLURAL, "relaysessions");
  assert.equal(RELAY_SESSION_SHORT_NAME, "rls");
  assert.equal(RELAY_SESSION_CRD_NAME, "relaysessions.trickle-relay.io");
});

test("defaultOutputUrl appends -out to the channel name, keeping query, fragment and trailing slash", () => {
  const cases: [string, string][] = [
    ["https://gw/live/stream-1", "https://gw/live/stream-1-out"],
    ["https://gw:7280/live/stream-1?token=abc&x=1", "https://gw:7280/live/stream-1-out?token=abc&x=1"],
    ["https://gw/live/stream-1/", "https://gw/live/stream-1-out/"],
    ["https://gw/live/stream-1/?t=a/b", "https://gw/live/stream-1-out/?t=a/b"],
    ["http://gw/s#frag", "http://gw/s-out#frag"],
    ["http://gw/live/s1?next=http://x/y", "http://gw/live/s1-out?next=http://x/y"],
  ];
  for (const [input, expected] of cases) assert.equal(defaultOutputUrl(input), expected, input);
  assert.throws(() => defaultOutputUrl("https://gw"), /expected http\(s\):\/\/host\/<channel>/);
  assert.throws(() => defaultOutputUrl("https://gw/?q=1"), /cannot derive/);
  assert.throws(() => defaultOutputUrl("gw/live/s1"), /cannot derive/);
});

test("parseQuantity understands Kubernetes quantities", () => {
  assert.equal(parseQuantity("500m"), 0.5);
  assert.equal(parseQuantity("4Gi"), 4 * 2 ** 30);
  assert.equal(parseQuantity("2"), 2);
  assert.equal(parseQuantity(1), 1);
  assert.equal(parseQuantity("1e3"), 1000);
  assert.equal(parseQuantity("1.5k"), 1500);
  assert.equal(parseQuantity("lots"), undefined);
  assert.equal(parseQuantity("4GB"), undefined);
});

test("validateRelaySessionSpec accepts a minimal spec and a full one", () => {
  assert.deepEqual(validateRelaySessionSpec(validSpec), []);
  const full = applySchemaDefaults(
    {
      ...validSpec,
      comfystream: {
        sidecar: {
          image: "livepeer/comfystream:0.1.8",
          env: [{ name: "A", value: "1" }],
          resources: {
            requests: { cpu: "2", "nvidia.com/gpu": 1 },
            limits: { cpu: "4", "nvidia.com/gpu": "1" },
          },
        },
      },
      pod: { tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }] },
      lifetime: { maxDurationSeconds: 3600 },
    } satisfies RelaySessionSpecInput,
    relaySessionSpecSchema.schema,
  );
  assert.deepEqual(validateRelaySessionSpec(full), []);
});

test("validateRelaySessionSpec explains cross-field problems", () => {
  const problems = (spec: RelaySessionSpecInput) => validateRelaySessionSpec(spec).join("\n");

  assert.match(problems({ ...validSpec, comfystream: {} }), /spec\.comfystream: set url .* or sidecar/);
  assert.match(
    problems({ ...validSpec, comfystream: { url: "http://c", sidecar: { image: "x" } } }),
    /not both/,
  );
  assert.match(
    problems({ ...validSpec, trickle: { inputUrl: "https://gw/a", outputUrl: "https://gw/a" } }),
    /spec\.trickle\.outputUrl is the same channel as inputUrl/,
  );
  assert.match(
    problems({ ...validSpec, trickle: { inputUrl: "https://gw/a", controlUrl: "https://gw/a-out" } }),
    /spec\.trickle\.controlUrl is the same channel as outputUrl \(default\)/,
  );
  assert.match(
    problems({ ...validSpec, trickle: { inputUrl: "https://gw" } }),
    /outputUrl: not set, and cannot derive/,
  );

  const gpu = (resources: object) =>
    problems({ ...validSpec, comfystream: { sidecar: { image: "x", resources } } } as RelaySessionSpecInput);
  assert.match(
    gpu({ requests: { "nvidia.com/gpu": 1 } }),
    /nvidia\.com\/gpu is an extended resource, so it must be set in limits/,
  );
  assert.match(
    gpu({ requests: { "nvidia.com/gpu": 1 }, limits: { "nvidia.com/gpu": 2 } }),
    /request \(1\) must equal its limit \(2\)/,
  );
  assert.match(gpu({ limits: { "nvidia.com/gpu": "500m" } }), /must be a whole number/);
  assert.match(
    gpu({ requests: { memory: "8Gi" }, limits: { memory: "4Gi" } }),
    /memory request \(8Gi\) exceeds its limit \(4Gi\)/,
  );
  assert.equal(gpu({ requests: { cpu: "500m" }, limits: { cpu: 1 } }), "");

  assert.match(
    problems({ ...validSpec, pod: { tolerations: [{ operator: "Exists", value: "x" }] } }),
    /tolerations\[0\]: value must be empty when operator is Exists/,
  );
  assert.match(
    problems({ ...validSpec, pod: { tolerations: [{ value: "x" }] } }),
    /key is required unless operator is Exists/,
  );
  assert.match(
    problems({ ...validSpec, lifetime: { maxDurationSeconds: 60, startupTimeoutSeconds: 600 } }),
    /maxDurationSeconds \(60\) must be longer than startupTimeoutSeconds \(600\)/,
  );
  assert.match(
    problems({
      ...validSpec,
      comfystream: { sidecar: { image: "x", env: [{ name: "A", value: "1" }, { name: "A" }] } },
    }),
    /A is set twice/,
  );
  assert.match(
    problems({ ...validSpec, prompts: [{ text: "a cat" }] }),
    /prompts\[0\]\["text"\]: must be a node object/,
  );
  assert.match(
    problems({ ...validSpec, prompts: [{ "1": { inputs: {} } }] }),
    /class_type must be a non-empty string/,
  );
});

test("applySchemaDefaults fills nested defaults like the apiserver and leaves the input untouched", () => {
  const input = structuredClone(validSpec);
  const spec: RelaySessionSpec = applySchemaDefaults(
    input,
    relaySessionSpecSchema.schema,
  ) as RelaySessionSpec;
  assert.deepEqual(input, validSpec);
  assert.equal(spec.width, 512);
  assert.equal(spec.video.mode, "Transcode");
  assert.equal(spec.lifetime.maxRestarts, 3);
  assert.equal(spec.comfystream?.offerTimeoutSeconds, 300);
  assert.equal(spec.pod, undefined, "optional objects without a default stay absent");
  const sidecar = applySchemaDefaults(
    { ...validSpec, comfystream: { sidecar: { image: "x" } } },
    relaySessionSpecSchema.schema,
  ) as RelaySessionSpec;
  assert.equal(sidecar.comfystream?.sidecar?.port, 8889);
});

test("the TypeScript types follow the schema (checked at compile time)", () => {
  const written: RelaySessionInput = {
    apiVersion: "trickle-relay.io/v1alpha1",
    kind: "RelaySession",
    metadata: { name: "s" },
    spec: {
      ...validSpec,
      // @ts-expect-error width is an integer, not a string
      width: "512",
    },
  };
  // @ts-expect-error video.mode is an enum
  const badMode: RelaySessionSpecInput = { ...validSpec, video: { mode: "Turbo" } };
  // @ts-expect-error trickle.inputUrl is required
  const noInput: RelaySessionSpecInput = { ...validSpec, trickle: {} };
  // @ts-expect-error a stored spec always has its defaults
  const notDefaulted: RelaySessionSpec = validSpec;
  const status: RelaySessionStatus = {
    phase: "Running",
    conditions: [
      { type: "Ready", status: "True", reason: "MediaFlowing", message: "", lastTransitionTime: "t" },
    ],
    relay: {
      webrtc: { connectionState: "connected" },
      queues: { decodedFrames: { size: 1, capacity: 100 } },
    },
  };
  assert.ok(written && badMode && noInput && notDefaulted && status);
});
