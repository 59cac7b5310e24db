/**
 * ffmpeg: finding the binary (DESIGN.md §5), the forward transcode command line (media-pipeline.md
 * §3.6), and a supervised long-lived ffmpeg child process. Each lives in a module of its own; this
 * one re-exports them so that callers keep a single import path.
 */
export {
  clearFfmpegResolutionCache,
  resolveFfmpeg,
  resolveFfprobe,
  type ResolvedFfmpeg,
  type ResolvedFfprobe,
} from "./ffmpeg-binary.js";
export { forwardTranscodeArgs, type ForwardTranscodeOptions } from "./ffmpeg-forward.js";
export { FfmpegProcess, type FfmpegExit, type FfmpegProcessOptions } from "./ffmpeg-process.js";
