import { EventEmitter } from "node:events";
import {
  MediaStreamTrack,
  RTCPeerConnection,
  RtpHeader,
  RtpPacket,
  useH264,
  useOPUS,
  type RTCDataChannel,
  type RTCIceServer,
  type RTCRtpTransceiver,
} from "werift";
import { silentLogger, type Logger } from "../common/log.js";
import { sendDtlsCloseNotify } from "./dtls-close.js";
import {
  CONTROL_CHANNEL_LABEL,
  CONTROL_REPLY_TYPES,
  parseControlMessage,
  promptsAsList,
} from "./control-messages.js";
import { postOffer } from "./comfystream-offer.js";
import { PeerLiveness } from "./peer-liveness.js";
import { iceAddressesFromEnv, iceConfig, withoutDefaultStunServer } from "./ice-config.js";

/**
 * How long ComfyStream (aiortc) may take to notice that a closed relay peer is gone: aiortc ignores
 * DTLS close_notify for its connectionState and only ICE consent expiry (6 checks ~5 s apart) ends
 * the peer, which then stops the shared pipeline — also that of a newer session (spec §1.5). A
 * reconnect that must not be hit by that should start its new `/offer` after this much time.
 */
export const COMFYSTREAM_STALE_PEER_TIMEOUT_MS = 35_000;

/** A frame's RTP timestamp step at 30 fps (90 kHz clock): the gap left where a new session continues. */
const FRAME_TICKS_30FPS = 3000;

export type WebRtcState = "new" | "connecting" | "connected" | "disconnected" | "failed" | "closed";

export interface ComfyStreamPeerOptions {
  /** Base URL of the ComfyStream server; the offer goes to `{url}/offer`. */
  comfystreamUrl: string;
  /** ComfyUI API-format workflow(s); sent as the `prompts` list. Empty/null → ComfyStream noop mode. */
  prompts: unknown[] | unknown;
  /** Sent as `resolution` in the offer body (ComfyStream uses it for warm-up). */
  width: number;
  height: number;
  /** Local addresses to gather ICE host candidates on (only those). Default: TRICKLE_RELAY_ICE_ADDRESSES. */
  iceAddresses?: string[];
  /** STUN/TURN servers; default none (see ice-config.ts). */
  iceServers?: RTCIceServer[];
  /** Limit for `POST /offer`; ComfyStream warms the workflow up inside that request. Default 300 000. */
  offerTimeoutMs?: number;
  /** Limit for ICE gathering before the offer. Default 10 000. */
  gatherTimeoutMs?: number;
  /** Limit for ICE + DTLS + control channel after the answer. Default 30 000. */
  connectTimeoutMs?: number;
  /** PLI period so the returned stream has IDRs to cut segments at (aiortc only makes IDRs on PLI). Default 1500. */
  pliIntervalMs?: number;
  /**
   * Silence, or no returned frame while sending, for this long → "disconnected" with `lossReason`
   * (peer-liveness.ts). Checked every 250 ms; 0 disables. Default 4000 (seen within ~4.25 s).
   */
  mediaTimeoutMs?: number;
  /** Grace after connecting for the first returned frame (the workflow's first frames). Default 15 000. */
  firstFrameTimeoutMs?: number;
  /** Default timeout of control-channel requests. Default 10 000. */
  requestTimeoutMs?: number;
  /** Adds a sendrecv Opus audio m-line (audio mode `comfystream`); ComfyStream then sends audio back. Default false. */
  audio?: boolean;
  logger?: Logger;
}

/** Minimal shape of a returned RTP packet (werift's RtpPacket satisfies it). */
export interface ReturnedRtpPacket {
  header: { timestamp: number; marker: boolean; sequenceNumber: number; payloadType: number; ssrc: number };
  payload: Buffer;
}

export interface ComfyStreamPeerStats {
  rtpPacketsSent: number;
  /** Marker bits sent: frames, for an RTP source that sets the marker on the last packet of a frame. */
  framesSent: number;
  /** Packets handed to sendRtp while not connected (dropped: werift would drop them anyway). */
  rtpPacketsDropped: number;
  rtpPacketsReceived: number;
  framesReceived: number;
  plisSent: number;
  controlMessagesReceived: number;
}

interface PendingRequest {
  resolve: (reply: Record<string, unknown>) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * The relay's WebRTC peer towards one ComfyStream server (spec comfystream-webrtc §5): one sendrecv
 * H.264 video m-line (packetization-mode 1, profile 42e01f), the `control` data channel created
 * before the offer, non-trickle ICE, `POST /offer {prompts, offer, resolution}` (comfystream-offer.ts).
 *
 * Events:
 *  - "state" (state: WebRtcState, previous: WebRtcState)
 *  - "rtp" (packet: RtpPacket) — every video RTP packet ComfyStream sends back
 *  - "audio" (payload: Buffer, rtpTimestamp: number) — every Opus packet it sends back (option `audio`)
 *  - "control" (message: Record<string, unknown>) — control-channel messages that answer no pending request
 */
export class ComfyStreamPeer extends EventEmitter {
  readonly stats: ComfyStreamPeerStats = {
    rtpPacketsSent: 0,
    framesSent: 0,
    rtpPacketsDropped: 0,
    rtpPacketsReceived: 0,
    framesReceived: 0,
    plisSent: 0,
    controlMessagesReceived: 0,
  };

  private readonly options: Required<
    Omit<ComfyStreamPeerOptions, "logger" | "iceServers" | "iceAddresses" | "prompts">
  > & { prompts: unknown[]; iceAddresses: string[]; iceServers: RTCIceServer[] };
  private logger: Logger;
  private currentState: WebRtcState = "new";
  private pc: RTCPeerConnection | undefined;
  private transceiver: RTCRtpTransceiver | undefined;
  private readonly sendTrack = new MediaStreamTrack({ kind: "video" });
  private readonly audioTrack = new MediaStreamTrack({ kind: "audio" });
  private audioSequence = Math.floor(Math.random() * 0x10000);
  private readonly audioSsrc = 1 + Math.floor(Math.random() * (2 ** 31 - 1));
  private control: RTCDataChannel | undefined;
  private remoteVideoSsrc: number | undefined;
  private readonly liveness: PeerLiveness;
  private pliTimer: NodeJS.Timeout | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private readonly pendingRequests = new Map<string, PendingRequest[]>();
  private readonly abortConnect = new AbortController();
  private connectStarted = false;

  constructor(options: ComfyStreamPeerOptions) {
    super();
    if (!options.comfystreamUrl) throw new Error("comfystreamUrl is required");
    if (!(options.width > 0 && options.height > 0)) throw new Error("width and height must be positive");
    this.options = {
      comfystreamUrl: options.comfystreamUrl.replace(/\/+$/, ""),
      prompts: promptsAsList(options.prompts),
      width: options.width,
      height: options.height,
      iceAddresses: options.iceAddresses ?? iceAddressesFromEnv(),
      iceServers: options.iceServers ?? [],
      offerTimeoutMs: options.offerTimeoutMs ?? 300_000,
      gatherTimeoutMs: options.gatherTimeoutMs ?? 10_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 30_000,
      pliIntervalMs: options.pliIntervalMs ?? 1500,
      mediaTimeoutMs: options.mediaTimeoutMs ?? 4000,
      firstFrameTimeoutMs: options.firstFrameTimeoutMs ?? 15_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      audio: options.audio ?? false,
    };
    this.logger = (options.logger ?? silentLogger).child({ component: "comfystream-peer" });
    this.liveness = new PeerLiveness(this.options.mediaTimeoutMs, this.options.firstFrameTimeoutMs);
  }

  get state(): WebRtcState {
    return this.currentState;
  }

  /** Why the watchdog marked the peer disconnected (undefined while it has not). */
  get lossReason(): string | undefined {
    return this.liveness.reason;
  }

  /**
   * Offers, POSTs `/offer`, applies the answer and resolves once ICE+DTLS are connected and the
   * control channel is open. Rejects with the HTTP status and body text on a non-200 answer, or
   * with the ICE/DTLS failure; the peer is then closed ("failed") and cannot be reused.
   */
  async connect(): Promise<void> {
    if (this.connectStarted) throw new Error("connect() can only be called once per ComfyStreamPeer");
    this.connectStarted = true;
    this.setState("connecting");
    try {
      await this.negotiate();
    } catch (error) {
      const wasClosedByUs = this.currentState === "closed";
      this.teardown();
      this.releasePeerConnection();
      if (!wasClosedByUs) this.setState("failed");
      throw error instanceof Error ? error : new Error(String(error));
    }
  }

  /**
   * A new session takes over this connected peer (session/peer-handover.ts): its counters and
   * liveness start afresh (the next returned frame gets the first-frame allowance, as after an
   * offer), log lines carry the new session, and ComfyStream is asked for a keyframe.
   */
  handOver(logger: Logger | undefined): void {
    if (logger) this.logger = logger.child({ component: "comfystream-peer" });
    for (const key of Object.keys(this.stats) as Array<keyof ComfyStreamPeerStats>) this.stats[key] = 0;
    this.liveness.restart(Date.now());
    this.remoteVideoSsrc = undefined; // the first packet back asks for a keyframe again
    // The new session numbers its packets afresh, but the SRTP context stays: ComfyStream's libsrtp
    // drops a packet more than 128 behind the highest one seen as a replay, which a random new
    // start is half the time. werift continues the sequence (and timestamps) from the last sent.
    this.transceiver?.sender.replaceRTP({ sequenceNumber: 0, timestamp: 0 }, true, FRAME_TICKS_30FPS);
    this.requestKeyframe();
  }

  /** Forward path: one RTP packet (the forward path packetizes each frame); werift rewrites SSRC and payload type. */
  sendRtp(packet: Buffer): void {
    if (this.currentState !== "connected" && this.currentState !== "disconnected") {
      this.stats.rtpPacketsDropped++;
      return;
    }
    let rtp: RtpPacket;
    try {
      rtp = RtpPacket.deSerialize(packet);
    } catch {
      this.stats.rtpPacketsDropped++;
      return;
    }
    this.sendTrack.writeRtp(rtp);
    this.liveness.sent(Date.now());
    this.stats.rtpPacketsSent++;
    if (rtp.header.marker) this.stats.framesSent++;
  }

  /** Audio mode `comfystream`: one 20 ms Opus packet; false (not sent) unless connected. */
  sendAudio(payload: Buffer, rtpTimestamp: number): boolean {
    if (!this.options.audio) return false;
    if (this.currentState !== "connected" && this.currentState !== "disconnected") return false;
    this.audioSequence = (this.audioSequence + 1) & 0xffff;
    const header = new RtpHeader({
      payloadType: 111,
      sequenceNumber: this.audioSequence,
      timestamp: rtpTimestamp,
      ssrc: this.audioSsrc,
      marker: false,
    });
    this.audioTrack.writeRtp(new RtpPacket(header, payload));
    return true;
  }

  /**
   * Sends a control message and resolves with the reply of the matching type (spec §1.3), or
   * rejects after `timeoutMs`. `replyType` is needed only for types outside the known table.
   */
  request(
    message: { type: string; [key: string]: unknown },
    timeoutMs: number = this.options.requestTimeoutMs,
    replyType: string | undefined = CONTROL_REPLY_TYPES[message.type],
  ): Promise<Record<string, unknown>> {
    if (!replyType) {
      return Promise.reject(new Error(`control message type "${message.type}" has no known reply type`));
    }
    const channel = this.control;
    if (!channel || channel.readyState !== "open") {
      return Promise.reject(new Error(`control channel is not open (WebRTC state ${this.currentState})`));
    }
    return new Promise((resolve, reject) => {
      const queue = this.pendingRequests.get(replyType) ?? [];
      const entry: PendingRequest = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const waiting = this.pendingRequests.get(replyType);
          const index = waiting?.indexOf(entry) ?? -1;
          if (waiting && index >= 0) waiting.splice(index, 1);
          reject(new Error(`no "${replyType}" reply to "${message.type}" within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      queue.push(entry);
      this.pendingRequests.set(replyType, queue);
      try {
        channel.send(JSON.stringify(message));
      } catch (error) {
        queue.splice(queue.indexOf(entry), 1);
        clearTimeout(entry.timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  /**
   * `update_prompts` with the workflow list; resolves with ComfyStream's `prompts_updated` reply
   * as is — `success:false` (with `error`) is a reply, not a rejection. ComfyStream requires the
   * same number of workflows as were loaded.
   */
  updatePrompts(prompts: unknown, timeoutMs?: number): Promise<Record<string, unknown>> {
    return this.request({ type: "update_prompts", prompts: promptsAsList(prompts) }, timeoutMs);
  }

  /** Sends a PLI for the returned video now (no-op until ComfyStream's SSRC is known). */
  requestKeyframe(): void {
    const ssrc = this.remoteVideoSsrc;
    const transceiver = this.transceiver;
    if (ssrc === undefined || !transceiver) return;
    if (this.currentState !== "connected" && this.currentState !== "disconnected") return;
    this.stats.plisSent++;
    transceiver.receiver.sendRtcpPLI(ssrc).catch((error: unknown) => {
      this.logger.debug({ err: error }, "sending PLI failed");
    });
  }

  /**
   * Closes the control channel, sends a DTLS close_notify and closes the peer connection.
   * Idempotent. Peers that act on close_notify (the TS stand-in) free their slot at once; aiortc
   * (ComfyStream) only notices through ICE consent expiry, see COMFYSTREAM_STALE_PEER_TIMEOUT_MS.
   */
  async close(): Promise<void> {
    if (this.currentState === "closed") return;
    this.abortConnect.abort();
    const pc = this.pc;
    this.pc = undefined;
    this.teardown();
    this.setState("closed");
    if (pc) {
      try {
        this.control?.close();
      } catch {
        // already closed
      }
      // werift sends no close_notify itself; without it ComfyStream notices only after ~30 s.
      const notified = await sendDtlsCloseNotify(this.transceiver?.dtlsTransport).catch(() => false);
      if (!notified) this.logger.debug("could not send DTLS close_notify");
      await pc
        .close()
        .catch((error: unknown) => this.logger.debug({ err: error }, "closing peer connection"));
    }
  }

  private async negotiate(): Promise<void> {
    const { options } = this;
    const pc = new RTCPeerConnection({
      codecs: { video: [useH264()], audio: options.audio ? [useOPUS()] : [] },
      // One transport for video and data: with werift's default "max-compat" the transport of the
      // m-line that BUNDLE folds away keeps its UDP socket open after close() (a leak per session).
      bundlePolicy: "max-bundle",
      ...iceConfig(options.iceAddresses, options.iceServers),
    });
    this.pc = pc;
    pc.connectionStateChange.subscribe((state) => this.onConnectionState(state));

    const transceiver = pc.addTransceiver(this.sendTrack, { direction: "sendrecv" });
    this.transceiver = transceiver;
    transceiver.onTrack.subscribe((track) => {
      track.onReceiveRtp.subscribe((rtp) => this.onReturnedRtp(rtp));
      track.onReceiveRtcp.subscribe(() => this.liveness.inbound(Date.now()));
    });
    transceiver.sender.onRtcp.subscribe(() => this.liveness.inbound(Date.now()));
    if (options.audio) {
      // ComfyStream adds its own sendrecv audio transceiver when the offer has m=audio (spec §1.2 step 4).
      const audio = pc.addTransceiver(this.audioTrack, { direction: "sendrecv" });
      audio.onTrack.subscribe((track) => {
        track.onReceiveRtp.subscribe((rtp) => this.emit("audio", rtp.payload, rtp.header.timestamp));
      });
    }
    // werift's connectionState ignores the DTLS transport closing (ComfyStream's close_notify when it
    // closes the pc), so watch the transport directly.
    transceiver.dtlsTransport.onStateChange.subscribe((state) => {
      if (state === "closed" || state === "failed") this.onConnectionState(state);
    });

    // Before the offer, so the offer carries an m=application section (spec §5.3).
    const control = pc.createDataChannel(CONTROL_CHANNEL_LABEL);
    this.control = control;
    control.onMessage.subscribe((data) => this.onControlMessage(data));
    const controlOpen = new Promise<void>((resolve) => {
      if (control.readyState === "open") resolve();
      control.stateChanged.subscribe((state) => {
        if (state === "open") resolve();
      });
    });

    withoutDefaultStunServer(pc, options.iceServers);
    await pc.setLocalDescription(await pc.createOffer());
    await this.waitForGathering(pc);
    const local = pc.localDescription;
    if (!local) throw new Error("no local description after ICE gathering");
    this.logger.debug({ sdp: local.sdp }, "offer");

    const answerSdp = await postOffer(
      options,
      { sdp: local.sdp, type: local.type },
      this.abortConnect.signal,
      this.logger,
    );
    if (this.abortConnect.signal.aborted) throw new Error("closed while connecting");
    await pc.setRemoteDescription({ sdp: answerSdp, type: "answer" });

    await this.withTimeout(
      Promise.all([this.waitForConnected(pc), controlOpen]),
      options.connectTimeoutMs,
      "ICE/DTLS connection and control channel",
    );
    this.liveness.connected(Date.now());
    this.startTimers();
    this.setState("connected");
  }

  private waitForGathering(pc: RTCPeerConnection): Promise<void> {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    const done = new Promise<void>((resolve) => {
      const { unSubscribe } = pc.iceGatheringStateChange.subscribe((state) => {
        if (state === "complete") {
          unSubscribe();
          resolve();
        }
      });
    });
    return this.withTimeout(done, this.options.gatherTimeoutMs, "ICE gathering");
  }

  private waitForConnected(pc: RTCPeerConnection): Promise<void> {
    if (pc.connectionState === "connected") return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const { unSubscribe } = pc.connectionStateChange.subscribe((state) => {
        if (state === "connected") {
          unSubscribe();
          resolve();
        } else if (state === "failed" || state === "closed") {
          unSubscribe();
          reject(new Error(`WebRTC connection to ComfyStream ${state} during ICE/DTLS setup`));
        }
      });
    });
  }

  private withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what} timed out after ${timeoutMs} ms`)), timeoutMs);
      const onAbort = (): void => reject(new Error(`closed during ${what}`));
      this.abortConnect.signal.addEventListener("abort", onAbort, { once: true });
      promise.then(
        (value) => {
          clearTimeout(timer);
          this.abortConnect.signal.removeEventListener("abort", onAbort);
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          this.abortConnect.signal.removeEventListener("abort", onAbort);
          reject(error instanceof Error ? error : new Error(String(error)));
        },
      );
    });
  }

  private startTimers(): void {
    const { pliIntervalMs, mediaTimeoutMs } = this.options;
    if (pliIntervalMs > 0) this.pliTimer = setInterval(() => this.requestKeyframe(), pliIntervalMs);
    if (mediaTimeoutMs > 0) {
      this.watchdogTimer = setInterval(() => this.checkLiveness(), Math.min(250, mediaTimeoutMs));
    }
  }

  private checkLiveness(): void {
    if (this.currentState !== "connected" && this.currentState !== "disconnected") return;
    const verdict = this.liveness.check(Date.now(), this.currentState === "disconnected");
    if (verdict?.kind === "lost") {
      this.logger.warn({ reason: verdict.reason }, "ComfyStream looks dead; marking disconnected");
      this.setState("disconnected");
    } else if (verdict?.kind === "recovered") {
      this.setState("connected");
    }
  }

  private onReturnedRtp(rtp: RtpPacket): void {
    this.liveness.returnedFrame(Date.now());
    this.stats.rtpPacketsReceived++;
    if (rtp.header.marker) this.stats.framesReceived++;
    if (this.remoteVideoSsrc !== rtp.header.ssrc) {
      this.remoteVideoSsrc = rtp.header.ssrc;
      this.requestKeyframe(); // start cuttable output as soon as the stream appears
    }
    this.emit("rtp", rtp);
  }

  private onConnectionState(state: string): void {
    this.logger.debug({ state }, "peer connection state");
    if (this.currentState === "closed" || this.currentState === "failed") return;
    if (this.currentState === "new" || this.currentState === "connecting") {
      return; // connect() decides when "connected" is reached (control channel open too)
    }
    if (state === "failed" || state === "closed") {
      // Terminal: ICE consent expired, DTLS closed by ComfyStream, or transport error.
      this.logger.warn({ state }, "WebRTC connection to ComfyStream lost");
      this.teardown();
      this.releasePeerConnection();
      this.setState("failed");
    } else if (state === "disconnected") {
      this.setState("disconnected");
    } else if (state === "connected") {
      this.setState("connected");
    }
  }

  private onControlMessage(data: string | Buffer): void {
    this.liveness.inbound(Date.now());
    this.stats.controlMessagesReceived++;
    const parsed = parseControlMessage(data);
    if (!parsed.ok) {
      this.logger.warn(
        {
          data: (typeof data === "string" ? data : data.subarray(0, 200).toString("utf8")).slice(0, 200),
          reason: parsed.reason,
        },
        "ignoring control message that is not a JSON object",
      );
      return;
    }
    const message = parsed.message;
    const type = typeof message.type === "string" ? message.type : undefined;
    const waiting = type ? this.pendingRequests.get(type) : undefined;
    const entry = waiting?.shift();
    if (entry) {
      clearTimeout(entry.timer);
      entry.resolve(message);
    } else {
      this.emit("control", message);
    }
  }

  private setState(state: WebRtcState): void {
    if (state === this.currentState) return;
    const previous = this.currentState;
    this.currentState = state;
    this.logger.info({ state, previous }, "WebRTC state");
    this.emit("state", state, previous);
  }

  /** Stops timers and fails pending requests. */
  private teardown(): void {
    clearInterval(this.pliTimer);
    clearInterval(this.watchdogTimer);
    this.pliTimer = undefined;
    this.watchdogTimer = undefined;
    for (const [replyType, queue] of this.pendingRequests) {
      for (const entry of queue) {
        clearTimeout(entry.timer);
        entry.reject(new Error(`WebRTC peer closed before the "${replyType}" reply`));
      }
    }
    this.pendingRequests.clear();
  }

  /** Closes the pc without waiting (failure paths; it still holds sockets). */
  private releasePeerConnection(): void {
    const pc = this.pc;
    this.pc = undefined;
    if (pc) void pc.close().catch(() => undefined);
  }
}
