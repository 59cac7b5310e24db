/**
 * Audio to and from ComfyStream (issue 13, mode `comfystream`): the input's AAC, LATM or Opus decoded
 * to 48 kHz stereo PCM, cut into 20 ms Opus frames for WebRTC, and the returned Opus turned into the
 * output's codec. Every chunk carries the 90 kHz PTS of its first sample, so the output audio lands
 * where the input's was, beside the video frames of the same instant.
 *
 * Opus is encoded and decoded in-process with opusscript (libopus compiled to WebAssembly): the
 * packets are 20 ms and a pipe to ffmpeg per direction would add its buffering to every one. AAC
 * is decoded and encoded by ffmpeg (no maintained AAC codec exists for Node).
 */
import OpusScript from "opusscript";
import { silentLogger, type Logger } from "../common/log.js";
import { FfmpegProcess, type FfmpegExit } from "./ffmpeg-process.js";
import { adtsFrameLength, keepWholeAdtsFrames, type AudioCodec } from "./ts-audio.js";
import { opusPacketsOfPes } from "./opus-ts.js";
import { ptsSignedDistance, wrapPts } from "./ts-packet.js";

export const OPUS_SAMPLE_RATE = 48_000;
/** 20 ms at 48 kHz: what aiortc's Opus decoder requires of every packet (spec comfystream-webrtc §1.4). */
export const OPUS_FRAME_SAMPLES = 960;
const CHANNELS = 2;
const BYTES_PER_SAMPLE = 2 * CHANNELS;
/** A jump between consecutive input PES larger than this (or backwards) starts a new timeline. */
const DISCONTINUITY_90KHZ = 45_000;
/** libopus complexity 5 of 10: a fifth of the CPU of 10 for speech/music at 64 kbit/s. */
const OPUS_COMPLEXITY = 5;
const OPUS_SET_COMPLEXITY = 4010;
const OPUS_BITRATE = 64_000;
const AAC_FRAME_SAMPLES = 1024;

/** 48 kHz stereo s16le PCM and the PTS of its first sample. */
export interface PcmChunk {
  pcm: Buffer;
  pts: number;
}

/** PTS after `samples` at 48 kHz. */
export function ptsAfterSamples(pts: number, samples: number): number {
  return wrapPts(pts + Math.round((samples * 90_000) / OPUS_SAMPLE_RATE));
}

/** The codecs `comfystream` mode can take from the input. */
export function decodableAudioCodec(codec: AudioCodec): boolean {
  return codec === "aac" || codec === "aac-latm" || codec === "opus";
}

/**
 * Input audio PES → PCM. AAC and LATM go through one long-lived ffmpeg (raw ADTS / LOAS on stdin, PCM
 * on stdout); Opus is decoded here. A PTS jump restarts the timeline (and ffmpeg).
 */
export class InputAudioDecoder {
  private ffmpeg: FfmpegProcess | undefined;
  private opus: OpusScript | undefined;
  /** PTS of the first sample ffmpeg will put out next, and the PCM bytes since that anchor. */
  private anchorPts: number | undefined;
  private bytesSinceAnchor = 0;
  private partial: Buffer = Buffer.alloc(0);
  private lastPesPts: number | undefined;
  private readonly log: Logger;
  decodeErrors = 0;

  constructor(
    private readonly codec: AudioCodec,
    private readonly ffmpegPath: string,
    private readonly onPcm: (chunk: PcmChunk) => void,
    logger: Logger = silentLogger,
  ) {
    if (!decodableAudioCodec(codec)) throw new Error(`audio codec ${codec} cannot be decoded`);
    this.log = logger.child({ component: "audio-decoder" });
  }

  push(payload: Buffer, pts: number): void {
    const jumped =
      this.lastPesPts !== undefined &&
      Math.abs(ptsSignedDistance(this.lastPesPts, pts)) > DISCONTINUITY_90KHZ;
    this.lastPesPts = pts;
    if (this.codec === "opus") {
      this.decodeOpus(payload, pts);
      return;
    }
    if (jumped || this.ffmpeg === undefined) this.startFfmpeg(pts);
    void this.ffmpeg!.write(this.codec === "aac" ? keepWholeAdtsFrames(payload).kept : payload);
  }

  async stop(): Promise<void> {
    this.opus?.delete();
    this.opus = undefined;
    const ffmpeg = this.ffmpeg;
    this.ffmpeg = undefined;
    await ffmpeg?.stop();
  }

  private decodeOpus(payload: Buffer, pts: number): void {
    this.opus ??= new OpusScript(OPUS_SAMPLE_RATE, CHANNELS);
    let at = pts;
    for (const packet of opusPacketsOfPes(payload)) {
      let pcm: Buffer;
      try {
        pcm = this.opus.decode(packet);
      } catch {
        this.decodeErrors++;
        continue;
      }
      this.onPcm({ pcm, pts: at });
      at = ptsAfterSamples(at, pcm.length / BYTES_PER_SAMPLE);
    }
  }

  private startFfmpeg(pts: number): void {
    const previous = this.ffmpeg;
    if (previous) {
      previous.removeAllListeners("stdout");
      void previous.stop();
    }
    this.anchorPts = pts;
    this.bytesSinceAnchor = 0;
    this.partial = Buffer.alloc(0);
    const ffmpeg = new FfmpegProcess({
      ffmpegPath: this.ffmpegPath,
      args: [
        ...["-hide_banner", "-loglevel", "error", "-nostdin"],
        // No "-fflags +nobuffer": it drops the frames read while probing (7 AAC frames, 149 ms early).
        ...["-probesize", "32", "-analyzeduration", "0"],
        ...["-f", this.codec === "aac" ? "aac" : "loas", "-i", "pipe:0"],
        ...["-vn", "-ac", String(CHANNELS), "-ar", String(OPUS_SAMPLE_RATE)],
        ...["-f", "s16le", "-flush_packets", "1", "pipe:1"],
      ],
      stdout: "pipe",
      logger: this.log,
    });
    ffmpeg.on("stdout", (chunk: Buffer) => this.onFfmpegPcm(chunk));
    ffmpeg.on("exit", (exit: FfmpegExit) => {
      if (!exit.requested) this.log.warn({ stderr: exit.stderrTail }, "audio decoder ffmpeg exited");
      if (this.ffmpeg === ffmpeg) this.ffmpeg = undefined;
    });
    ffmpeg.start();
    this.ffmpeg = ffmpeg;
  }

  private onFfmpegPcm(chunk: Buffer): void {
    // Whole samples only, so the PTS arithmetic stays exact.
    const data = this.partial.length > 0 ? Buffer.concat([this.partial, chunk]) : chunk;
    const whole = data.length - (data.length % BYTES_PER_SAMPLE);
    this.partial = Buffer.from(data.subarray(whole));
    if (whole === 0 || this.anchorPts === undefined) return;
    const pts = ptsAfterSamples(this.anchorPts, this.bytesSinceAnchor / BYTES_PER_SAMPLE);
    this.bytesSinceAnchor += whole;
    this.onPcm({ pcm: data.subarray(0, whole), pts });
  }
}

/**
 * PCM → 20 ms Opus packets, each with the PTS of its first sample. A chunk that does not follow on
 * from the last (a gap or overlap over 20 ms) pads the open frame with silence and starts afresh.
 */
export class OpusFrameEncoder {
  private readonly opus = new OpusScript(OPUS_SAMPLE_RATE, CHANNELS, OpusScript.Application.AUDIO);
  private pending: Buffer = Buffer.alloc(0);
  private pendingPts: number | undefined;
  private silencePacket: Buffer | undefined;

  constructor(private readonly onPacket: (packet: Buffer, pts: number) => void) {
    this.opus.encoderCTL(OPUS_SET_COMPLEXITY, OPUS_COMPLEXITY);
    this.opus.setBitrate(OPUS_BITRATE);
  }

  push(chunk: PcmChunk): void {
    if (this.pendingPts !== undefined) {
      const expected = ptsAfterSamples(this.pendingPts, this.pending.length / BYTES_PER_SAMPLE);
      if (Math.abs(ptsSignedDistance(expected, chunk.pts)) > 1800) this.flush();
    }
    if (this.pendingPts === undefined) this.pendingPts = chunk.pts;
    this.pending = this.pending.length > 0 ? Buffer.concat([this.pending, chunk.pcm]) : chunk.pcm;
    const frameBytes = OPUS_FRAME_SAMPLES * BYTES_PER_SAMPLE;
    let offset = 0;
    while (this.pending.length - offset >= frameBytes) {
      this.emit(this.pending.subarray(offset, offset + frameBytes));
      offset += frameBytes;
    }
    this.pending = Buffer.from(this.pending.subarray(offset));
    if (this.pending.length === 0) this.pendingPts = undefined;
  }

  /** Encodes what is pending, padded with silence to a whole frame. */
  flush(): void {
    if (this.pending.length > 0) {
      const frame = Buffer.alloc(OPUS_FRAME_SAMPLES * BYTES_PER_SAMPLE);
      this.pending.copy(frame);
      this.emit(frame);
    }
    this.pending = Buffer.alloc(0);
    this.pendingPts = undefined;
  }

  close(): void {
    this.opus.delete();
  }

  /** 20 ms of silence as an Opus packet (made once). */
  silence(): Buffer {
    this.silencePacket ??= Buffer.from(
      this.opus.encode(Buffer.alloc(OPUS_FRAME_SAMPLES * BYTES_PER_SAMPLE), OPUS_FRAME_SAMPLES),
    );
    return this.silencePacket;
  }

  private emit(frame: Buffer): void {
    const pts = this.pendingPts!;
    this.onPacket(Buffer.from(this.opus.encode(frame, OPUS_FRAME_SAMPLES)), pts);
    this.pendingPts = ptsAfterSamples(pts, OPUS_FRAME_SAMPLES);
  }
}

/**
 * Opus packets (with their PTS) → AAC in ADTS, one frame at a time, each with its PTS. ffmpeg's AAC
 * encoder puts 1024 samples of priming first, so frame k starts at anchor + (k − 1) · 1024 samples.
 * A gap restarts the encoder on a new anchor.
 */
export class AacFromOpusEncoder {
  private readonly opus = new OpusScript(OPUS_SAMPLE_RATE, CHANNELS);
  private ffmpeg: FfmpegProcess | undefined;
  private nextPts: number | undefined;
  private readonly log: Logger;
  decodeErrors = 0;

  constructor(
    private readonly ffmpegPath: string,
    private readonly onFrame: (adts: Buffer, pts: number) => void,
    logger: Logger = silentLogger,
  ) {
    this.log = logger.child({ component: "audio-aac-encoder" });
  }

  push(packet: Buffer, pts: number): void {
    let pcm: Buffer;
    try {
      pcm = this.opus.decode(packet);
    } catch {
      this.decodeErrors++;
      return;
    }
    const jumped =
      this.nextPts !== undefined && Math.abs(ptsSignedDistance(this.nextPts, pts)) > DISCONTINUITY_90KHZ / 10;
    if (jumped || this.ffmpeg === undefined) this.start(pts);
    this.nextPts = ptsAfterSamples(pts, pcm.length / BYTES_PER_SAMPLE);
    void this.ffmpeg!.write(pcm);
  }

  async stop(): Promise<void> {
    this.opus.delete();
    const ffmpeg = this.ffmpeg;
    this.ffmpeg = undefined;
    if (!ffmpeg) return;
    // Let the last frames out before stopping.
    ffmpeg.endInput();
    if (!(await ffmpeg.whenExited(1000))) await ffmpeg.stop();
  }

  private start(pts: number): void {
    const previous = this.ffmpeg;
    if (previous) {
      previous.endInput(); // its last frames still come out, on their own anchor
      void previous.whenExited(1000).then((gone) => (gone ? undefined : previous.stop()));
    }
    const anchor = pts;
    let frames = 0;
    let partial: Buffer = Buffer.alloc(0);
    const ffmpeg = new FfmpegProcess({
      ffmpegPath: this.ffmpegPath,
      args: [
        ...["-hide_banner", "-loglevel", "error", "-nostdin"],
        ...["-f", "s16le", "-ar", String(OPUS_SAMPLE_RATE), "-ac", String(CHANNELS), "-i", "pipe:0"],
        ...["-c:a", "aac", "-b:a", "128k", "-f", "adts", "-flush_packets", "1", "pipe:1"],
      ],
      stdout: "pipe",
      logger: this.log,
    });
    ffmpeg.on("stdout", (chunk: Buffer) => {
      partial = partial.length > 0 ? Buffer.concat([partial, chunk]) : chunk;
      let offset = 0;
      while (offset + 7 <= partial.length) {
        const length = adtsFrameLength(partial, offset);
        if (length === undefined) {
          offset++; // not at a frame start: resynchronise
          continue;
        }
        if (offset + length > partial.length) break;
        const framePts = ptsAfterSamples(anchor, (frames - 1) * AAC_FRAME_SAMPLES);
        frames++;
        this.onFrame(Buffer.from(partial.subarray(offset, offset + length)), framePts);
        offset += length;
      }
      partial = Buffer.from(partial.subarray(offset));
    });
    ffmpeg.on("exit", (exit: FfmpegExit) => {
      if (!exit.requested && exit.code !== 0) {
        this.log.warn({ stderr: exit.stderrTail }, "audio encoder ffmpeg exited");
      }
      if (this.ffmpeg === ffmpeg) this.ffmpeg = undefined;
    });
    ffmpeg.start();
    this.ffmpeg = ffmpeg;
  }
}
