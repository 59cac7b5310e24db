/**
 * A light version of ComfyStream's prompt checks (comfystream-webrtc spec §1.2, `convert_prompt`):
 * each workflow is a ComfyUI API-format object `{nodeId: {class_type, inputs}}` with at least one
 * input and one output node, at most one PrimaryInputLoadImage, at most two other inputs when there
 * is no primary one, and at most three outputs. No real node semantics.
 */

const PRIMARY_INPUT = "PrimaryInputLoadImage";
const INPUT_TYPES = new Set(["LoadTensor", PRIMARY_INPUT, "LoadImage", "LoadAudioTensor"]);
const OUTPUT_TYPES = new Set([
  "SaveTensor",
  "PreviewImage",
  "SaveImage",
  "SaveAudioTensor",
  "SaveTextTensor",
]);

/** A node of this class makes the stand-in fail the workflow on purpose (tests of the error paths). */
export const FAIL_MARKER_CLASS = "StandinFailPrompt";

export type Workflow = Record<
  string,
  { class_type: string; inputs: Record<string, unknown>; _meta?: unknown }
>;

/** The smallest valid workflow: LoadTensor → SaveTensor (ComfyStream's tensor-utils example). */
export const PASSTHROUGH_WORKFLOW: Workflow = {
  "1": { class_type: "SaveTensor", inputs: { images: ["2", 0] } },
  "2": { class_type: "LoadTensor", inputs: {} },
};

/** Throws an Error saying what is wrong; returns the workflows as a list otherwise. */
export function validatePrompts(prompts: unknown): Workflow[] {
  const list = Array.isArray(prompts) ? prompts : [prompts];
  list.forEach((workflow, index) => validateWorkflow(workflow, index));
  return list as Workflow[];
}

function validateWorkflow(workflow: unknown, index: number): void {
  const where = `prompt ${index}`;
  if (typeof workflow !== "object" || workflow === null || Array.isArray(workflow)) {
    throw new Error(`${where}: a workflow must be an object of nodes`);
  }
  let primaryInputs = 0;
  let otherInputs = 0;
  let outputs = 0;
  for (const [nodeId, node] of Object.entries(workflow)) {
    if (typeof node !== "object" || node === null)
      throw new Error(`${where}: node ${nodeId} is not an object`);
    const { class_type: classType, inputs } = node as { class_type?: unknown; inputs?: unknown };
    if (typeof classType !== "string") throw new Error(`${where}: node ${nodeId} has no class_type`);
    if (typeof inputs !== "object" || inputs === null)
      throw new Error(`${where}: node ${nodeId} has no inputs`);
    if (classType === FAIL_MARKER_CLASS) throw new Error(`${where}: node ${nodeId} is ${FAIL_MARKER_CLASS}`);
    if (classType === PRIMARY_INPUT) primaryInputs++;
    else if (INPUT_TYPES.has(classType)) otherInputs++;
    if (OUTPUT_TYPES.has(classType)) outputs++;
  }
  if (primaryInputs > 1) throw new Error(`${where}: at most one ${PRIMARY_INPUT} node`);
  if (primaryInputs === 0 && otherInputs > 2) throw new Error(`${where}: at most two input nodes`);
  if (primaryInputs + otherInputs === 0) throw new Error(`${where}: no input node`);
  if (outputs === 0) throw new Error(`${where}: no output node`);
  if (outputs > 3) throw new Error(`${where}: at most three output nodes`);
}

/** `nodes_info` payload: per prompt index, per node id, class_type and inputs typed "unknown". */
export function nodesInfo(prompts: readonly Workflow[]): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  prompts.forEach((workflow, index) => {
    const nodes: Record<string, unknown> = {};
    for (const [nodeId, node] of Object.entries(workflow)) {
      const inputs: Record<string, unknown> = {};
      for (const [name, value] of Object.entries(node.inputs)) {
        inputs[name] = { value, type: "unknown", min: null, max: null, widget: null };
      }
      nodes[nodeId] = { class_type: node.class_type, inputs };
    }
    result[String(index)] = nodes;
  });
  return result;
}
