// desiredRelayPod / desiredRelayRbac / podSpecHash against operator/README.md's contract, from the
// crds/examples manifests (defaults applied as the apiserver would).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  desiredRelayPod,
  desiredRelayRbac,
  podSpecHash,
} from "../../../operator/src/relaysession/desired-pod.js";
import { sessionKeyOfPod, sessionLabelValue } from "../../../operator/src/relaysession/labels.js";
import { RELAY_IMAGE, storedSession } from "./fixtures.js";

describe("desiredRelayPod", () => {
  test("basic.yaml: name, labels, hash annotation, owner, lifecycle, relay container", () => {
    const session = storedSession("basic.yaml");
    const pod = desiredRelayPod(session, { relayImage: RELAY_IMAGE, attempt: 2 });
    assert.equal(pod.metadata?.name, "basic-relay-2");
    assert.equal(pod.metadata?.namespace, "default");
    assert.deepEqual(pod.metadata?.labels, {
      "app.kubernetes.io/name": "trickle-relay",
      "app.kubernetes.io/component": "relay",
      "app.kubernetes.io/managed-by": "trickle-relay-operator",
      "trickle-relay.io/session": "basic",
      "trickle-relay.io/session-uid": session.metadata.uid,
      "trickle-relay.io/attempt": "2",
    });
    assert.match(pod.metadata?.annotations?.["trickle-relay.io/pod-spec-hash"] ?? "", /^[0-9a-f]{16}$/);
    assert.deepEqual(pod.metadata?.ownerReferences, [
      {
        apiVersion: "trickle-relay.io/v1alpha1",
        kind: "RelaySession",
        name: "basic",
        uid: session.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    const spec = pod.spec!;
    assert.equal(spec.restartPolicy, "Never");
    assert.equal(spec.serviceAccountName, "basic-relay");
    assert.equal(spec.automountServiceAccountToken, true);
    assert.equal(spec.activeDeadlineSeconds, undefined, "no maxDurationSeconds in basic.yaml");
    assert.equal(spec.containers.length, 1);
    const relay = spec.containers[0]!;
    assert.equal(relay.name, "relay");
    assert.equal(relay.image, RELAY_IMAGE);
    assert.deepEqual(relay.command, ["trickle-relay"]);
    assert.deepEqual(relay.args, ["run", "--session", "default/basic"]);
    // The relay's /healthz, /readyz and /metrics (run --ready-port's default), and the probes on them.
    assert.deepEqual(relay.ports, [{ name: "metrics", containerPort: 8892, protocol: "TCP" }]);
    assert.equal(relay.startupProbe?.httpGet?.path, "/healthz");
    assert.equal(relay.livenessProbe?.httpGet?.path, "/healthz");
    assert.equal(relay.readinessProbe?.httpGet?.path, "/readyz");
    const env = Object.fromEntries(
      (relay.env ?? []).map((e) => [e.name, e.valueFrom?.fieldRef?.fieldPath ?? e.value]),
    );
    assert.deepEqual(env, {
      RELAY_SESSION_NAMESPACE: "metadata.namespace",
      RELAY_SESSION_NAME: "metadata.labels['trickle-relay.io/session']",
      POD_NAME: "metadata.name",
    });
    assert.deepEqual(relay.securityContext, {
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" },
    });
    assert.deepEqual(relay.volumeMounts, [{ name: "tmp", mountPath: "/tmp" }]);
    assert.deepEqual(spec.volumes, [{ name: "tmp", emptyDir: {} }]);
    assert.deepEqual(spec.securityContext, { seccompProfile: { type: "RuntimeDefault" } });
  });

  test("sidecar-gpu.yaml: placement, deadline and the comfystream sidecar with the GPU", () => {
    const session = storedSession("sidecar-gpu.yaml");
    const spec = desiredRelayPod(session, { relayImage: RELAY_IMAGE, attempt: 0 }).spec!;
    assert.equal(spec.activeDeadlineSeconds, 14400);
    assert.deepEqual(spec.nodeSelector, { "nvidia.com/gpu.product": "NVIDIA-L4" });
    assert.deepEqual(spec.tolerations, [
      { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" },
      // Added by the operator: a dead node's session restarts after 30 s, not Kubernetes' 300 s.
      { key: "node.kubernetes.io/not-ready", operator: "Exists", effect: "NoExecute", tolerationSeconds: 30 },
      {
        key: "node.kubernetes.io/unreachable",
        operator: "Exists",
        effect: "NoExecute",
        tolerationSeconds: 30,
      },
    ]);
    assert.equal(spec.runtimeClassName, "nvidia");
    assert.equal(spec.priorityClassName, "live-video");
    assert.deepEqual(spec.affinity, session.spec.pod?.affinity);
    assert.deepEqual(
      spec.containers.map((c) => c.name),
      ["relay", "comfystream"],
    );
    const [relay, comfystream] = spec.containers;
    assert.deepEqual(relay!.resources, { limits: { memory: "2Gi" }, requests: { cpu: "2", memory: "1Gi" } });
    assert.equal(comfystream!.image, "livepeer/comfystream:0.1.8");
    assert.equal(comfystream!.imagePullPolicy, "IfNotPresent");
    assert.deepEqual(comfystream!.args, ["--workspace", "/workspace/ComfyUI", "--port", "8889"]);
    assert.deepEqual(comfystream!.env, [{ name: "CUDA_MODULE_LOADING", value: "LAZY" }]);
    assert.deepEqual(comfystream!.ports, [{ name: "comfystream", containerPort: 8889, protocol: "TCP" }]);
    // Quantities are int-or-string in the CRD and strings in core/v1; the GPU goes to the sidecar.
    assert.deepEqual(comfystream!.resources, {
      limits: { memory: "24Gi", "nvidia.com/gpu": "1" },
      requests: { cpu: "4", memory: "16Gi" },
    });
    assert.equal(comfystream!.securityContext?.allowPrivilegeEscalation, false);
  });

  test("spec.pod.image, imagePullPolicy and imagePullSecrets override the operator's defaults", () => {
    const session = storedSession("basic.yaml");
    session.spec.pod = {
      image: "registry.local/relay:1",
      imagePullPolicy: "Always",
      imagePullSecrets: [{ name: "regcred" }],
    };
    const pod = desiredRelayPod(session, { relayImage: RELAY_IMAGE, attempt: 0 });
    assert.equal(pod.spec?.containers[0]?.image, "registry.local/relay:1");
    assert.equal(pod.spec?.containers[0]?.imagePullPolicy, "Always");
    assert.deepEqual(pod.spec?.imagePullSecrets, [{ name: "regcred" }]);
  });

  test("a relay container with a GPU gets NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES (NVENC), others not", () => {
    const gpuEnv = (pod: ReturnType<typeof desiredRelayPod>) =>
      Object.fromEntries(
        (pod.spec?.containers[0]?.env ?? [])
          .filter((e) => e.name.startsWith("NVIDIA_"))
          .map((e) => [e.name, e.value]),
      );
    const expected = { NVIDIA_VISIBLE_DEVICES: "all", NVIDIA_DRIVER_CAPABILITIES: "compute,video,utility" };
    // The sidecar's GPU is the sidecar's: the relay container gets no NVIDIA variables.
    const sidecar = storedSession("sidecar-gpu.yaml");
    const sidecarPod = desiredRelayPod(sidecar, { relayImage: RELAY_IMAGE, attempt: 0 });
    assert.deepEqual(gpuEnv(sidecarPod), {});
    assert.equal(
      sidecarPod.spec?.containers[1]?.env?.some((e) => e.name.startsWith("NVIDIA_")),
      false,
    );
    assert.deepEqual(
      gpuEnv(desiredRelayPod(storedSession("basic.yaml"), { relayImage: RELAY_IMAGE, attempt: 0 })),
      {},
    );
    // spec.pod.resources with a GPU limit.
    const own = storedSession("basic.yaml");
    own.spec.pod = { resources: { limits: { cpu: "2", "nvidia.com/gpu": 1 } } };
    const ownPod = desiredRelayPod(own, { relayImage: RELAY_IMAGE, attempt: 0 });
    assert.deepEqual(gpuEnv(ownPod), expected);
    assert.deepEqual(ownPod.spec?.containers[0]?.resources, { limits: { cpu: "2", "nvidia.com/gpu": "1" } });
    // The installation's default resources, under a configured GPU resource name.
    const defaulted = desiredRelayPod(storedSession("basic.yaml"), {
      relayImage: RELAY_IMAGE,
      attempt: 0,
      defaults: {
        resources: { limits: { "example.com/shared-gpu": "1" } },
        gpuResourceName: "example.com/shared-gpu",
      },
    });
    assert.deepEqual(gpuEnv(defaulted), expected);
    // A CPU-only relay with defaults that name a GPU elsewhere gets nothing.
    const cpuOnly = storedSession("basic.yaml");
    cpuOnly.spec.pod = { resources: { limits: { cpu: "2", memory: "1Gi" } } };
    assert.deepEqual(
      gpuEnv(
        desiredRelayPod(cpuOnly, {
          relayImage: RELAY_IMAGE,
          attempt: 0,
          defaults: { resources: { limits: { "nvidia.com/gpu": "1" } } },
        }),
      ),
      {},
      "the session's own resources win over the defaults",
    );
  });

  test("a session name longer than a label value gets a shortened label and a literal env name", () => {
    const name = `s${"x".repeat(80)}`;
    const session = storedSession("basic.yaml", { name });
    const pod = desiredRelayPod(session, { relayImage: RELAY_IMAGE, attempt: 0 });
    const label = pod.metadata?.labels?.["trickle-relay.io/session"] ?? "";
    assert.ok(label.length <= 63, label);
    assert.equal(label, sessionLabelValue(name));
    assert.notEqual(sessionLabelValue(name), sessionLabelValue(`${name}y`));
    const env = pod.spec?.containers[0]?.env?.find((e) => e.name === "RELAY_SESSION_NAME");
    assert.deepEqual(env, { name: "RELAY_SESSION_NAME", value: name });
    assert.equal(sessionKeyOfPod(pod), `default/${name}`, "the owner reference has the full name");
  });
});

describe("podSpecHash", () => {
  const base = storedSession("sidecar-gpu.yaml");
  const variants: Array<[string, (spec: typeof base.spec) => void, boolean]> = [
    ["prompts edited", (spec) => void (spec.prompts = [{ "1": { class_type: "Other", inputs: {} } }]), false],
    ["prompts removed", (spec) => void delete spec.prompts, false],
    ["width", (spec) => void (spec.width = 512), true],
    ["frame rate", (spec) => void (spec.frameRate = 30), true],
    ["input URL", (spec) => void (spec.trickle.inputUrl = "https://other.example.com/live/x"), true],
    ["sidecar image", (spec) => void (spec.comfystream!.sidecar!.image = "livepeer/comfystream:0.2.0"), true],
    ["node selector", (spec) => void (spec.pod!.nodeSelector = {}), true],
    ["restart budget", (spec) => void (spec.lifetime.maxRestarts = 5), true],
  ];
  for (const [what, mutate, changes] of variants) {
    test(`${what} ${changes ? "changes" : "keeps"} the hash`, () => {
      const changed = structuredClone(base);
      mutate(changed.spec);
      assert.equal(podSpecHash(changed) !== podSpecHash(base), changes);
    });
  }

  test("key order does not matter", () => {
    const reordered = structuredClone(base);
    reordered.spec = Object.fromEntries(Object.entries(base.spec).reverse()) as typeof base.spec;
    reordered.spec.video = Object.fromEntries(
      Object.entries(base.spec.video).reverse(),
    ) as typeof base.spec.video;
    assert.equal(podSpecHash(reordered), podSpecHash(base));
  });
});

describe("desiredRelayRbac", () => {
  test("ServiceAccount, Role and RoleBinding NAME-relay, owned by the session, scoped to it", () => {
    const session = storedSession("basic.yaml");
    const { serviceAccount, role, roleBinding } = desiredRelayRbac(session);
    for (const object of [serviceAccount, role, roleBinding]) {
      assert.equal(object.metadata?.name, "basic-relay");
      assert.equal(object.metadata?.namespace, "default");
      assert.equal(object.metadata?.ownerReferences?.[0]?.uid, session.metadata.uid);
      assert.equal(object.metadata?.ownerReferences?.[0]?.controller, true);
    }
    assert.deepEqual(role.rules, [
      {
        apiGroups: ["trickle-relay.io"],
        resources: ["relaysessions"],
        resourceNames: ["basic"],
        verbs: ["get", "list", "watch"],
      },
      {
        apiGroups: ["trickle-relay.io"],
        resources: ["relaysessions/status"],
        resourceNames: ["basic"],
        verbs: ["get", "patch"],
      },
    ]);
    assert.deepEqual(roleBinding.roleRef, {
      apiGroup: "rbac.authorization.k8s.io",
      kind: "Role",
      name: "basic-relay",
    });
    assert.deepEqual(roleBinding.subjects, [
      { kind: "ServiceAccount", name: "basic-relay", namespace: "default" },
    ]);
  });
});
