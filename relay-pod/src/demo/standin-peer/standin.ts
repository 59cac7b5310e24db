/**
 * A TypeScript stand-in for a ComfyStream server (comfystream-webrtc spec §6), for relay tests,
 * benchmarks and the demo. It speaks ComfyStream's HTTP and WebRTC contract (spec §1.2–§1.5):
 * `POST /offer` → werift answer with one sendrecv H.264 m-line, the `control` data channel, and
 * processed video back on the same m-line with RTP timestamp = input timestamp + a constant.
 *
 * Like the real server it holds ONE global pipeline: a second `/offer` while a peer is connected is
 * accepted (HTTP 200) and re-applies its prompts (warm-up again) without closing the first peer, and
 * when ANY peer's connection ends (closed/failed) the shared pipeline is stopped for everyone — the
 * stale-peer hazard of spec §1.5. Unlike the real server, each peer's frames are processed by its
 * own decoder/encoder instead of one shared frame queue, so two concurrent peers do not steal each
 * other's frames; they only share the pipeline state (prompts, running, paused).
 */
import { randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import pino, { type Logger } from "pino";
import {
  MediaStreamTrack,
  PictureLossIndication,
  RTCPeerConnection,
  RtcpPayloadSpecificFeedback,
  RtpHeader,
  RtpPacket,
  useH264,
  useOPUS,
  type RTCDataChannel,
} from "werift";
import { resolveFfmpeg } from "../../media/ffmpeg.js";
import { sendDtlsCloseNotify } from "../../webrtc/dtls-close.js";
import { SrtpReplayWindow } from "./srtp-replay.js";
import { iceAddressesFromEnv, iceConfig, withoutDefaultStunServer } from "../../webrtc/ice-config.js";
import { MediaProcessor, type MediaCounters, type StandinMode } from "./media-processor.js";
import { validatePrompts, type Workflow } from "./workflow.js";
import { answerControlMessage, type PipelineState } from "./control.js";
import { INTERNAL_ERROR_BODY, readJson, send, sendJson } from "./http-io.js";

export interface TsStandinOptions {
  /** Default 127.0.0.1 (ComfyStream's default host). */
  host?: string;
  /** Default 8889 (ComfyStream's default port); 0 picks a free port. */
  port?: number;
  /** Local ICE host-candidate addresses (only those). Default: TRICKLE_RELAY_ICE_ADDRESSES. */
  iceAddresses?: string[];
  /** "filter" (decode, ffmpeg -vf, re-encode) or "passthrough" (payload returned as is). Default "filter". */
  mode?: StandinMode;
  /** ffmpeg video filter of a loaded workflow in filter mode. Default "negate". */
  filter?: string;
  /** Processing-rate cap (filter mode): frames above it are dropped, newest kept. 0 = none. */
  maxFps?: number;
  /**
   * With maxFps: "comfystream" queues like the real ComfyStream (a one-slot workflow input, every
   * frame received waiting for an output: a frame evicted from the slot delays all later ones for
   * good); default "newest" (evicted frames are simply not returned).
   */
  processingQueue?: "newest" | "comfystream";
  /** "ignore" answers no PLI, like the real ComfyStream on aiortc 1.4.0; default "honour". */
  keyframeRequests?: "honour" | "ignore";
  /** Delay inside `/offer` and `POST /prompt` when prompts are given (ComfyStream's warm-up). */
  warmupMs?: number;
  /** Make every prompt application fail: `/offer` and `/prompt` answer 500, update_prompts replies success:false. */
  failPrompts?: boolean;
  /**
   * How a client that closes is noticed. "dtls" (default): at once, on its DTLS close_notify (the
   * relay sends one). "consent": only when ICE consent expires (~30 s with werift), which is what
   * aiortc does — its connectionState ignores close_notify (seen with Debian's aiortc 1.4.0 and in
   * current aiortc's `__updateConnectionState`) — so the stale-peer hazard of spec §1.5 shows.
   * Like the real server then, a newer peer gets no frames back while such a stale peer lingers
   * (measured there: 0 of 240, test/session/real-comfystream-sessions.test.ts).
   */
  closeDetection?: "dtls" | "consent";
  /** Default: resolveFfmpeg() (FFMPEG_BIN → ffmpeg-static → PATH). */
  ffmpegPath?: string;
  logger?: Logger;
}

export interface TsStandin {
  /** Base URL, e.g. http://127.0.0.1:8889 */
  readonly url: string;
  readonly port: number;
  stats(): StandinStats;
  close(): Promise<void>;
}

interface PeerEntry {
  id: string;
  pc: RTCPeerConnection;
  processor: MediaProcessor;
  inboundTrackId: string | undefined;
  state: string;
  fps: FpsMeter;
  /** Closed by its client (DTLS close_notify) but, with closeDetection "consent", not yet gone. */
  stale: boolean;
  replay: SrtpReplayWindow;
}

export interface StandinStats {
  mode: StandinMode;
  offers: number;
  offersFailed: number;
  /** Video packets dropped as SRTP replays (libsrtp's check, see srtp-replay.ts). */
  srtpReplayDrops: number;
  peersServed: number;
  activePeers: number;
  media: MediaCounters;
  pipeline: {
    running: boolean;
    paused: boolean;
    noop: boolean;
    promptCount: number;
    width: number;
    height: number;
  };
  prompts: Workflow[];
  lastPromptsReceived: unknown;
  promptUpdates: number;
  promptUpdatesFailed: number;
  controlMessages: Record<string, number>;
  lastControlMessage: unknown;
  /** `a=candidate` lines of the last offer received and the last answer sent. */
  lastOfferCandidates: string[];
  lastAnswerCandidates: string[];
  peers: Array<{ id: string; state: string } & MediaCounters>;
}

export async function startTsStandin(options: TsStandinOptions = {}): Promise<TsStandin> {
  const standin = new Standin(options);
  await standin.listen();
  return standin;
}

class FpsMeter {
  private frames = 0;
  private readonly perSecond: number[] = [];
  private readonly timer: NodeJS.Timeout;
  constructor() {
    this.timer = setInterval(() => {
      this.perSecond.push(this.frames);
      this.frames = 0;
      if (this.perSecond.length > 60) this.perSecond.shift();
    }, 1000);
    this.timer.unref();
  }
  add(frames: number): void {
    this.frames += frames;
  }
  snapshot(): Record<string, unknown> {
    const last = this.perSecond.at(-1) ?? 0;
    const average = this.perSecond.length
      ? this.perSecond.reduce((a, b) => a + b, 0) / this.perSecond.length
      : 0;
    return {
      timestamp: Date.now() / 1000,
      fps: last,
      minute_avg_fps: average,
      minute_fps_array: [...this.perSecond],
    };
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

class Standin implements TsStandin {
  private readonly server = http.createServer((request, response) => void this.route(request, response));
  private readonly logger: Logger;
  private readonly mode: StandinMode;
  private readonly iceAddresses: string[];
  private readonly peers = new Map<string, PeerEntry>();
  private readonly closedCounters: MediaCounters = {
    framesIn: 0,
    framesOut: 0,
    framesDropped: 0,
    keyframesOut: 0,
    keyframeRequests: 0,
    encoderRestarts: 0,
  };
  private readonly pipeline: PipelineState = {
    prompts: [],
    running: false,
    paused: false,
    width: 512,
    height: 512,
  };
  private readonly counters = {
    offers: 0,
    offersFailed: 0,
    srtpReplayDrops: 0,
    peersServed: 0,
    promptUpdates: 0,
    promptUpdatesFailed: 0,
    lastPromptsReceived: undefined as unknown,
    controlMessages: {} as Record<string, number>,
    lastControlMessage: undefined as unknown,
    lastOfferCandidates: [] as string[],
    lastAnswerCandidates: [] as string[],
  };
  url = "";
  port = 0;

  constructor(private readonly options: TsStandinOptions) {
    this.logger =
      options.logger ?? pino({ name: "ts-standin", level: process.env.STANDIN_LOG_LEVEL ?? "warn" });
    this.mode = options.mode ?? "filter";
    this.iceAddresses = options.iceAddresses ?? iceAddressesFromEnv();
  }

  async listen(): Promise<void> {
    const host = this.options.host ?? "127.0.0.1";
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.options.port ?? 8889, host, () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
    this.url = `http://${host.includes(":") ? `[${host}]` : host}:${this.port}`;
    this.logger.info(
      { url: this.url, mode: this.mode, iceAddresses: this.iceAddresses },
      "stand-in listening",
    );
  }

  async close(): Promise<void> {
    for (const peer of [...this.peers.values()]) {
      this.retirePeer(peer);
      // aiortc's close() sends close_notify, so the relay sees the server go away at once.
      const video = peer.pc.getTransceivers().find((transceiver) => transceiver.kind === "video");
      await sendDtlsCloseNotify(video?.dtlsTransport).catch(() => false);
      await peer.pc.close().catch(() => undefined);
    }
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  stats(): StandinStats {
    const media = { ...this.closedCounters };
    const peers: StandinStats["peers"] = [];
    for (const peer of this.peers.values()) {
      addCounters(media, peer.processor.counters);
      peers.push({ id: peer.id, state: peer.state, ...peer.processor.counters });
    }
    const { pipeline, counters } = this;
    return {
      mode: this.mode,
      offers: counters.offers,
      offersFailed: counters.offersFailed,
      srtpReplayDrops: counters.srtpReplayDrops,
      peersServed: counters.peersServed,
      activePeers: this.peers.size,
      media,
      pipeline: {
        running: pipeline.running,
        paused: pipeline.paused,
        noop: pipeline.prompts.length === 0,
        promptCount: pipeline.prompts.length,
        width: pipeline.width,
        height: pipeline.height,
      },
      prompts: pipeline.prompts,
      lastPromptsReceived: counters.lastPromptsReceived,
      promptUpdates: counters.promptUpdates,
      promptUpdatesFailed: counters.promptUpdatesFailed,
      controlMessages: { ...counters.controlMessages },
      lastControlMessage: counters.lastControlMessage,
      lastOfferCandidates: counters.lastOfferCandidates,
      lastAnswerCandidates: counters.lastAnswerCandidates,
      peers,
    };
  }

  // ---- HTTP ---------------------------------------------------------------------------------

  private async route(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    // Every ComfyStream route also exists under /live (spec §1.1).
    const path = (request.url ?? "/").split("?")[0]!.replace(/^\/live(?=\/|$)/, "") || "/";
    const method = request.method ?? "GET";
    try {
      if ((path === "/" || path === "/health") && method === "GET") {
        // ComfyStream answers the text OK labelled application/json (spec §1.1).
        return send(response, 200, "OK", "application/json");
      }
      if (path === "/offer" && method === "POST") return await this.handleOffer(request, response);
      if (path === "/prompt" && method === "POST") {
        const body = await readJson(request);
        this.counters.lastPromptsReceived = body;
        await this.applyPrompts(body);
        return send(response, 200, "OK", "application/json");
      }
      if (path === "/streams/stats" && method === "GET") {
        const all: Record<string, unknown> = {};
        for (const peer of this.peers.values())
          if (peer.inboundTrackId) all[peer.inboundTrackId] = peer.fps.snapshot();
        return sendJson(response, 200, all);
      }
      const streamStats = /^\/stream\/([^/]+)\/stats$/.exec(path);
      if (streamStats && method === "GET") {
        const peer = [...this.peers.values()].find((entry) => entry.inboundTrackId === streamStats[1]);
        return sendJson(response, 200, peer ? peer.fps.snapshot() : { error: "Stream not found" });
      }
      if (path === "/stats" && method === "GET") return sendJson(response, 200, this.stats());
      const known =
        ["/", "/health", "/offer", "/prompt", "/streams/stats", "/stats"].includes(path) || streamStats;
      return known ? send(response, 405, "405: Method Not Allowed") : send(response, 404, "404: Not Found");
    } catch (error) {
      // ComfyStream has no error middleware: any exception is aiohttp's plain-text 500 (spec §1.2).
      const reason = error instanceof Error ? error.message : String(error);
      this.logger.warn({ path, reason }, "request failed");
      if (!response.headersSent) {
        response.setHeader("x-standin-error", reason.replace(/[^\x20-\x7e]/g, "?").slice(0, 500));
        send(response, 500, INTERNAL_ERROR_BODY);
      }
    }
  }

  private async handleOffer(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    this.counters.offers++;
    try {
      const body = (await readJson(request)) as {
        prompts?: unknown;
        offer?: { sdp?: unknown; type?: unknown };
        resolution?: { width?: unknown; height?: unknown };
      };
      // Same order as ComfyStream: resolution, then prompts + warm-up, and only then the SDP.
      const { resolution } = body;
      if (resolution && typeof resolution.width === "number" && typeof resolution.height === "number") {
        this.pipeline.width = resolution.width;
        this.pipeline.height = resolution.height;
      }
      const prompts = body.prompts;
      this.counters.lastPromptsReceived = prompts;
      const noop =
        prompts === undefined || prompts === null || (Array.isArray(prompts) && prompts.length === 0);
      if (noop) {
        this.pipeline.prompts = [];
        this.pipeline.running = true;
        this.pipeline.paused = false;
      } else {
        await this.applyPrompts(prompts);
      }
      const offer = body.offer;
      if (!offer || typeof offer.sdp !== "string") throw new Error("KeyError: 'offer'");
      if (/^m=video/m.test(offer.sdp) && !/^a=rtpmap:\d+ H264\/90000/im.test(offer.sdp)) {
        throw new Error("Failed to set remote video description send parameters");
      }
      this.counters.lastOfferCandidates = candidateLines(offer.sdp);
      const answer = await this.createPeer(offer.sdp);
      this.counters.lastAnswerCandidates = candidateLines(answer.sdp);
      this.counters.peersServed++;
      sendJson(response, 200, answer);
    } catch (error) {
      this.counters.offersFailed++;
      throw error;
    }
  }

  private async applyPrompts(prompts: unknown): Promise<void> {
    if (this.options.failPrompts) throw new Error("prompts rejected (--fail-prompts)");
    const list = validatePrompts(prompts);
    if (this.options.warmupMs) await sleep(this.options.warmupMs);
    this.pipeline.prompts = list;
    this.pipeline.running = true;
    this.pipeline.paused = false;
  }

  // ---- WebRTC -------------------------------------------------------------------------------

  private async createPeer(offerSdp: string): Promise<{ sdp: string; type: string }> {
    const id = randomUUID();
    const pc = new RTCPeerConnection({
      codecs: { video: [useH264()], audio: [useOPUS()] },
      ...iceConfig(this.iceAddresses),
    });
    const outputTrack = new MediaStreamTrack({ kind: "video" });
    const outputAudioTrack = new MediaStreamTrack({ kind: "audio" });
    const processor = new MediaProcessor({
      mode: this.mode,
      filter: this.options.filter ?? "negate",
      maxFps: this.options.maxFps ?? 0,
      processingQueue: this.options.processingQueue ?? "newest",
      keyframeRequests: this.options.keyframeRequests ?? "honour",
      ffmpegPath: this.options.ffmpegPath ?? (await resolveFfmpeg()).path,
      gate: () => ({
        process: this.pipeline.running && !this.pipeline.paused && !this.staleBesides(peer),
        applyFilter: this.pipeline.prompts.length > 0,
      }),
      send: (packet) => {
        if (packet.header.marker) peer.fps.add(1);
        outputTrack.writeRtp(packet);
      },
      logger: this.logger.child({ peer: id }),
    });
    const peer: PeerEntry = {
      id,
      pc,
      processor,
      inboundTrackId: undefined,
      state: "new",
      fps: new FpsMeter(),
      stale: false,
      replay: new SrtpReplayWindow(),
    };
    try {
      await processor.start();
      pc.onDataChannel.subscribe((channel) => this.onDataChannel(channel));
      const onPeerState = (state: string): void => {
        if (peer.state === state || peer.state === "closed" || peer.state === "failed") return;
        peer.state = state;
        this.logger.info({ peer: id, state }, "peer connection state");
        if (state === "failed" || state === "closed") {
          // ComfyStream closes the pc and stops the shared pipeline for everyone (spec §1.5).
          this.pipeline.running = false;
          this.retirePeer(peer);
          void pc.close().catch(() => undefined);
        }
      };
      pc.connectionStateChange.subscribe(onPeerState);
      let haveVideo = false;
      let haveAudio = false;
      pc.onTrack.subscribe((track) => {
        if (track.kind === "audio" && !haveAudio) {
          haveAudio = true;
          // Echoed, stamped as aiortc does: a random origin plus the distance from the first packet.
          const echo = new AudioEcho(
            (packet) => outputAudioTrack.writeRtp(packet),
            () =>
              this.logger.warn(
                { peer: id },
                "no audio for 1 s: the audio sender died on a silence frame without PTS (as aiortc's does)",
              ),
          );
          track.onReceiveRtp.subscribe((packet: RtpPacket) => echo.push(packet));
          return;
        }
        if (track.kind !== "video" || haveVideo) return; // only the first track of a kind is used
        haveVideo = true;
        peer.inboundTrackId = track.id ?? track.uuid;
        // ComfyStream's libsrtp drops replays; werift's SRTP does not, so the stand-in does it here.
        track.onReceiveRtp.subscribe((packet: RtpPacket) => {
          if (peer.replay.accept(packet.header.sequenceNumber)) processor.pushRtp(packet);
          else this.counters.srtpReplayDrops++;
        });
      });
      await pc.setRemoteDescription({ type: "offer", sdp: offerSdp });
      withoutDefaultStunServer(pc);
      const video = pc.getTransceivers().find((transceiver) => transceiver.kind === "video");
      if (video) {
        // werift's connectionState ignores a DTLS close_notify; watch the DTLS transport to see a
        // graceful client close at once (see closeDetection for what aiortc does).
        if ((this.options.closeDetection ?? "dtls") === "dtls") {
          video.dtlsTransport.onStateChange.subscribe((state) => {
            if (state === "closed" || state === "failed") onPeerState(state);
          });
        } else {
          video.dtlsTransport.onStateChange.subscribe((state) => {
            if (state !== "closed" || peer.stale) return;
            peer.stale = true;
            this.logger.info({ peer: id }, "client closed DTLS; the peer lingers until ICE consent expires");
          });
        }
        // The processed video goes back on the same sendrecv m-line the relay sends on.
        video.sender.replaceTrack(outputTrack);
        video.setDirection("sendrecv");
        video.sender.onPictureLossIndication.subscribe(() => processor.requestKeyframe());
        // werift routes a PLI by its *sender* SSRC first; on a sendrecv m-line that is the remote
        // sender's SSRC, i.e. our receiver, so the PLI lands there instead of on our sender.
        video.receiver.onRtcp.subscribe((packet) => {
          if (
            packet.type === RtcpPayloadSpecificFeedback.type &&
            packet.feedback.count === PictureLossIndication.count &&
            packet.feedback.mediaSsrc === video.sender.ssrc
          ) {
            processor.requestKeyframe();
          }
        });
      }
      const audio = pc.getTransceivers().find((transceiver) => transceiver.kind === "audio");
      if (audio) {
        // ComfyStream answers m=audio with its own sendrecv Opus transceiver (spec §1.2 step 4).
        audio.sender.replaceTrack(outputAudioTrack);
        audio.setDirection("sendrecv");
      }
      await pc.setLocalDescription(await pc.createAnswer());
      await waitForGathering(pc);
      const local = pc.localDescription;
      if (!local) throw new Error("no local description");
      this.peers.set(id, peer);
      return { sdp: local.sdp, type: local.type };
    } catch (error) {
      processor.stop();
      peer.fps.stop();
      await pc.close().catch(() => undefined);
      throw error;
    }
  }

  /** Another peer was closed by its client but lingers (closeDetection "consent"). */
  private staleBesides(peer: PeerEntry): boolean {
    for (const other of this.peers.values()) if (other !== peer && other.stale) return true;
    return false;
  }

  private retirePeer(peer: PeerEntry): void {
    if (!this.peers.delete(peer.id)) return;
    peer.processor.stop();
    peer.fps.stop();
    addCounters(this.closedCounters, peer.processor.counters);
  }

  private onDataChannel(channel: RTCDataChannel): void {
    if (channel.label !== "control") return; // "data" is server→client only; anything else is ignored
    channel.onMessage.subscribe((data) => {
      const reply = answerControlMessage(typeof data === "string" ? data : data.toString("utf8"), {
        pipeline: this.pipeline,
        counters: this.counters,
        failPrompts: this.options.failPrompts === true,
        logger: this.logger,
      });
      if (reply) channel.send(JSON.stringify(reply));
    });
  }
}

/**
 * The stand-in's audio: what ComfyStream does with a workflow that has no audio node (spec
 * comfystream-webrtc §1.4): every packet back, in order, its timestamp a random origin plus the
 * distance from the first packet received (aiortc's receive-side pts → its sender's timestamps).
 * And what the real server does after 1 s without audio: its silence frame has no PTS, aiortc's
 * audio sender dies on it, and no audio comes back on that connection again.
 */
class AudioEcho {
  private readonly origin = Math.floor(Math.random() * 2 ** 32);
  private readonly ssrc = 1 + Math.floor(Math.random() * (2 ** 31 - 1));
  private first: number | undefined;
  private sequence = Math.floor(Math.random() * 0x10000);
  private lastArrivalMs = 0;
  /** Set once a gap of 1 s killed the sender, as aiortc's does. */
  senderDead = false;

  constructor(
    private readonly send: (packet: RtpPacket) => void,
    private readonly onSenderDeath: () => void = () => undefined,
  ) {}

  push(packet: RtpPacket): void {
    const now = performance.now();
    if (this.first !== undefined && now - this.lastArrivalMs > 1000 && !this.senderDead) {
      this.senderDead = true;
      this.onSenderDeath();
    }
    this.lastArrivalMs = now;
    if (this.senderDead) return;
    this.first ??= packet.header.timestamp;
    this.sequence = (this.sequence + 1) & 0xffff;
    const header = new RtpHeader({
      payloadType: packet.header.payloadType,
      sequenceNumber: this.sequence,
      timestamp: (this.origin + ((packet.header.timestamp - this.first) >>> 0)) >>> 0,
      ssrc: this.ssrc,
      marker: packet.header.marker,
    });
    this.send(new RtpPacket(header, packet.payload));
  }
}

function candidateLines(sdp: string): string[] {
  return sdp.split(/\r?\n/).filter((line) => line.startsWith("a=candidate:"));
}

function addCounters(into: MediaCounters, from: MediaCounters): void {
  for (const key of Object.keys(into) as Array<keyof MediaCounters>) into[key] += from[key];
}

function waitForGathering(pc: RTCPeerConnection): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("ICE gathering timed out")), 10_000);
    const { unSubscribe } = pc.iceGatheringStateChange.subscribe((state) => {
      if (state === "complete") {
        clearTimeout(timer);
        unSubscribe();
        resolve();
      }
    });
  });
}
