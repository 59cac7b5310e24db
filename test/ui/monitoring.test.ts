/**
 * The chart's Grafana dashboard, PrometheusRule and relay-pod PodMonitor (monitoring.* values):
 * rendered by the real helm, and every metric and label their queries use checked against real
 * /metrics scrapes — the relay's (a real session behind the standalone service, test/ui/ui-harness.ts,
 * and the same session's status served by a relay pod's endpoints server, which is what the PodMonitor
 * scrapes under the operator) and the operator's (the operator process against a real kube-apiserver,
 * with a RelaySession and a RelayPool in it; pool pods played by the stand-in kubelet of
 * test/operator/relaypool/pool-harness.ts so that a warm pod is allocated and the pool runs dry). The
 * rules go through `promtool check rules` where Debian's prometheus package is installed.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { stringify as toYaml } from "yaml";
import { KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { RELAY_SESSION_PHASES } from "../../crds/src/index.js";
import { RELAY_ENDPOINTS_PORT, servePodEndpoints } from "../../relay-pod/src/kube/pod-endpoints.js";
import { silentLogger } from "../../relay-pod/src/index.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../infra/apiserver.js";
import { chartDir, find, helm, one, parseManifests, render, type K8sObject } from "../charts/helm.js";
import { freePort, repoRoot, startOperator, type OperatorProcess } from "../operator/operator-harness.js";
import { FakePoolKubelet, poolYaml, pooledSessionsYaml } from "../operator/relaypool/pool-harness.js";
import { waitFor } from "../infra/wait-for.js";
import { startUiScenario, type UiScenario } from "./ui-harness.js";
import { parseExposition, selectorsIn, type Exposition } from "./promql-selectors.js";

const run = promisify(execFile);
const PROMTOOL = process.env.PROMTOOL_BIN ?? "promtool";

const ENABLED = {
  monitoring: {
    grafanaDashboard: { enabled: true },
    prometheusRule: { enabled: true },
    podMonitor: { enabled: true },
  },
};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

interface Query {
  where: string;
  expr: string;
}

function dashboardQueries(dashboard: Any): Query[] {
  const queries: Query[] = [];
  for (const panel of dashboard.panels as Any[]) {
    for (const target of panel.targets ?? [])
      queries.push({ where: `panel "${panel.title}"`, expr: target.expr });
  }
  for (const variable of dashboard.templating.list as Any[]) {
    if (variable.type === "query")
      queries.push({ where: `variable $${variable.name}`, expr: variable.definition });
  }
  for (const annotation of dashboard.annotations.list as Any[]) {
    queries.push({ where: `annotation "${annotation.name}"`, expr: annotation.expr });
  }
  return queries;
}

function ruleQueries(rule: K8sObject): Query[] {
  return (rule as Any).spec.groups.flatMap((group: Any) =>
    group.rules.map((r: Any) => ({ where: `alert ${r.alert}`, expr: r.expr as string })),
  );
}

describe(
  "Grafana dashboard, PrometheusRule and relay-pod PodMonitor in the chart",
  { timeout: 300_000 },
  () => {
    let objects: K8sObject[];
    let dashboard: Any;
    let rule: K8sObject;

    before(async () => {
      objects = await render(ENABLED);
      const configMap = one(objects, "ConfigMap", "tr-trickle-relay-dashboard");
      dashboard = JSON.parse((configMap as Any).data["trickle-relay.json"]);
      rule = one(objects, "PrometheusRule", "tr-trickle-relay");
    });

    it("pass helm lint with both on", async () => {
      const lint = await helm([
        "lint",
        chartDir,
        "--set",
        "monitoring.grafanaDashboard.enabled=true",
        "--set",
        "monitoring.prometheusRule.enabled=true",
      ]);
      assert.equal(lint.code, 0, lint.stdout + lint.stderr);
    });

    it("are off by default and labelled for Grafana's sidecar when on", async () => {
      const defaults = await render({});
      assert.deepEqual(find(defaults, "PrometheusRule"), []);
      assert.ok(!find(defaults, "ConfigMap").some((c) => c.metadata.name.endsWith("-dashboard")));
      const configMap = one(objects, "ConfigMap", "tr-trickle-relay-dashboard");
      assert.equal(configMap.metadata.labels?.grafana_dashboard, "1");
      assert.deepEqual(
        dashboard,
        JSON.parse(readFileSync(join(chartDir, "dashboards/trickle-relay.json"), "utf8")),
      );
    });

    it("alert on no output, high latency, reconnect storms, sessions stuck starting and exhausted pools, with the values' thresholds", async () => {
      const alerts = ruleQueries(rule).map((q) => q.where);
      for (const name of [
        "TrickleRelayNoOutputFrames",
        "TrickleRelayHighLatency",
        "TrickleRelayReconnectStorm",
        "TrickleRelaySessionStuckStarting",
        "TrickleRelaySessionsStuckStarting",
        "TrickleRelayPoolExhausted",
      ]) {
        assert.ok(alerts.includes(`alert ${name}`), `${name} in ${alerts.join(", ")}`);
      }
      const tuned = await render({
        monitoring: {
          prometheusRule: {
            enabled: true,
            latencyP95Seconds: 2.5,
            noOutputFor: "45s",
            poolExhaustedFor: "7m",
          },
        },
      });
      const rules = (one(tuned, "PrometheusRule") as Any).spec.groups.flatMap((g: Any) => g.rules) as Any[];
      assert.match(rules.find((r) => r.alert === "TrickleRelayHighLatency").expr, /> 2\.5$/);
      assert.equal(rules.find((r) => r.alert === "TrickleRelayNoOutputFrames").for, "45s");
      assert.equal(rules.find((r) => r.alert === "TrickleRelayPoolExhausted").for, "7m");
    });

    it("render from the README's Helm command: ServiceMonitor, PodMonitor, dashboard and rule, all labelled for the Prometheus", async () => {
      const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
      const command = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)]
        .map((m) => m[1]!)
        .find((block) => block.includes("monitoring.podMonitor.enabled"));
      assert.ok(command, "the README's monitoring example");
      const args = [...command.matchAll(/--(set|set-string) (\S+)/g)].flatMap((m) => [`--${m[1]}`, m[2]!]);
      assert.ok(args.length >= 14, args.join(" "));
      const result = await helm([
        "template",
        "trickle-relay",
        chartDir,
        "-n",
        "trickle-relay-system",
        ...args,
      ]);
      assert.equal(result.code, 0, result.stderr);
      const rendered = parseManifests(result.stdout);
      for (const kind of ["ServiceMonitor", "PodMonitor", "PrometheusRule"])
        assert.equal(one(rendered, kind).metadata.labels?.release, "kube-prometheus-stack", kind);
      assert.equal(
        one(rendered, "ConfigMap", "trickle-relay-dashboard").metadata.labels?.grafana_dashboard,
        "1",
      );
    });

    it("pass promtool check rules", async (t) => {
      const found = await run(PROMTOOL, ["--version"]).then(
        () => true,
        () => false,
      );
      if (!found)
        return t.skip(`no ${PROMTOOL} (Debian's prometheus package; npm run setup:system installs it)`);
      const dir = await mkdtemp(join(tmpdir(), "trickle-relay-rules-"));
      try {
        const file = join(dir, "rules.yaml");
        await writeFile(file, toYaml({ groups: (rule as Any).spec.groups }));
        const { stdout } = await run(PROMTOOL, ["check", "rules", file]);
        assert.match(stdout, /SUCCESS: 6 rules found/);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    describe("query only metrics and labels that real scrapes expose", () => {
      let relay: Exposition;
      let relayPod: Exposition;
      let operatorMetrics: Exposition;
      let operatorPods: V1Pod[];
      let scenario: UiScenario | undefined;
      let cp: ControlPlane | undefined;
      let operator: OperatorProcess | undefined;
      let kubelet: FakePoolKubelet | undefined;

      before(async () => {
        scenario = await startUiScenario({ seconds: 15, sessionId: "scraped" });
        relay = parseExposition((await scenario.app.inject({ method: "GET", url: "/metrics" })).body);
        // The same live session as a relay pod serves it (run --session), which the PodMonitor scrapes.
        const session = scenario.sessions.get(scenario.sessionId)!;
        const port = await freePort();
        const endpoints = servePodEndpoints(port, () => session.status(), silentLogger);
        try {
          let text = "";
          await waitFor(
            async () => {
              text = await fetch(`http://127.0.0.1:${port}/metrics`).then(
                (r) => r.text(),
                () => "",
              );
              return text.includes("trickle_relay_session_state");
            },
            10_000,
            "the relay pod's /metrics",
          );
          relayPod = parseExposition(text);
        } finally {
          endpoints.close();
        }
        await scenario.stop();
        scenario = undefined;

        await resolveEnvtestAssets();
        cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds")] });
        const kubeConfig = new KubeConfig();
        kubeConfig.loadFromFile(cp.kubeconfigPath);
        kubelet = new FakePoolKubelet(kubeConfig, "default").start();
        operator = await startOperator({ kubeconfigPath: cp.kubeconfigPath, name: "monitoring" });
        const apply = async (input: string) => {
          const created = await cp!.kubectl(["apply", "-f", "-"], { input });
          assert.equal(created.code, 0, created.stderr);
        };
        await apply(
          [
            "apiVersion: trickle-relay.io/v1alpha1",
            "kind: RelaySession",
            "metadata: {name: scraped, namespace: default}",
            "spec:",
            '  trickle: {inputUrl: "http://127.0.0.1:9/live/scraped"}',
            '  comfystream: {url: "http://127.0.0.1:9"}',
          ].join("\n"),
        );
        // One warm pod, then two pooled sessions: one is allocated, the other finds the pool dry.
        await apply(poolYaml("default", "gpu", { replicas: 1 }));
        await waitFor(
          async () =>
            /trickle_relay_pool_warmup_seconds_count\{[^}]*\} [1-9]/.test(await operator!.metrics()),
          60_000,
          "a warm pod Ready",
        );
        await apply(pooledSessionsYaml("default", "gpu", ["pooled-1", "pooled-2"]));
        let text = "";
        await waitFor(
          async () => {
            text = await operator!.metrics();
            // Labelled series appear once there is something to count: a session, a reconcile, an
            // allocation, an exhausted pool.
            return [
              /trickle_relay_operator_sessions\{/,
              /trickle_relay_operator_reconcile_total\{/,
              /trickle_relay_pool_allocation_seconds_count\{[^}]*\} [1-9]/,
              /trickle_relay_pool_exhausted_total\{[^}]*\} [1-9]/,
            ].every((re) => re.test(text));
          },
          60_000,
          "the operator's sessions gauge, a first reconcile, an allocation and an exhausted pool",
        );
        operatorMetrics = parseExposition(text);
        const pods = await cp.kubectl(["get", "pods", "-n", "default", "-o", "json"]);
        assert.equal(pods.code, 0, pods.stderr);
        operatorPods = (JSON.parse(pods.stdout) as { items: V1Pod[] }).items;
      });

      after(async () => {
        kubelet?.stop();
        await scenario?.stop();
        await operator?.stop().catch(() => undefined);
        await cp?.stop().catch(() => undefined);
      });

      it("every dashboard and alert query", () => {
        const queries = [...dashboardQueries(dashboard), ...ruleQueries(rule)];
        assert.ok(queries.length > 20, `${queries.length} queries`);
        const problems: string[] = [];
        for (const { where, expr } of queries) {
          const selectors = selectorsIn(expr);
          if (selectors.length === 0) problems.push(`${where}: no trickle_relay metric in ${expr}`);
          for (const selector of selectors) {
            // Operator series (trickle_relay_operator_*, trickle_relay_pool_*) come from the operator;
            // every other one must be served alike by `serve` and by a relay pod.
            const fromOperator = operatorMetrics.has(selector.metric);
            const scrapes: Array<[string, Exposition]> = fromOperator
              ? [["operator", operatorMetrics]]
              : [
                  ["serve", relay],
                  ["relay pod", relayPod],
                ];
            for (const [source, scrape] of scrapes) {
              problems.push(...checkSelector(where, source, selector, scrape));
            }
          }
        }
        assert.deepEqual(problems, []);
      });

      it("PodMonitor selects the relay pods the operator creates, on their port 8892", () => {
        const podMonitor = one(objects, "PodMonitor") as Any;
        assert.deepEqual(podMonitor.spec.namespaceSelector, { any: true });
        const ports = (podMonitor.spec.podMetricsEndpoints as Any[]).map((e) => e.port as string);
        const kinds = new Set<string>();
        assert.ok(operatorPods.length >= 2, `${operatorPods.length} pods`);
        for (const pod of operatorPods) {
          const name = pod.metadata?.name ?? "";
          for (const [key, value] of Object.entries(
            podMonitor.spec.selector.matchLabels as Record<string, string>,
          ))
            assert.equal(pod.metadata?.labels?.[key], value, `${name}: label ${key}`);
          const named = pod
            .spec!.containers.flatMap((c) => c.ports ?? [])
            .filter((p) => ports.includes(p.name!));
          assert.equal(named.length, 1, `${name}: one of the ports ${ports.join(", ")}`);
          assert.equal(named[0]!.containerPort, RELAY_ENDPOINTS_PORT, name);
          kinds.add(pod.metadata?.labels?.["trickle-relay.io/pool"] ? "pool" : "session");
        }
        assert.deepEqual([...kinds].sort(), ["pool", "session"]);
        return render({ monitoring: { podMonitor: { enabled: true } }, watchNamespaces: ["a", "b"] }).then(
          (scoped) =>
            assert.deepEqual((one(scoped, "PodMonitor") as Any).spec.namespaceSelector, {
              matchNames: ["a", "b"],
            }),
        );
      });
    });
  },
);

function checkSelector(
  where: string,
  source: string,
  selector: ReturnType<typeof selectorsIn>[number],
  scrape: Exposition,
): string[] {
  const problems: string[] = [];
  const series = scrape.get(selector.metric);
  if (!series) return [`${where}: ${selector.metric} is not in the ${source} scrape`];
  for (const matcher of selector.matchers) {
    const values = series.get(matcher.label);
    if (!values) {
      problems.push(`${where}: ${selector.metric} has no label ${matcher.label} (${source})`);
      continue;
    }
    if (matcher.op !== "=") continue;
    // A phase the scrape happened not to show is fine if the CRD defines it.
    const known = matcher.label === "phase" ? new Set([...values, ...RELAY_SESSION_PHASES]) : values;
    if (!known.has(matcher.value))
      problems.push(
        `${where}: ${selector.metric}{${matcher.label}="${matcher.value}"} never occurs (${source})`,
      );
  }
  for (const label of selector.groupingLabels) {
    if (!series.has(label))
      problems.push(`${where}: ${selector.metric} has no label ${label} to group by (${source})`);
  }
  return problems;
}
