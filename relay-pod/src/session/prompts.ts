/**
 * Prompt updates arrive in several shapes (trickle-protocol.md §12.3): ai-runner's
 * `{"prompt": workflow | "json string"}`, ComfyStream BYOC's `{"prompts": workflow | "json string" |
 * [workflow, ...]}`, and from the REST API or a RelaySession's spec.prompts. ComfyStream's /offer and
 * `update_prompts` take a list of ComfyUI API-format workflows (comfystream-webrtc.md §5).
 */
export class PromptShapeError extends Error {}

/**
 * ComfyUI API-format workflows nest about five levels deep (workflow → node → inputs → link array);
 * far deeper JSON is hostile, and JSON.stringify (to send it to ComfyStream) would overflow the stack.
 */
export const MAX_PROMPT_DEPTH = 32;
/** The serialised prompts: the control channel's message cap (PG caps control/event segments at 1 MiB). */
export const MAX_PROMPTS_JSON_BYTES = 1024 * 1024;

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
  const depth = nestingDepth(list, MAX_PROMPT_DEPTH + 1);
  if (depth > MAX_PROMPT_DEPTH) {
    throw new PromptShapeError(
      `prompts nest deeper than ${MAX_PROMPT_DEPTH} levels (not a ComfyUI workflow)`,
    );
  }
  const bytes = Buffer.byteLength(JSON.stringify(list), "utf8");
  if (bytes > MAX_PROMPTS_JSON_BYTES) {
    throw new PromptShapeError(
      `prompts are ${bytes} bytes as JSON, more than the limit of ${MAX_PROMPTS_JSON_BYTES} bytes`,
    );
  }
  return list;
}

/** Depth of nested arrays/objects, counted without recursion and given up once past `stopAt`. */
function nestingDepth(root: unknown, stopAt: number): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[root, 1]];
  while (stack.length > 0) {
    const [value, depth] = stack.pop()!;
    if (typeof value !== "object" || value === null) continue;
    deepest = Math.max(deepest, depth);
    if (deepest >= stopAt) return deepest;
    for (const child of Object.values(value)) {
      if (typeof child === "object" && child !== null) stack.push([child, depth + 1]);
    }
  }
  return deepest;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
