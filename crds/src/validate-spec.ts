// Cross-field rules for a RelaySession spec that the CRD schema cannot express (Kubernetes 1.20 has
// no CEL). The operator runs them before creating a pod and reports failures in status (phase
// Failed, Ready=False, reason InvalidSpec); the standalone service returns them as a 400.

import { INPUT_STALL_LIMITS } from "./input-stall.js";
import { defaultOutputUrl } from "./output-url.js";
import type { RelaySessionSpecInput, ResourceRequirements } from "./relay-session.js";

const BINARY_SUFFIXES: Record<string, number> = {
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};
const DECIMAL_SUFFIXES: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
};

/**
 * The numeric value of a Kubernetes quantity (`500m` → 0.5, `4Gi` → 4294967296, `1e3` → 1000), or
 * undefined if it is not one. Floating point: good for comparisons, not for exact arithmetic.
 */
export function parseQuantity(quantity: string | number): number | undefined {
  if (typeof quantity === "number") return Number.isFinite(quantity) ? quantity : undefined;
  const match =
    /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([KMGTPE]i)|([eE][+-]?(?:\d+(?:\.\d*)?|\.\d+))|([numkMGTPE]?))$/.exec(
      quantity,
    );
  if (!match) return undefined;
  const [, digits, binary, exponent, decimal] = match;
  const base = Number(digits);
  if (binary) return base * BINARY_SUFFIXES[binary]!;
  if (exponent) return base * 10 ** Number(exponent.slice(1));
  return base * DECIMAL_SUFFIXES[decimal ?? ""]!;
}

/** Native resources live in the kubernetes.io domain or have no domain; everything else is extended. */
function isExtendedResource(name: string): boolean {
  if (!name.includes("/")) return false;
  const domain = name.slice(0, name.indexOf("/"));
  return domain !== "kubernetes.io" && !domain.endsWith(".kubernetes.io");
}

function checkResources(resources: ResourceRequirements | undefined, path: string, problems: string[]): void {
  if (!resources) return;
  const requests = resources.requests ?? {};
  const limits = resources.limits ?? {};
  for (const [name, raw] of Object.entries({ ...requests, ...limits })) {
    if (parseQuantity(raw) === undefined)
      problems.push(`${path}: ${name} quantity ${JSON.stringify(raw)} is not valid`);
  }
  for (const [name, raw] of Object.entries(limits)) {
    const limit = parseQuantity(raw);
    if (isExtendedResource(name) && limit !== undefined && !Number.isInteger(limit)) {
      problems.push(`${path}.limits: ${name} must be a whole number, got ${raw}`);
    }
  }
  for (const [name, raw] of Object.entries(requests)) {
    const request = parseQuantity(raw);
    const limitRaw = limits[name];
    const limit = limitRaw === undefined ? undefined : parseQuantity(limitRaw);
    if (isExtendedResource(name)) {
      if (limitRaw === undefined) {
        problems.push(
          `${path}: ${name} is an extended resource, so it must be set in limits (requests alone are not allowed)`,
        );
      } else if (request !== limit) {
        problems.push(`${path}: ${name} request (${raw}) must equal its limit (${limitRaw})`);
      }
    } else if (request !== undefined && limit !== undefined && request > limit) {
      problems.push(`${path}: ${name} request (${raw}) exceeds its limit (${limitRaw})`);
    }
  }
}

function checkTrickleUrls(spec: RelaySessionSpecInput, problems: string[]): void {
  const channels: [string, string | undefined][] = [
    ["inputUrl", spec.trickle?.inputUrl],
    ["outputUrl", spec.trickle?.outputUrl],
    ["controlUrl", spec.trickle?.controlUrl],
    ["eventsUrl", spec.trickle?.eventsUrl],
  ];
  const input = spec.trickle?.inputUrl;
  if (input !== undefined && spec.trickle?.outputUrl === undefined) {
    try {
      channels[1] = ["outputUrl (default)", defaultOutputUrl(input)];
    } catch (error) {
      problems.push(`spec.trickle.outputUrl: not set, and ${(error as Error).message}`);
    }
  }
  const seen = new Map<string, string>();
  for (const [name, url] of channels) {
    if (url === undefined) continue;
    const earlier = seen.get(url);
    if (earlier)
      problems.push(
        `spec.trickle.${name} is the same channel as ${earlier} (${url}); each channel needs its own URL`,
      );
    else seen.set(url, name);
  }
}

/** Light version of ComfyStream's prompt check: each workflow maps node ids to `{class_type, inputs}`. */
function checkPrompts(spec: RelaySessionSpecInput, problems: string[]): void {
  (spec.prompts ?? []).forEach((workflow, index) => {
    const nodes = Object.entries(workflow);
    if (nodes.length === 0) problems.push(`spec.prompts[${index}]: workflow has no nodes`);
    for (const [id, node] of nodes) {
      const where = `spec.prompts[${index}]["${id}"]`;
      if (typeof node !== "object" || node === null || Array.isArray(node)) {
        problems.push(
          `${where}: must be a node object {class_type, inputs} (is this an API-format workflow?)`,
        );
        continue;
      }
      const { class_type: classType, inputs } = node as { class_type?: unknown; inputs?: unknown };
      if (typeof classType !== "string" || classType === "")
        problems.push(`${where}: class_type must be a non-empty string`);
      if (typeof inputs !== "object" || inputs === null || Array.isArray(inputs))
        problems.push(`${where}: inputs must be an object`);
    }
  });
}

/**
 * Human-readable problems with `spec` that the schema cannot catch; an empty list means the spec is
 * consistent. Assumes the spec already passed schema validation (it does not repeat those checks,
 * except the comfystream one-of, which is cheap and keeps non-Kubernetes callers safe).
 */
export function validateRelaySessionSpec(spec: RelaySessionSpecInput): string[] {
  const problems: string[] = [];

  if ((spec.comfystream === undefined) === (spec.poolRef === undefined)) {
    problems.push(
      spec.poolRef
        ? "spec: set either comfystream or poolRef (the pool's template gives ComfyStream), not both"
        : "spec: set comfystream (url or sidecar) or poolRef (a RelayPool of warm pods)",
    );
  }
  const comfystream = spec.comfystream ?? {};
  const hasUrl = comfystream.url !== undefined;
  const hasSidecar = comfystream.sidecar !== undefined;
  if (spec.comfystream !== undefined && hasUrl === hasSidecar) {
    problems.push(
      hasUrl
        ? "spec.comfystream: set either url (an existing server) or sidecar (run it in the session pod), not both"
        : "spec.comfystream: set url (an existing server) or sidecar (run it in the session pod)",
    );
  }

  checkTrickleUrls(spec, problems);
  checkPrompts(spec, problems);
  checkResources(spec.pod?.resources, "spec.pod.resources", problems);
  checkResources(comfystream.sidecar?.resources, "spec.comfystream.sidecar.resources", problems);

  const envNames = new Set<string>();
  for (const variable of comfystream.sidecar?.env ?? []) {
    if (envNames.has(variable.name))
      problems.push(`spec.comfystream.sidecar.env: ${variable.name} is set twice`);
    envNames.add(variable.name);
    if (variable.value !== undefined && variable.valueFrom !== undefined) {
      problems.push(`spec.comfystream.sidecar.env: ${variable.name} sets both value and valueFrom`);
    }
  }

  (spec.pod?.tolerations ?? []).forEach((toleration, index) => {
    const where = `spec.pod.tolerations[${index}]`;
    if (toleration.operator === "Exists" && toleration.value)
      problems.push(`${where}: value must be empty when operator is Exists`);
    if (toleration.operator !== "Exists" && !toleration.key)
      problems.push(`${where}: key is required unless operator is Exists`);
    if (toleration.tolerationSeconds !== undefined && toleration.effect !== "NoExecute") {
      problems.push(`${where}: tolerationSeconds only applies to effect NoExecute`);
    }
  });

  const { maxDurationSeconds, startupTimeoutSeconds } = spec.lifetime ?? {};
  if (
    maxDurationSeconds !== undefined &&
    startupTimeoutSeconds !== undefined &&
    maxDurationSeconds <= startupTimeoutSeconds
  ) {
    problems.push(
      `spec.lifetime.maxDurationSeconds (${maxDurationSeconds}) must be longer than startupTimeoutSeconds (${startupTimeoutSeconds})`,
    );
  }

  // With policy wait, endAfterSeconds (its schema default included) is not used.
  const stall = spec.inputStall;
  const statusAfter = stall?.statusAfterSeconds ?? INPUT_STALL_LIMITS.statusAfter.default;
  const endAfter = stall?.endAfterSeconds ?? INPUT_STALL_LIMITS.endAfter.default;
  if (stall?.policy !== "wait" && endAfter < statusAfter) {
    problems.push(
      `spec.inputStall.endAfterSeconds (${endAfter}) must be at least statusAfterSeconds (${statusAfter}) with policy end`,
    );
  }
  return problems;
}
