/**
 * ComfyStream `control` data channel vocabulary (comfystream-webrtc spec §1.3): JSON text messages
 * `{type, ...}`; each request type has one reply type, sent on the same channel. Unknown types get
 * no reply at all, so a request must know its reply type up front.
 */
export const CONTROL_CHANNEL_LABEL = "control";

export const CONTROL_REPLY_TYPES: Readonly<Record<string, string>> = {
  get_nodes: "nodes_info",
  update_prompts: "prompts_updated",
  update_resolution: "resolution_updated",
  pause_prompts: "prompts_paused",
  resume_prompts: "prompts_resumed",
  stop_prompts: "prompts_stopped",
};

/**
 * ComfyStream takes `prompts` as a list of ComfyUI API-format workflows (a single workflow object is
 * accepted by `/offer`, but `update_prompts` needs a list of the same length as the loaded one).
 * null/undefined becomes `[]`, which `/offer` treats as noop (passthrough) mode.
 */
export function promptsAsList(prompts: unknown): unknown[] {
  if (prompts === undefined || prompts === null) return [];
  return Array.isArray(prompts) ? prompts : [prompts];
}

/** Longest control-channel message read; a bigger one is ignored unparsed (replies are small). */
export const MAX_CONTROL_MESSAGE_BYTES = 1024 * 1024;

/**
 * A control-channel message as a JSON object, or the reason it is ignored (not text JSON, not an
 * object, too large). Never throws: the peer's bytes are outside input.
 */
export function parseControlMessage(
  data: string | Uint8Array,
): { ok: true; message: Record<string, unknown> } | { ok: false; reason: string } {
  const size = typeof data === "string" ? Buffer.byteLength(data, "utf8") : data.length;
  if (size > MAX_CONTROL_MESSAGE_BYTES) {
    return { ok: false, reason: `larger than ${MAX_CONTROL_MESSAGE_BYTES} bytes (${size})` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof data === "string" ? data : Buffer.from(data).toString("utf8"));
  } catch {
    return { ok: false, reason: "not JSON" };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return { ok: false, reason: "not a JSON object" };
  }
  return { ok: true, message: parsed as Record<string, unknown> };
}
