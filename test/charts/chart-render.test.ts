/**
 * The Helm chart, rendered by the real helm 3.17 (from the npm package's layer.zip): `helm lint`,
 * `helm template` with default and non-default values and assertions on the objects, and the
 * values schema rejecting bad values. No cluster needed (see chart-install.test.ts for that).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { parse as parseYaml } from "yaml";
import { gatewayRules, leaseRules, operatorRules } from "./expected-rbac.js";
import {
  chartAppVersion,
  chartDir,
  find,
  helm,
  one,
  rawCrdPath,
  render,
  templateRaw,
  type K8sObject,
} from "./helm.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

function container(objects: K8sObject[]): Any {
  return one(objects, "Deployment").spec.template.spec.containers[0];
}
function args(objects: K8sObject[]): string[] {
  return container(objects).args as string[];
}
function envValue(objects: K8sObject[], name: string): string | undefined {
  return (container(objects).env as Array<{ name: string; value?: string }>).find((e) => e.name === name)
    ?.value;
}
function kinds(objects: K8sObject[]): string[] {
  return objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`).sort();
}

describe("helm lint", () => {
  test("passes --strict with default values", async () => {
    const result = await helm(["lint", "--strict", chartDir]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  test("passes --strict with every optional feature on", async () => {
    const result = await helm([
      "lint",
      "--strict",
      chartDir,
      "--namespace",
      "ops",
      "--set",
      "replicaCount=2,metrics.serviceMonitor.enabled=true,gateway.enabled=true,gateway.tokenSecret.name=gw",
      "--set",
      "watchNamespaces={team-a,team-b}",
    ]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
  });
});

describe("helm template with default values", async () => {
  const objects = await render({}, { release: "tr", namespace: "ops" });
  const fullname = "tr-trickle-relay";

  test("renders exactly the CRDs, ServiceAccount, cluster-wide RBAC, metrics Service and Deployment", () => {
    assert.deepEqual(kinds(objects), [
      "ClusterRole//tr-trickle-relay",
      "ClusterRoleBinding//tr-trickle-relay",
      "CustomResourceDefinition//relaypools.trickle-relay.io",
      "CustomResourceDefinition//relaysessions.trickle-relay.io",
      "Deployment/ops/tr-trickle-relay",
      "Service/ops/tr-trickle-relay-metrics",
      "ServiceAccount/ops/tr-trickle-relay",
    ]);
  });

  test("the Deployment passes the operator flags of operator/README.md", () => {
    assert.deepEqual(args(objects), [
      "--metrics-port=8080",
      "--health-port=8081",
      "--log-level=info",
      "--concurrency=4",
      `--relay-image=trickle-relay/relay:${chartAppVersion}`,
      "--no-leader-elect",
    ]);
    const c = container(objects);
    assert.equal(c.image, `trickle-relay/operator:${chartAppVersion}`);
    assert.equal(c.command, undefined, "the image's ENTRYPOINT (tini + trickle-relay-operator) runs");
    assert.deepEqual(
      c.ports.map((p: Any) => [p.name, p.containerPort]),
      [
        ["metrics", 8080],
        ["health", 8081],
      ],
    );
  });

  test("one replica without leader election rolls out with Recreate (never two operators)", () => {
    const deployment = one(objects, "Deployment");
    assert.equal(deployment.spec.replicas, 1);
    assert.equal(deployment.spec.strategy.type, "Recreate");
    assert.equal(find(objects, "Role").length, 0, "no lease Role without leader election");
  });

  test("env: POD_NAMESPACE and POD_NAME from the downward API, relay GPU resource name", () => {
    const env = container(objects).env as Any[];
    assert.deepEqual(env.find((e) => e.name === "POD_NAMESPACE")?.valueFrom, {
      fieldRef: { fieldPath: "metadata.namespace" },
    });
    assert.deepEqual(env.find((e) => e.name === "POD_NAME")?.valueFrom, {
      fieldRef: { fieldPath: "metadata.name" },
    });
    assert.equal(envValue(objects, "RELAY_DEFAULT_GPU_RESOURCE_NAME"), "nvidia.com/gpu");
    assert.equal(envValue(objects, "RELAY_NODE_LOST_TOLERATION_SECONDS"), "30");
    for (const unset of [
      "RELAY_DEFAULT_RESOURCES",
      "RELAY_DEFAULT_RUNTIME_CLASS_NAME",
      "RELAY_DEFAULT_NODE_SELECTOR",
    ])
      assert.equal(envValue(objects, unset), undefined, unset);
  });

  test("probes: /healthz and /readyz on the health port", () => {
    const c = container(objects);
    assert.deepEqual(c.livenessProbe.httpGet, { path: "/healthz", port: "health" });
    assert.deepEqual(c.readinessProbe.httpGet, { path: "/readyz", port: "health" });
    assert.ok(c.livenessProbe.periodSeconds > 0 && c.readinessProbe.periodSeconds > 0);
  });

  test("restricted security context, read-only root filesystem with a /tmp emptyDir, resources set", () => {
    const spec = one(objects, "Deployment").spec.template.spec;
    assert.equal(spec.securityContext.runAsNonRoot, true);
    assert.equal(typeof spec.securityContext.runAsUser, "number");
    assert.deepEqual(spec.securityContext.seccompProfile, { type: "RuntimeDefault" });
    const c = container(objects);
    assert.deepEqual(c.securityContext, {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    });
    assert.deepEqual(c.volumeMounts, [{ name: "tmp", mountPath: "/tmp" }]);
    assert.ok(spec.volumes.find((v: Any) => v.name === "tmp").emptyDir);
    assert.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory);
  });

  test("the ServiceAccount is the pod's, and the only subject of the ClusterRoleBinding", () => {
    const sa = one(objects, "ServiceAccount");
    assert.equal(one(objects, "Deployment").spec.template.spec.serviceAccountName, sa.metadata.name);
    const binding = one(objects, "ClusterRoleBinding");
    assert.deepEqual(binding.roleRef, {
      apiGroup: "rbac.authorization.k8s.io",
      kind: "ClusterRole",
      name: fullname,
    });
    assert.deepEqual(binding.subjects, [
      { kind: "ServiceAccount", name: sa.metadata.name, namespace: "ops" },
    ]);
  });

  test("the ClusterRole grants exactly the operator's permissions", () => {
    assert.deepEqual(one(objects, "ClusterRole").rules, operatorRules());
  });

  test("the metrics Service selects the operator pods only (not relay pods) on port metrics", () => {
    const service = one(objects, "Service");
    const podLabels = one(objects, "Deployment").spec.template.metadata.labels;
    for (const [k, v] of Object.entries(service.spec.selector as Record<string, string>))
      assert.equal(podLabels[k], v);
    assert.equal(service.spec.selector["app.kubernetes.io/component"], "operator");
    assert.deepEqual(service.spec.ports, [
      { name: "metrics", port: 8080, targetPort: "metrics", protocol: "TCP" },
    ]);
    assert.deepEqual(one(objects, "Deployment").spec.selector.matchLabels, service.spec.selector);
  });

  test("the CRD is the raw crds/ YAML, kept on uninstall and in Argo CD sync wave -1", () => {
    const raw = parseYaml(readFileSync(rawCrdPath, "utf8")) as K8sObject;
    const crd = one(objects, "CustomResourceDefinition", raw.metadata.name);
    assert.deepEqual(
      crd.spec,
      raw.spec,
      "templates/crds/relaysessions.yaml is stale: run charts/scripts/render.sh",
    );
    assert.equal(crd.metadata.annotations["helm.sh/resource-policy"], "keep");
    assert.equal(crd.metadata.annotations["argocd.argoproj.io/sync-wave"], "-1");
    for (const [k, v] of Object.entries(raw.metadata.labels as Record<string, string>))
      assert.equal(crd.metadata.labels[k], v, `label ${k}`);
  });

  test("every namespaced object is in the release namespace", () => {
    for (const o of objects)
      if (!["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"].includes(o.kind))
        assert.equal(o.metadata.namespace, "ops", `${o.kind} ${o.metadata.name}`);
  });
});

describe("helm template with non-default values", () => {
  test("replicaCount 2 turns on leader election: flags, RollingUpdate, a Role for its own Lease", async () => {
    const objects = await render({ replicaCount: 2 }, { release: "tr", namespace: "ops" });
    assert.equal(one(objects, "Deployment").spec.replicas, 2);
    assert.equal(one(objects, "Deployment").spec.strategy.type, "RollingUpdate");
    const a = args(objects);
    assert.ok(a.includes("--leader-elect") && !a.includes("--no-leader-elect"));
    for (const flag of [
      "--leader-election-namespace=ops",
      "--leader-election-id=tr-trickle-relay",
      "--lease-duration=15",
      "--renew-deadline=10",
      "--retry-period=2",
    ])
      assert.ok(a.includes(flag), flag);
    const role = one(objects, "Role", "tr-trickle-relay-leader-election", "ops");
    assert.deepEqual(role.rules, leaseRules("tr-trickle-relay"));
    const binding = one(objects, "RoleBinding", "tr-trickle-relay-leader-election", "ops");
    assert.equal(binding.roleRef.name, role.metadata.name);
    assert.deepEqual(binding.subjects, [
      { kind: "ServiceAccount", name: "tr-trickle-relay", namespace: "ops" },
    ]);
  });

  test("leaderElection.enabled with one replica, custom lease name and timings", async () => {
    const objects = await render({
      leaderElection: { enabled: true, id: "my-lease", leaseDuration: 30, renewDeadline: 20, retryPeriod: 5 },
    });
    const a = args(objects);
    for (const flag of [
      "--leader-elect",
      "--leader-election-id=my-lease",
      "--lease-duration=30",
      "--renew-deadline=20",
      "--retry-period=5",
    ])
      assert.ok(a.includes(flag), flag);
    assert.deepEqual(one(objects, "Role").rules, leaseRules("my-lease"));
  });

  test("watchNamespaces [team-a, team-b]: a Role + RoleBinding in each, --namespace flags, nothing cluster-wide", async () => {
    const objects = await render(
      { watchNamespaces: ["team-a", "team-b"] },
      { release: "tr", namespace: "ops" },
    );
    assert.equal(find(objects, "ClusterRole").length, 0);
    assert.equal(find(objects, "ClusterRoleBinding").length, 0);
    for (const ns of ["team-a", "team-b"]) {
      assert.deepEqual(one(objects, "Role", "tr-trickle-relay", ns).rules, operatorRules());
      const binding = one(objects, "RoleBinding", "tr-trickle-relay", ns);
      assert.deepEqual(binding.roleRef, {
        apiGroup: "rbac.authorization.k8s.io",
        kind: "Role",
        name: "tr-trickle-relay",
      });
      assert.deepEqual(binding.subjects, [
        { kind: "ServiceAccount", name: "tr-trickle-relay", namespace: "ops" },
      ]);
    }
    assert.equal(find(objects, "Role").length, 2, "no Role in the release namespace (it is not watched)");
    const ns = args(objects).filter((a) => a.startsWith("--namespace"));
    assert.deepEqual(ns, ["--namespace=team-a", "--namespace=team-b"]);
  });

  test("rbac.namespaced alone watches the release namespace", async () => {
    const objects = await render({ rbac: { namespaced: true } }, { release: "tr", namespace: "ops" });
    assert.equal(find(objects, "ClusterRole").length, 0);
    assert.deepEqual(one(objects, "Role", "tr-trickle-relay", "ops").rules, operatorRules());
    assert.deepEqual(
      args(objects).filter((a) => a.startsWith("--namespace")),
      ["--namespace=ops"],
    );
  });

  test("metrics.serviceMonitor.enabled renders a ServiceMonitor that selects the metrics Service", async () => {
    const objects = await render({
      metrics: { serviceMonitor: { enabled: true, interval: "15s", labels: { release: "prom" } } },
    });
    const monitor = one(objects, "ServiceMonitor");
    assert.equal(monitor.apiVersion, "monitoring.coreos.com/v1");
    assert.equal(monitor.metadata.labels.release, "prom");
    const service = one(objects, "Service");
    for (const [k, v] of Object.entries(monitor.spec.selector.matchLabels as Record<string, string>))
      assert.equal(service.metadata.labels[k], v, `Service label ${k}`);
    assert.deepEqual(monitor.spec.namespaceSelector, { matchNames: ["ops"] });
    assert.deepEqual(monitor.spec.endpoints, [
      { port: "metrics", path: "/metrics", interval: "15s", scrapeTimeout: "10s" },
    ]);
  });

  test("metrics.enabled false: no Service and no ServiceMonitor even if asked for", async () => {
    const objects = await render({ metrics: { enabled: false, serviceMonitor: { enabled: true } } });
    assert.equal(find(objects, "Service").length, 0);
    assert.equal(find(objects, "ServiceMonitor").length, 0);
  });

  test("crds.install false leaves the CRD out; crds.keep false drops the keep annotation", async () => {
    assert.equal(find(await render({ crds: { install: false } }), "CustomResourceDefinition").length, 0);
    const crd = one(
      await render({ crds: { keep: false, annotations: { team: "media" } } }),
      "CustomResourceDefinition",
      "relaysessions.trickle-relay.io",
    );
    assert.equal(crd.metadata.annotations["helm.sh/resource-policy"], undefined);
    assert.equal(crd.metadata.annotations.team, "media");
  });

  test("pools: each entry becomes a RelayPool in the release namespace (or its own)", async () => {
    const template = { comfystream: { sidecar: { image: "livepeer/comfystream:0.1.8" } } };
    const objects = await render(
      {
        pools: [
          { name: "gpu", replicas: 4, template },
          { name: "burst", namespace: "media", autoscale: { bufferSize: "25%", maxReplicas: 20 }, template },
        ],
      },
      { release: "tr", namespace: "ops" },
    );
    const gpu = one(objects, "RelayPool", "gpu", "ops");
    assert.equal(gpu.apiVersion, "trickle-relay.io/v1alpha1");
    assert.deepEqual(gpu.spec, { replicas: 4, template });
    const burst = one(objects, "RelayPool", "burst", "media");
    assert.deepEqual(burst.spec.autoscale, { bufferSize: "25%", maxReplicas: 20 });
    assert.equal(find(await render({}), "RelayPool").length, 0, "no pools by default");
  });

  test("relay defaults reach the operator: --relay-image and RELAY_DEFAULT_* JSON env", async () => {
    const relay = {
      image: { repository: "registry.example.com/relay", tag: "1.2.3" },
      resources: { requests: { cpu: "1", memory: "512Mi" }, limits: { memory: "1Gi" } },
      gpuResourceName: "amd.com/gpu",
      runtimeClassName: "nvidia",
      nodeSelector: { "gpu.example.com/model": "l4" },
      tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }],
    };
    const objects = await render({ relay, image: { repository: "registry.example.com/op", tag: "9.9.9" } });
    assert.ok(args(objects).includes("--relay-image=registry.example.com/relay:1.2.3"));
    assert.equal(container(objects).image, "registry.example.com/op:9.9.9");
    assert.deepEqual(JSON.parse(envValue(objects, "RELAY_DEFAULT_RESOURCES")!), relay.resources);
    assert.equal(envValue(objects, "RELAY_DEFAULT_GPU_RESOURCE_NAME"), "amd.com/gpu");
    assert.equal(envValue(objects, "RELAY_DEFAULT_RUNTIME_CLASS_NAME"), "nvidia");
    assert.deepEqual(JSON.parse(envValue(objects, "RELAY_DEFAULT_NODE_SELECTOR")!), relay.nodeSelector);
    assert.deepEqual(JSON.parse(envValue(objects, "RELAY_DEFAULT_TOLERATIONS")!), relay.tolerations);
  });

  test("gateway: a Role for its namespace only, port, token Secret mounted read-only, Service", async () => {
    const objects = await render({
      gateway: { enabled: true, tokenSecret: { name: "gw-token", key: "bearer" } },
    });
    assert.deepEqual(one(objects, "ClusterRole").rules, operatorRules(), "no gateway verbs cluster-wide");
    assert.deepEqual(one(objects, "Role", "tr-trickle-relay-gateway", "ops").rules, gatewayRules);
    assert.equal(
      one(objects, "RoleBinding", "tr-trickle-relay-gateway", "ops").subjects[0].name,
      "tr-trickle-relay",
    );
    const a = args(objects);
    assert.ok(a.includes("--gateway-port=8890"));
    assert.ok(a.includes("--gateway-namespace=ops"));
    assert.ok(a.includes("--gateway-token-file=/etc/trickle-relay/gateway/bearer"));
    const spec = one(objects, "Deployment").spec.template.spec;
    assert.deepEqual(spec.volumes.find((v: Any) => v.name === "gateway-token").secret, {
      secretName: "gw-token",
      items: [{ key: "bearer", path: "bearer" }],
    });
    assert.ok(container(objects).volumeMounts.find((m: Any) => m.name === "gateway-token").readOnly);
    assert.equal(one(objects, "Service", "tr-trickle-relay-gateway").spec.ports[0].port, 8890);

    const namespaced = await render({
      watchNamespaces: ["team-a", "team-b"],
      gateway: { enabled: true, tokenSecret: { name: "gw-token" } },
    });
    assert.ok(
      args(namespaced).includes("--gateway-namespace=team-a"),
      "defaults to the first watched namespace",
    );
    assert.deepEqual(one(namespaced, "Role", "tr-trickle-relay-gateway", "team-a").rules, gatewayRules);

    const missing = await templateRaw({ gateway: { enabled: true } });
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /gateway\.tokenSecret\.name/);
  });

  test("rbac.create false and an existing ServiceAccount: no RBAC, no ServiceAccount", async () => {
    const objects = await render({
      rbac: { create: false },
      serviceAccount: { create: false, name: "ops-operator" },
      replicaCount: 3,
    });
    assert.deepEqual(
      objects.filter((o) => /Role|ServiceAccount/.test(o.kind)),
      [],
    );
    assert.equal(one(objects, "Deployment").spec.template.spec.serviceAccountName, "ops-operator");
  });

  test("fullnameOverride, extraArgs, extraEnv, placement of the operator pod", async () => {
    const objects = await render({
      fullnameOverride: "relay-op",
      extraArgs: ["--bind-address=0.0.0.0"],
      extraEnv: [{ name: "NODE_OPTIONS", value: "--max-old-space-size=200" }],
      nodeSelector: { "kubernetes.io/os": "linux" },
      tolerations: [{ key: "ops", operator: "Exists" }],
      priorityClassName: "system-cluster-critical",
      logLevel: "debug",
    });
    assert.equal(one(objects, "Deployment").metadata.name, "relay-op");
    assert.equal(one(objects, "ClusterRole").metadata.name, "relay-op");
    assert.equal(args(objects).at(-1), "--bind-address=0.0.0.0");
    assert.ok(args(objects).includes("--log-level=debug"));
    assert.equal(envValue(objects, "NODE_OPTIONS"), "--max-old-space-size=200");
    const spec = one(objects, "Deployment").spec.template.spec;
    assert.deepEqual(spec.nodeSelector, { "kubernetes.io/os": "linux" });
    assert.equal(spec.priorityClassName, "system-cluster-critical");
  });
});

describe("values.schema.json", () => {
  const bad: Array<[string, object, RegExp]> = [
    ["negative replicas", { replicaCount: -1 }, /replicaCount/],
    ["replicas as a string", { replicaCount: "two" }, /replicaCount/],
    ["unknown top-level value (typo)", { replicas: 2 }, /replicas/],
    ["unknown nested value", { metrics: { serviceMonitor: { enable: true } } }, /enable/],
    ["invalid namespace name", { watchNamespaces: ["Team_A"] }, /watchNamespaces/],
    ["duplicate namespaces", { watchNamespaces: ["a", "a"] }, /watchNamespaces/],
    ["unknown log level", { logLevel: "verbose" }, /logLevel/],
    ["port out of range", { metrics: { port: 70000 } }, /port/],
    ["bad pull policy", { image: { repository: "x", pullPolicy: "Sometimes" } }, /pullPolicy/],
    ["rbac.namespaced not a boolean", { rbac: { namespaced: "yes" } }, /namespaced/],
    ["bad toleration operator", { relay: { tolerations: [{ key: "a", operator: "Maybe" }] } }, /operator/],
    ["node selector value not a string", { relay: { nodeSelector: { gpu: 1 } } }, /nodeSelector/],
    ["bad GPU resource name", { relay: { gpuResourceName: "not a name" } }, /gpuResourceName/],
    ["bad scrape interval", { metrics: { serviceMonitor: { interval: "often" } } }, /interval/],
  ];
  for (const [what, values, message] of bad) {
    test(`rejects ${what}`, async () => {
      const result = await templateRaw(values);
      assert.notEqual(result.code, 0, `accepted ${JSON.stringify(values)}`);
      assert.match(result.stderr, message);
    });
  }

  test("accepts the documented values.yaml as is, and zero replicas", async () => {
    assert.equal((await templateRaw({ replicaCount: 0 })).code, 0);
  });
});

describe("values.yaml", () => {
  test("every value is documented: a comment right above it or above the value it belongs to", () => {
    const lines = readFileSync(`${chartDir}/values.yaml`, "utf8").split("\n");
    // Stack of [indent, documented] for the enclosing keys.
    const stack: Array<{ indent: number; documented: boolean }> = [];
    const undocumented: string[] = [];
    lines.forEach((line, i) => {
      const key = /^(\s*)([A-Za-z][\w.-]*):/.exec(line);
      if (!key) return;
      const indent = key[1]!.length;
      while (stack.length && stack.at(-1)!.indent >= indent) stack.pop();
      const commented = (lines[i - 1] ?? "").trim().startsWith("#");
      const documented = commented || stack.some((s) => s.documented);
      const isParent = /:\s*$/.test(line);
      const nextIsList = /^\s*- /.test(lines[i + 1] ?? "");
      if (!documented && (!isParent || nextIsList)) undocumented.push(`${i + 1}: ${line.trim()}`);
      stack.push({ indent, documented });
    });
    assert.deepEqual(undocumented, []);
  });
});
