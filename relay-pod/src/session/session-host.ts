/**
 * What the session's stages (forward path, transcoder, peer link, return path) may ask of the
 * RelaySession that wires them: its config, logger and counters, and its state machine. An
 * interface, so that each stage sees only this much of the session and RelaySession's own methods
 * stay private (its public API is what servers, the operator and the demo use).
 */
import type { Logger } from "../common/log.js";
import type { SessionStats } from "./session-stats.js";
import type { RelaySessionConfig, SessionState } from "./types.js";

export interface SessionHost {
  readonly config: RelaySessionConfig;
  readonly log: Logger;
  readonly stats: SessionStats;
  state(): SessionState;
  /** Completed, stopped or failed. */
  isEnded(): boolean;
  /** Teardown has begun: stages no longer treat what it closes as a failure to recover from. */
  isStopping(): boolean;
  setState(state: SessionState): void;
  /** Records lastError and emits a status event; the session goes on. */
  setError(reason: string, message: string): void;
  emitStatus(): void;
  /** Records the error and ends the session as failed. */
  fail(reason: string, err: unknown): Promise<void>;
  /** Ends the session as completed (the input ended), after draining what is in flight. */
  complete(): Promise<void>;
}
