// spec.inputStall: what a session does when its trickle input goes quiet without ending. Declared
// here once for the CRD, the relay's `run` flags (--input-stall, --input-stall-policy,
// --input-stall-end) and the REST API's start fields (input_stall_sec, input_stall_policy,
// input_stall_end_sec); relay-pod/src/session/input-stall.ts applies it.

import { integer, object, stringEnum } from "./schema-builder.js";

/** end: the session ends Failed (InputStalled) after endAfterSeconds of silence; wait: never. */
export const INPUT_STALL_POLICIES = ["end", "wait"] as const;
export type InputStallPolicyName = (typeof INPUT_STALL_POLICIES)[number];

export const INPUT_STALL_LIMITS = {
  /** Seconds without a new input segment or frame before the status says "input stalled". */
  statusAfter: { minimum: 1, maximum: 3600, default: 10 },
  /** Seconds of silence before the session ends, with policy end. */
  endAfter: { minimum: 1, maximum: 86_400, default: 300 },
  policy: "end" as InputStallPolicyName,
} as const;

export const inputStallSchema = object(
  {
    statusAfterSeconds: integer({
      description: `Seconds without a new input segment or frame before the status says "input stalled" (status.relay.inputStalled, lastError InputStalled, state degraded); input flowing again clears it. ${INPUT_STALL_LIMITS.statusAfter.minimum}–${INPUT_STALL_LIMITS.statusAfter.maximum}.`,
      ...INPUT_STALL_LIMITS.statusAfter,
    }),
    policy: stringEnum(INPUT_STALL_POLICIES, {
      description:
        "What a stalled input leads to. end: after endAfterSeconds of silence the session ends Failed (InputStalled), freeing its pod and ComfyStream. wait: the session waits for ever (the gateway ends a stream by closing its channel, which ends the session either way).",
      default: INPUT_STALL_LIMITS.policy,
    }),
    endAfterSeconds: integer({
      description: `With policy end: seconds of silence before the session ends; at least statusAfterSeconds. ${INPUT_STALL_LIMITS.endAfter.minimum}–${INPUT_STALL_LIMITS.endAfter.maximum}.`,
      ...INPUT_STALL_LIMITS.endAfter,
    }),
  },
  { description: "What the session does when its input goes quiet without ending.", default: {} },
);
