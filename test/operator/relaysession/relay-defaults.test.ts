// Installation-wide relay pod defaults (Helm `relay.*` → RELAY_DEFAULT_* env → desiredRelayPod):
// applied when a session says nothing, never over what a session says.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { desiredRelayPod } from "../../../operator/src/relaysession/desired-pod.js";
import { relayDefaultsFromEnv } from "../../../operator/src/relaysession/relay-defaults.js";
import { RELAY_IMAGE, storedSession } from "./fixtures.js";

const env = {
  RELAY_DEFAULT_RESOURCES: '{"requests":{"cpu":"500m","memory":"512Mi"},"limits":{"memory":"1Gi"}}',
  RELAY_DEFAULT_NODE_SELECTOR: '{"pool":"relay"}',
  RELAY_DEFAULT_TOLERATIONS: '[{"key":"gpu","operator":"Exists","effect":"NoSchedule"}]',
  RELAY_DEFAULT_RUNTIME_CLASS_NAME: "nvidia",
  RELAY_DEFAULT_GPU_RESOURCE_NAME: "amd.com/gpu",
};

describe("relay pod defaults", () => {
  test("read from the environment; bad JSON is refused with the variable's name", () => {
    const defaults = relayDefaultsFromEnv(env);
    assert.deepEqual(defaults.nodeSelector, { pool: "relay" });
    assert.equal(defaults.tolerations?.[0]?.key, "gpu");
    assert.equal(defaults.runtimeClassName, "nvidia");
    assert.deepEqual(relayDefaultsFromEnv({}), {});
    assert.throws(
      () => relayDefaultsFromEnv({ RELAY_DEFAULT_RESOURCES: "{cpu" }),
      /RELAY_DEFAULT_RESOURCES is not valid JSON/,
    );
    assert.throws(() => relayDefaultsFromEnv({ RELAY_DEFAULT_TOLERATIONS: "{}" }), /must be a JSON array/);
    assert.equal(
      relayDefaultsFromEnv({ RELAY_NODE_LOST_TOLERATION_SECONDS: "5" }).nodeLostTolerationSeconds,
      5,
    );
    assert.throws(
      () => relayDefaultsFromEnv({ RELAY_NODE_LOST_TOLERATION_SECONDS: "-1" }),
      /RELAY_NODE_LOST_TOLERATION_SECONDS must be a whole number/,
    );
    assert.throws(
      () => relayDefaultsFromEnv({ RELAY_DEFAULT_NODE_SELECTOR: '{"a":1}' }),
      /value of a must be a string/,
    );
  });

  test("a session without placement gets the defaults", () => {
    const pod = desiredRelayPod(storedSession("basic.yaml"), {
      relayImage: RELAY_IMAGE,
      attempt: 0,
      defaults: relayDefaultsFromEnv(env),
    });
    const spec = pod.spec!;
    assert.deepEqual(spec.nodeSelector, { pool: "relay" });
    assert.equal(spec.runtimeClassName, "nvidia");
    assert.deepEqual(
      spec.tolerations?.map((t) => t.key),
      ["gpu", "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"],
    );
    assert.deepEqual(spec.containers[0]!.resources?.requests, { cpu: "500m", memory: "512Mi" });
  });

  test("a session's own spec.pod wins; a sidecar naming no GPU gets one of the default GPU resource", () => {
    const session = storedSession("sidecar-gpu.yaml");
    const defaults = relayDefaultsFromEnv(env);
    const pod = desiredRelayPod(session, { relayImage: RELAY_IMAGE, attempt: 0, defaults });
    const placement = session.spec.pod!;
    assert.deepEqual(pod.spec!.nodeSelector, placement.nodeSelector ?? { pool: "relay" });
    if (placement.runtimeClassName) assert.equal(pod.spec!.runtimeClassName, placement.runtimeClassName);
    // The example's sidecar names nvidia.com/gpu itself: nothing is added.
    const comfystream = pod.spec!.containers.find((c) => c.name === "comfystream")!;
    assert.equal(comfystream.resources?.limits?.["nvidia.com/gpu"], "1");
    assert.equal(comfystream.resources?.limits?.["amd.com/gpu"], undefined);

    const withoutGpu = structuredClone(session);
    delete withoutGpu.spec.comfystream!.sidecar!.resources;
    const defaulted = desiredRelayPod(withoutGpu, { relayImage: RELAY_IMAGE, attempt: 0, defaults });
    const sidecar = defaulted.spec!.containers.find((c) => c.name === "comfystream")!;
    assert.deepEqual(sidecar.resources?.limits, { "amd.com/gpu": "1" });
  });
});
