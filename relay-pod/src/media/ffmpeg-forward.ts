/**
 * The forward transcode (media-pipeline.md §3.6: trickle TS on stdin -> H.264 constrained baseline
 * -> MPEG-TS on stdout): its ffmpeg command line. A pure function of the session's settings, apart
 * from the code that finds and runs ffmpeg. The relay reads the output pipe with its own demuxer and
 * packetizes the access units itself: a pipe has backpressure, so a starved relay delays frames
 * instead of losing them the way a loopback UDP socket did (issue 12).
 */

export interface ForwardTranscodeOptions {
  width: number;
  height: number;
  /** Frame-rate cap: frames are dropped only when the input is faster; timestamps are kept. */
  frameRate: number;
  /** x264 target bitrate, ffmpeg syntax (default "2M", what ComfyStream's encoder uses). */
  bitrate?: string;
  /** Keyframe interval in frames (default = frameRate, about 1 s). */
  gopFrames?: number;
  /**
   * Encode only frames from this input PTS on (90 kHz): the input must start at a keyframe for the
   * decoder, but the encoder then starts at the live edge, and its first frame is an IDR.
   */
  startAtPts?: number;
  /** Encoder and decoder (default libx264 and software decoding); see encoder-probe.ts. */
  codecs?: VideoCodecs;
}

/**
 * ffmpeg arguments for the forward path (media-pipeline §3.6): TS on stdin -> H.264 constrained
 * baseline, zerolatency, no B-frames, GOP = gopFrames, cover-cropped to width x height, frame rate
 * capped -> MPEG-TS on stdout.
 *
 * Timestamps: the input PTS (90 kHz, from the TS) reaches the output PTS unchanged (measured:
 * identical for every frame, with and without B-frames in the input):
 * - `-copyts` keeps input timestamps (no shift to zero), and `-muxdelay 0 -muxpreload 0` keep the
 *   TS muxer from adding its default 1.4 s;
 * - `-fps_mode passthrough` stops ffmpeg from duplicating or dropping frames for a constant rate;
 * - `-enc_time_base 1:90000` stops the encoder from rounding timestamps to 1/frameRate;
 * - the frame-rate cap is a `select` filter that drops frames without retiming them (the `fps`
 *   filter would move frames onto its own grid and duplicate frames when the input is slower);
 * Latency, measured (bench:relay, issue 12): the input side waited two frames before decoding. The
 * TS demuxer can only end a PES whose length is 0 (what encoders write for video) when the next one
 * starts, and the H.264 parser behind it then waited for the next access unit's first NAL to end the
 * frame. `-fflags +noparse+nofillin` hands each PES to the decoder as it is (a TS video PES is one
 * access unit: the relay's own demuxer and the passthrough mode count on that too), which removes
 * the second wait (forward hop p50 38 -> 5 ms without B-frames). Probing: `-probesize 32
 * -analyzeduration 1` starts decoding from the first PES instead of buffering 200 ms of input
 * first (first frame out 600 -> 80 ms after the input's first byte; an analyzeduration of 0 means
 * ffmpeg's default of 5 s). The decoder learns the size from the SPS in band.
 * On the output side, `-omit_video_pes_length 0` writes each PES's length (when under 64 KiB), so the relay's
 * demuxer knows a frame is complete at its last byte instead of waiting for the next frame's start;
 * `-flush_packets 1` hands every frame to the pipe at once.
 */
export function forwardTranscodeArgs(o: ForwardTranscodeOptions): string[] {
  for (const [name, value] of [
    ["width", o.width],
    ["height", o.height],
  ] as const) {
    if (!Number.isInteger(value) || value <= 0)
      throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  if (o.width % 2 !== 0 || o.height % 2 !== 0)
    throw new RangeError("width and height must be even for 4:2:0 H.264");
  if (!(o.frameRate > 0) || !Number.isFinite(o.frameRate))
    throw new RangeError(`frameRate must be > 0, got ${o.frameRate}`);
  const gopFrames = o.gopFrames ?? Math.max(1, Math.round(o.frameRate));
  const interval = 1 / o.frameRate;
  // Register 0 holds the next due time plus DUE_BIAS. A frame is kept when it is at most a quarter
  // interval early; the due time then advances by one interval (or to 0.8 interval after a late
  // frame). This tolerates timestamp jitter, never retimes and never duplicates; faster input loses
  // frames. The bias makes the register's initial 0 mean "due from -DUE_BIAS s", so the first frame
  // passes even when ffmpeg's clock starts negative (see -avoid_negative_ts below).
  const q = (interval / 4).toFixed(6);
  const select =
    `select='if(${startGate(o.startAtPts)}gte(t\\,ld(0)-${DUE_BIAS}-${q})\\,` +
    `st(0\\,max(ld(0)-${DUE_BIAS}+${interval.toFixed(6)}\\,t+${(interval * 0.8).toFixed(6)})+${DUE_BIAS})\\,0)'`;
  const filters = [
    select,
    `scale=${o.width}:${o.height}:force_original_aspect_ratio=increase`,
    `crop=${o.width}:${o.height}`,
    "setsar=1",
    "format=yuv420p",
  ].join(",");
  const args = [
    "-hide_banner",
    "-loglevel",
    "warning",
    "-nostdin",
    // Input: a TS byte stream on stdin, decoded from its first PES (see Latency above).
    "-probesize",
    "32",
    "-analyzeduration",
    "1",
    "-fflags",
    "+noparse+nofillin",
    "-flags",
    "low_delay",
    "-threads",
    "1",
    ...videoDecoderArgs(o.codecs?.decoder ?? "software"),
    "-f",
    "mpegts",
    "-i",
    "pipe:0",
    "-map",
    "0:v:0",
    "-an",
    "-sn",
    "-dn",
    "-copyts",
    "-fps_mode",
    "passthrough",
    "-filter_threads",
    "1",
    "-vf",
    filters,
    ...videoEncoderArgs(o.codecs?.encoder ?? "x264", gopFrames),
    "-b:v",
    o.bitrate ?? "2M",
    "-enc_time_base",
    "1:90000",
    // SPS/PPS in band before every keyframe: the frames go to WebRTC, which has no SDP sprop.
    "-bsf:v",
    "dump_extra=freq=keyframe",
    // Keep negative timestamps: they are the input's own PTS just before a 33-bit wrap, written
    // modulo 2^33 as they came. The default shifts the whole run to start at 0 (output PTS no longer
    // the input's).
    "-avoid_negative_ts",
    "disabled",
    "-f",
    "mpegts",
    "-muxdelay",
    "0",
    "-muxpreload",
    "0",
    "-omit_video_pes_length",
    "0",
    "-flush_packets",
    "1",
    "pipe:1",
  ];
  return args;
}

/** See the select filter in forwardTranscodeArgs: more than any timestamp's distance from 0, in seconds. */
const DUE_BIAS = 10_000_000;
/** The 33-bit PTS range in seconds. */
const PTS_RANGE_SECONDS = 2 ** 33 / 90_000;

/**
 * The select filter's factor that passes frames from `startAtPts` on (empty without one). Compared
 * on the 2^33 circle: ffmpeg unwraps TS timestamps, so near a wrap `t` may be a little negative or
 * above the range while `startAtPts` is the TS's 33-bit value.
 */
function startGate(startAtPts: number | undefined): string {
  if (startAtPts === undefined) return "";
  const start = (startAtPts / 90_000).toFixed(6);
  const range = PTS_RANGE_SECONDS.toFixed(6);
  return `lt(mod(t-${start}+2*${range}\\,${range})\\,${(PTS_RANGE_SECONDS / 2).toFixed(6)})*`;
}

/** The forward transcode's encoder and decoder (encoder-probe.ts chooses them). */
export interface VideoCodecs {
  encoder: "x264" | "nvenc";
  decoder: "software" | "nvdec";
}

/**
 * Decoder input options. NVDEC: `-hwaccel cuda` without `-hwaccel_output_format`, so decoded frames
 * come back to system memory for the select/scale/crop filters (and the encoder uploads them again).
 */
export function videoDecoderArgs(decoder: VideoCodecs["decoder"]): string[] {
  return decoder === "nvdec" ? ["-hwaccel", "cuda"] : [];
}

/**
 * Encoder options: H.264 constrained baseline, no B-frames, a keyframe exactly every `gopFrames`
 * (no scene-cut keyframes), at the bitrate given after these. x264: superfast, zerolatency, the
 * preset ai-runner's own live encoder uses (media-pipeline.md §4.1); measured for 512x512@30 at
 * 2 Mbit/s: 6.4 % of a core against veryfast's 8.5 %, PSNR 46.9 against 47.5 dB on testsrc2
 * (ultrafast, 4.8 %, also drops the deblocking filter). NVENC:
 * the fastest preset (p1) with ultra-low-latency tuning, no reordering delay and no frame delay,
 * constant bitrate (what NVIDIA recommends for live streaming); scene-cut detection needs lookahead,
 * which is off by default.
 */
export function videoEncoderArgs(encoder: VideoCodecs["encoder"], gopFrames: number): string[] {
  const common = ["-profile:v", "baseline", "-pix_fmt", "yuv420p", "-bf", "0", "-g", String(gopFrames)];
  if (encoder === "nvenc") {
    return [
      ...["-c:v", "h264_nvenc", "-preset", "p1", "-tune", "ull", "-zerolatency", "1", "-delay", "0"],
      ...["-rc", "cbr", ...common],
    ];
  }
  return [
    // One thread: a 512x512 frame encodes in ~2 ms, and waking slice threads for every frame of a
    // live stream costs more CPU than it saves time (media-pipeline measurements, bench:relay).
    ...["-c:v", "libx264", "-preset", "superfast", "-tune", "zerolatency", "-threads", "1", ...common],
    ...["-keyint_min", String(gopFrames), "-sc_threshold", "0"],
  ];
}
