/**
 * Installation-wide relay pod defaults from the operator's environment. The Helm chart sets these
 * from its `relay.*` values; each is optional and a RelaySession's own `spec.pod` fields win.
 *
 *   RELAY_DEFAULT_RESOURCES          JSON core/v1 ResourceRequirements of the relay container
 *   RELAY_DEFAULT_NODE_SELECTOR      JSON object
 *   RELAY_DEFAULT_TOLERATIONS        JSON array of core/v1 Tolerations
 *   RELAY_DEFAULT_RUNTIME_CLASS_NAME string
 *   RELAY_DEFAULT_GPU_RESOURCE_NAME  string (default nvidia.com/gpu), see RelayPodDefaults
 *   RELAY_NODE_LOST_TOLERATION_SECONDS  integer ≥ 0 (default 30), see node-loss.ts
 */
import type { RelayPodDefaults } from "./desired-pod.js";

export class RelayDefaultsError extends Error {}

export function relayDefaultsFromEnv(env: NodeJS.ProcessEnv = process.env): RelayPodDefaults {
  const defaults: RelayPodDefaults = {};
  const json = (name: string, expect: "object" | "array"): unknown => {
    const text = env[name]?.trim();
    if (!text) return undefined;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new RelayDefaultsError(`${name} is not valid JSON: ${(err as Error).message}`);
    }
    const isArray = Array.isArray(value);
    const ok = expect === "array" ? isArray : typeof value === "object" && value !== null && !isArray;
    if (!ok) throw new RelayDefaultsError(`${name} must be a JSON ${expect}, got ${text.slice(0, 80)}`);
    return value;
  };
  const resources = json("RELAY_DEFAULT_RESOURCES", "object");
  if (resources) defaults.resources = resources as RelayPodDefaults["resources"];
  const nodeSelector = json("RELAY_DEFAULT_NODE_SELECTOR", "object");
  if (nodeSelector) {
    for (const [key, value] of Object.entries(nodeSelector)) {
      if (typeof value !== "string") {
        throw new RelayDefaultsError(`RELAY_DEFAULT_NODE_SELECTOR: the value of ${key} must be a string`);
      }
    }
    defaults.nodeSelector = nodeSelector as Record<string, string>;
  }
  const tolerations = json("RELAY_DEFAULT_TOLERATIONS", "array");
  if (tolerations) defaults.tolerations = tolerations as RelayPodDefaults["tolerations"];
  const runtimeClassName = env.RELAY_DEFAULT_RUNTIME_CLASS_NAME?.trim();
  if (runtimeClassName) defaults.runtimeClassName = runtimeClassName;
  const gpuResourceName = env.RELAY_DEFAULT_GPU_RESOURCE_NAME?.trim();
  if (gpuResourceName) defaults.gpuResourceName = gpuResourceName;
  const nodeLost = env.RELAY_NODE_LOST_TOLERATION_SECONDS?.trim();
  if (nodeLost) {
    if (!/^\d+$/.test(nodeLost) || !Number.isSafeInteger(Number(nodeLost))) {
      throw new RelayDefaultsError(
        `RELAY_NODE_LOST_TOLERATION_SECONDS must be a whole number of seconds ≥ 0, got ${nodeLost.slice(0, 40)}`,
      );
    }
    defaults.nodeLostTolerationSeconds = Number(nodeLost);
  }
  return defaults;
}
