// Drives the Python stand-in ComfyStream peer (test/peers/py-standin/standin.py) with a real werift
// client and real H.264 from ffmpeg, over loopback only. Run it with
//   bash test/infra/run-tests.sh dist/test/peers/py-standin.test.js
// which, as root, runs the suite inside a private network namespace holding only `lo` + 127.0.0.2.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  MediaStreamTrack,
  RTCPeerConnection,
  RtpPacket,
  useH264,
  useVP8,
  type RTCDataChannel,
  type RTCRtpCodecParameters,
  type RTCRtpTransceiver,
} from "werift";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { waitFor } from "../infra/wait-for.js";
import { LOOPBACK_ICE_ADDRESS, PYTHON, PyStandin as StandIn, STANDIN } from "./py-standin/launch.js";

const FFMPEG = process.env.FFMPEG_BIN ?? "ffmpeg";

/** The smallest valid ComfyStream workflow: LoadTensor -> SaveTensor. */
const PASSTHROUGH_WORKFLOW = {
  "1": { inputs: { images: ["2", 0] }, class_type: "SaveTensor", _meta: { title: "SaveTensor" } },
  "2": { inputs: {}, class_type: "LoadTensor", _meta: { title: "LoadTensor" } },
};

// ---------------------------------------------------------------------------------------------------
// The stand-in process
// ---------------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------------
// A werift client shaped like ComfyStream's UI: one sendrecv H.264 video m-line, "control" channel
// created before the offer, complete (non-trickle) ICE.
// ---------------------------------------------------------------------------------------------------

interface ReturnedFrame {
  timestamp: number;
  idr: boolean;
  arrivalMs: number;
}

class Client {
  readonly pc: RTCPeerConnection;
  readonly transceiver: RTCRtpTransceiver;
  readonly control: RTCDataChannel;
  readonly outgoing = new MediaStreamTrack({ kind: "video" });
  readonly controlReplies: Record<string, unknown>[] = [];
  /** RTP timestamps of the access units handed to werift, after our per-frame jitter. */
  readonly sentFrames: number[] = [];
  readonly returnedFrames: ReturnedFrame[] = [];
  remoteSsrc: number | undefined;
  private currentAccessUnitHasIdr = false;
  private ffmpeg: ChildProcess | undefined;
  private rtpSocket: dgram.Socket | undefined;

  constructor(codecs: RTCRtpCodecParameters[] = [useH264()]) {
    this.pc = new RTCPeerConnection({
      iceServers: [],
      iceUseIpv6: false,
      // werift 0.25.2 leaks the UDP socket of an m-line that BUNDLE folds away (it stays open after
      // close() and keeps the process alive); with max-bundle there is only one ICE transport.
      bundlePolicy: "max-bundle",
      iceAdditionalHostAddresses: [LOOPBACK_ICE_ADDRESS],
      codecs: { video: codecs, audio: [] },
    });
    this.transceiver = this.pc.addTransceiver(this.outgoing, { direction: "sendrecv" });
    this.transceiver.onTrack.subscribe((track) => {
      track.onReceiveRtp.subscribe((rtp) => this.onReturnedRtp(rtp, rtp.header.ssrc));
    });
    this.control = this.pc.createDataChannel("control");
    this.control.onMessage.subscribe((message) => {
      this.controlReplies.push(JSON.parse(message.toString()) as Record<string, unknown>);
    });
  }

  private onReturnedRtp(rtp: RtpPacket, ssrc: number): void {
    this.remoteSsrc = ssrc;
    if (nalUnitTypes(rtp.payload).includes(5)) this.currentAccessUnitHasIdr = true;
    if (rtp.header.marker) {
      this.returnedFrames.push({
        timestamp: rtp.header.timestamp,
        idr: this.currentAccessUnitHasIdr,
        arrivalMs: performance.now(),
      });
      this.currentAccessUnitHasIdr = false;
    }
  }

  async offerBody(prompts: unknown): Promise<string> {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    if (this.pc.iceGatheringState !== "complete") {
      await new Promise<void>((resolve) => {
        const { unSubscribe } = this.pc.iceGatheringStateChange.subscribe((state) => {
          if (state === "complete") {
            unSubscribe();
            resolve();
          }
        });
      });
    }
    return JSON.stringify({
      prompts,
      offer: { sdp: this.pc.localDescription!.sdp, type: "offer" },
      resolution: { width: 320, height: 240 },
    });
  }

  /** POSTs the offer; on 200 applies the answer and waits for "connected". */
  async connect(baseUrl: string, prompts: unknown): Promise<Response> {
    const response = await fetch(`${baseUrl}/offer`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: await this.offerBody(prompts),
      signal: AbortSignal.timeout(20_000),
    });
    if (response.status !== 200) return response;
    const answer = (await response.clone().json()) as { sdp: string; type: "answer" };
    await this.pc.setRemoteDescription(answer);
    await waitFor(() => this.pc.connectionState === "connected", 10_000, "peer connection connected");
    await waitFor(() => this.control.readyState === "open", 5_000, "control channel open");
    return response;
  }

  async request(message: Record<string, unknown>, replyType: string): Promise<Record<string, unknown>> {
    const seen = this.controlReplies.length;
    this.control.send(JSON.stringify(message));
    await waitFor(
      () => this.controlReplies.slice(seen).some((r) => r.type === replyType),
      5_000,
      `control reply ${replyType}`,
    );
    return this.controlReplies.slice(seen).find((r) => r.type === replyType)!;
  }

  /**
   * Streams `seconds` of 320x240/30 test video: ffmpeg -> RTP on a loopback UDP socket -> werift.
   * Each frame's RTP timestamp gets a deterministic jitter (0..996 ticks, less than the 3000-tick
   * frame spacing) so that "returned = sent + constant" can't hold by accident on a regular grid.
   */
  async startVideo(seconds: number): Promise<void> {
    const socket = dgram.createSocket("udp4");
    this.rtpSocket = socket;
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    let lastSourceTimestamp: number | undefined;
    let frameIndex = 0;
    socket.on("message", (datagram) => {
      const rtp = RtpPacket.deSerialize(datagram);
      if (rtp.header.payloadType >= 72 && rtp.header.payloadType <= 76) return; // RTCP from ffmpeg
      if (lastSourceTimestamp !== undefined && rtp.header.timestamp !== lastSourceTimestamp) frameIndex++;
      lastSourceTimestamp = rtp.header.timestamp;
      rtp.header.timestamp = (rtp.header.timestamp + ((frameIndex * 389) % 997)) >>> 0;
      if (rtp.header.marker) this.sentFrames.push(rtp.header.timestamp);
      this.outgoing.writeRtp(rtp);
    });
    const port = socket.address().port;
    this.ffmpeg = spawn(
      FFMPEG,
      [
        ...["-hide_banner", "-loglevel", "error", "-nostdin", "-re"],
        ...["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", String(seconds)],
        ...["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-threads", "1"],
        ...["-profile:v", "baseline", "-bf", "0", "-g", "30"],
        ...["-f", "rtp", `rtp://127.0.0.1:${port}?pkt_size=1200`],
      ],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
  }

  async videoFinished(timeoutMs: number): Promise<void> {
    const ffmpeg = this.ffmpeg;
    if (!ffmpeg || ffmpeg.exitCode !== null) return;
    await Promise.race([
      new Promise((resolve) => ffmpeg.once("exit", resolve)),
      sleep(timeoutMs).then(() => {
        throw new Error("ffmpeg did not finish in time");
      }),
    ]);
  }

  async sendPli(): Promise<void> {
    if (this.remoteSsrc !== undefined) await this.transceiver.receiver.sendRtcpPLI(this.remoteSsrc);
  }

  async close(): Promise<void> {
    if (this.ffmpeg && this.ffmpeg.exitCode === null && this.ffmpeg.signalCode === null)
      this.ffmpeg.kill("SIGKILL");
    this.rtpSocket?.close();
    this.rtpSocket = undefined;
    await this.pc.close();
  }
}

/** NAL unit types in one H.264 RTP payload (single NAL, STAP-A, or the first FU-A fragment). */
function nalUnitTypes(payload: Buffer): number[] {
  if (payload.length === 0) return [];
  const type = payload[0] & 0x1f;
  if (type === 24) {
    const types: number[] = [];
    for (let i = 1; i + 2 < payload.length;) {
      const size = payload.readUInt16BE(i);
      i += 2;
      if (size === 0 || i + size > payload.length) break;
      types.push(payload[i] & 0x1f);
      i += size;
    }
    return types;
  }
  if (type === 28) return payload.length > 1 && payload[1] & 0x80 ? [payload[1] & 0x1f] : [];
  return [type];
}

/**
 * The most common (returned - sent) offset mod 2^32, and how many returned frames sit exactly at
 * sent + that offset.
 */
function timestampOffset(sent: number[], returned: number[]): { offset: number; matched: number } {
  const counts = new Map<number, number>();
  for (const r of returned) {
    for (const s of sent) {
      const offset = (r - s) >>> 0;
      counts.set(offset, (counts.get(offset) ?? 0) + 1);
    }
  }
  let best = 0;
  let bestCount = 0;
  for (const [offset, count] of counts) {
    if (count > bestCount) [best, bestCount] = [offset, count];
  }
  const sentSet = new Set(sent);
  const matched = returned.filter((r) => sentSet.has((r - best) >>> 0)).length;
  return { offset: best, matched };
}

async function postOffer(baseUrl: string, body: string): Promise<Response> {
  return fetch(`${baseUrl}/offer`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
    signal: AbortSignal.timeout(20_000),
  });
}

// ---------------------------------------------------------------------------------------------------

test("standin.py --help describes its knobs", async () => {
  const child = spawn(PYTHON, [STANDIN, "--help"], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  assert.equal(code, 0);
  for (const flag of [
    "--port",
    "--ice-address",
    "--mode",
    "--max-fps",
    "--warmup-ms",
    "--fail-prompts",
    "--pli",
  ]) {
    assert.ok(out.includes(flag), `--help mentions ${flag}`);
  }
});

describe("py stand-in ComfyStream peer", { skip: needsLoopbackNamespace }, () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });
  async function startStandIn(args: string[] = []): Promise<StandIn> {
    const standIn = await StandIn.start(args);
    cleanups.push(() => standIn.stop());
    return standIn;
  }
  function newClient(codecs?: RTCRtpCodecParameters[]): Client {
    const client = new Client(codecs);
    cleanups.push(() => client.close());
    return client;
  }

  test("health routes answer OK labelled as JSON, also under /live, and a non-workflow prompt is a 500", async () => {
    const standIn = await startStandIn();
    for (const path of ["/", "/health", "/live/health"]) {
      const response = await fetch(standIn.baseUrl + path);
      assert.equal(response.status, 200, path);
      assert.match(response.headers.get("content-type") ?? "", /application\/json/);
      assert.equal(await response.text(), "OK");
    }
    assert.deepEqual(await (await fetch(`${standIn.baseUrl}/streams/stats`)).json(), {});
    assert.deepEqual(await (await fetch(`${standIn.baseUrl}/stream/nope/stats`)).json(), {
      error: "Stream not found",
    });
    const client = newClient();
    const response = await postOffer(standIn.baseUrl, await client.offerBody([{ text: "a cat" }]));
    assert.equal(response.status, 500);
    assert.match(response.headers.get("content-type") ?? "", /text\/plain/);
    assert.match(await response.text(), /Internal Server Error/);
  });

  test(
    "a session returns processed frames with RTP ts = sent ts + constant, honours PLI, and answers control messages",
    { timeout: 60_000 },
    async () => {
      const standIn = await startStandIn(["--warmup-ms", "300"]);
      const client = newClient();
      const response = await client.connect(standIn.baseUrl, [PASSTHROUGH_WORKFLOW]);
      assert.equal(response.status, 200);
      const answer = (await response.json()) as { sdp: string; type: string };
      assert.equal(answer.type, "answer");
      const videoSection = answer.sdp.split("m=")[1];
      assert.match(videoSection, /^video /);
      assert.match(videoSection, /a=sendrecv/);
      const codecs = [...videoSection.matchAll(/a=rtpmap:\d+ ([\w-]+)\//g)].map((m) => m[1]);
      assert.ok(
        codecs.length > 0 && codecs.every((c) => c === "H264" || c === "rtx"),
        `video codecs: ${codecs}`,
      );

      await client.startVideo(4);
      // A PLI every second once video flows: each should come back as an IDR (encoder restart).
      const pliTimer = setInterval(() => void client.sendPli(), 1_000);
      try {
        await waitFor(() => client.returnedFrames.length > 0, 10_000, "first returned frame");

        assert.deepEqual(
          await client.request({ type: "update_resolution", width: 320, height: 240 }, "resolution_updated"),
          {
            type: "resolution_updated",
            success: true,
          },
        );
        const nodes = await client.request({ type: "get_nodes" }, "nodes_info");
        const node2 = (nodes.nodes as Record<string, Record<string, { class_type: string }>>)["0"]["2"];
        assert.equal(node2.class_type, "LoadTensor");

        const updated = {
          ...PASSTHROUGH_WORKFLOW,
          "2": { inputs: { marker: "updated-by-test" }, class_type: "LoadTensor" },
        };
        assert.deepEqual(
          await client.request({ type: "update_prompts", prompts: [updated] }, "prompts_updated"),
          {
            type: "prompts_updated",
            success: true,
          },
        );
        const stats = await standIn.stats();
        assert.equal(stats.prompt_updates, 1);
        assert.equal(stats.pipeline.prompts_source, "update_prompts");
        assert.deepEqual(stats.pipeline.last_prompts, [updated]);
        assert.equal(stats.pipeline.width, 320);

        const wrongCount = await client.request(
          { type: "update_prompts", prompts: [updated, updated] },
          "prompts_updated",
        );
        assert.equal(wrongCount.success, false);
        assert.equal(typeof wrongCount.error, "string");

        const repliesBefore = client.controlReplies.length;
        client.control.send(JSON.stringify({ type: "no_such_type" }));
        client.control.send("not json");
        await sleep(300);
        assert.equal(client.controlReplies.length, repliesBefore, "unknown or invalid messages get no reply");

        await client.videoFinished(15_000);
        await sleep(500); // the last frames in flight
      } finally {
        clearInterval(pliTimer);
      }

      const sent = client.sentFrames.length;
      const returned = client.returnedFrames.map((f) => f.timestamp);
      const { offset, matched } = timestampOffset(client.sentFrames, returned);
      const idrs = client.returnedFrames.filter((f) => f.idr).length;
      const stats = await standIn.stats();
      console.log(
        `py-standin session: sent ${sent} frames, returned ${returned.length}, ${matched} at sent+${offset}, ` +
          `${idrs} IDRs returned, keyframes ${JSON.stringify(stats.keyframes)}, ` +
          `frames in/out/dropped ${stats.frames_in}/${stats.frames_out}/${stats.frames_dropped}`,
      );
      assert.ok(sent >= 100, `ffmpeg sent ${sent} frames`);
      assert.ok(returned.length >= sent * 0.8, `returned ${returned.length} of ${sent} frames`);
      assert.ok(
        matched >= returned.length * 0.95,
        `${matched} of ${returned.length} returned frames at sent ts + C`,
      );
      const means = stats.pipeline.last_frame_means!;
      means.input.forEach((v, i) =>
        assert.ok(Math.abs(255 - v - means.output[i]) < 1, `inverted: ${JSON.stringify(means)}`),
      );
      assert.ok(stats.keyframes.keyframe_requests >= 2, "PLIs reached the encoder");
      assert.ok(idrs >= 3, `IDRs returned: ${idrs} (first frame + PLIs)`);
      assert.equal(stats.current_peer_state, "connected");

      await client.close();
    },
  );

  test(
    "--max-fps caps the processing rate by dropping frames; --pli ignore keeps Debian aiortc's IDR behaviour",
    { timeout: 60_000 },
    async () => {
      const standIn = await startStandIn(["--max-fps", "10", "--mode", "passthrough", "--pli", "ignore"]);
      const client = newClient();
      assert.equal((await client.connect(standIn.baseUrl, [PASSTHROUGH_WORKFLOW])).status, 200);
      await client.startVideo(3);
      const pliTimer = setInterval(() => void client.sendPli(), 700);
      try {
        await client.videoFinished(15_000);
        await sleep(400);
      } finally {
        clearInterval(pliTimer);
      }
      const stats = await standIn.stats();
      const returned = client.returnedFrames;
      const spanS = (returned[returned.length - 1].arrivalMs - returned[0].arrivalMs) / 1000;
      const fps = (returned.length - 1) / spanS;
      const { matched } = timestampOffset(
        client.sentFrames,
        returned.map((f) => f.timestamp),
      );
      const idrs = returned.filter((f) => f.idr).length;
      console.log(
        `py-standin --max-fps 10: sent ${client.sentFrames.length}, returned ${returned.length} (${fps.toFixed(1)} fps), ` +
          `dropped ${stats.frames_dropped}, IDRs ${idrs}, keyframes ${JSON.stringify(stats.keyframes)}`,
      );
      assert.ok(fps > 7 && fps < 12.5, `returned ${fps.toFixed(1)} fps`);
      assert.ok(stats.frames_dropped >= client.sentFrames.length * 0.5, `dropped ${stats.frames_dropped}`);
      assert.ok(matched >= returned.length * 0.95, "dropped frames don't disturb the pts passthrough");
      assert.ok(stats.keyframes.keyframe_requests >= 1, "PLIs reached the encoder");
      assert.deepEqual(
        stats.pipeline.last_frame_means!.output,
        stats.pipeline.last_frame_means!.input,
        "passthrough",
      );
      assert.equal(stats.keyframes.forced_idrs, 0);
      assert.equal(idrs, 1, "only the first frame is an IDR (x264 keyint 250)");
    },
  );

  test(
    "--fail-prompts: /offer and /prompt answer 500 with a text body; update_prompts fails; a VP8-only offer is a 500",
    { timeout: 30_000 },
    async () => {
      const standIn = await startStandIn(["--fail-prompts"]);
      const rejected = newClient();
      const response = await postOffer(standIn.baseUrl, await rejected.offerBody([PASSTHROUGH_WORKFLOW]));
      assert.equal(response.status, 500);
      assert.match(response.headers.get("content-type") ?? "", /text\/plain/);
      const body = await response.text();
      assert.ok(body.length > 0);
      assert.match(body, /500 Internal Server Error/);
      const prompt = await fetch(`${standIn.baseUrl}/prompt`, {
        method: "POST",
        body: JSON.stringify(PASSTHROUGH_WORKFLOW),
      });
      assert.equal(prompt.status, 500);

      const vp8 = newClient([useVP8()]);
      assert.equal((await postOffer(`${standIn.baseUrl}/live`, await vp8.offerBody([]))).status, 500);

      // Without prompts the server runs in noop mode, so the session itself comes up.
      const noop = newClient();
      assert.equal((await noop.connect(standIn.baseUrl, [])).status, 200);
      const reply = await noop.request({ type: "update_prompts", prompts: [] }, "prompts_updated");
      assert.equal(reply.success, false);
      assert.match(String(reply.error), /fail-prompts/);
      const stats = await standIn.stats();
      assert.equal(stats.offers_failed, 2);
      assert.equal(stats.peers_served, 1);
    },
  );

  test(
    "a second peer shares the one pipeline; a closed peer is noticed only by ICE consent, and then tears the pipeline down for everyone",
    { timeout: 90_000 },
    async () => {
      // werift sends no DTLS close_notify, and aiortc 1.4.0 keeps "connected" even after one, so the
      // server learns of a closed peer only when ICE consent fails: ~30 s by default, ~6 s here.
      const standIn = await startStandIn(["--ice-consent-interval", "0.5"]);
      const first = newClient();
      assert.equal((await first.connect(standIn.baseUrl, [PASSTHROUGH_WORKFLOW])).status, 200);
      await first.startVideo(30);
      await waitFor(() => first.returnedFrames.length > 10, 10_000, "frames back to the first peer");

      // Like ComfyStream: the second /offer is accepted and re-applies prompts to the same pipeline.
      const second = newClient();
      assert.equal((await second.connect(standIn.baseUrl, [PASSTHROUGH_WORKFLOW])).status, 200);
      await second.startVideo(30);
      await waitFor(() => second.returnedFrames.length > 10, 10_000, "frames back to the second peer");
      let stats = await standIn.stats();
      assert.equal(stats.peers.length, 2);
      assert.equal(stats.peers_served, 2);

      const closedAt = Date.now();
      await first.close();
      // Events, not times: ten more frames back (so made after the close) show the second peer is
      // still served, and the server has not noticed the close yet (ICE consent takes ~6 s).
      const returnedAfterClose = second.returnedFrames.length;
      await waitFor(
        () => second.returnedFrames.length > returnedAfterClose + 10,
        10_000,
        "second peer still served",
      );
      stats = await standIn.stats();
      assert.equal(stats.peers.length, 2, "after the close the server still has both peers");
      assert.equal(stats.pipeline.state, "streaming");

      // The server drops the peer from its list, awaits pc.close(), and only then stops the pipeline:
      // wait for both, not for the first alone.
      await waitFor(
        async () => {
          stats = await standIn.stats();
          return stats.peers.length === 1 && stats.pipeline.state === "uninitialized";
        },
        30_000,
        "the first peer's end to stop the shared pipeline",
      );
      const noticedAfterS = (Date.now() - closedAt) / 1000;
      assert.equal(stats.ended_peers[0].connection_state, "failed", "ended by ICE consent failure");

      // From the teardown on, the pipeline makes nothing: while the server receives 30 more frames
      // from the second peer, its output count stays put, and none of those frames comes back
      // (frames made before the teardown may still arrive, however late).
      const atTeardown = {
        framesIn: stats.frames_in,
        framesOut: stats.frames_out,
        sent: second.sentFrames.length,
        returned: second.returnedFrames.length,
      };
      await waitFor(
        async () =>
          second.sentFrames.length >= atTeardown.sent + 30 &&
          (stats = await standIn.stats()).frames_in >= atTeardown.framesIn + 30,
        20_000,
        "the second peer to send, and the server to receive, 30 more frames",
      );
      assert.equal(
        stats.frames_out,
        atTeardown.framesOut,
        "the shared pipeline made no frame after the teardown",
      );
      // The second peer's own frames between the close and the teardown give its timestamp offset.
      const { offset } = timestampOffset(
        second.sentFrames.slice(0, atTeardown.sent),
        second.returnedFrames.slice(returnedAfterClose, atTeardown.returned).map((f) => f.timestamp),
      );
      const sentAfter = new Set(second.sentFrames.slice(atTeardown.sent));
      const returnedAfter = second.returnedFrames.slice(atTeardown.returned);
      const echoed = returnedAfter.filter((f) => sentAfter.has((f.timestamp - offset) >>> 0)).length;
      console.log(
        `py-standin two peers: the server noticed the first peer's close after ${noticedAfterS.toFixed(1)} s ` +
          `(consent interval 0.5 s); then the second peer sent ${sentAfter.size} frames, ${echoed} came back ` +
          `(and ${returnedAfter.length - echoed} made before the teardown arrived late)`,
      );
      assert.equal(echoed, 0, "the second peer kept sending, but its returned video stalled");

      // Close the second peer too and let the server notice (else its later end would kill the next session).
      await second.close();
      // Its end's pipeline cleanup (after pc.close()) empties the input queue, which still holds a
      // frame of the second peer; an offer before that would be torn down by it.
      await waitFor(
        async () => {
          stats = await standIn.stats();
          const queued = (stats.pipeline as { queued_frames?: number }).queued_frames;
          return stats.peers.length === 0 && queued === 0;
        },
        30_000,
        "the second peer's end to clean the pipeline up",
      );

      // A new /offer re-applies prompts and the pipeline works again.
      const third = newClient();
      assert.equal((await third.connect(standIn.baseUrl, [PASSTHROUGH_WORKFLOW])).status, 200);
      await third.startVideo(20);
      await waitFor(
        () => third.returnedFrames.length >= 20,
        20_000,
        "20 frames back to a new session after the teardown",
      );
      const { matched } = timestampOffset(
        third.sentFrames,
        third.returnedFrames.map((f) => f.timestamp),
      );
      console.log(
        `py-standin third peer: sent ${third.sentFrames.length}, returned ${third.returnedFrames.length}, matched ${matched}`,
      );
      assert.ok(matched >= third.returnedFrames.length * 0.95);
    },
  );
});
