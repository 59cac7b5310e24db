/**
 * The standalone service's sessions: created through an injected factory (the real RelaySession in
 * production), limited in number, and kept visible for a while after they end so a caller polling
 * GET /session/{id}/status sees the final state and the reason instead of a 404.
 */
import { randomUUID } from "node:crypto";
import type { EventEmitter } from "node:events";
import { silentLogger, type Logger } from "../common/log.js";
import { buildSessionConfig } from "../session/config.js";
import type { KeyframeSide, LatestKeyframe } from "../session/latest-keyframes.js";
import type { StartSessionRequest } from "./validation.js";
import {
  DEFAULT_QUEUE_CAPACITIES,
  type QueueCapacities,
  type RelayMode,
  type RelaySessionConfig,
  type SessionState,
  type SessionStatus,
} from "../session/types.js";

/** What the manager needs from a session. The real implementation is session/RelaySession. */
export interface ManagedSession extends EventEmitter {
  readonly id: string;
  /** Resolves once the session has started, not once WebRTC is connected. */
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): SessionStatus;
  updatePrompts(prompts: unknown): Promise<{ ok: boolean; reply?: unknown; error?: string }>;
  /** The newest prompts, for the session page (sessions that cannot tell leave it out). */
  currentPrompts?(): unknown[];
  /** The newest input/output keyframe, for the session page's thumbnails. */
  latestKeyframe?(side: KeyframeSide): LatestKeyframe | undefined;
  // Emits "end" when it has completed, failed or been stopped.
}

export type SessionFactory = (config: RelaySessionConfig) => ManagedSession;

/** Settings a start request does not carry, applied to every session. */
export interface SessionDefaults {
  width: number;
  height: number;
  frameRate: number;
  mode: RelayMode;
  segmentDurationSec: number;
  queueCapacities: QueueCapacities;
  iceAddresses: string[];
  insecureTls: boolean;
}

export const DEFAULT_SESSION_DEFAULTS: SessionDefaults = {
  width: 512,
  height: 512,
  frameRate: 30,
  mode: "transcode",
  segmentDurationSec: 1,
  queueCapacities: DEFAULT_QUEUE_CAPACITIES,
  iceAddresses: [],
  insecureTls: false,
};

export const DEFAULT_MAX_SESSIONS = 8;
export const DEFAULT_ENDED_RETENTION_MS = 10 * 60 * 1000;

export interface SessionManagerOptions {
  createSession: SessionFactory;
  defaults?: Partial<SessionDefaults>;
  /** Most sessions not yet ended at once; ended sessions kept for display do not count. Default 8. */
  maxSessions?: number;
  /** How long an ended session stays listed with its final state. Default 10 minutes. */
  endedRetentionMs?: number;
  logger?: Logger;
}

export class SessionLimitError extends Error {
  override readonly name = "SessionLimitError";
  constructor(readonly limit: number) {
    super(
      `this service already runs its maximum of ${limit} sessions; stop one (DELETE /session/{id}) and retry`,
    );
  }
}

export class DuplicateSessionError extends Error {
  override readonly name = "DuplicateSessionError";
  constructor(readonly id: string) {
    super(`session_id ${JSON.stringify(id)} is already in use by a session that has not ended`);
  }
}

export class SessionNotFoundError extends Error {
  override readonly name = "SessionNotFoundError";
  constructor(readonly id: string) {
    super(`session ${JSON.stringify(id)} not found`);
  }
}

/** The service is shutting down: it starts no new session. */
export class ShuttingDownError extends Error {
  override readonly name = "ShuttingDownError";
  constructor() {
    super("this service is shutting down and starts no new sessions; start the session on another instance");
  }
}

/** The session's start() rejected; the session stays listed (ended) so its status says why. */
export class SessionStartError extends Error {
  override readonly name = "SessionStartError";
  constructor(
    readonly id: string,
    cause: unknown,
  ) {
    super(`session ${JSON.stringify(id)} failed to start: ${errorMessage(cause)}`, { cause });
  }
}

const ENDED_STATES: ReadonlySet<SessionState> = new Set(["completed", "stopped", "failed"]);

export function isEndedState(state: SessionState): boolean {
  return ENDED_STATES.has(state);
}

interface Entry {
  session: ManagedSession;
  config: RelaySessionConfig;
  /** Set when the session emitted "end" or its start failed. */
  ended: boolean;
  /** A stop in progress, shared by concurrent DELETEs. */
  stopping?: Promise<void>;
  removalTimer?: NodeJS.Timeout;
}

export class SessionManager {
  readonly maxSessions: number;
  readonly endedRetentionMs: number;
  readonly defaults: SessionDefaults;
  private readonly createSession: SessionFactory;
  private readonly logger: Logger;
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(options: SessionManagerOptions) {
    this.createSession = options.createSession;
    this.defaults = { ...DEFAULT_SESSION_DEFAULTS, ...options.defaults };
    this.maxSessions = options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    this.endedRetentionMs = options.endedRetentionMs ?? DEFAULT_ENDED_RETENTION_MS;
    this.logger = options.logger ?? silentLogger;
  }

  /**
   * Creates and starts a session. Throws DuplicateSessionError if the id belongs to a session that
   * has not ended (an ended one with the same id is replaced), SessionLimitError when full, and
   * SessionStartError when start() rejects.
   */
  async start(
    request: StartSessionRequest,
  ): Promise<{ session: ManagedSession; config: RelaySessionConfig }> {
    if (this.closed) throw new ShuttingDownError();
    const id = request.id ?? randomUUID();
    const existing = this.entries.get(id);
    if (existing && !this.hasEnded(existing)) throw new DuplicateSessionError(id);
    if (this.activeCount() >= this.maxSessions) throw new SessionLimitError(this.maxSessions);
    if (existing) this.remove(id);

    const config = this.configFor(id, request);
    const session = this.createSession(config);
    const entry: Entry = { session, config, ended: false };
    this.entries.set(id, entry);
    session.once("end", () => this.markEnded(entry));
    this.logger.info({ session: id, input: config.inputUrl, output: config.outputUrl }, "starting session");
    try {
      await session.start();
    } catch (err) {
      this.logger.error({ session: id, err }, "session failed to start");
      // Whatever start() left running is released; the status keeps the reason for the caller.
      await session.stop().catch(() => undefined);
      this.markEnded(entry);
      throw new SessionStartError(id, err);
    }
    return { session, config };
  }

  get(id: string): ManagedSession | undefined {
    return this.entries.get(id)?.session;
  }

  /** The configuration a session was created with (for fields the status does not carry). */
  configOf(id: string): RelaySessionConfig | undefined {
    return this.entries.get(id)?.config;
  }

  list(): ManagedSession[] {
    return [...this.entries.values()].map((e) => e.session);
  }

  statuses(): SessionStatus[] {
    return this.list().map((s) => s.status());
  }

  hasSessionEnded(id: string): boolean {
    const entry = this.entries.get(id);
    return entry !== undefined && this.hasEnded(entry);
  }

  /**
   * DELETE semantics: a running session is stopped and stays listed with state "stopped" until the
   * retention time passes; an ended one is removed at once.
   */
  async stop(id: string): Promise<"stopped" | "removed"> {
    const entry = this.entries.get(id);
    if (!entry) throw new SessionNotFoundError(id);
    if (this.hasEnded(entry)) {
      this.remove(id);
      return "removed";
    }
    if (!entry.stopping) {
      this.logger.info({ session: id }, "stopping session");
      entry.stopping = entry.session.stop().finally(() => this.markEnded(entry));
    }
    await entry.stopping;
    return "stopped";
  }

  /** True once drain() or close() has been called: start() refuses with ShuttingDownError. */
  get shuttingDown(): boolean {
    return this.closed;
  }

  /**
   * Graceful shutdown, first step: refuses new sessions from now on and stops every running one
   * (each ends its output stream), keeping them listed so status requests during the drain still
   * answer. Resolves with the ids of sessions still stopping when `timeoutMs` passes (none if all
   * stopped in time).
   */
  async drain(timeoutMs: number): Promise<string[]> {
    this.closed = true;
    const running = [...this.entries.values()].filter((e) => !this.hasEnded(e));
    const stopped = Promise.allSettled(
      running.map((entry) => {
        if (!entry.stopping) {
          this.logger.info({ session: entry.config.id }, "stopping session (shutdown)");
          entry.stopping = entry.session.stop().finally(() => this.markEnded(entry));
        }
        return entry.stopping;
      }),
    );
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([stopped, timedOut]);
    clearTimeout(timer);
    return running.filter((entry) => !entry.ended).map((entry) => entry.config.id);
  }

  /** Stops every session and forgets them all (service shutdown). */
  async close(): Promise<void> {
    this.closed = true;
    const running = [...this.entries.values()].filter((e) => !this.hasEnded(e));
    await Promise.allSettled(running.map((e) => e.session.stop()));
    for (const id of [...this.entries.keys()]) this.remove(id);
  }

  private configFor(id: string, request: StartSessionRequest): RelaySessionConfig {
    const d = this.defaults;
    return buildSessionConfig({
      ...request,
      id,
      width: request.width ?? d.width,
      height: request.height ?? d.height,
      frameRate: request.frameRate ?? d.frameRate,
      mode: d.mode,
      segmentDurationSec: d.segmentDurationSec,
      queueCapacities: { ...d.queueCapacities },
      iceAddresses: [...d.iceAddresses],
      insecureTls: d.insecureTls,
    });
  }

  private activeCount(): number {
    let count = 0;
    for (const entry of this.entries.values()) if (!this.hasEnded(entry)) count++;
    return count;
  }

  /** Ended when it said so, or when its status reports a final state (in case "end" was missed). */
  private hasEnded(entry: Entry): boolean {
    if (entry.ended) return true;
    let ended: boolean;
    try {
      ended = isEndedState(entry.session.status().state);
    } catch {
      ended = false;
    }
    if (ended) this.markEnded(entry);
    return ended;
  }

  private markEnded(entry: Entry): void {
    if (entry.ended) return;
    entry.ended = true;
    if (this.entries.get(entry.config.id) !== entry) return;
    this.logger.info({ session: entry.config.id, state: safeState(entry.session) }, "session ended");
    entry.removalTimer = setTimeout(() => {
      if (this.entries.get(entry.config.id) === entry) this.remove(entry.config.id);
    }, this.endedRetentionMs);
    // Retention must not keep the process alive on shutdown.
    entry.removalTimer.unref();
  }

  private remove(id: string): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    if (entry.removalTimer) clearTimeout(entry.removalTimer);
    this.entries.delete(id);
  }
}

function safeState(session: ManagedSession): string {
  try {
    return session.status().state;
  } catch {
    return "unknown";
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
