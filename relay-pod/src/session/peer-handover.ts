/**
 * A connected ComfyStream peer kept open between sessions, for the next session to take over: a
 * warm pool pod keeps its warm-up's connection, and then each cleanly ended session's.
 *
 * Why not close it and offer anew: ComfyStream (aiortc) notices a closed peer only when ICE consent
 * expires, ~30 s later, and until then a new peer gets no frames back (spec comfystream-webrtc §1.5;
 * test/session/real-comfystream-sessions.test.ts measured 0 of 240). A pooled session claimed right
 * after the warm-up therefore returned nothing for half a minute. Taking over the open connection
 * also skips the offer, ICE and DTLS and ComfyStream's warm-up inside `/offer`: what the issue asks
 * of a warm pod ("no new offer warm-up").
 *
 * Only video-only connections are kept: with no audio arriving for 1 s ComfyStream's audio sender
 * dies on its own silence frame (audio-path.ts), so an idle audio m-line would be dead on take-over.
 */
import type { Logger } from "../common/log.js";
import type { ComfyStreamPeer, WebRtcState } from "../webrtc/comfystream-peer.js";

/** What a kept connection was set up for; a session takes it over if URL and audio are the same. */
export interface PeerShape {
  comfystreamUrl: string;
  width: number;
  height: number;
  audio: boolean;
}

export interface TakenPeer {
  peer: ComfyStreamPeer;
  /** The prompts ComfyStream runs on it now. */
  prompts: unknown[];
  /** How long it was kept, ms. */
  keptMs: number;
}

interface Kept {
  peer: ComfyStreamPeer;
  prompts: unknown[];
  shape: PeerShape;
  since: number;
  onState: (state: WebRtcState) => void;
}

export class PeerHandover {
  private kept: Kept | undefined;
  private takeOvers = 0;

  /** `onLost`: a kept connection failed or was closed by ComfyStream while it waited. */
  constructor(
    private readonly log: Logger,
    private readonly onLost: () => void = () => {},
  ) {}

  /** How many sessions took over a kept connection so far. */
  get handedOver(): number {
    return this.takeOvers;
  }

  /** A connection is kept and still connected. */
  get available(): boolean {
    return this.kept?.peer.state === "connected";
  }

  /**
   * Keeps `peer` (connected, its listeners already removed) for the next session. False, and the
   * caller closes it, when it cannot be kept (not connected, carries audio, or one is kept already).
   */
  keep(peer: ComfyStreamPeer, prompts: unknown[], shape: PeerShape): boolean {
    if (peer.state !== "connected" || shape.audio || this.kept) return false;
    const onState = (state: WebRtcState): void => {
      if (state !== "failed" && state !== "closed") return;
      this.log.warn({ state }, "the kept ComfyStream connection was lost; the next session offers anew");
      this.drop();
      void peer.close().catch(() => undefined);
      this.onLost();
    };
    peer.on("state", onState);
    this.kept = { peer, prompts, shape, since: performance.now(), onState };
    this.log.info({ ...shape }, "keeping the ComfyStream connection open for the next session");
    return true;
  }

  /**
   * The kept connection, if it fits `shape` and is still connected; it is then the caller's. One
   * that does not fit is closed (ComfyStream serves one peer: it must go before a new offer).
   */
  async take(shape: PeerShape): Promise<TakenPeer | undefined> {
    const kept = this.kept;
    if (!kept) return undefined;
    this.drop();
    // The size need not match: ComfyStream processes frames of any size on one connection (the
    // size it was told only sets its next warm-up, spec §1.3), and a new offer instead would get
    // nothing back for ~30 s. A model compiled for one size may take longer on the first frames.
    const fits = kept.shape.comfystreamUrl === shape.comfystreamUrl && kept.shape.audio === shape.audio;
    if (fits && kept.peer.state === "connected") {
      if (kept.shape.width !== shape.width || kept.shape.height !== shape.height) {
        this.log.info(
          { kept: `${kept.shape.width}x${kept.shape.height}`, session: `${shape.width}x${shape.height}` },
          "taking over a ComfyStream connection warmed up at another size",
        );
      }
      this.takeOvers++;
      return { peer: kept.peer, prompts: kept.prompts, keptMs: performance.now() - kept.since };
    }
    this.log.info(
      { kept: kept.shape, wanted: shape, state: kept.peer.state },
      "the kept ComfyStream connection does not fit this session; closing it and offering anew",
    );
    await kept.peer.close().catch(() => undefined);
    return undefined;
  }

  /** Closes a kept connection (the pod is stopping). */
  async close(): Promise<void> {
    const kept = this.kept;
    this.drop();
    await kept?.peer.close().catch(() => undefined);
  }

  private drop(): void {
    if (this.kept) this.kept.peer.off("state", this.kept.onState);
    this.kept = undefined;
  }
}
