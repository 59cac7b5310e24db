// Validation and defaulting of plain JSON values against the schemas schema-builder.ts produces,
// following the apiserver's rules for the constructs used there. It lets code without an apiserver
// (the standalone relay service, the fake apiserver, unit tests) treat a RelaySession the way
// Kubernetes would. It is deliberately not a general JSON-schema validator.

import type { OpenApiSchema } from "./schema-builder.js";

export interface SchemaProblem {
  /** Field path in the style of apiserver messages, e.g. `spec.width` or `spec.pod.tolerations[0].effect`. */
  path: string;
  message: string;
}

export interface ValidationOptions {
  /**
   * The apiserver silently prunes fields the schema does not know. With `reportUnknownFields`, they
   * are reported instead, which catches typos in hand-written manifests.
   */
  reportUnknownFields?: boolean;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function typeMatches(schema: OpenApiSchema, value: unknown): boolean {
  if (schema["x-kubernetes-int-or-string"]) {
    return typeof value === "string" || (typeof value === "number" && Number.isInteger(value));
  }
  switch (schema.type) {
    case undefined:
      return true;
    case "object":
      return isObject(value);
    case "array":
      return Array.isArray(value);
    case "string":
      return typeof value === "string";
    case "integer":
      return typeof value === "number" && Number.isInteger(value);
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    case "boolean":
      return typeof value === "boolean";
  }
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** Checks `value` against `schema`; an empty list means valid. */
export function validateAgainstSchema(
  value: unknown,
  schema: OpenApiSchema,
  options: ValidationOptions = {},
  path = "",
): SchemaProblem[] {
  const problems: SchemaProblem[] = [];
  const at = path || "<root>";
  const report = (message: string) => problems.push({ path: at, message });

  if (!typeMatches(schema, value)) {
    const expected = schema["x-kubernetes-int-or-string"] ? "integer or string" : schema.type;
    report(`must be of type ${expected}, got ${describe(value)}`);
    return problems;
  }
  // The apiserver validates and prunes object metadata itself; the CRD schema only says "object".
  if (path === "metadata") return problems;
  if (schema.enum && !schema.enum.includes(value)) {
    report(
      `unsupported value ${JSON.stringify(value)}: must be one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`,
    );
  }

  if (typeof value === "string") {
    if (schema.minLength !== undefined && value.length < schema.minLength) {
      report(`must be at least ${schema.minLength} characters long`);
    }
    if (schema.maxLength !== undefined && value.length > schema.maxLength) {
      report(`must be at most ${schema.maxLength} characters long`);
    }
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, "u").test(value)) {
      report(`${JSON.stringify(value)} must match ${schema.pattern}`);
    }
    if (schema.format === "date-time" && !RFC3339.test(value))
      report(`${JSON.stringify(value)} is not an RFC 3339 date-time`);
  }

  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum)
      report(`must be greater than or equal to ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum)
      report(`must be less than or equal to ${schema.maximum}`);
    if (schema.multipleOf !== undefined && value % schema.multipleOf !== 0)
      report(`must be a multiple of ${schema.multipleOf}`);
  }

  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems)
      report(`must have at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems)
      report(`must have at most ${schema.maxItems} items`);
    value.forEach((item, index) => {
      if (schema.items)
        problems.push(...validateAgainstSchema(item, schema.items, options, `${path}[${index}]`));
    });
    const keys = schema["x-kubernetes-list-map-keys"];
    if (schema["x-kubernetes-list-type"] === "map" && keys) {
      const seen = new Set<string>();
      value.forEach((item, index) => {
        if (!isObject(item)) return;
        const key = JSON.stringify(keys.map((k) => item[k]));
        if (seen.has(key))
          problems.push({ path: `${path}[${index}]`, message: `duplicate entry for key ${key}` });
        seen.add(key);
      });
    }
  }

  if (isObject(value)) {
    for (const name of schema.required ?? []) {
      if (!(name in value)) problems.push({ path: join(path, name), message: "Required value" });
    }
    const count = Object.keys(value).length;
    if (schema.minProperties !== undefined && count < schema.minProperties) {
      report(`must have at least ${schema.minProperties} properties`);
    }
    if (schema.maxProperties !== undefined && count > schema.maxProperties) {
      report(`must have at most ${schema.maxProperties} properties`);
    }
    if (schema.oneOf) {
      // Only `required`-list branches are generated, which is all this needs to evaluate.
      const matching = schema.oneOf.filter((branch) =>
        (branch.required ?? []).every((name) => name in value),
      );
      if (matching.length !== 1) {
        const options = schema.oneOf.map((branch) => (branch.required ?? []).join("+")).join(", ");
        report(`must set exactly one of ${options} (found ${matching.length})`);
      }
    }
    for (const [name, child] of Object.entries(value)) {
      const childSchema = schema.properties?.[name] ?? schema.additionalProperties;
      if (childSchema) {
        problems.push(...validateAgainstSchema(child, childSchema, options, join(path, name)));
      } else if (options.reportUnknownFields && !schema["x-kubernetes-preserve-unknown-fields"]) {
        problems.push({ path: join(path, name), message: "unknown field (the apiserver would drop it)" });
      }
    }
  }
  return problems;
}

function join(path: string, name: string): string {
  return path ? `${path}.${name}` : name;
}

/**
 * A deep copy of `value` with schema defaults filled in the way the apiserver does it: a missing
 * property with a default gets it, then defaulting recurses into every present property (so an
 * object defaulted to `{}` receives its own properties' defaults).
 */
export function applySchemaDefaults<T>(value: T, schema: OpenApiSchema): T {
  const copy = structuredClone(value) as Json;
  fillDefaults(copy, schema);
  return copy as T;
}

function fillDefaults(value: Json, schema: OpenApiSchema): void {
  if (Array.isArray(value)) {
    if (schema.items) for (const item of value) fillDefaults(item, schema.items);
    return;
  }
  if (!isObject(value)) return;
  for (const [name, child] of Object.entries(schema.properties ?? {})) {
    if (!(name in value) && child.default !== undefined) value[name] = structuredClone(child.default) as Json;
  }
  for (const [name, child] of Object.entries(value)) {
    const childSchema = schema.properties?.[name] ?? schema.additionalProperties;
    if (childSchema) fillDefaults(child, childSchema);
  }
}
