/**
 * The session's audio (issue 13): which mode runs and why, and the bounded hold between the input's
 * audio and the output. In passthrough the input's audio never leaves the relay: each PES is held
 * here until the processed video written to the output has reached its PTS, then muxed right after
 * that frame, unchanged, with its own PTS; the output's video PTS is the input's, so the two stay in
 * sync however long ComfyStream takes. Separate from both paths because it is fed by the forward
 * path (demuxed input) and drained by the return path (as video goes out).
 */
import {
  CARRIED_AUDIO_CODECS,
  type AudioCodec,
  type AudioPes,
  type AudioStreamInfo,
} from "../media/ts-audio.js";
import { ptsForwardDistance } from "../media/ts-packet.js";
import type { RelaySessionConfig, SessionStatus } from "./types.js";

/** Held input PES at most (~10 s of AAC at one frame per PES); the oldest go first when full. */
export const AUDIO_HOLD_CAPACITY = 512;

/** The mode a session runs and the reason shown in status; `failure` when it cannot start at all. */
export function resolveAudioMode(config: Pick<RelaySessionConfig, "audio" | "prompts">): {
  mode: "passthrough" | "none";
  reason: string;
  failure?: string;
} {
  const audioNode = workflowHasAudioNode(config.prompts);
  switch (config.audio) {
    case "none":
      return { mode: "none", reason: "none: asked for (video only)" };
    case "passthrough":
      return { mode: "passthrough", reason: "passthrough: asked for" };
    case "comfystream":
      return {
        mode: "none",
        reason: "comfystream: not available",
        failure:
          "audio mode comfystream (audio to ComfyStream and back) is not implemented in this version; " +
          "use passthrough or auto",
      };
    default:
      return {
        mode: "passthrough",
        reason: audioNode
          ? "auto → passthrough: the workflow has an audio node (LoadAudioTensor), but sending audio to " +
            "ComfyStream is not implemented in this version"
          : "auto → passthrough: the workflow has no audio node",
      };
  }
}

/** Whether any workflow in the prompts loads audio (ComfyStream's LoadAudioTensor). */
export function workflowHasAudioNode(prompts: unknown): boolean {
  return JSON.stringify(prompts ?? null).includes('"LoadAudioTensor"');
}

export class AudioPath {
  readonly mode: "passthrough" | "none";
  readonly reason: string;
  readonly failure: string | undefined;
  private readonly hold: AudioPes[] = [];
  private stream: AudioStreamInfo | undefined;
  private codecIn: AudioCodec | null = null;
  /** Why the input's audio is not carried (unsupported codec), shown in status. */
  private unsupported: string | undefined;
  private framesIn = 0;
  private framesOut = 0;
  private framesDropped = 0;
  private corruptFrames = 0;
  private lastOffsetMs: number | null = null;

  constructor(
    config: Pick<RelaySessionConfig, "audio" | "prompts">,
    private readonly onStreamChange: (stream: AudioStreamInfo | undefined, why?: string) => void,
  ) {
    const resolved = resolveAudioMode(config);
    this.mode = resolved.mode;
    this.reason = resolved.reason;
    this.failure = resolved.failure;
  }

  /** An input audio PES (from the forward path's demuxer), its stream as the PMT described it. */
  onInput(pes: AudioPes, stream: AudioStreamInfo): void {
    this.framesIn += pes.frames;
    this.codecIn = stream.codec;
    if (this.mode === "none") return;
    if (!CARRIED_AUDIO_CODECS.has(stream.codec)) {
      if (this.unsupported === undefined) {
        this.unsupported = `input audio codec ${stream.codec} (stream type 0x${stream.streamType.toString(16)}) is not supported: video only`;
        this.onStreamChange(undefined, this.unsupported);
      }
      this.framesDropped += pes.frames;
      return;
    }
    if (stream.pid !== this.stream?.pid || stream.streamType !== this.stream.streamType) {
      this.stream = { ...stream };
      this.unsupported = undefined;
      this.onStreamChange(this.stream);
    }
    if (pes.pts === undefined) {
      this.framesDropped += pes.frames; // no time to put it at
      return;
    }
    if (this.hold.length >= AUDIO_HOLD_CAPACITY) this.framesDropped += this.hold.shift()!.frames;
    this.hold.push(pes);
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

  status(): SessionStatus["audio"] {
    const carried = this.mode === "passthrough" && this.stream !== undefined && !this.unsupported;
    return {
      mode: this.mode,
      reason: this.unsupported ? `${this.reason}; ${this.unsupported}` : this.reason,
      codecIn: this.codecIn,
      codecOut: carried ? this.stream!.codec : null,
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
}

/** `pts` is at or before `reference`: less than half the 33-bit circle behind it. */
function isAtOrBefore(pts: number, reference: number): boolean {
  return ptsForwardDistance(pts, reference) < 2 ** 32;
}
