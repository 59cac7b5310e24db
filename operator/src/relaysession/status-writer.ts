/**
 * Writes the operator-owned part of a RelaySession's status. Separate from the decisions that
 * compute the status because the write has rules of its own: only the operator's fields, a merge
 * patch on /status that never carries `relay` (the relay pod's report), the cached resourceVersion
 * as an optimistic lock, nothing when nothing changed, and Events when a live phase is entered.
 */
import { PatchStrategy, setHeaderOptions, type CustomObjectsApi } from "@kubernetes/client-node";
import type { Logger } from "pino";
import {
  OPERATOR_FIELD_MANAGER,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelaySession,
} from "../../../crds/src/index.js";
import { canonicalJson } from "../kube/canonical-json.js";
import type { BackgroundWrites } from "../kube/write-priority.js";
import { apiCode, Retry } from "./api-errors.js";
import type { EventSink } from "./events.js";
import { operatorOwnedStatus, type OperatorStatus } from "./status.js";

const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

/** The status fields the operator owns; unset ones are deleted (null) in the merge patch. */
const OPERATOR_STATUS_FIELDS = [
  "phase",
  "conditions",
  "observedGeneration",
  "podName",
  "startTime",
  "completionTime",
  "restarts",
  "allocation",
] as const satisfies ReadonlyArray<keyof OperatorStatus>;

export type WriteResult = "written" | "unchanged";

export class StatusWriter {
  private readonly customObjects: CustomObjectsApi;
  private readonly events: EventSink | undefined;
  private readonly background: BackgroundWrites | undefined;

  /**
   * `background`: a pooled session's status waits while warm pod claims are in flight (its
   * allocation is the claim; the status reporting it can follow); other sessions' are written at once.
   */
  constructor(customObjects: CustomObjectsApi, events: EventSink | undefined, background?: BackgroundWrites) {
    this.customObjects = customObjects;
    this.events = events;
    this.background = background;
  }

  /**
   * Merge-patches the operator-owned status fields through /status when they differ from the
   * cached ones. `relay` is never in the body (merge patch would replace the pod's report), and the
   * cached resourceVersion is, so a write based on a stale session is refused (409 → Retry).
   */
  async write(session: RelaySession, status: OperatorStatus, log: Logger): Promise<WriteResult> {
    const previous = operatorOwnedStatus(session);
    const pick = (source: Partial<OperatorStatus>) =>
      Object.fromEntries(OPERATOR_STATUS_FIELDS.map((field) => [field, source[field] ?? null]));
    const desired = pick(status);
    if (canonicalJson(pick(previous)) === canonicalJson(desired)) return "unchanged";
    const patch = () =>
      this.customObjects.patchNamespacedCustomObjectStatus(
        {
          group: RELAY_SESSION_GROUP,
          version: RELAY_SESSION_VERSION,
          namespace: session.metadata.namespace ?? "default",
          plural: RELAY_SESSION_PLURAL,
          name: session.metadata.name ?? "",
          body: { metadata: { resourceVersion: session.metadata.resourceVersion }, status: desired },
          fieldManager: OPERATOR_FIELD_MANAGER,
        },
        mergePatch,
      );
    try {
      if (this.background && session.spec.poolRef) await this.background.background(patch);
      else await patch();
    } catch (error) {
      if (apiCode(error) === 409 || apiCode(error) === 404)
        throw new Retry("status write on a stale session");
      throw error;
    }
    log.debug({ phase: status.phase, previousPhase: previous.phase }, "status written");
    this.emitPhaseChange(session, previous.phase, status);
    return "written";
  }

  /** Events for entering the live phases; terminal phases and restarts have their own. */
  private emitPhaseChange(
    session: RelaySession,
    previousPhase: string | undefined,
    status: OperatorStatus,
  ): void {
    if (previousPhase === status.phase) return;
    const ready = status.conditions[0];
    if (status.phase === "Running")
      this.events?.record(session, "Normal", ready?.reason ?? "Running", ready?.message ?? "");
    if (status.phase === "Degraded")
      this.events?.record(session, "Warning", ready?.reason ?? "Degraded", ready?.message ?? "");
  }
}
