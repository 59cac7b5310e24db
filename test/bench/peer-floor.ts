/**
 * The bare round-trip floor of a ComfyStream peer: what it takes with no relay in between. A WebRTC
 * client (the relay's own werift peer class, nothing else of the relay) sends ready-made H.264
 * baseline 512x512@30 frames, one every 1/30 s, at RTP timestamp = PTS + a small per-frame jitter,
 * and matches every returned frame to the one sent by that timestamp (returned = sent + a constant,
 * comfystream-webrtc.md §1.4; the relay's FrameMatcher). Latency = sent → back, per frame. Set
 * beside the relay's end-to-end figures in the same run, it says what the relay adds.
 */
import { randomInt } from "node:crypto";
import { H264Packetizer } from "werift";
import { TsDemuxer } from "../../relay-pod/src/media/ts-demux.js";
import { FrameMatcher, timestampJitter } from "../../relay-pod/src/session/frame-matcher.js";
import { ComfyStreamPeer } from "../../relay-pod/src/webrtc/comfystream-peer.js";
import { H264Depacketizer } from "../../relay-pod/src/webrtc/h264-depacketizer.js";
import { FFMPEG } from "../session/relay-harness.js";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";

const run = promisify(execFile);
const RTP_WRAP = 2 ** 32;

export interface PeerFloor {
  sentFrames: number;
  returnedFrames: number;
  returnedFps: number;
  latencyMs: { p50: number | null; p95: number | null; max: number | null };
}

/** `seconds` of frames straight to the peer at `comfystreamUrl`; the peer must be fresh (it serves one). */
export async function measurePeerFloor(options: {
  comfystreamUrl: string;
  prompts: unknown[];
  seconds: number;
  iceAddress: string;
}): Promise<PeerFloor> {
  const frames = await encodedFrames(options.seconds);
  const peer = new ComfyStreamPeer({
    comfystreamUrl: options.comfystreamUrl,
    prompts: options.prompts,
    width: 512,
    height: 512,
    iceAddresses: [options.iceAddress],
    offerTimeoutMs: 120_000,
  });
  const matcher = new FrameMatcher<null>();
  const depacketizer = new H264Depacketizer();
  const latencies: number[] = [];
  let returned = 0;
  peer.on("rtp", (packet) => {
    for (const unit of depacketizer.push(packet)) {
      for (const matched of matcher.accept(unit.rtpTimestamp, null)) {
        returned++;
        if (matched.latencyMs !== undefined) latencies.push(matched.latencyMs);
      }
    }
  });
  await peer.connect();
  const packetizer = new H264Packetizer({
    payloadType: 96,
    ssrc: randomInt(1, 2 ** 31),
    inputFormat: "annexb",
  });
  let sequenceNumber = randomInt(0, 0x10000);
  const started = performance.now();
  try {
    for (let i = 0; i < frames.length; i++) {
      const due = started + (i * 1000) / 30;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const frame = frames[i]!;
      const rtpTimestamp = (frame.pts + timestampJitter(i)) % RTP_WRAP;
      for (const packet of packetizer.packetize(frame.data, rtpTimestamp)) {
        packet.header.sequenceNumber = sequenceNumber;
        sequenceNumber = (sequenceNumber + 1) & 0xffff;
        peer.sendRtp(packet.serialize());
      }
      matcher.recordSent({ rtpTimestamp, pts: frame.pts, sentAt: performance.now() });
    }
    await sleep(2000); // the last frames' way back
  } finally {
    await peer.close();
  }
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (p: number) =>
    sorted.length
      ? Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!)
      : null;
  return {
    sentFrames: frames.length,
    returnedFrames: returned,
    returnedFps: Math.round((returned / options.seconds) * 10) / 10,
    latencyMs: { p50: at(50), p95: at(95), max: sorted.length ? Math.round(sorted.at(-1)!) : null },
  };
}

/** H.264 constrained baseline 512x512@30, 1 s GOP, no B-frames: what the relay's transcoder sends. */
async function encodedFrames(seconds: number): Promise<Array<{ pts: number; data: Buffer }>> {
  const { stdout } = await run(
    FFMPEG,
    [
      ...["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=512x512:rate=30"],
      ...["-t", String(seconds), "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"],
      ...["-profile:v", "baseline", "-g", "30", "-bf", "0", "-bsf:v", "dump_extra=freq=keyframe"],
      ...["-f", "mpegts", "pipe:1"],
    ],
    { encoding: "buffer", maxBuffer: 256 * 1024 * 1024 },
  );
  const frames: Array<{ pts: number; data: Buffer }> = [];
  const demuxer = new TsDemuxer({
    onAccessUnit: (unit) => unit.pts !== undefined && frames.push({ pts: unit.pts, data: unit.data }),
  });
  demuxer.push(stdout);
  demuxer.flush();
  return frames;
}
