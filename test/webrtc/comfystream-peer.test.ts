/**
 * ComfyStreamPeer against the TypeScript stand-in ComfyStream (real werift on both sides, real
 * ffmpeg). Loopback only: skipped outside the namespace of test/infra/run-tests.sh.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ComfyStreamPeer, type WebRtcState } from "../../relay-pod/src/webrtc/comfystream-peer.js";
import { H264Depacketizer, type H264AccessUnit } from "../../relay-pod/src/webrtc/h264-depacketizer.js";
import { needsLoopbackNamespace } from "../infra/netns.js";
import {
  startTsStandin,
  type StandinStats,
  type TsStandin,
} from "../../relay-pod/src/demo/standin-peer/standin.js";
import {
  decodeAnnexB,
  ICE_ADDRESSES,
  PASSTHROUGH_WORKFLOW,
  percentile,
  startRtpSource,
  waitFor,
} from "./helpers.js";

const skip = needsLoopbackNamespace;
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function standin(options: Parameters<typeof startTsStandin>[0] = {}): Promise<TsStandin> {
  const server = await startTsStandin({ port: 0, iceAddresses: ICE_ADDRESSES, ...options });
  cleanups.push(() => server.close());
  return server;
}

function peerFor(
  url: string,
  options: Partial<ConstructorParameters<typeof ComfyStreamPeer>[0]> = {},
): ComfyStreamPeer {
  const peer = new ComfyStreamPeer({
    comfystreamUrl: url,
    prompts: [PASSTHROUGH_WORKFLOW],
    width: 320,
    height: 240,
    iceAddresses: ICE_ADDRESSES,
    offerTimeoutMs: 20_000,
    ...options,
  });
  cleanups.push(() => peer.close());
  return peer;
}

async function standinStats(url: string): Promise<StandinStats> {
  const response = await fetch(`${url}/stats`);
  return (await response.json()) as StandinStats;
}

interface RoundTrip {
  framesSent: number;
  sentTimestamps: number[];
  sentAt: Map<number, number>;
  units: Array<H264AccessUnit & { receivedAt: number }>;
  depacketizer: H264Depacketizer;
}

/** Streams `seconds` of ffmpeg RTP through the peer and collects the returned access units. */
async function roundTrip(peer: ComfyStreamPeer, seconds: number): Promise<RoundTrip> {
  const depacketizer = new H264Depacketizer();
  const result: RoundTrip = { framesSent: 0, sentTimestamps: [], sentAt: new Map(), units: [], depacketizer };
  const onRtp = (packet: Parameters<H264Depacketizer["push"]>[0]): void => {
    const receivedAt = performance.now();
    for (const unit of depacketizer.push(packet)) result.units.push({ ...unit, receivedAt });
  };
  peer.on("rtp", onRtp);
  const source = await startRtpSource({
    seconds,
    onPacket: (packet) => {
      peer.sendRtp(packet);
      const marker = (packet[1]! & 0x80) !== 0;
      if (marker) {
        const timestamp = packet.readUInt32BE(4);
        result.framesSent++;
        result.sentTimestamps.push(timestamp);
        result.sentAt.set(timestamp, performance.now());
      }
    },
  });
  cleanups.push(() => source.stop());
  await source.done;
  // Let the last frames come back.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  peer.off("rtp", onRtp);
  return result;
}

/** Returned timestamp − sent timestamp must be one constant for every returned frame. */
function timestampOffset(trip: RoundTrip): { offset: number; unmatched: number; latenciesMs: number[] } {
  const firstReturned = trip.units[0]!;
  const offset = (firstReturned.rtpTimestamp - trip.sentTimestamps[0]!) >>> 0;
  let unmatched = 0;
  const latenciesMs: number[] = [];
  for (const unit of trip.units) {
    const sentAt = trip.sentAt.get((unit.rtpTimestamp - offset) >>> 0);
    if (sentAt === undefined) unmatched++;
    else latenciesMs.push(unit.receivedAt - sentAt);
  }
  return { offset, unmatched, latenciesMs };
}

describe("ComfyStreamPeer ↔ TS stand-in", { skip, timeout: 120_000 }, () => {
  test("filter mode: ~3 s of ffmpeg RTP comes back processed, decodable, with IDRs from PLIs and a constant timestamp offset", async (t) => {
    const server = await standin({ mode: "filter" });
    const peer = peerFor(server.url, { pliIntervalMs: 1500 });
    const states: WebRtcState[] = [];
    peer.on("state", (state: WebRtcState) => states.push(state));
    await peer.connect();
    assert.equal(peer.state, "connected");

    const trip = await roundTrip(peer, 3);
    const stats = await standinStats(server.url);
    t.diagnostic(
      `sent ${trip.framesSent} frames, stand-in in/out ${stats.media.framesIn}/${stats.media.framesOut}, ` +
        `returned AUs ${trip.units.length}, keyframes ${trip.depacketizer.stats.keyframes}, ` +
        `encoder restarts ${stats.media.encoderRestarts}, lost ${trip.depacketizer.stats.lostPackets}`,
    );
    t.diagnostic(JSON.stringify(stats.media));
    assert.ok(trip.framesSent >= 85, `ffmpeg sent ${trip.framesSent} frames`);

    const directory = await mkdtemp(path.join(tmpdir(), "webrtc-test-"));
    cleanups.push(() => rm(directory, { recursive: true, force: true }));
    const file = path.join(directory, "returned.h264");
    await writeFile(file, Buffer.concat(trip.units.map((unit) => unit.annexB)));
    const decoded = await decodeAnnexB(file);
    t.diagnostic(`ffmpeg decoded ${decoded.frames} of ${trip.framesSent} sent frames`);
    assert.ok(
      decoded.frames >= 0.9 * trip.framesSent,
      `decoded ${decoded.frames} < 90% of ${trip.framesSent}; ${decoded.errors}`,
    );
    assert.ok(trip.units[0]!.keyframe, "the returned stream starts with an IDR");

    const keyframeTimes = trip.units.filter((unit) => unit.keyframe).map((unit) => unit.rtpTimestamp);
    assert.ok(keyframeTimes.length >= 2, `only ${keyframeTimes.length} keyframes came back`);
    const lastTimestamp = trip.units.at(-1)!.rtpTimestamp;
    const gaps = [...keyframeTimes.slice(1), lastTimestamp].map(
      (time, index) => ((time - keyframeTimes[index]!) >>> 0) / 90_000,
    );
    t.diagnostic(`seconds between returned IDRs: ${gaps.map((gap) => gap.toFixed(2)).join(", ")}`);
    assert.ok(Math.max(...gaps) <= 2.5, `IDR gap of ${Math.max(...gaps).toFixed(2)} s`);

    const { unmatched, latenciesMs } = timestampOffset(trip);
    assert.equal(unmatched, 0, "every returned frame maps to a sent frame through one offset");
    t.diagnostic(
      `round-trip latency (filter mode) p50 ${percentile(latenciesMs, 0.5).toFixed(1)} ms, ` +
        `p95 ${percentile(latenciesMs, 0.95).toFixed(1)} ms`,
    );
    assert.ok(peer.stats.plisSent >= 2, `${peer.stats.plisSent} PLIs sent`);
    assert.ok(!states.includes("disconnected") && !states.includes("failed"), `states: ${states.join(",")}`);
    await peer.close();
    assert.equal(peer.state, "closed");
  });

  test("passthrough mode: payloads come back unchanged, re-stamped by one offset; latency measured", async (t) => {
    const server = await standin({ mode: "passthrough" });
    const peer = peerFor(server.url);
    await peer.connect();
    const trip = await roundTrip(peer, 3);
    assert.ok(
      trip.units.length >= 0.95 * trip.framesSent,
      `${trip.units.length} of ${trip.framesSent} frames back`,
    );
    const { offset, unmatched, latenciesMs } = timestampOffset(trip);
    assert.equal(unmatched, 0);
    assert.notEqual(offset, 0, "the stand-in adds a random offset like aiortc");
    t.diagnostic(
      `passthrough round trip: ${trip.units.length}/${trip.framesSent} frames, latency p50 ` +
        `${percentile(latenciesMs, 0.5).toFixed(1)} ms, p95 ${percentile(latenciesMs, 0.95).toFixed(1)} ms`,
    );
    await peer.close();
  });

  test("control channel: update_prompts reaches the stand-in and the reply comes back; get_nodes; errors", async () => {
    const server = await standin({ mode: "passthrough" });
    const peer = peerFor(server.url);
    await peer.connect();

    const updated = structuredClone(PASSTHROUGH_WORKFLOW) as Record<
      string,
      { class_type: string; inputs: Record<string, unknown> }
    >;
    updated["2"]!.inputs = { marker: "second prompt" };
    const reply = await peer.updatePrompts([updated]);
    assert.deepEqual(reply, { type: "prompts_updated", success: true });
    const stats = await standinStats(server.url);
    assert.deepEqual(stats.lastPromptsReceived, [updated]);
    assert.deepEqual(stats.prompts, [updated]);
    assert.equal(stats.controlMessages.update_prompts, 1);

    // A single workflow object is sent as a one-element list.
    assert.deepEqual(await peer.updatePrompts(PASSTHROUGH_WORKFLOW), {
      type: "prompts_updated",
      success: true,
    });

    const nodes = await peer.request({ type: "get_nodes" });
    assert.equal(nodes.type, "nodes_info");
    assert.deepEqual(Object.keys((nodes.nodes as Record<string, object>)["0"]!), ["1", "2"]);

    const resolution = await peer.request({ type: "update_resolution", width: 512, height: 512 });
    assert.deepEqual(resolution, { type: "resolution_updated", success: true });

    const wrongCount = await peer.updatePrompts([PASSTHROUGH_WORKFLOW, PASSTHROUGH_WORKFLOW]);
    assert.equal(wrongCount.success, false);
    assert.match(String(wrongCount.error), /must match/);

    const invalid = await peer.updatePrompts([{ text: "not a workflow" }]);
    assert.equal(invalid.success, false);

    await assert.rejects(peer.request({ type: "no_such_message" }), /no known reply type/);
    await assert.rejects(peer.request({ type: "get_nodes" }, 300, "never_sent"), /within 300 ms/);
  });

  test("/offer answering 500: connect() rejects with the body text and the state is failed", async () => {
    const failing = await standin({ failPrompts: true });
    const peer = peerFor(failing.url);
    await assert.rejects(
      peer.connect(),
      /HTTP 500: 500 Internal Server Error\s+Server got itself in trouble/,
    );
    assert.equal(peer.state, "failed");

    // The per-workflow failure marker on a healthy stand-in, and ComfyStream's example of a bad prompt.
    const server = await standin();
    for (const prompts of [[{ "1": { class_type: "StandinFailPrompt", inputs: {} } }], [{ text: "hello" }]]) {
      const rejected = peerFor(server.url, { prompts });
      await assert.rejects(rejected.connect(), /HTTP 500/);
    }
    assert.equal((await standinStats(server.url)).offersFailed, 2);
  });

  test("a second peer while one is connected: accepted like ComfyStream; the first one's close stops the shared pipeline", async () => {
    const server = await standin({ mode: "passthrough" });
    const first = peerFor(server.url);
    await first.connect();
    const second = peerFor(server.url);
    await second.connect();
    let stats = await standinStats(server.url);
    assert.equal(stats.activePeers, 2);
    assert.equal(stats.peersServed, 2);
    assert.equal(stats.pipeline.running, true);

    await first.close();
    await waitFor(
      async () => (await standinStats(server.url)).activePeers === 1,
      3000,
      "the stand-in to drop the first peer",
    );
    stats = await standinStats(server.url);
    assert.equal(
      stats.pipeline.running,
      false,
      "the stale peer's close stopped the pipeline of the second session",
    );
    const trip = await roundTrip(second, 1);
    assert.equal(trip.units.length, 0, "no video while the shared pipeline is stopped");
    assert.ok(trip.framesSent > 0);
  });

  test("close() frees the slot: the stand-in sees the close at once and a new peer connects and gets video", async () => {
    const server = await standin({ mode: "passthrough" });
    const first = peerFor(server.url);
    await first.connect();
    await first.close();
    const closedAt = Date.now();
    await waitFor(
      async () => (await standinStats(server.url)).activePeers === 0,
      3000,
      "the stand-in to see the close",
    );
    const noticedMs = Date.now() - closedAt;
    assert.ok(noticedMs < 3000);

    const next = peerFor(server.url);
    await next.connect();
    const trip = await roundTrip(next, 1);
    assert.ok(trip.units.length >= 20, `${trip.units.length} frames back after reconnecting`);
    const stats = await standinStats(server.url);
    assert.equal(stats.peersServed, 2);
    assert.equal(stats.pipeline.running, true);
  });

  test("ICE: both sides gather host candidates only on the configured address", async () => {
    const server = await standin({ mode: "passthrough" });
    const peer = peerFor(server.url);
    await peer.connect();
    const stats = await standinStats(server.url);
    for (const [side, lines] of [
      ["offer", stats.lastOfferCandidates],
      ["answer", stats.lastAnswerCandidates],
    ] as const) {
      assert.ok(lines.length > 0, `${side} has candidates`);
      for (const line of lines) {
        const [, , transport, , address, , , type] = line.split(" ");
        assert.deepEqual(
          [transport?.toLowerCase(), address, type],
          ["udp", "127.0.0.2", "host"],
          `${side}: ${line}`,
        );
      }
    }
  });

  test("the server closing its side (DTLS close_notify) turns the peer failed at once", async () => {
    const server = await standin({ mode: "passthrough" });
    const peer = peerFor(server.url, { mediaTimeoutMs: 0 });
    await peer.connect();
    const failed = new Promise<number>((resolve) => {
      const startedAt = Date.now();
      peer.on("state", (state: WebRtcState) => {
        if (state === "failed") resolve(Date.now() - startedAt);
      });
    });
    await server.close();
    const afterMs = await Promise.race([
      failed,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error("no failed state within 3 s")), 3000),
      ),
    ]);
    assert.ok(afterMs < 3000);
    await assert.rejects(peer.request({ type: "get_nodes" }), /not open/);
  });

  test("closeDetection consent (aiortc's behaviour): a graceful close is not noticed at once", async () => {
    const server = await standin({ mode: "passthrough", closeDetection: "consent" });
    const peer = peerFor(server.url);
    await peer.connect();
    await peer.close();
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const stats = await standinStats(server.url);
    assert.equal(
      stats.activePeers,
      1,
      "the stale peer is still there, as in ComfyStream until ICE consent expires",
    );
  });

  test("stand-in process killed mid-stream: the peer reports disconnected within the media timeout", async (t) => {
    const main = fileURLToPath(new URL("../../relay-pod/src/demo/standin-peer/main.js", import.meta.url));
    const child = spawn(
      process.execPath,
      [
        main,
        "--port",
        "0",
        "--ice-address",
        ICE_ADDRESSES.join(","),
        "--mode",
        "passthrough",
        "--log-level",
        "warn",
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    cleanups.push(() => {
      child.kill("SIGKILL");
    });
    const lines = createInterface({ input: child.stdout! });
    const [firstLine] = (await Promise.race([
      once(lines, "line"),
      new Promise((_, reject) => setTimeout(() => reject(new Error("stand-in did not start")), 10_000)),
    ])) as [string];
    const url = firstLine.replace(/^listening /, "");

    const peer = peerFor(url, { mediaTimeoutMs: 2000 });
    await peer.connect();
    let received = 0;
    peer.on("rtp", () => received++);
    const source = await startRtpSource({ seconds: 6, onPacket: (packet) => peer.sendRtp(packet) });
    cleanups.push(() => source.stop());
    await waitFor(() => received > 50, 5000, "returned RTP");

    const statePromise = new Promise<{ state: WebRtcState; afterMs: number }>((resolve) => {
      const killedAt = Date.now();
      peer.on("state", (state: WebRtcState) => {
        if (state === "disconnected" || state === "failed")
          resolve({ state, afterMs: Date.now() - killedAt });
      });
    });
    child.kill("SIGKILL");
    const outcome = await Promise.race([
      statePromise,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error("no disconnected/failed state within 6 s")), 6000),
      ),
    ]);
    t.diagnostic(`state ${outcome.state} ${outcome.afterMs} ms after the kill`);
    assert.ok(outcome.afterMs <= 4000, `took ${outcome.afterMs} ms`);
    source.stop();
  });
  test("frames stop while ICE and RTCP stay up (pipeline paused): disconnected within the media timeout, reason says so", async (t) => {
    const server = await standin({ mode: "passthrough" });
    const peer = peerFor(server.url, { mediaTimeoutMs: 2000 });
    await peer.connect();
    let received = 0;
    peer.on("rtp", () => received++);
    const source = await startRtpSource({ seconds: 10, onPacket: (packet) => peer.sendRtp(packet) });
    cleanups.push(() => source.stop());
    await waitFor(() => received > 50, 5000, "returned RTP");

    const lost = new Promise<number>((resolve) => {
      peer.on("state", (state: WebRtcState) => {
        if (state === "disconnected") resolve(Date.now());
      });
    });
    // ComfyStream's own pause: the workflow stops, the peer connection and its RTCP go on.
    await peer.request({ type: "pause_prompts" });
    const pausedAt = Date.now();
    const receivedAtPause = received;
    const lostAt = await Promise.race([
      lost,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error("no loss noticed within 6 s")), 6000),
      ),
    ]);
    t.diagnostic(`disconnected ${lostAt - pausedAt} ms after the pause: ${peer.lossReason}`);
    assert.match(peer.lossReason ?? "", /^frames stopped: .*ICE and RTCP still up/);
    assert.ok(received - receivedAtPause < 10, "the peer really stopped returning frames");
    assert.equal((await standinStats(server.url)).activePeers, 1, "ICE and DTLS still up on the peer's side");
    source.stop();
    await peer.close();
  });
});
