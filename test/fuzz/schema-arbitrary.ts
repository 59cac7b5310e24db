/**
 * fast-check values shaped by an OpenAPI (CRD) schema: the right types, enums, bounds and lengths,
 * and strings drawn from a few realistic candidates plus noise, so that many of them pass the
 * schema and reach the code behind it. Values the schema refuses are filtered out by the caller
 * with the real validator; what matters here is breadth, not that every value passes.
 */
import fc from "fast-check";
import type { OpenApiSchema } from "../../crds/src/index.js";

const STRING_CANDIDATES = [
  "http://127.0.0.1:9/ai/trickle/in",
  "http://127.0.0.1:9/ai/trickle/in-out",
  "https://gw.example:8935/ai/trickle/x?y=1#z",
  "http://h",
  "http://127.0.0.1:8889",
  "a",
  "relay.example.com",
  "gpu-nodes",
  "ENV_NAME",
  "500m",
  "1Gi",
  "0",
  "1",
  "-1",
  "1e3",
  "nvidia.com/gpu",
  "ghcr.io/example/comfystream:latest",
  "",
];

export function arbitraryFor(schema: OpenApiSchema, depth = 0): fc.Arbitrary<unknown> {
  if (schema.enum) return fc.constantFrom(...schema.enum);
  if (schema["x-kubernetes-int-or-string"]) {
    return fc.oneof(fc.integer({ min: -10, max: 100 }), fc.constantFrom(...STRING_CANDIDATES));
  }
  if (schema["x-kubernetes-preserve-unknown-fields"] && !schema.properties) {
    // Free-form (ComfyUI workflows, affinity, valueFrom): often node-shaped, sometimes anything.
    const node = fc.record({
      class_type: fc.constantFrom("LoadTensor", "SaveTensor", "", "X"),
      inputs: fc.dictionary(fc.string({ maxLength: 4 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
    });
    return fc.oneof(
      {
        weight: 3,
        arbitrary: fc.dictionary(fc.constantFrom("1", "2", "3"), node, { minKeys: 1, maxKeys: 3 }),
      },
      fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }),
    );
  }
  switch (schema.type) {
    case "string": {
      const pattern = schema.pattern ? new RegExp(schema.pattern) : undefined;
      const fitting = STRING_CANDIDATES.filter((s) => !pattern || pattern.test(s));
      const noise = fc.string({
        minLength: schema.minLength ?? 0,
        maxLength: Math.min(schema.maxLength ?? 12, 12),
      });
      return fitting.length > 0
        ? fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...fitting) }, noise)
        : noise;
    }
    case "integer":
    case "number": {
      const min = schema.minimum ?? -1000;
      const max = schema.maximum ?? 100_000;
      // Mostly in range, sometimes one step outside (the schema must catch those).
      const whole = fc.oneof(
        { weight: 60, arbitrary: fc.integer({ min: Math.ceil(min), max: Math.floor(max) }) },
        fc.constantFrom(Math.ceil(min) - 1, Math.floor(max) + 1),
      );
      const step = schema.multipleOf;
      const value = step ? whole.map((n) => Math.round(n / step) * step) : whole;
      return schema.type === "number" ? fc.oneof(value, fc.double({ min, max, noNaN: true })) : value;
    }
    case "boolean":
      return fc.boolean();
    case "array": {
      if (!schema.items || depth > 6) return fc.constant([]);
      return fc.array(arbitraryFor(schema.items, depth + 1), {
        minLength: schema.minItems ?? 0,
        maxLength: Math.min(schema.maxItems ?? 3, 3),
      });
    }
    case "object":
    default: {
      if (depth > 6) return fc.constant({});
      if (schema.properties) {
        const properties = Object.fromEntries(
          Object.entries(schema.properties).map(([name, child]) => [name, arbitraryFor(child, depth + 1)]),
        );
        const branches = (schema.oneOf ?? []).map((branch) => branch.required ?? []);
        if (branches.length === 0) return fc.record(properties, { requiredKeys: schema.required ?? [] });
        // oneOf of required-key sets (e.g. comfystream: url or sidecar): one branch's keys, none of the others'.
        return fc.constantFrom(...branches).chain((chosen) => {
          const excluded = new Set(branches.flat().filter((key) => !chosen.includes(key)));
          const kept = Object.fromEntries(Object.entries(properties).filter(([name]) => !excluded.has(name)));
          return fc.record(kept, { requiredKeys: [...(schema.required ?? []), ...chosen] });
        });
      }
      if (schema.additionalProperties) {
        return fc.dictionary(
          fc.constantFrom("a", "b", "nvidia.com/gpu", "cpu", "memory"),
          arbitraryFor(schema.additionalProperties, depth + 1),
          {
            maxKeys: 3,
          },
        );
      }
      return fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 });
    }
  }
}

/** Every property path of an object schema (nested objects walked, arrays and maps taken whole). */
export function propertyPaths(
  schema: OpenApiSchema,
  prefix: string[] = [],
): { path: string[]; schema: OpenApiSchema }[] {
  const out: { path: string[]; schema: OpenApiSchema }[] = [];
  for (const [name, child] of Object.entries(schema.properties ?? {})) {
    const path = [...prefix, name];
    out.push({ path, schema: child });
    if (child.properties && !child.oneOf) out.push(...propertyPaths(child, path));
  }
  return out;
}

/** `base` with a few properties replaced by values generated for their schema. */
export function mutatedObject(base: object, schema: OpenApiSchema, maxChanges = 4): fc.Arbitrary<unknown> {
  const paths = propertyPaths(schema);
  const change = fc
    .constantFrom(...paths)
    .chain(({ path, schema: child }) => arbitraryFor(child).map((value) => ({ path, value })));
  return fc.array(change, { minLength: 1, maxLength: maxChanges }).map((changes) => {
    const copy = structuredClone(base) as Record<string, unknown>;
    for (const { path, value } of changes) {
      let node = copy;
      for (const key of path.slice(0, -1)) {
        if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
        node = node[key] as Record<string, unknown>;
      }
      node[path.at(-1)!] = value;
    }
    return copy;
  });
}
