// Keeps ComfyStream running the RelaySession's spec.prompts: each new generation whose prompts differ
// is sent as update_prompts (no restart), and `appliedGeneration` tells which generation's prompts
// ComfyStream runs now. The session announces what ComfyStream accepted ("prompts-applied": the
// offer's prompts once connected, or an accepted update), and that is matched to a generation by
// content, so a generation counts as applied only once ComfyStream has it.

import { silentLogger, type Logger } from "../common/log.js";
import type { ComfyWorkflow } from "../../../crds/src/index.js";
import type { RelaySession } from "../session/relay-session.js";
import { promptsFromSpec } from "./config-from-resource.js";

export interface PromptsSyncEvents {
  /** appliedGeneration changed. */
  onApplied?: (generation: number) => void;
  /** ComfyStream refused a generation's prompts (it keeps running the previous ones). */
  onRejected?: (generation: number, error: string) => void;
}

/** Generations remembered for matching what ComfyStream applied: the newest few suffice. */
const REMEMBERED_GENERATIONS = 8;
const MAX_ATTEMPTS_PER_GENERATION = 3;
const RETRY_DELAY_MS = 2000;

export class SpecPromptsSync {
  private readonly log: Logger;
  /** Prompts (as JSON) → the newest generation that asked for them. */
  private readonly generationByPrompts = new Map<string, number>();
  private desired: { generation: number; prompts: unknown[]; json: string };
  private applied: number | undefined;
  private appliedJson: string | undefined;
  private sending = false;
  /** Sends of the current desired generation so far (errors other than a refusal are retried). */
  private attempts = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly onPromptsApplied = (prompts: unknown[]) => this.promptsApplied(prompts);

  /** `initialGeneration`: metadata.generation of the spec the session was configured from. */
  constructor(
    private readonly session: RelaySession,
    initialGeneration: number,
    initialPrompts: ComfyWorkflow[] | undefined,
    private readonly events: PromptsSyncEvents = {},
    logger: Logger = silentLogger,
  ) {
    this.log = logger.child({ component: "spec-prompts" });
    const prompts = promptsFromSpec(initialPrompts);
    this.desired = { generation: initialGeneration, prompts, json: JSON.stringify(prompts) };
    this.remember(this.desired.json, initialGeneration);
    session.on("prompts-applied", this.onPromptsApplied);
  }

  /** metadata.generation whose spec.prompts ComfyStream runs now; undefined before it has any. */
  get appliedGeneration(): number | undefined {
    return this.applied;
  }

  /** A newer version of the resource: sends its prompts when they differ from what is wanted now. */
  observe(generation: number | undefined, specPrompts: ComfyWorkflow[] | undefined): void {
    if (this.closed || generation === undefined || generation <= this.desired.generation) return;
    let prompts: unknown[];
    try {
      prompts = promptsFromSpec(specPrompts);
    } catch (err) {
      this.events.onRejected?.(generation, (err as Error).message);
      return;
    }
    const json = JSON.stringify(prompts);
    const changed = json !== this.desired.json;
    this.desired = { generation, prompts, json };
    this.remember(json, generation);
    if (!changed) {
      // Other spec fields changed (the operator replaces the pod for those): same prompts, so if
      // ComfyStream runs them, it runs this generation's prompts too.
      if (this.appliedJson === json) this.setApplied(generation);
      return;
    }
    this.log.info({ generation }, "spec.prompts changed; updating ComfyStream");
    this.attempts = 0;
    void this.send();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.session.off("prompts-applied", this.onPromptsApplied);
  }

  /** One update at a time, always the newest wanted prompts; a newer edit during a send follows it. */
  private async send(): Promise<void> {
    if (this.sending || this.closed) return;
    this.sending = true;
    clearTimeout(this.retryTimer);
    try {
      for (;;) {
        const target = this.desired;
        this.attempts++;
        const result = await this.session.updatePrompts(target.prompts);
        if (this.closed) return;
        if (this.desired !== target) {
          this.attempts = 0;
          continue; // superseded while in flight: send the newer ones
        }
        if (!result.ok) {
          const rejected = result.reply !== undefined; // ComfyStream answered success: false
          const why = (result.reply as { error?: unknown } | undefined)?.error;
          const error = [result.error ?? "prompt update failed", typeof why === "string" ? why : undefined]
            .filter(Boolean)
            .join(": ");
          if (rejected || this.attempts >= MAX_ATTEMPTS_PER_GENERATION) {
            this.log.warn({ generation: target.generation, error }, "spec.prompts not applied");
            this.events.onRejected?.(target.generation, error);
          } else {
            this.log.warn({ generation: target.generation, error }, "prompt update failed; retrying");
            this.retryTimer = setTimeout(() => void this.send(), RETRY_DELAY_MS);
          }
        }
        // Success, or queued until ComfyStream is connected: "prompts-applied" reports the outcome.
        return;
      }
    } finally {
      this.sending = false;
    }
  }

  private promptsApplied(prompts: unknown[]): void {
    const json = JSON.stringify(prompts);
    this.appliedJson = json;
    const generation = this.generationByPrompts.get(json);
    if (generation !== undefined) this.setApplied(generation);
  }

  private setApplied(generation: number): void {
    if (this.applied === generation) return;
    this.applied = generation;
    this.log.info({ generation }, "ComfyStream runs the prompts of this generation");
    this.events.onApplied?.(generation);
  }

  private remember(json: string, generation: number): void {
    this.generationByPrompts.delete(json);
    this.generationByPrompts.set(json, generation);
    while (this.generationByPrompts.size > REMEMBERED_GENERATIONS) {
      const oldest = this.generationByPrompts.keys().next().value as string;
      this.generationByPrompts.delete(oldest);
    }
  }
}
