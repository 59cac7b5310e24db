/**
 * A trickle input that goes quiet (no new segment, no new frame) without ending: the gateway
 * normally ends a stream by closing its channel, so silence means a stuck publisher or a lost
 * gateway. Policy: after `statusAfterSec` the status says "input stalled" (lastError reason
 * InputStalled, state degraded) and the session waits; once input flows again the stall clears. After
 * `endAfterSec` of silence the session ends as failed with reason InputStalled, so a dead stream
 * does not hold a pod and a ComfyStream slot for ever. `endAfterSec` 0 waits for ever.
 * Users set it as `run --input-stall/--input-stall-policy/--input-stall-end`, the REST start fields
 * input_stall_sec/input_stall_policy/input_stall_end_sec, or a RelaySession's spec.inputStall.
 */
import { INPUT_STALL_LIMITS, INPUT_STALL_POLICIES } from "../../../crds/src/index.js";

export interface InputStallPolicy {
  /** Default 10 s. */
  statusAfterSec: number;
  /** Default 300 s; 0 = never end, only report. */
  endAfterSec: number;
}

export const DEFAULT_INPUT_STALL_POLICY: InputStallPolicy = {
  statusAfterSec: INPUT_STALL_LIMITS.statusAfter.default,
  endAfterSec: INPUT_STALL_LIMITS.endAfter.default,
};

/** The settings as a user gives them (`run` flags, REST fields, spec.inputStall); unset = default. */
export interface InputStallSettings {
  statusAfterSec?: number;
  policy?: string;
  endAfterSec?: number;
}

/** A setting out of range or contradicting another; `setting` is which one, by the caller's name. */
export class InputStallSettingError extends Error {
  constructor(
    message: string,
    readonly setting: keyof InputStallSettings,
  ) {
    super(message);
  }
}

/**
 * Checks the settings and turns them into the watch's policy (policy wait → endAfterSec 0).
 * `names` are the settings' names where the user wrote them, for the error messages.
 */
export function inputStallPolicyFrom(
  settings: InputStallSettings,
  names: Record<keyof InputStallSettings, string>,
): InputStallPolicy {
  const limits = INPUT_STALL_LIMITS;
  const seconds = (
    key: "statusAfterSec" | "endAfterSec",
    range: { minimum: number; maximum: number; default: number },
  ) => {
    const value = settings[key];
    if (value === undefined) return range.default;
    if (!Number.isInteger(value) || value < range.minimum || value > range.maximum) {
      throw new InputStallSettingError(
        `${names[key]} must be a whole number of seconds from ${range.minimum} to ${range.maximum} (got ${String(value)})`,
        key,
      );
    }
    return value;
  };
  const statusAfterSec = seconds("statusAfterSec", limits.statusAfter);
  const policy = settings.policy ?? limits.policy;
  if (!(INPUT_STALL_POLICIES as readonly string[]).includes(policy)) {
    throw new InputStallSettingError(
      `${names.policy} must be "end" (the session ends after ${names.endAfterSec}) or "wait" (it waits for ever) (got ${JSON.stringify(policy)})`,
      "policy",
    );
  }
  if (policy === "wait") {
    if (settings.endAfterSec !== undefined) {
      throw new InputStallSettingError(
        `${names.endAfterSec} only applies with ${names.policy} end`,
        "endAfterSec",
      );
    }
    return { statusAfterSec, endAfterSec: 0 };
  }
  const endAfterSec = seconds("endAfterSec", limits.endAfter);
  if (endAfterSec < statusAfterSec) {
    throw new InputStallSettingError(
      `${names.endAfterSec} (${endAfterSec}) must be at least ${names.statusAfterSec} (${statusAfterSec})`,
      "endAfterSec",
    );
  }
  return { statusAfterSec, endAfterSec };
}

export interface InputStallStatus {
  stalled: boolean;
  /** Seconds since the last input segment or frame (null before the first). */
  idleSec: number | null;
  policy: InputStallPolicy;
}

export interface InputStallHooks {
  /** Input activity so far (segments + frames in): any change means input flows. */
  activity(): number;
  stalled(idleSec: number): void;
  resumed(idleSec: number): void;
  end(idleSec: number): void;
}

export class InputStallWatch {
  private lastActivity = -1;
  private lastChangeAt: number | undefined;
  private stalled = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly policy: InputStallPolicy,
    private readonly hooks: InputStallHooks,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Checks every `intervalMs` from now on (the clock starts when the input is opened). */
  start(intervalMs = 500): void {
    this.lastChangeAt = this.now();
    this.lastActivity = this.hooks.activity();
    this.timer = setInterval(() => this.check(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  check(): void {
    if (this.lastChangeAt === undefined) return;
    const now = this.now();
    const activity = this.hooks.activity();
    if (activity !== this.lastActivity) {
      const idleSec = (now - this.lastChangeAt) / 1000;
      this.lastActivity = activity;
      this.lastChangeAt = now;
      if (this.stalled) {
        this.stalled = false;
        this.hooks.resumed(idleSec);
      }
      return;
    }
    const idleSec = (now - this.lastChangeAt) / 1000;
    const { statusAfterSec, endAfterSec } = this.policy;
    if (!this.stalled && idleSec >= statusAfterSec) {
      this.stalled = true;
      this.hooks.stalled(idleSec);
    }
    if (endAfterSec > 0 && idleSec >= endAfterSec) {
      this.stop();
      this.hooks.end(idleSec);
    }
  }

  snapshot(): InputStallStatus {
    const idleSec =
      this.lastChangeAt === undefined ? null : Math.round((this.now() - this.lastChangeAt) / 100) / 10;
    return { stalled: this.stalled, idleSec, policy: this.policy };
  }
}
