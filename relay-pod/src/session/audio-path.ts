/**
 * The session's audio (issue 13): which mode runs and why, and the bounded hold between the audio
 * and the output. In passthrough the input's audio never leaves the relay: each PES is held here
 * until the processed video written to the output has reached its PTS, then muxed right after that
 * frame, unchanged, with its own PTS; the output's video PTS is the input's, so the two stay in sync
 * however long ComfyStream takes. In comfystream mode the input's audio goes to ComfyStream
 * (comfystream-audio.ts) and what comes back, at the input PTS it was made from, is held the same
 * way. Separate from both paths because it is fed by the forward path (demuxed input) and the peer,
 * and drained by the return path (as video goes out).
 */
import {
  CARRIED_AUDIO_CODECS,
  type AudioCodec,
  type AudioPes,
  type AudioStreamInfo,
} from "../media/ts-audio.js";
import { decodableAudioCodec } from "../media/audio-transcode.js";
import { ptsForwardDistance } from "../media/ts-packet.js";
import type { Logger } from "../common/log.js";
import { ComfyStreamAudio, type AudioOutputCodec } from "./comfystream-audio.js";
import type { RelaySessionConfig, SessionStatus } from "./types.js";

/** Held PES at most (~10 s of AAC at one frame per PES); the oldest go first when full. */
export const AUDIO_HOLD_CAPACITY = 512;

type RunningMode = "comfystream" | "passthrough" | "none";

/** The mode a session runs and the reason shown in status. */
export function resolveAudioMode(config: Pick<RelaySessionConfig, "audio" | "prompts">): {
  mode: RunningMode;
  reason: string;
} {
  switch (config.audio) {
    case "none":
      return { mode: "none", reason: "none: asked for (video only)" };
    case "passthrough":
      return { mode: "passthrough", reason: "passthrough: asked for" };
    case "comfystream":
      return { mode: "comfystream", reason: "comfystream: asked for" };
    default:
      return workflowHasAudioNode(config.prompts)
        ? {
            mode: "comfystream",
            reason: "auto → comfystream: the workflow has an audio node (LoadAudioTensor)",
          }
        : { mode: "passthrough", reason: "auto → passthrough: the workflow has no audio node" };
  }
}

/** Whether any workflow in the prompts loads audio (ComfyStream's LoadAudioTensor). */
export function workflowHasAudioNode(prompts: unknown): boolean {
  return JSON.stringify(prompts ?? null).includes('"LoadAudioTensor"');
}

/** What the audio path needs from the session. */
export interface AudioPathDeps {
  /** The output's audio stream changed (undefined: video only), with the reason when not carried. */
  onStreamChange(stream: AudioStreamInfo | undefined, why?: string): void;
  /** Audio mode comfystream asked for and the input's codec cannot go: the session fails. */
  onFatal(reason: string): void;
  /** One Opus packet to ComfyStream; false when not connected. */
  sendToPeer(packet: Buffer, rtpTimestamp: number): boolean;
  log: Logger;
}

export class AudioPath {
  readonly mode: RunningMode;
  readonly reason: string;
  private readonly hold: AudioPes[] = [];
  private stream: AudioStreamInfo | undefined;
  private codecIn: AudioCodec | null = null;
  private codecOut: string | null = null;
  /** Why the input's audio is not carried (unsupported codec), shown in status. */
  private unsupported: string | undefined;
  /** Audio re-encoded here: to and from ComfyStream, or locally when passthrough asks another codec. */
  private transcoder: ComfyStreamAudio | undefined;
  private ffmpegPath: string | undefined;
  private framesIn = 0;
  private framesOut = 0;
  private framesDropped = 0;
  private corruptFrames = 0;
  private lastOffsetMs: number | null = null;

  constructor(
    private readonly config: Pick<RelaySessionConfig, "audio" | "audioCodec" | "prompts">,
    private readonly deps: AudioPathDeps,
  ) {
    const resolved = resolveAudioMode(config);
    this.mode = resolved.mode;
    this.reason = resolved.reason;
  }

  /** Whether the offer carries an audio m-line. */
  get toComfyStream(): boolean {
    return this.mode === "comfystream";
  }

  /** The ffmpeg that decodes and encodes audio (comfystream mode, or a passthrough with another codec). */
  prepare(ffmpegPath: string): void {
    this.ffmpegPath = ffmpegPath;
    // To ComfyStream from the start: it needs audio (or the relay's silence) within 1 s of connecting.
    if (this.mode === "comfystream")
      this.transcoder = this.startTranscoder(this.config.audioCodec === "opus" ? "opus" : "aac");
  }

  /** A new peer connection (comfystream mode): returned audio is timed afresh. */
  newPeerStream(): void {
    if (this.mode === "comfystream") this.transcoder?.newStream();
  }

  /** An Opus packet ComfyStream sent back (comfystream mode). */
  onReturned(payload: Buffer, rtpTimestamp: number): void {
    if (this.mode === "comfystream") this.transcoder?.returned(payload, rtpTimestamp);
  }

  /** An input audio PES (from the forward path's demuxer), its stream as the PMT described it. */
  onInput(pes: AudioPes, stream: AudioStreamInfo): void {
    this.framesIn += pes.frames;
    this.codecIn = stream.codec;
    if (this.mode === "none") return;
    const usable =
      this.mode === "comfystream"
        ? decodableAudioCodec(stream.codec)
        : CARRIED_AUDIO_CODECS.has(stream.codec);
    if (!usable) {
      if (this.unsupported === undefined) {
        this.unsupported = `input audio codec ${stream.codec} (stream type 0x${stream.streamType.toString(16)}) is not supported: video only`;
        this.deps.onStreamChange(undefined, this.unsupported);
        if (this.config.audio === "comfystream") this.deps.onFatal(this.unsupported);
      }
      this.framesDropped += pes.frames;
      return;
    }
    if (pes.pts === undefined) {
      this.framesDropped += pes.frames; // no time to put it at
      return;
    }
    const outputCodec = this.outputCodecFor(stream.codec);
    if (outputCodec === undefined) {
      // Passthrough in the input's own codec: held as it came.
      if (stream.pid !== this.stream?.pid || stream.streamType !== this.stream.streamType) {
        this.stream = { ...stream };
        this.unsupported = undefined;
        this.codecOut = stream.codec;
        this.deps.onStreamChange(this.stream);
      }
      this.keep(pes);
      return;
    }
    this.transcoder ??= this.startTranscoder(outputCodec);
    this.transcoder?.input(pes, stream.codec);
  }

  /** Damaged audio the demuxer skipped. */
  noteCorrupt(frames: number): void {
    this.corruptFrames += frames;
  }

  /**
   * The held audio due by the video frame at `videoPts` (PTS at or before it, on the 33-bit circle),
   * in order, to mux right after that frame.
   */
  takeDue(videoPts: number): AudioPes[] {
    const due: AudioPes[] = [];
    while (this.hold.length > 0 && isAtOrBefore(this.hold[0]!.pts!, videoPts)) due.push(this.hold.shift()!);
    if (due.length > 0) this.lastOffsetMs = Math.round(ptsForwardDistance(due.at(-1)!.pts!, videoPts) / 90);
    return due;
  }

  /** Everything held (the stream's end: the sound after its last video frame). */
  takeAll(): AudioPes[] {
    return this.hold.splice(0);
  }

  /** Audio due by a video frame that is not written (before the first output segment): dropped. */
  dropDue(videoPts: number): void {
    for (const pes of this.takeDue(videoPts)) this.framesDropped += pes.frames;
  }

  noteWritten(pes: AudioPes): void {
    this.framesOut += pes.frames;
  }

  /** Stops the audio codecs (the session's end); what they still hold comes out first. */
  async stop(): Promise<void> {
    await this.transcoder?.stop();
  }

  status(): SessionStatus["audio"] {
    const carried = this.mode !== "none" && this.codecOut !== null && !this.unsupported;
    return {
      mode: this.mode,
      reason: this.unsupported ? `${this.reason}; ${this.unsupported}` : this.reason,
      codecIn: this.codecIn,
      codecOut: carried ? this.codecOut : null,
      frames: {
        in: this.framesIn,
        out: this.framesOut,
        dropped: this.framesDropped,
        corrupt: this.corruptFrames,
      },
      queue: { size: this.hold.length, capacity: AUDIO_HOLD_CAPACITY },
      avOffsetMs: this.lastOffsetMs,
    };
  }

  /** Undefined: the input's PES go out as they came; else the codec to re-encode to. */
  private outputCodecFor(codecIn: AudioCodec): AudioOutputCodec | undefined {
    const asked = this.config.audioCodec ?? "auto";
    if (this.mode === "comfystream") return asked === "opus" ? "opus" : "aac";
    if (asked === "auto") return undefined;
    const same = asked === "opus" ? codecIn === "opus" : codecIn === "aac";
    return same ? undefined : asked;
  }

  private startTranscoder(outputCodec: AudioOutputCodec): ComfyStreamAudio | undefined {
    if (this.ffmpegPath === undefined) return undefined; // not prepared yet: dropped as before start
    const toPeer = this.mode === "comfystream";
    const transcoder: ComfyStreamAudio = new ComfyStreamAudio({
      ffmpegPath: this.ffmpegPath,
      outputCodec,
      // Passthrough into another codec: the same chain with the relay in ComfyStream's place.
      send: toPeer
        ? (packet, rtpTimestamp) => this.deps.sendToPeer(packet, rtpTimestamp)
        : (packet, rtpTimestamp) => {
            queueMicrotask(() => transcoder.returned(packet, rtpTimestamp));
            return true;
          },
      output: (pes) => this.keepTranscoded(pes, transcoder, outputCodec),
      fillPauses: toPeer,
      log: this.deps.log,
    });
    this.deps.log.info({ codecOut: outputCodec, toPeer }, "audio re-encoded");
    return transcoder;
  }

  /** Re-encoded audio: the output's audio stream is declared with the first of it. */
  private keepTranscoded(pes: AudioPes, transcoder: ComfyStreamAudio, outputCodec: AudioOutputCodec): void {
    if (this.stream?.codec !== outputCodec) {
      const out = transcoder.outputStream;
      this.codecOut = outputCodec;
      this.stream = {
        pid: 0,
        streamType: out.streamType,
        codec: outputCodec,
        streamId: out.streamId,
        descriptors: out.descriptors,
      };
      this.deps.onStreamChange(this.stream);
    }
    this.keep(pes);
  }

  private keep(pes: AudioPes): void {
    if (this.hold.length >= AUDIO_HOLD_CAPACITY) this.framesDropped += this.hold.shift()!.frames;
    this.hold.push(pes);
  }
}

/** `pts` is at or before `reference`: less than half the 33-bit circle behind it. */
function isAtOrBefore(pts: number, reference: number): boolean {
  return ptsForwardDistance(pts, reference) < 2 ** 32;
}
