/**
 * ComfyStream's smallest valid workflow (comfystream-webrtc.md §1.2): LoadTensor → SaveTensor, which
 * returns frames unchanged. Used when a caller gives no prompts of its own (the demo, `run` without
 * --prompts).
 */
export const PASSTHROUGH_WORKFLOW = {
  "1": { inputs: { images: ["2", 0] }, class_type: "SaveTensor", _meta: { title: "SaveTensor" } },
  "2": { inputs: {}, class_type: "LoadTensor", _meta: { title: "LoadTensor" } },
} as const;
