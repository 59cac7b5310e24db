// The RelaySession API as the operator and the relay pod import it.

export * from "./names.js";
export * from "./relay-session.js";
export * from "./relay-pool.js";
export { INPUT_STALL_LIMITS, INPUT_STALL_POLICIES, type InputStallPolicyName } from "./input-stall.js";
export {
  buildRelaySessionCrd,
  buildRelayPoolCrd,
  renderRelaySessionCrdYaml,
  renderRelayPoolCrdYaml,
  generatedCrdFiles,
  CRD_YAML_PATH,
  POOL_CRD_YAML_PATH,
  RELAY_SESSION_PRINTER_COLUMNS,
  RELAY_POOL_PRINTER_COLUMNS,
} from "./crd.js";
export type { PrinterColumn } from "./crd.js";
export { defaultOutputUrl } from "./output-url.js";
export { validateRelaySessionSpec, parseQuantity } from "./validate-spec.js";
export { validateAgainstSchema, applySchemaDefaults } from "./structural.js";
export type { SchemaProblem, ValidationOptions } from "./structural.js";
export type { OpenApiSchema } from "./schema-builder.js";
