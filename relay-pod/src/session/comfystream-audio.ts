/**
 * Audio mode `comfystream` (issue 13): the input's audio goes to ComfyStream as 20 ms Opus on the
 * offer's audio m-line, and what comes back is put into the output (AAC by default, or Opus as it
 * came) at the PTS of the input audio it was made from, so it stays in sync with the processed video
 * whose PTS are the input's too.
 *
 * Timing. The RTP timestamp of a sent packet is its input PTS on a 48 kHz clock from a base. aiortc
 * (ComfyStream) stamps what it sends back as a random origin plus the distance from the first packet
 * it received (spec comfystream-webrtc §1.4, aiortc receive-side timing), so the first packet back
 * fixes the offset and every later one maps to the PTS of the packet it came from. A new peer
 * connection learns the offset again.
 *
 * Pacing. Input audio arrives a segment at a time; sent in that burst, ComfyStream's queue runs dry
 * between bursts, and after 1 s without audio it makes a silence frame without a PTS, which kills
 * aiortc's audio sender for the rest of the connection (seen against the real server: "uint32_add
 * ... NoneType", no audio back after ~3 s). So packets go out at their own pace (20 ms apart, by
 * RTP timestamp), and when the input's audio pauses the relay sends Opus silence itself.
 */
import type { Logger } from "../common/log.js";
import {
  AacFromOpusEncoder,
  InputAudioDecoder,
  OPUS_SAMPLE_RATE,
  OpusFrameEncoder,
} from "../media/audio-transcode.js";
import {
  AAC_ADTS_TS_STREAM,
  AAC_STREAM_ID,
  OPUS_STREAM_ID,
  OPUS_TS_STREAM,
  opusPesPayload,
} from "../media/opus-ts.js";
import { ptsForwardDistance, ptsSignedDistance, wrapPts } from "../media/ts-packet.js";
import type { AudioCodec, AudioPes } from "../media/ts-audio.js";

export type AudioOutputCodec = "aac" | "opus";

export interface ComfyStreamAudioOptions {
  ffmpegPath: string;
  outputCodec: AudioOutputCodec;
  /** Sends one Opus packet to ComfyStream with this RTP timestamp (48 kHz); false when not connected. */
  send(packet: Buffer, rtpTimestamp: number): boolean;
  /** A PES for the output, at the input PTS it belongs to. */
  output(pes: AudioPes): void;
  /** Send silence while the input's audio pauses (to ComfyStream: its own silence kills its sender). */
  fillPauses: boolean;
  log: Logger;
}

/** Pacer tick; a packet is sent when its RTP time is due on the wall clock. */
const PACE_TICK_MS = 20;
/** A queue this far behind its schedule (a stall, a burst after it) is re-anchored to now. */
const RESYNC_LATE_MS = 500;
/** No audio due for this long while connected: silence goes out instead (ComfyStream's own dies). */
const SILENCE_AFTER_MS = 200;
const FRAME_TICKS_48K = 960;

export interface ComfyStreamAudioStats {
  packetsSent: number;
  packetsNotSent: number;
  /** Opus silence sent while the input had no audio, to keep ComfyStream's audio sender alive. */
  silenceSent: number;
  packetsReturned: number;
  decodeErrors: number;
}

export class ComfyStreamAudio {
  readonly stats: ComfyStreamAudioStats = {
    packetsSent: 0,
    packetsNotSent: 0,
    silenceSent: 0,
    packetsReturned: 0,
    decodeErrors: 0,
  };
  private decoder: InputAudioDecoder | undefined;
  private decoderCodec: AudioCodec | undefined;
  private readonly encoder: OpusFrameEncoder;
  private readonly aac: AacFromOpusEncoder | undefined;
  /**
   * Where input PTS sit on the RTP timeline: from RTP timestamp `rtp` on, PTS `pts` is at `rtp`. A
   * new base starts where the input's clock went back, or its audio came later than silence already
   * sent for that time; the newest few are kept to map what comes back.
   */
  private bases: Array<{ rtp: number; pts: number }> = [];
  private readonly rtpOrigin = Math.floor(Math.random() * 2 ** 32);
  /** First RTP timestamp sent on the current connection, and the offset of what comes back. */
  private firstSentOnStream: number | undefined;
  private returnOffset: number | undefined;
  /** Packets waiting for their time, in RTP timestamp order. */
  private readonly queue: Array<{ packet: Buffer; pts: number }> = [];
  /** Wall clock (ms) at which RTP timestamp `paceTimestamp` is due. */
  private paceWallMs = 0;
  /** Input PTS due at `paceWallMs`. */
  private paceTimestamp: number | undefined;
  private lastSentTimestamp: number | undefined;
  private lastSentWallMs = performance.now();
  private readonly pacer: NodeJS.Timeout | undefined;

  constructor(private readonly options: ComfyStreamAudioOptions) {
    this.encoder = new OpusFrameEncoder((packet, pts) => this.enqueue(packet, pts));
    if (options.fillPauses) {
      this.pacer = setInterval(() => this.pace(performance.now()), PACE_TICK_MS);
      this.pacer.unref();
    }
    if (options.outputCodec === "aac") {
      this.aac = new AacFromOpusEncoder(
        options.ffmpegPath,
        (adts, pts) => options.output({ pts, streamId: AAC_STREAM_ID, payload: adts, frames: 1 }),
        options.log,
      );
    }
  }

  /** The output stream to declare in the PMT. */
  get outputStream(): { streamType: number; descriptors: Buffer; streamId: number } {
    return this.options.outputCodec === "aac"
      ? { ...AAC_ADTS_TS_STREAM, streamId: AAC_STREAM_ID }
      : { ...OPUS_TS_STREAM, streamId: OPUS_STREAM_ID };
  }

  /** An input PES (its codec decodable: decodableAudioCodec). */
  input(pes: AudioPes, codec: AudioCodec): void {
    if (pes.pts === undefined) return;
    if (this.decoder === undefined || this.decoderCodec !== codec) {
      void this.decoder?.stop();
      this.decoderCodec = codec;
      this.decoder = new InputAudioDecoder(
        codec,
        this.options.ffmpegPath,
        (chunk) => this.encoder.push(chunk),
        this.options.log,
      );
    }
    this.decoder.push(pes.payload, pes.pts);
  }

  /** A new peer connection: what comes back is timed afresh. */
  newStream(): void {
    this.firstSentOnStream = undefined;
    this.returnOffset = undefined;
  }

  /** An Opus packet ComfyStream sent back. */
  returned(payload: Buffer, rtpTimestamp: number): void {
    this.stats.packetsReturned++;
    if (this.firstSentOnStream === undefined) return; // not ours
    this.returnOffset ??= (rtpTimestamp - this.firstSentOnStream) >>> 0;
    const sentTimestamp = (rtpTimestamp - this.returnOffset) >>> 0;
    const base = this.bases.findLast((b) => ((sentTimestamp - b.rtp) | 0) >= 0);
    if (base === undefined) return; // silence sent before the input's audio began: no input PTS for it
    const samples = (sentTimestamp - base.rtp) | 0;
    const pts = wrapPts(base.pts + Math.round((samples * 90_000) / OPUS_SAMPLE_RATE));
    if (this.aac) this.aac.push(payload, pts);
    else {
      this.options.output({ pts, streamId: OPUS_STREAM_ID, payload: opusPesPayload([payload]), frames: 1 });
    }
  }

  async stop(): Promise<void> {
    if (this.pacer) clearInterval(this.pacer);
    this.encoder.flush();
    // What is still queued goes now: the end of the input's sound is not to be lost.
    for (const { packet, pts } of this.queue.splice(0)) this.sendAudio(packet, pts, performance.now());
    this.encoder.close();
    this.stats.decodeErrors = (this.decoder?.decodeErrors ?? 0) + (this.aac?.decodeErrors ?? 0);
    await Promise.all([this.decoder?.stop(), this.aac?.stop()]);
  }

  private enqueue(packet: Buffer, pts: number): void {
    if (this.pacer === undefined) this.sendAudio(packet, pts, performance.now());
    else this.queue.push({ packet, pts });
  }

  /** The RTP timestamp of an input PTS on the current base (a new base when there is none fitting). */
  private rtpOf(pts: number): number {
    let base = this.bases.at(-1);
    const next =
      this.lastSentTimestamp === undefined
        ? this.rtpOrigin
        : (this.lastSentTimestamp + FRAME_TICKS_48K) >>> 0;
    const rtp =
      base && ptsForwardDistance(base.pts, pts) < 2 ** 32
        ? (base.rtp + Math.round((ptsForwardDistance(base.pts, pts) * OPUS_SAMPLE_RATE) / 90_000)) >>> 0
        : undefined;
    // No base yet, the clock went back, or behind what was sent (silence covered it): continue from
    // what was sent, so RTP time never runs backwards.
    if (
      rtp === undefined ||
      (this.lastSentTimestamp !== undefined && ((rtp - this.lastSentTimestamp) | 0) <= 0)
    ) {
      base = { rtp: next, pts };
      this.bases.push(base);
      if (this.bases.length > 8) this.bases.shift();
      return next;
    }
    return rtp;
  }

  private sendAudio(packet: Buffer, pts: number, wallMs: number): void {
    this.send(packet, this.rtpOf(pts), wallMs);
  }

  /**
   * Sends what is due; silence when nothing has been for a while, from the moment the peer is
   * connected (ComfyStream's own silence, 1 s after the connection without audio, kills its sender).
   */
  private pace(nowMs: number): void {
    const head = this.queue[0];
    if (head) {
      // Paced by PTS against the wall clock; re-anchored after a stall or a jump.
      const dueAt =
        this.paceTimestamp === undefined
          ? undefined
          : this.paceWallMs + (ptsSignedDistance(this.paceTimestamp, head.pts) * 1000) / 90_000;
      if (dueAt === undefined || nowMs - dueAt > RESYNC_LATE_MS || dueAt - nowMs > 2 * RESYNC_LATE_MS) {
        this.paceWallMs = nowMs;
        this.paceTimestamp = head.pts;
      }
      while (this.queue.length > 0) {
        const next = this.queue[0]!;
        const due = this.paceWallMs + (ptsSignedDistance(this.paceTimestamp!, next.pts) * 1000) / 90_000;
        if (due > nowMs) break;
        this.queue.shift();
        this.sendAudio(next.packet, next.pts, nowMs);
      }
      return;
    }
    // Nothing sent yet: silence from now on, as soon as the peer takes it.
    if (this.lastSentTimestamp === undefined) this.lastSentWallMs = nowMs - 20;
    else if (nowMs - this.lastSentWallMs < SILENCE_AFTER_MS) return;
    // No audio due: silence for the whole gap, continuing the RTP timeline in real time (so an AAC
    // output goes on without a break), at most 15 frames a tick.
    const owed = Math.min(15, Math.floor((nowMs - this.lastSentWallMs) / 20));
    for (let i = 0; i < owed; i++) {
      const rtpTimestamp =
        this.lastSentTimestamp === undefined
          ? this.rtpOrigin
          : (this.lastSentTimestamp + FRAME_TICKS_48K) >>> 0;
      if (!this.send(this.encoder.silence(), rtpTimestamp, this.lastSentWallMs + 20)) break;
      this.stats.silenceSent++;
    }
  }

  /** Sends one packet; false (and nothing advances) while the peer is not connected. */
  private send(packet: Buffer, rtpTimestamp: number, wallMs: number): boolean {
    if (!this.options.send(packet, rtpTimestamp)) {
      this.stats.packetsNotSent++;
      return false;
    }
    this.lastSentTimestamp = rtpTimestamp;
    this.lastSentWallMs = wallMs;
    this.firstSentOnStream ??= rtpTimestamp;
    this.stats.packetsSent++;
    return true;
  }
}
