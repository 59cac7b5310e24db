/**
 * The stand-in's answers on the `control` data channel (comfystream-webrtc spec §1.3), apart from the
 * server so the message contract reads in one place: get_nodes, update_prompts (same count as the
 * current prompts, like ComfyStream main), update_resolution, pause/resume/stop_prompts.
 */
import type { Logger } from "pino";
import { nodesInfo, validatePrompts, type Workflow } from "./workflow.js";

/** The one global pipeline every peer shares, as in the real server. */
export interface PipelineState {
  prompts: Workflow[];
  running: boolean;
  paused: boolean;
  width: number;
  height: number;
}

/** The counters the control channel updates (the stand-in's /stats shows them). */
export interface ControlCounters {
  promptUpdates: number;
  promptUpdatesFailed: number;
  lastPromptsReceived: unknown;
  controlMessages: Record<string, number>;
  lastControlMessage: unknown;
}

export interface ControlContext {
  pipeline: PipelineState;
  counters: ControlCounters;
  /** Refuse every prompt update (--fail-prompts). */
  failPrompts: boolean;
  logger: Logger;
}

/** One control message → its reply (spec §1.3), or undefined: no type, unknown type, bad JSON. */
export function answerControlMessage(
  text: string,
  context: ControlContext,
): Record<string, unknown> | undefined {
  const { pipeline, counters, logger } = context;
  let message: { type?: unknown; [key: string]: unknown };
  try {
    message = JSON.parse(text) as typeof message;
  } catch {
    logger.warn({ text: text.slice(0, 200) }, "control message is not JSON; ignored");
    return undefined;
  }
  const type = typeof message?.type === "string" ? message.type : undefined;
  counters.lastControlMessage = message;
  if (type) counters.controlMessages[type] = (counters.controlMessages[type] ?? 0) + 1;
  switch (type) {
    case "get_nodes":
      return { type: "nodes_info", nodes: nodesInfo(pipeline.prompts) };
    case "update_prompts": {
      counters.promptUpdates++;
      counters.lastPromptsReceived = message.prompts;
      try {
        if (context.failPrompts) throw new Error("prompts rejected (--fail-prompts)");
        if (!Array.isArray(message.prompts)) throw new Error("prompts must be a list of workflows");
        const list = validatePrompts(message.prompts);
        if (list.length !== pipeline.prompts.length) {
          throw new Error(
            `Number of updated prompts (${list.length}) must match current prompts (${pipeline.prompts.length})`,
          );
        }
        pipeline.prompts = list;
        return { type: "prompts_updated", success: true };
      } catch (error) {
        counters.promptUpdatesFailed++;
        return {
          type: "prompts_updated",
          success: false,
          error: error instanceof Error ? error.message : String(error),
        };
      }
    }
    case "update_resolution": {
      const { width, height } = message;
      if (typeof width !== "number" || typeof height !== "number") {
        return { type: "resolution_updated", success: false, error: "width and height are required" };
      }
      pipeline.width = width; // like ComfyStream main: only the next warm-up size
      pipeline.height = height;
      return { type: "resolution_updated", success: true };
    }
    case "pause_prompts":
      pipeline.paused = true;
      return { type: "prompts_paused", success: true };
    case "resume_prompts":
      pipeline.paused = false;
      return { type: "prompts_resumed", success: true };
    case "stop_prompts":
      pipeline.running = false;
      return { type: "prompts_stopped", success: true };
    default:
      logger.warn({ type }, "control message without a known type; ignored");
      return undefined;
  }
}
