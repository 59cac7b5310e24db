// A tiny builder for Kubernetes structural OpenAPI v3 schemas. Each field is declared once, with its
// description, validation and default; the same declaration yields both the JSON schema written into
// the CRD and (through phantom types) the TypeScript type, so the two cannot drift apart.
//
// Only constructs that a Kubernetes 1.20 apiserver accepts in a structural schema are produced:
// every node has a type (or is explicitly "preserve unknown fields" / "int-or-string"), defaults sit
// inside `properties`, and `oneOf` branches carry nothing but `required` lists.

/** The subset of OpenAPI v3 that the builder emits (and that `structural.ts` understands). */
export interface OpenApiSchema {
  type?: "object" | "array" | "string" | "integer" | "number" | "boolean";
  description?: string;
  format?: string;
  default?: unknown;
  enum?: readonly unknown[];
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  multipleOf?: number;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  maxProperties?: number;
  properties?: Record<string, OpenApiSchema>;
  required?: string[];
  additionalProperties?: OpenApiSchema;
  items?: OpenApiSchema;
  oneOf?: OpenApiSchema[];
  "x-kubernetes-preserve-unknown-fields"?: true;
  "x-kubernetes-int-or-string"?: true;
  "x-kubernetes-list-type"?: "atomic" | "set" | "map";
  "x-kubernetes-list-map-keys"?: string[];
}

/**
 * How a property appears in its parent object: `required` (always there), `defaulted` (optional when
 * written, always there once the apiserver applied the schema default) or `optional`.
 */
export type Presence = "required" | "defaulted" | "optional";

/**
 * A schema node. `Stored` is the TypeScript type of the value as read back from the apiserver
 * (defaults applied); `Written` is the type a user may submit (defaulted fields may be left out).
 * Both only exist at the type level.
 */
export interface SchemaNode<Stored, Written = Stored, P extends Presence = Presence> {
  readonly schema: OpenApiSchema;
  readonly presence: P;
  readonly __stored?: Stored;
  readonly __written?: Written;
}

// `any` keeps the constraint covariant-friendly: nodes of every value type must fit.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyNode = SchemaNode<any, any, Presence>;

export type StoredOf<N extends AnyNode> = N extends SchemaNode<infer S, unknown, Presence> ? S : never;
export type WrittenOf<N extends AnyNode> = N extends SchemaNode<unknown, infer W, Presence> ? W : never;

type Simplify<T> = { [K in keyof T]: T[K] } & {};
type KeysWith<P extends Record<string, AnyNode>, Wanted extends Presence> = {
  [K in keyof P]: P[K]["presence"] extends Wanted ? K : never;
}[keyof P];

export type StoredObject<P extends Record<string, AnyNode>> = Simplify<
  { [K in KeysWith<P, "required" | "defaulted">]: StoredOf<P[K]> } & {
    [K in KeysWith<P, "optional">]?: StoredOf<P[K]>;
  }
>;
export type WrittenObject<P extends Record<string, AnyNode>> = Simplify<
  { [K in KeysWith<P, "required">]: WrittenOf<P[K]> } & {
    [K in KeysWith<P, "optional" | "defaulted">]?: WrittenOf<P[K]>;
  }
>;

/** Options every field accepts. `required` and `default` are mutually exclusive. */
interface FieldOptions<T> {
  description: string;
  required?: boolean;
  default?: T;
}

type PresenceOf<O> = O extends { default: unknown }
  ? "defaulted"
  : O extends { required: true }
    ? "required"
    : "optional";

function node<Stored, Written, O extends FieldOptions<unknown>>(
  options: O,
  schema: OpenApiSchema,
): SchemaNode<Stored, Written, PresenceOf<O>> {
  if (!options.description.trim()) throw new Error("every schema field needs a description");
  if (options.required && options.default !== undefined) {
    throw new Error(`field "${options.description}" cannot be both required and defaulted`);
  }
  const withDefault: OpenApiSchema =
    options.default === undefined ? schema : { ...schema, default: options.default };
  const presence = (
    options.default !== undefined ? "defaulted" : options.required ? "required" : "optional"
  ) as PresenceOf<O>;
  // kubectl explain (1.20) does not print defaults, so scalar defaults are stated in the description.
  const description =
    options.default === undefined || typeof options.default === "object"
      ? options.description
      : `${options.description} Default: ${options.default}.`;
  // Key order only matters for reading the YAML: type first, then the description.
  const { type, ...rest } = withDefault;
  return {
    schema: { ...(type === undefined ? {} : { type }), description, ...rest },
    presence,
  };
}

export interface StringOptions extends FieldOptions<string> {
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  /** An OpenAPI format the apiserver checks, e.g. `date-time`. */
  format?: "date-time";
}

export function string<const O extends StringOptions>(options: O) {
  const { pattern, minLength, maxLength, format } = options;
  return node<string, string, O>(options, {
    type: "string",
    ...(format === undefined ? {} : { format }),
    ...(pattern === undefined ? {} : { pattern }),
    ...(minLength === undefined ? {} : { minLength }),
    ...(maxLength === undefined ? {} : { maxLength }),
  });
}

/** A string restricted to `values`; the TypeScript type is the union of the values. */
export function stringEnum<const V extends string, const O extends FieldOptions<NoInfer<V>>>(
  values: readonly V[],
  options: O,
) {
  if (options.default !== undefined && !values.includes(options.default)) {
    throw new Error(`default "${options.default}" is not one of ${values.join(", ")}`);
  }
  return node<V, V, O>(options, { type: "string", enum: [...values] });
}

export interface NumberOptions extends FieldOptions<number> {
  minimum?: number;
  maximum?: number;
  multipleOf?: number;
  /** `int64` or `int32` for integers, `double` for numbers (informational, shown by kubectl explain). */
  format?: "int32" | "int64" | "double";
}

function numeric(type: "integer" | "number", options: NumberOptions): OpenApiSchema {
  const { minimum, maximum, multipleOf, format } = options;
  return {
    type,
    ...(format === undefined ? {} : { format }),
    ...(minimum === undefined ? {} : { minimum }),
    ...(maximum === undefined ? {} : { maximum }),
    ...(multipleOf === undefined ? {} : { multipleOf }),
  };
}

export function integer<const O extends NumberOptions>(options: O) {
  return node<number, number, O>(options, numeric("integer", options));
}

export function number<const O extends NumberOptions>(options: O) {
  return node<number, number, O>(options, numeric("number", options));
}

export function boolean<const O extends FieldOptions<boolean>>(options: O) {
  return node<boolean, boolean, O>(options, { type: "boolean" });
}

/** Kubernetes resource quantity (`500m`, `4Gi`, `1`): an int-or-string matching the quantity grammar. */
export const QUANTITY_PATTERN =
  "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$";

export function quantity<const O extends FieldOptions<string | number>>(options: O) {
  return node<string | number, string | number, O>(options, {
    "x-kubernetes-int-or-string": true,
    pattern: QUANTITY_PATTERN,
  });
}

/** A count or a percentage (`2`, `"25%"`), as Deployment's maxSurge: an int-or-string. */
export function intOrPercent<const O extends FieldOptions<string | number>>(options: O) {
  return node<string | number, string | number, O>(options, {
    "x-kubernetes-int-or-string": true,
    pattern: "^[0-9]+%?$",
  });
}

export interface ObjectOptions extends FieldOptions<Record<string, never>> {
  /** Exactly one of these properties must be set (a `oneOf` of `required` lists: structural-legal). */
  exactlyOneOf?: readonly string[];
}

export function object<const P extends Record<string, AnyNode>, const O extends ObjectOptions>(
  properties: P,
  options: O,
) {
  const required = Object.keys(properties).filter((key) => properties[key]!.presence === "required");
  const exactlyOneOf = options.exactlyOneOf ?? [];
  for (const key of exactlyOneOf) {
    if (!(key in properties)) throw new Error(`exactlyOneOf names unknown property "${key}"`);
    if (properties[key]!.presence !== "optional") {
      throw new Error(`exactlyOneOf property "${key}" must be optional on its own`);
    }
  }
  const schemaProperties = Object.fromEntries(Object.entries(properties).map(([key, n]) => [key, n.schema]));
  return node<StoredObject<P>, WrittenObject<P>, O>(options, {
    type: "object",
    properties: schemaProperties,
    ...(required.length > 0 ? { required } : {}),
    ...(exactlyOneOf.length > 0 ? { oneOf: exactlyOneOf.map((key) => ({ required: [key] })) } : {}),
  });
}

export interface ArrayOptions extends FieldOptions<never[]> {
  minItems?: number;
  maxItems?: number;
  /** Makes the list a map keyed by these item fields, so server-side apply merges entries by key. */
  listMapKeys?: readonly string[];
}

export function array<const I extends AnyNode, const O extends ArrayOptions>(items: I, options: O) {
  const { minItems, maxItems, listMapKeys } = options;
  return node<StoredOf<I>[], WrittenOf<I>[], O>(options, {
    type: "array",
    ...(minItems === undefined ? {} : { minItems }),
    ...(maxItems === undefined ? {} : { maxItems }),
    ...(listMapKeys === undefined
      ? {}
      : { "x-kubernetes-list-type": "map" as const, "x-kubernetes-list-map-keys": [...listMapKeys] }),
    items: items.schema,
  });
}

/** An object with arbitrary keys whose values all follow `values` (e.g. labels, resource lists). */
export function map<const V extends AnyNode, const O extends FieldOptions<Record<string, never>>>(
  values: V,
  options: O,
) {
  return node<Record<string, StoredOf<V>>, Record<string, WrittenOf<V>>, O>(options, {
    type: "object",
    additionalProperties: values.schema,
  });
}

/**
 * An object the apiserver stores verbatim (`x-kubernetes-preserve-unknown-fields`), for payloads
 * owned by someone else: ComfyUI workflows, or core/v1 structures passed through to the pod unchanged.
 * `T` is the TypeScript shape callers can rely on.
 */
export function preserved<T extends object>() {
  return <const O extends FieldOptions<never>>(options: O) =>
    node<T, T, O>(options, { type: "object", "x-kubernetes-preserve-unknown-fields": true });
}
