/**
 * The forward transcode (media-pipeline.md §3.6: trickle TS on stdin -> H.264 constrained baseline
 * RTP on loopback UDP): its ffmpeg command line, and the RTP/RTCP clock arithmetic that undoes its
 * timestamp offset. One contract, so one module: the arguments pin the RTCP clock origin
 * (FORWARD_RTCP_ORIGIN_US) that rtpBaseFromSenderReport() relies on. Pure functions of settings and
 * packets, hence apart from the code that finds and runs ffmpeg.
 */

export interface ForwardTranscodeOptions {
  width: number;
  height: number;
  /** Frame-rate cap: frames are dropped only when the input is faster; timestamps are kept. */
  frameRate: number;
  rtpPort: number;
  payloadType?: number;
  ssrc?: number;
  /** x264 target bitrate, ffmpeg syntax (default "2M", what ComfyStream's encoder uses). */
  bitrate?: string;
  /** Keyframe interval in frames (default = frameRate, about 1 s). */
  gopFrames?: number;
  /** Where ffmpeg sends RTCP sender reports (default rtpPort + 1; may equal rtpPort, RFC 5761 style). */
  rtcpPort?: number;
  /** Encoder and decoder (default libx264 and software decoding); see encoder-probe.ts. */
  codecs?: VideoCodecs;
}

/**
 * The forward ffmpeg's RTCP clock origin, passed as `-start_time_realtime` (µs since the Unix
 * epoch). ffmpeg's RTP muxer writes sender reports with
 * `rtpTimestamp = base + (ntpTime - origin) * 90 kHz`, where `base` is the random RTP timestamp
 * offset it picked; with a known origin every sender report reveals `base` exactly.
 */
export const FORWARD_RTCP_ORIGIN_US = 1_000_000;

/**
 * ffmpeg arguments for the forward path (media-pipeline §3.6): TS on stdin -> H.264 constrained
 * baseline, zerolatency, no B-frames, GOP = gopFrames, cover-cropped to width x height, frame rate
 * capped -> RTP to 127.0.0.1:rtpPort (RTCP to rtcpPort, default rtpPort + 1).
 *
 * Timestamps: the input PTS (90 kHz, from the TS) reaches the RTP timestamp unchanged (measured:
 * identical for every frame, with and without B-frames in the input):
 * - `-copyts` keeps input timestamps (no shift to zero);
 * - `-fps_mode passthrough` stops ffmpeg from duplicating or dropping frames for a constant rate;
 * - `-enc_time_base 1:90000` stops the encoder from rounding timestamps to 1/frameRate;
 * - the frame-rate cap is a `select` filter that drops frames without retiming them (the `fps`
 *   filter would move frames onto its own grid and duplicate frames when the input is slower);
 * - `-fflags +genpts` only fills in a missing PTS.
 * `-muxdelay 0` is irrelevant to the RTP muxer (it only matters to interleaving muxers).
 * ffmpeg's RTP muxer then writes `rtpTimestamp = (base + pts) mod 2^32` with a random `base`.
 * Because `-start_time_realtime` pins the RTCP clock origin, `rtpBaseFromSenderReport()` recovers
 * `base` from any sender report (the first one is sent just before the first RTP packet), and
 * `rtpTimestampToPts(rtpTimestamp, base, recentInputPts)` gives back the input PTS.
 */
export function forwardTranscodeArgs(o: ForwardTranscodeOptions): string[] {
  for (const [name, value] of [
    ["width", o.width],
    ["height", o.height],
    ["rtpPort", o.rtpPort],
  ] as const) {
    if (!Number.isInteger(value) || value <= 0)
      throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  if (o.width % 2 !== 0 || o.height % 2 !== 0)
    throw new RangeError("width and height must be even for 4:2:0 H.264");
  if (!(o.frameRate > 0) || !Number.isFinite(o.frameRate))
    throw new RangeError(`frameRate must be > 0, got ${o.frameRate}`);
  if (o.rtcpPort === undefined && o.rtpPort > 65534)
    throw new RangeError("rtpPort must leave room for RTCP on rtpPort + 1");
  const gopFrames = o.gopFrames ?? Math.max(1, Math.round(o.frameRate));
  const interval = 1 / o.frameRate;
  // Register 0 holds the next due time. A frame is kept when it is at most a quarter interval early;
  // the due time then advances by one interval (or to 0.8 interval after a late frame). This
  // tolerates timestamp jitter, never retimes and never duplicates; faster input loses frames.
  const select =
    `select='if(gte(t\\,ld(0)-${(interval / 4).toFixed(6)})\\,` +
    `st(0\\,max(ld(0)+${interval.toFixed(6)}\\,t+${(interval * 0.8).toFixed(6)}))\\,0)'`;
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
    // Input: a TS byte stream on stdin; probe little so the first frame goes out fast.
    "-probesize",
    "65536",
    "-analyzeduration",
    "200000",
    "-fflags",
    "+genpts",
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
    "-vf",
    filters,
    ...videoEncoderArgs(o.codecs?.encoder ?? "x264", gopFrames),
    "-b:v",
    o.bitrate ?? "2M",
    "-enc_time_base",
    "1:90000",
    // SPS/PPS in band before every keyframe: the RTP goes to WebRTC, which has no SDP sprop.
    "-bsf:v",
    "dump_extra=freq=keyframe",
    "-f",
    "rtp",
    "-payload_type",
    String(o.payloadType ?? 96),
  ];
  if (o.ssrc !== undefined) args.push("-ssrc", String(o.ssrc | 0)); // ffmpeg's option is a signed int
  args.push("-start_time_realtime", String(FORWARD_RTCP_ORIGIN_US));
  const rtcp = o.rtcpPort !== undefined ? `&rtcpport=${o.rtcpPort}` : "";
  args.push(`rtp://127.0.0.1:${o.rtpPort}?pkt_size=1200${rtcp}`);
  return args;
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
 * (no scene-cut keyframes), at the bitrate given after these. x264: veryfast, zerolatency. NVENC:
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
    ...["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", ...common],
    ...["-keyint_min", String(gopFrames), "-sc_threshold", "0"],
  ];
}

/** Fields of an RTCP sender report (RFC 3550 §6.4.1), or undefined when the packet is not one. */
export function parseRtcpSenderReport(
  packet: Buffer,
): { ssrc: number; ntpSeconds: number; ntpFraction: number; rtpTimestamp: number } | undefined {
  if (packet.length < 28 || packet[0] >> 6 !== 2 || packet[1] !== 200) return undefined;
  return {
    ssrc: packet.readUInt32BE(4),
    ntpSeconds: packet.readUInt32BE(8),
    ntpFraction: packet.readUInt32BE(12),
    rtpTimestamp: packet.readUInt32BE(16),
  };
}

/** True for RTCP packet types (SR, RR, SDES, BYE, APP, feedback) when RTP and RTCP share a port. */
export function isRtcpPacket(packet: Buffer): boolean {
  return packet.length >= 8 && packet[0] >> 6 === 2 && packet[1] >= 192 && packet[1] <= 223;
}

const NTP_UNIX_OFFSET_US = 2_208_988_800n * 1_000_000n;

/**
 * The RTP timestamp offset (`base`) of the forward ffmpeg, from one of its sender reports: the
 * report's RTP timestamp minus the 90 kHz time since FORWARD_RTCP_ORIGIN_US, which the same report's
 * NTP time gives (ffmpeg computes both from one clock reading, rounding µs to 90 kHz to nearest).
 */
export function rtpBaseFromSenderReport(sr: {
  ntpSeconds: number;
  ntpFraction: number;
  rtpTimestamp: number;
}): number {
  // ffmpeg writes fraction = floor(us * 2^32 / 1e6); the smallest us that maps to it is exact.
  const fractionUs = (BigInt(sr.ntpFraction) * 1_000_000n + (1n << 32n) - 1n) >> 32n;
  const ntpUs = BigInt(sr.ntpSeconds) * 1_000_000n + fractionUs;
  const originUs = BigInt(Math.floor(FORWARD_RTCP_ORIGIN_US / 1000) * 1000);
  const elapsedUs = ntpUs - NTP_UNIX_OFFSET_US - originUs;
  const elapsedTicks = elapsedUs >= 0n ? (elapsedUs * 9n + 50n) / 100n : -((-elapsedUs * 9n + 50n) / 100n);
  return Number((BigInt(sr.rtpTimestamp) - elapsedTicks) & 0xffffffffn);
}

/**
 * Maps an RTP timestamp from the forward ffmpeg back to the 33-bit input PTS: `base` is the RTP
 * offset from `rtpBaseFromSenderReport()`; `referencePts` is any recent input PTS (within
 * ±2^31 ticks, ~6.6 h) used to pick the right 2^32 wrap.
 */
export function rtpTimestampToPts(rtpTimestamp: number, base: number, referencePts: number): number {
  const low32 = (rtpTimestamp - base) >>> 0;
  const modulus33 = 2 ** 33;
  // Candidates differ in bit 32; choose the one closest to the reference on the 33-bit circle.
  let best = low32;
  let bestDistance = Infinity;
  for (const candidate of [low32, low32 + 2 ** 32]) {
    const raw = Math.abs(candidate - (((referencePts % modulus33) + modulus33) % modulus33));
    const distance = Math.min(raw, modulus33 - raw);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}
