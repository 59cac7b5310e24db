import { setFlagsFromString } from "node:v8";

/**
 * Calls a function needs before V8 compiles it with TurboFan (V8's default: 3000).
 *
 * Why: the relay's per-frame code (TS demux of each PES, the pacer, a frame's RTP send, the output
 * mux) runs 30 times a second, so with V8's default it stays in baseline code (inline-cache stubs,
 * unspecialised calls) for the first ~100 s of every session, and the per-packet werift code behind
 * it for ~15 s. Measured (bench-results/relay-cpu.md, one 512x512@30 transcode session): relay CPU
 * incl. ffmpeg −1 to −2 % of a core at 20 s and at 60 s, for ~10 MB more RSS (optimised code). The
 * compiling itself runs on V8's background threads. Set at runtime (V8 reads it each time it resets
 * a function's tiering budget), so it applies however the relay is started (image entrypoint,
 * `node cli.js`, tests).
 */
export const TURBOFAN_INVOCATION_COUNT = 100;

/** Applies TURBOFAN_INVOCATION_COUNT to this process; call once, first thing in the program. */
export function tierUpSooner(): void {
  setFlagsFromString(`--invocation-count-for-turbofan=${TURBOFAN_INVOCATION_COUNT}`);
}
