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
