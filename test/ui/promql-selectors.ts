// Just enough of PromQL and the Prometheus text format to check that queries name real metrics and
// labels: the metric selectors (name and label matchers) and grouping labels in an expression, and
// each metric's label names and values in a scrape. Not a PromQL parser: it reads our own queries.

/** metric name → label name → values seen. */
export type Exposition = Map<string, Map<string, Set<string>>>;

export function parseExposition(text: string): Exposition {
  const metrics: Exposition = new Map();
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s/.exec(line);
    if (!match) continue;
    const labels = metrics.get(match[1]!) ?? new Map<string, Set<string>>();
    metrics.set(match[1]!, labels);
    for (const pair of (match[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      const values = labels.get(pair[1]!) ?? new Set<string>();
      values.add(pair[2]!);
      labels.set(pair[1]!, values);
    }
  }
  return metrics;
}

export interface Selector {
  metric: string;
  matchers: { label: string; op: string; value: string }[];
  /** Labels the expression groups or matches by (by/without/on/ignoring, label_values). */
  groupingLabels: string[];
}

export function selectorsIn(expr: string): Selector[] {
  const grouping = [...expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)].flatMap((m) =>
    m[1]!
      .split(",")
      .map((l) => l.trim())
      .filter(Boolean),
  );
  const labelValues = /label_values\(\s*[a-zA-Z_:][a-zA-Z0-9_:]*\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)/.exec(
    expr,
  );
  if (labelValues) grouping.push(labelValues[1]!);
  return [...expr.matchAll(/\b(trickle_relay_[a-zA-Z0-9_]+)(\{([^}]*)\})?/g)].map((m) => ({
    metric: m[1]!,
    matchers: [...(m[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)].map((x) => ({
      label: x[1]!,
      op: x[2]!,
      value: x[3]!,
    })),
    groupingLabels: grouping,
  }));
}
