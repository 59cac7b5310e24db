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
import { ptsForwardDistance, wrapPts } from "../media/ts-packet.js";
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
const PACE_TICK_MS = 10;
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
  /** The PTS ↔ RTP timestamp base of what is sent. */
  private ptsBase: number | undefined;
  private readonly rtpBase = Math.floor(Math.random() * 2 ** 32);
  /** First RTP timestamp sent on the current connection, and the offset of what comes back. */
  private firstSentOnStream: number | undefined;
  private returnOffset: number | undefined;
  /** Packets waiting for their time, in RTP timestamp order. */
  private readonly queue: Array<{ packet: Buffer; rtpTimestamp: number }> = [];
  /** Wall clock (ms) at which RTP timestamp `paceTimestamp` is due. */
  private paceWallMs = 0;
  private paceTimestamp: number | undefined;
  private lastSentTimestamp: number | undefined;
  private lastSentWallMs = 0;
  private readonly pacer: NodeJS.Timeout;

  constructor(private readonly options: ComfyStreamAudioOptions) {
    this.encoder = new OpusFrameEncoder((packet, pts) => this.enqueue(packet, pts));
    this.pacer = setInterval(() => this.pace(performance.now()), PACE_TICK_MS);
    this.pacer.unref();
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
    if (this.firstSentOnStream === undefined || this.ptsBase === undefined) return; // not ours
    this.returnOffset ??= (rtpTimestamp - this.firstSentOnStream) >>> 0;
    const sentTimestamp = (rtpTimestamp - this.returnOffset) >>> 0;
    const samples = (sentTimestamp - this.rtpBase) >>> 0;
    const pts = wrapPts(this.ptsBase + Math.round((samples * 90_000) / OPUS_SAMPLE_RATE));
    if (this.aac) this.aac.push(payload, pts);
    else {
      this.options.output({ pts, streamId: OPUS_STREAM_ID, payload: opusPesPayload([payload]), frames: 1 });
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.pacer);
    this.encoder.flush();
    this.encoder.close();
    this.stats.decodeErrors = (this.decoder?.decodeErrors ?? 0) + (this.aac?.decodeErrors ?? 0);
    await Promise.all([this.decoder?.stop(), this.aac?.stop()]);
  }

  private enqueue(packet: Buffer, pts: number): void {
    // A PTS behind the base (the input's clock went back) starts a new base after what was sent.
    if (this.ptsBase === undefined || ptsForwardDistance(this.ptsBase, pts) >= 2 ** 32) {
      this.ptsBase = pts;
    }
    const samples = Math.round((ptsForwardDistance(this.ptsBase, pts) * OPUS_SAMPLE_RATE) / 90_000);
    this.queue.push({ packet, rtpTimestamp: (this.rtpBase + samples) >>> 0 });
  }

  /** Sends what is due; silence when nothing has been for a while (once audio has started). */
  private pace(nowMs: number): void {
    const head = this.queue[0];
    if (head) {
      const dueAt =
        this.paceTimestamp === undefined
          ? undefined
          : this.paceWallMs + (((head.rtpTimestamp - this.paceTimestamp) | 0) * 1000) / OPUS_SAMPLE_RATE;
      if (dueAt === undefined || nowMs - dueAt > RESYNC_LATE_MS || dueAt - nowMs > 2 * RESYNC_LATE_MS) {
        this.paceWallMs = nowMs;
        this.paceTimestamp = head.rtpTimestamp;
      }
      while (this.queue.length > 0) {
        const next = this.queue[0]!;
        const due =
          this.paceWallMs + (((next.rtpTimestamp - this.paceTimestamp!) | 0) * 1000) / OPUS_SAMPLE_RATE;
        if (due > nowMs) break;
        this.queue.shift();
        // Behind what already went (silence filled the gap): RTP time must not run backwards.
        if (this.lastSentTimestamp !== undefined && ((next.rtpTimestamp - this.lastSentTimestamp) | 0) <= 0)
          continue;
        this.send(next.packet, next.rtpTimestamp, nowMs);
      }
      return;
    }
    if (!this.options.fillPauses) return;
    if (this.lastSentTimestamp === undefined || nowMs - this.lastSentWallMs < SILENCE_AFTER_MS) return;
    // The input's audio paused: keep ComfyStream fed, on the same timeline, at the same pace.
    const frames = Math.floor((nowMs - this.lastSentWallMs) / 20);
    for (let i = 0; i < frames; i++) {
      const rtpTimestamp = (this.lastSentTimestamp + FRAME_TICKS_48K) >>> 0;
      if (this.send(this.encoder.silence(), rtpTimestamp, this.lastSentWallMs + 20)) this.stats.silenceSent++;
      else break;
    }
  }

  private send(packet: Buffer, rtpTimestamp: number, wallMs: number): boolean {
    this.lastSentTimestamp = rtpTimestamp;
    this.lastSentWallMs = wallMs;
    if (this.options.send(packet, rtpTimestamp)) {
      this.firstSentOnStream ??= rtpTimestamp;
      this.stats.packetsSent++;
      return true;
    }
    this.stats.packetsNotSent++;
    return false;
  }
}
