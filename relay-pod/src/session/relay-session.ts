import { EventEmitter } from "node:events";
import { silentLogger, type Logger } from "../common/log.js";
import { EncoderUnavailableError } from "../media/encoder-probe.js";
import { resolveFfmpeg } from "../media/ffmpeg.js";
import { TrickleControlReader, TrickleEventsWriter } from "../trickle/json-channels.js";
import { AudioPath } from "./audio-path.js";
import { FrameMatcher } from "./frame-matcher.js";
import { ForwardPath } from "./forward-path.js";
import { PeerLink } from "./peer-link.js";
import type { PeerHandover } from "./peer-handover.js";
import { normalisePrompts, promptsFromControlMessage } from "./prompts.js";
import { DEFAULT_INPUT_STALL_POLICY, InputStallWatch, type InputStallPolicy } from "./input-stall.js";
import { ReturnPath, type SentFrame } from "./return-path.js";
import type { KeyframeSide, LatestKeyframe } from "./latest-keyframes.js";
import type { SessionHost } from "./session-host.js";
import { buildSessionStatus, SessionStats } from "./session-stats.js";
import { buildStatusEvent } from "./status-events.js";
import type { RelaySessionConfig, SessionState, SessionStatus } from "./types.js";

export interface RelaySessionOptions {
  logger?: Logger;
  /** Backoff between ComfyStream reconnects: min, max (ms). */
  reconnectBackoffMs?: [number, number];
  /** Consecutive failed ComfyStream connects before the session fails. */
  reconnectBudget?: number;
  /** Interval of status events on the events channel (ai-runner: 10 s). */
  eventsIntervalMs?: number;
  /** How long to wait for ComfyStream to return the last frames once the input has ended. */
  drainTimeoutMs?: number;
  /** Limit for ComfyStream's answer to `/offer` (warm-up runs inside it). Default: the peer's, 300 s. */
  offerTimeoutMs?: number;
  /**
   * A warm pool pod's: take over the ComfyStream connection an earlier session kept open instead of
   * offering, and keep this one's open at a clean end (peer-handover.ts).
   */
  handover?: PeerHandover;
}

/**
 * One relay session: trickle input → ffmpeg (transcode, RTP) → pacer → WebRTC to ComfyStream →
 * returned RTP → depacketize → MPEG-TS mux → trickle output; plus prompt updates from the control
 * channel and status events (DESIGN.md §3). Events: "status" (state or WebRTC state changed), "end",
 * "prompts-applied" (prompts: unknown[]) — ComfyStream runs these now (offer answered or update accepted).
 *
 * This class is the start/stop state machine and the wiring; the stages are their own files:
 * ForwardPath (forward-path.ts, with its Transcoder in forward-transcoder.ts), PeerLink
 * (peer-link.ts), ReturnPath (return-path.ts), and SessionStats (session-stats.ts) for the counters
 * and the status snapshot. They reach the session only through SessionHost (session-host.ts).
 */
export class RelaySession extends EventEmitter {
  readonly id: string;
  private readonly log: Logger;
  private state: SessionState = "starting";
  private readonly createdAt = new Date();
  private startedAt: Date | undefined;
  private endedAt: Date | undefined;
  private lastError: SessionStatus["lastError"];

  private controlReader: TrickleControlReader | undefined;
  private eventsWriter: TrickleEventsWriter | undefined;
  private eventsTimer: NodeJS.Timeout | undefined;
  private ffmpegBinary: ReturnType<typeof resolveFfmpeg> | undefined;
  /** Whether finishing ends the output channel (not when a replacement relay publishes on). */
  private endOutputOnFinish = true;

  private readonly stats = new SessionStats();
  /** Where the two paths meet: frames sent, matched to frames returned (PTS, latency, in flight). */
  private readonly matcher = new FrameMatcher<SentFrame>();
  private readonly forward: ForwardPath;
  /** The input's audio, held until the processed video reaches it (audio-path.ts). */
  private readonly audio: AudioPath;
  private readonly link: PeerLink;
  private readonly returnPath: ReturnPath;
  private ended: Promise<void>;
  private resolveEnded!: () => void;
  private stopping = false;
  private readonly inputStall: InputStallWatch;

  constructor(
    readonly config: RelaySessionConfig,
    private readonly options: RelaySessionOptions = {},
  ) {
    super();
    this.id = config.id;
    this.log = (options.logger ?? silentLogger).child({ session: config.id });
    const prompts = normalisePrompts(config.prompts);
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
    const host: SessionHost = {
      config,
      log: this.log,
      stats: this.stats,
      state: () => this.state,
      isEnded: () => this.isEnded(),
      isStopping: () => this.stopping,
      setState: (state) => this.setState(state),
      setError: (reason, message) => this.setError(reason, message),
      emitStatus: () => this.emitStatus(),
      fail: (reason, err) => this.fail(reason, err),
      complete: () => this.finish("completed"),
    };
    this.audio = new AudioPath(config, {
      onStreamChange: (stream, why) => {
        this.returnPath.setAudioStream(stream);
        if (why) this.setError("AudioUnsupported", why);
        else this.log.info({ codec: stream?.codec, pid: stream?.pid }, "audio: carried to the output");
      },
      onFatal: (reason) => void this.fail("AudioUnsupported", new Error(reason)),
      sendToPeer: (packet, rtpTimestamp) => this.link.connectedPeer?.sendAudio(packet, rtpTimestamp) ?? false,
      log: this.log,
    });
    this.returnPath = new ReturnPath(host, this.matcher, this.audio);
    this.link = new PeerLink(
      host,
      { ...options, audioToComfyStream: this.audio.toComfyStream },
      {
        onNewStream: () => {
          this.matcher.reset();
          this.returnPath.resetStream();
          this.forward.resetStream();
          this.audio.newPeerStream();
        },
        onRtp: (packet) => this.returnPath.onReturnedRtp(packet),
        onAudio: (payload, rtpTimestamp) => this.audio.onReturned(payload, rtpTimestamp),
        onLost: () => this.forward.clearQueue(),
        onPromptsApplied: (applied) => this.emit("prompts-applied", applied),
      },
      prompts,
    );
    this.forward = new ForwardPath(host, this.matcher, this.link, this.audio);
    this.inputStall = this.watchInputStall(config.inputStall ?? DEFAULT_INPUT_STALL_POLICY);
  }

  private watchInputStall(policy: InputStallPolicy): InputStallWatch {
    const waiting =
      policy.endAfterSec > 0 ? `the session ends after ${policy.endAfterSec} s of silence` : "waiting";
    return new InputStallWatch(policy, {
      activity: () => this.stats.counters.segmentsIn + this.stats.counters.framesIn,
      stalled: (idleSec) => {
        this.setError(
          "InputStalled",
          `input stalled: no new input segment for ${Math.round(idleSec)} s (${waiting})`,
        );
        this.setState("degraded");
      },
      resumed: (idleSec) => {
        this.log.info({ idleSec }, "input resumed");
        if (this.link.state === "connected") this.setState("running");
      },
      end: (idleSec) => {
        void this.fail(
          "InputStalled",
          new Error(`input stalled: no new input segment for ${Math.round(idleSec)} s`),
        );
      },
    });
  }

  /** Starts every stage; resolves once the pipeline is set up, not when ComfyStream is connected. */
  async start(): Promise<void> {
    this.startedAt = new Date();
    this.log.info(
      { input: this.config.inputUrl, output: this.config.outputUrl, comfystream: this.config.comfystreamUrl },
      "starting relay session",
    );
    // The offer (ICE gathering, ComfyStream's answer, DTLS) takes longest: it starts first, and
    // finding and starting ffmpeg runs beside it (issue 12: first frame fast).
    this.link.connect();
    try {
      await this.forward.prepare(() => this.resolveFfmpegOnce());
      this.audio.prepare((await this.resolveFfmpegOnce()).path);
      await this.returnPath.start(() => this.resolveFfmpegOnce());
    } catch (err) {
      await this.fail(err instanceof EncoderUnavailableError ? "EncoderUnavailable" : "StartFailed", err);
      throw err;
    }
    this.forward.startInput();
    this.inputStall.start();
    if (this.config.controlUrl) void this.readControl(this.config.controlUrl);
    if (this.config.eventsUrl) this.startEvents(this.config.eventsUrl);
    this.forward.startPaceSampling();
  }

  /** Resolves when the session has ended (completed, stopped or failed). */
  whenEnded(): Promise<void> {
    return this.ended;
  }

  /**
   * Stops the session. `endOutput: false` leaves the output channel open (no end of stream): this
   * relay is being replaced (its pod evicted or re-created) and the next one publishes on.
   */
  async stop(options: { endOutput?: boolean } = {}): Promise<void> {
    if (this.isEnded()) return;
    this.log.info({ endOutput: options.endOutput ?? true }, "stopping relay session on request");
    this.endOutputOnFinish = options.endOutput ?? true;
    await this.finish("stopped");
  }

  async updatePrompts(input: unknown): Promise<{ ok: boolean; reply?: unknown; error?: string }> {
    return this.link.updatePrompts(input);
  }

  /** The prompts ComfyStream runs or is about to get (the newest accepted by updatePrompts). */
  currentPrompts(): unknown[] {
    return this.link.currentPrompts;
  }

  /** The newest keyframe on one side of the session, for thumbnails (undefined before the first). */
  latestKeyframe(side: KeyframeSide): LatestKeyframe | undefined {
    return this.stats.keyframes.get(side);
  }

  status(): SessionStatus {
    const now = performance.now();
    return buildSessionStatus(
      this.stats,
      {
        id: this.id,
        config: this.config,
        state: this.state,
        webrtcState: this.link.state,
        createdAt: this.createdAt,
        startedAt: this.startedAt,
        endedAt: this.endedAt,
        lastError: this.lastError,
        lastPromptUpdate: this.link.lastPromptUpdate,
        promptsGeneration: this.link.promptsGeneration,
        queues: { ...this.forward.queues(), ...this.returnPath.queues() },
        stageDroppedFrames: this.forward.droppedFrames + this.returnPath.droppedFrames,
        peerLimited: this.forward.peerLimitedDrops,
        peerWindow: this.forward.peerWindowStatus(now),
        outputKeyframes: this.returnPath.outputKeyframesStatus(),
        codecs: this.forward.codecStatus(),
        audio: this.audio.status(),
        input: this.inputStall.snapshot(),
      },
      now,
    );
  }

  /** ffmpeg is found (and its version asked) once per session, for the transcoder and the repair stage. */
  private resolveFfmpegOnce(): ReturnType<typeof resolveFfmpeg> {
    this.ffmpegBinary ??= resolveFfmpeg({ logger: this.log });
    return this.ffmpegBinary;
  }

  // ---- control and events -------------------------------------------------------------------------

  private async readControl(url: string): Promise<void> {
    const reader = new TrickleControlReader(url, { insecureTls: this.config.insecureTls, logger: this.log });
    this.controlReader = reader;
    try {
      for await (const message of reader) {
        if (this.isEnded()) break;
        let prompts: unknown[] | undefined;
        try {
          prompts = promptsFromControlMessage(message);
        } catch (err) {
          this.log.warn({ err: (err as Error).message }, "ignored a control message");
          continue;
        }
        if (prompts) await this.updatePrompts(prompts);
      }
    } catch (err) {
      if (!this.isEnded())
        this.log.warn({ err: (err as Error).message }, "control channel ended with an error");
    }
  }

  private startEvents(url: string): void {
    this.eventsWriter = new TrickleEventsWriter(url, {
      insecureTls: this.config.insecureTls,
      logger: this.log,
    });
    const startTimeMs = this.createdAt.getTime();
    const send = () => {
      const event = buildStatusEvent(this.status(), { startTimeMs, lastParams: this.link.currentPrompts });
      this.eventsWriter?.write(event, "ai_stream_status").catch((err: unknown) => {
        this.log.debug({ err: (err as Error).message }, "status event not delivered");
      });
    };
    this.eventsTimer = setInterval(send, this.options.eventsIntervalMs ?? 10_000);
    this.eventsTimer.unref();
  }

  // ---- state, errors, teardown ----------------------------------------------------------------------

  private isEnded(): boolean {
    return this.state === "completed" || this.state === "stopped" || this.state === "failed";
  }

  private setState(state: SessionState): void {
    if (this.state === state || this.isEnded()) return;
    this.state = state;
    this.emitStatus();
  }

  private setError(reason: string, message: string): void {
    this.lastError = { at: new Date().toISOString(), reason, message };
    this.log.warn({ reason, message }, "relay session error");
    this.emitStatus();
  }

  private emitStatus(): void {
    this.emit("status", this.status());
  }

  private async fail(reason: string, err: unknown): Promise<void> {
    // Already ending: what the teardown breaks (the aborted input read, the offer) is not the reason.
    if (this.stopping) {
      this.log.debug({ reason, err: (err as Error)?.message }, "while ending");
      return this.ended;
    }
    this.setError(reason, (err as Error)?.message ?? String(err));
    await this.finish("failed");
  }

  private async finish(finalState: "completed" | "stopped" | "failed"): Promise<void> {
    if (this.stopping) return this.ended;
    this.stopping = true;
    this.link.cancelReconnect();
    this.inputStall.stop();
    if (this.eventsTimer) clearInterval(this.eventsTimer);
    this.forward.stopInput();
    this.controlReader?.close();

    if (finalState === "completed") {
      // Let the transcoder and ComfyStream hand back what is still in flight.
      const drainTimeoutMs = this.options.drainTimeoutMs ?? 3000;
      const drainStart = Date.now();
      await this.forward.drainTranscoder(drainTimeoutMs);
      await this.waitForDrain(Math.max(500, drainTimeoutMs - (Date.now() - drainStart)));
    }
    // The re-encoder (if it runs) still holds the last frames.
    await this.returnPath.closeRepair(finalState === "completed" ? 1000 : 0);
    await this.forward.stop();
    // A clean end leaves the connection to the next session of a warm pool pod (peer-handover.ts).
    await this.link.close({ keepForNext: finalState !== "failed" });
    await this.audio.stop();

    await this.returnPath.close(this.endOutputOnFinish);
    if (this.eventsWriter) {
      // The last event already tells the final state, so a gateway sees the stream end cleanly.
      const finalStatus = { ...this.status(), state: finalState, endedAt: new Date().toISOString() };
      const event = buildStatusEvent(finalStatus, { startTimeMs: this.createdAt.getTime() });
      await this.eventsWriter.write(event, "ai_stream_status").catch(() => undefined);
      await this.eventsWriter.close().catch(() => undefined);
    }
    this.endedAt = new Date();
    this.state = finalState;
    this.log.info({ state: finalState, status: this.status() }, "relay session ended");
    this.emitStatus();
    this.emit("end", this.status());
    this.resolveEnded();
  }

  private async waitForDrain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastReturned = -1;
    let quietSince = Date.now();
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      if (this.stats.counters.framesReturned !== lastReturned) {
        lastReturned = this.stats.counters.framesReturned;
        quietSince = Date.now();
      }
      const inFlight = this.forward.queued + this.returnPath.queued;
      if (inFlight === 0 && this.stats.counters.framesReturned >= this.stats.counters.framesSent) return;
      if (inFlight === 0 && Date.now() - quietSince > 1000) return;
    }
  }
}
