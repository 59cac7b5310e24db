/**
 * A trickle input that goes quiet (no new segment, no new frame) without ending: the gateway
 * normally ends a stream by closing its channel, so silence means a stuck publisher or a lost
 * gateway. Policy: after `statusAfterSec` the status says "input stalled" (lastError reason
 * InputStalled, state degraded) and the session waits; once input flows again the stall clears. After
 * `endAfterSec` of silence the session ends as failed with reason InputStalled, so a dead stream
 * does not hold a pod and a ComfyStream slot for ever. `endAfterSec` 0 waits for ever.
 */
export interface InputStallPolicy {
  /** Default 10 s. */
  statusAfterSec: number;
  /** Default 300 s; 0 = never end, only report. */
  endAfterSec: number;
}

export const DEFAULT_INPUT_STALL_POLICY: InputStallPolicy = { statusAfterSec: 10, endAfterSec: 300 };

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
