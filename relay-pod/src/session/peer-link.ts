/**
 * The link to ComfyStream: the WebRTC peer's lifecycle (an offer carrying the current prompts,
 * reconnects with exponential backoff, a budget of failed connects), its connection state, and the
 * prompts it runs (an update goes over the connected peer, or waits for the next offer). Separate
 * because the forward and return paths need only "the peer to send to, if connected" and "a new
 * stream starts now", not how the connection is kept up.
 */
import { ComfyStreamPeer } from "../webrtc/comfystream-peer.js";
import type { PeerHandover, PeerShape } from "./peer-handover.js";
import { normalisePrompts } from "./prompts.js";
import type { ReturnedRtp } from "./return-path.js";
import type { SessionHost } from "./session-host.js";
import type { SessionStatus, WebRtcConnectionState } from "./types.js";

export interface PeerLinkOptions {
  /** Backoff between ComfyStream reconnects: min, max (ms). */
  reconnectBackoffMs?: [number, number];
  /** Consecutive failed ComfyStream connects before the session fails. */
  reconnectBudget?: number;
  /** Limit for ComfyStream's answer to `/offer`. Default: the peer's. */
  offerTimeoutMs?: number;
  /** The offer carries an Opus audio m-line (audio mode comfystream). */
  audioToComfyStream?: boolean;
  /**
   * Take over a connection kept open by an earlier session instead of the first offer, and keep
   * this session's open at a clean end (a warm pool pod; see peer-handover.ts).
   */
  handover?: PeerHandover;
}

export interface PeerLinkHooks {
  /** A new connection is being set up: per-stream state (matching, depacketizing, window) starts afresh. */
  onNewStream(): void;
  onRtp(packet: ReturnedRtp): void;
  /** An Opus packet back from ComfyStream (audio mode comfystream). */
  onAudio(payload: Buffer, rtpTimestamp: number): void;
  /** The connection was lost: frames queued for it are stale. */
  onLost(): void;
  /** ComfyStream runs these prompts now (offer answered or update accepted). */
  onPromptsApplied(prompts: unknown[]): void;
}

export type PromptUpdateResult = { ok: boolean; reply?: unknown; error?: string };

export class PeerLink {
  private peer: ComfyStreamPeer | undefined;
  private webrtcState: WebRtcConnectionState = "new";
  private connecting: Promise<void> | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private consecutiveConnectFailures = 0;
  private prompts: unknown[];
  private generation = 0;
  /** The prompts ComfyStream runs on the current connection (what a kept connection carries on). */
  private appliedPrompts: unknown[] | undefined;
  private lastUpdate: SessionStatus["lastPromptUpdate"];

  constructor(
    private readonly host: SessionHost,
    private readonly options: PeerLinkOptions,
    private readonly hooks: PeerLinkHooks,
    prompts: unknown[],
  ) {
    this.prompts = prompts;
  }

  get state(): WebRtcConnectionState {
    return this.webrtcState;
  }

  /** The peer to send to; undefined unless connected. */
  get connectedPeer(): ComfyStreamPeer | undefined {
    return this.peer && this.webrtcState === "connected" ? this.peer : undefined;
  }

  /** The newest prompts (the next offer carries them). */
  get currentPrompts(): unknown[] {
    return this.prompts;
  }

  /** Generation of the prompts ComfyStream last acknowledged (1 = the initial prompts). */
  get promptsGeneration(): number {
    return this.generation;
  }

  get lastPromptUpdate(): SessionStatus["lastPromptUpdate"] {
    return this.lastUpdate;
  }

  connect(): void {
    if (this.host.isEnded() || this.connecting) return;
    this.connecting = this.runConnect().finally(() => (this.connecting = undefined));
  }

  async updatePrompts(input: unknown): Promise<PromptUpdateResult> {
    let prompts: unknown[];
    try {
      prompts = normalisePrompts(input);
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
    this.prompts = prompts;
    const at = new Date().toISOString();
    const peer = this.connectedPeer;
    if (!peer) {
      // Not lost: the next /offer carries the newest prompts.
      this.lastUpdate = { at, ok: true, reply: "queued until ComfyStream is connected" };
      return { ok: true, reply: this.lastUpdate.reply };
    }
    try {
      const reply = await peer.updatePrompts(prompts);
      const ok = reply.success !== false;
      if (ok) {
        this.generation++;
        this.appliedPrompts = prompts;
        this.hooks.onPromptsApplied(prompts);
      }
      this.lastUpdate = { at, ok, reply };
      this.host.log.info({ reply }, "prompts updated");
      this.host.emitStatus();
      return ok ? { ok, reply } : { ok, reply, error: "ComfyStream rejected the prompts" };
    } catch (err) {
      const error = (err as Error).message;
      this.lastUpdate = { at, ok: false, error };
      this.host.log.warn({ err: error }, "prompt update failed");
      return { ok: false, error };
    }
  }

  /** Teardown has begun: no reconnect after this. */
  cancelReconnect(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
  }

  /**
   * Closes the connection, or with `keepForNext` (a clean end) leaves it open for the next session
   * when a PeerHandover is configured and takes it.
   */
  async close(options: { keepForNext?: boolean } = {}): Promise<void> {
    const peer = this.peer;
    this.peer = undefined;
    const handover = this.options.handover;
    if (peer && options.keepForNext && handover && this.webrtcState === "connected") {
      peer.removeAllListeners();
      if (handover.keep(peer, this.appliedPrompts ?? this.prompts, this.shape())) {
        this.setWebRtcState("closed");
        return;
      }
    }
    await peer?.close().catch(() => undefined);
    this.setWebRtcState("closed");
  }

  private shape(): PeerShape {
    const { config } = this.host;
    return {
      comfystreamUrl: config.comfystreamUrl,
      width: config.width,
      height: config.height,
      audio: this.options.audioToComfyStream ?? false,
    };
  }

  private async runConnect(): Promise<void> {
    const { host, hooks } = this;
    const { config, log } = host;
    const previous = this.peer;
    this.peer = undefined;
    if (previous) {
      // ComfyStream serves one peer: the stale one must be gone before the next /offer.
      previous.removeAllListeners();
      await previous.close().catch(() => undefined);
    }
    hooks.onNewStream();
    this.setWebRtcState("connecting");
    if (host.state() !== "degraded") host.setState("connecting");
    // The first connection of a warm pool pod's session: the one kept open for it, if it fits.
    const taken = previous ? undefined : await this.options.handover?.take(this.shape());
    if (taken) return this.takeOver(taken.peer, taken.prompts, taken.keptMs);
    const offeredPrompts = this.prompts;
    const peer = new ComfyStreamPeer({
      comfystreamUrl: config.comfystreamUrl,
      prompts: offeredPrompts,
      ...(this.options.offerTimeoutMs ? { offerTimeoutMs: this.options.offerTimeoutMs } : {}),
      width: config.width,
      height: config.height,
      iceAddresses: config.iceAddresses,
      // A PLI every segment duration, so that a peer that answers them gives every segment an IDR.
      pliIntervalMs: Math.max(500, Math.round(config.segmentDurationSec * 1000)),
      audio: this.options.audioToComfyStream ?? false,
      logger: log,
    });
    this.listen(peer);
    try {
      await peer.connect();
      if (host.isEnded() || this.peer !== peer) {
        await peer.close();
        return;
      }
      this.consecutiveConnectFailures = 0;
      this.onConnected(offeredPrompts);
      log.info("connected to ComfyStream");
    } catch (err) {
      // Ending (e.g. the encoder could not start): the aborted offer is not the reason to report.
      if (host.isEnded() || host.isStopping()) return;
      this.consecutiveConnectFailures++;
      host.setError("ComfyStreamConnectFailed", (err as Error).message);
      this.setWebRtcState("failed");
      const budget = this.options.reconnectBudget ?? 10;
      if (this.consecutiveConnectFailures >= budget) {
        await host.fail(
          "ComfyStreamUnavailable",
          new Error(`gave up after ${budget} failed connects to ComfyStream: ${(err as Error).message}`),
        );
        return;
      }
      this.scheduleReconnect();
    }
  }

  /** Wires a peer's events to this session; it becomes the current peer. */
  private listen(peer: ComfyStreamPeer): void {
    const { host, hooks } = this;
    peer.on("audio", (payload: Buffer, rtpTimestamp: number) => hooks.onAudio(payload, rtpTimestamp));
    peer.on("rtp", (packet) => {
      host.stats.outages.frameReturned(performance.now());
      hooks.onRtp(packet);
    });
    peer.on("state", (state: WebRtcConnectionState) => {
      if (this.peer !== peer) return;
      this.setWebRtcState(state);
      if (state === "failed" || state === "disconnected" || state === "closed") {
        this.onPeerLost(state, peer.lossReason);
      }
    });
    this.peer = peer;
  }

  /**
   * ComfyStream runs `appliedPrompts` on the connected peer; the session's, if others, go over it
   * now. `announce`: they are the session's own (generation 1), not a kept connection's.
   */
  private onConnected(appliedPrompts: unknown[], announce = true): void {
    this.appliedPrompts = appliedPrompts;
    this.setWebRtcState("connected");
    this.host.setState("running");
    if (announce) {
      this.generation = Math.max(this.generation, 1);
      this.hooks.onPromptsApplied(appliedPrompts);
    }
    // Prompts that changed while the offer was in flight (or differ from a kept connection's).
    if (this.prompts !== appliedPrompts) void this.updatePrompts(this.prompts);
  }

  /** Takes over a connection kept open by the session before (no offer: see peer-handover.ts). */
  private takeOver(peer: ComfyStreamPeer, keptPrompts: unknown[], keptMs: number): void {
    peer.handOver(this.host.log);
    this.listen(peer);
    this.consecutiveConnectFailures = 0;
    const samePrompts = JSON.stringify(keptPrompts) === JSON.stringify(this.prompts);
    // Other prompts than the session's: generation 1 once ComfyStream has taken the session's.
    this.onConnected(samePrompts ? this.prompts : keptPrompts, samePrompts);
    // Took over the connection kept open for this session: no new offer.
    this.host.log.info(
      { tookOver: true, keptMs: Math.round(keptMs), promptsUpdated: !samePrompts },
      "connected to ComfyStream",
    );
  }

  private onPeerLost(state: WebRtcConnectionState, lossReason: string | undefined): void {
    if (this.host.isEnded() || this.host.isStopping()) return;
    const message = `WebRTC connection ${state}${lossReason ? `: ${lossReason}` : ""}`;
    this.host.stats.outages.lost(performance.now(), message);
    this.host.setError("ComfyStreamDisconnected", message);
    this.hooks.onLost();
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer || this.host.isEnded()) return;
    const [min, max] = this.options.reconnectBackoffMs ?? [500, 30_000];
    const delay = Math.min(max, min * 2 ** Math.max(0, this.consecutiveConnectFailures - 1));
    this.host.setState("degraded");
    this.host.log.warn({ delayMs: delay }, "reconnecting to ComfyStream");
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.host.stats.counters.reconnects++;
      this.connect();
    }, delay);
  }

  private setWebRtcState(state: WebRtcConnectionState): void {
    if (this.webrtcState === state) return;
    this.webrtcState = state;
    this.host.emitStatus();
  }
}
