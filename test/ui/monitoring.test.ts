/**
 * The chart's Grafana dashboard and PrometheusRule (monitoring.* values): rendered by the real helm,
 * and every metric and label their queries use checked against real /metrics scrapes — the relay's
 * (a real session behind the standalone service, test/ui/ui-harness.ts) and the operator's (the
 * operator process against a real kube-apiserver, with a RelaySession in it). The rules go through
 * `promtool check rules` where Debian's prometheus package is installed.
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
import { RELAY_SESSION_PHASES } from "../../crds/src/index.js";
import { resolveEnvtestAssets, startControlPlane, type ControlPlane } from "../infra/apiserver.js";
import { chartDir, find, helm, one, render, type K8sObject } from "../charts/helm.js";
import { repoRoot, startOperator, type OperatorProcess } from "../operator/operator-harness.js";
import { waitFor } from "../infra/wait-for.js";
import { startUiScenario, type UiScenario } from "./ui-harness.js";
import { parseExposition, selectorsIn, type Exposition } from "./promql-selectors.js";

const run = promisify(execFile);
const PROMTOOL = process.env.PROMTOOL_BIN ?? "promtool";

const ENABLED = { monitoring: { grafanaDashboard: { enabled: true }, prometheusRule: { enabled: true } } };

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

describe("Grafana dashboard and PrometheusRule in the chart", { timeout: 300_000 }, () => {
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

  it("alert on no output, high latency, reconnect storms and sessions stuck starting, with the values' thresholds", async () => {
    const alerts = ruleQueries(rule).map((q) => q.where);
    for (const name of [
      "TrickleRelayNoOutputFrames",
      "TrickleRelayHighLatency",
      "TrickleRelayReconnectStorm",
      "TrickleRelaySessionStuckStarting",
      "TrickleRelaySessionsStuckStarting",
    ]) {
      assert.ok(alerts.includes(`alert ${name}`), `${name} in ${alerts.join(", ")}`);
    }
    const tuned = await render({
      monitoring: { prometheusRule: { enabled: true, latencyP95Seconds: 2.5, noOutputFor: "45s" } },
    });
    const rules = (one(tuned, "PrometheusRule") as Any).spec.groups[0].rules as Any[];
    assert.match(rules.find((r) => r.alert === "TrickleRelayHighLatency").expr, /> 2\.5$/);
    assert.equal(rules.find((r) => r.alert === "TrickleRelayNoOutputFrames").for, "45s");
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
      assert.match(stdout, /SUCCESS: 5 rules found/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe("query only metrics and labels that real scrapes expose", () => {
    let relay: Exposition;
    let operatorMetrics: Exposition;
    let scenario: UiScenario | undefined;
    let cp: ControlPlane | undefined;
    let operator: OperatorProcess | undefined;

    before(async () => {
      scenario = await startUiScenario({ seconds: 15, sessionId: "scraped" });
      relay = parseExposition((await scenario.app.inject({ method: "GET", url: "/metrics" })).body);
      await scenario.stop();
      scenario = undefined;

      await resolveEnvtestAssets();
      cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds")] });
      operator = await startOperator({ kubeconfigPath: cp.kubeconfigPath, name: "monitoring" });
      const created = await cp.kubectl(["apply", "-f", "-"], {
        input: [
          "apiVersion: trickle-relay.io/v1alpha1",
          "kind: RelaySession",
          "metadata: {name: scraped, namespace: default}",
          "spec:",
          '  trickle: {inputUrl: "http://127.0.0.1:9/live/scraped"}',
          '  comfystream: {url: "http://127.0.0.1:9"}',
        ].join("\n"),
      });
      assert.equal(created.code, 0, created.stderr);
      let text = "";
      await waitFor(
        async () => {
          text = await operator!.metrics();
          // Labelled series appear once there is something to count: a session, a reconcile.
          return (
            /trickle_relay_operator_sessions\{/.test(text) &&
            /trickle_relay_operator_reconcile_total\{/.test(text)
          );
        },
        60_000,
        "the operator's sessions gauge and a first reconcile",
      );
      operatorMetrics = parseExposition(text);
    });

    after(async () => {
      await scenario?.stop();
      await operator?.stop().catch(() => undefined);
      await cp?.stop().catch(() => undefined);
    });

    it("every dashboard and alert query", () => {
      const queries = [...dashboardQueries(dashboard), ...ruleQueries(rule)];
      assert.ok(queries.length > 15, `${queries.length} queries`);
      const problems: string[] = [];
      for (const { where, expr } of queries) {
        const selectors = selectorsIn(expr);
        if (selectors.length === 0) problems.push(`${where}: no trickle_relay metric in ${expr}`);
        for (const selector of selectors) {
          const scrape = selector.metric.startsWith("trickle_relay_operator_") ? operatorMetrics : relay;
          const series = scrape.get(selector.metric);
          if (!series) {
            problems.push(`${where}: ${selector.metric} is in no scrape`);
            continue;
          }
          for (const matcher of selector.matchers) {
            const values = series.get(matcher.label);
            if (!values) {
              problems.push(`${where}: ${selector.metric} has no label ${matcher.label}`);
              continue;
            }
            if (matcher.op !== "=") continue;
            // A phase the scrape happened not to show is fine if the CRD defines it.
            const known = matcher.label === "phase" ? new Set([...values, ...RELAY_SESSION_PHASES]) : values;
            if (!known.has(matcher.value))
              problems.push(`${where}: ${selector.metric}{${matcher.label}="${matcher.value}"} never occurs`);
          }
          for (const label of selector.groupingLabels) {
            if (!series.has(label))
              problems.push(`${where}: ${selector.metric} has no label ${label} to group by`);
          }
        }
      }
      assert.deepEqual(problems, []);
    });
  });
});
