/**
 * Prompt updates arrive in several shapes (trickle-protocol.md §12.3): ai-runner's
 * `{"prompt": workflow | "json string"}`, ComfyStream BYOC's `{"prompts": workflow | "json string" |
 * [workflow, ...]}`, and from the REST API or a RelaySession's spec.prompts. ComfyStream's /offer and
 * `update_prompts` take a list of ComfyUI API-format workflows (comfystream-webrtc.md §5).
 */
export class PromptShapeError extends Error {}

/** The prompts carried by a control message, or undefined when it carries none (e.g. only width). */
export function promptsFromControlMessage(message: unknown): unknown[] | undefined {
  if (!isObject(message)) throw new PromptShapeError("a control message must be a JSON object");
  if ("prompts" in message) return normalisePrompts(message.prompts);
  if ("prompt" in message) return normalisePrompts(message.prompt);
  return undefined;
}

/** Turns any accepted prompt shape into ComfyStream's list of workflow objects. */
export function normalisePrompts(value: unknown): unknown[] {
  let parsed = value;
  if (typeof parsed === "string") {
    try {
      parsed = JSON.parse(parsed);
    } catch {
      throw new PromptShapeError("prompts given as a string must be JSON (a ComfyUI API-format workflow)");
    }
  }
  const list = Array.isArray(parsed) ? parsed : [parsed];
  if (list.length === 0) throw new PromptShapeError("prompts must contain at least one workflow");
  for (const workflow of list) {
    if (!isObject(workflow)) {
      throw new PromptShapeError("each prompt must be a ComfyUI API-format workflow object");
    }
  }
  return list;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
