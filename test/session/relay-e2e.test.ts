// A relay session end to end with real parts: trickle server and clients over HTTP, real ffmpeg,
// real WebRTC (werift) to both stand-in ComfyStream peers (werift+ffmpeg, and aiortc like ComfyStream).
// What is asserted is what a user checks: the output decodes, each segment starts with an IDR, no
// frames go missing, output PTS = input PTS (DESIGN.md §3.4), prompts reach ComfyStream, status tells
// the truth, and the session recovers from a lost peer.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { RelaySession } from "../../relay-pod/src/session/relay-session.js";
import { buildSessionConfig } from "../../relay-pod/src/session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import type { SessionStatus } from "../../relay-pod/src/session/types.js";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { TrickleEventsReader } from "../../relay-pod/src/trickle/json-channels.js";
import { startTsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import {
  ICE_ADDRESSES,
  checkOutputAgainstInput,
  collectOutput,
  makeInputSegments,
  probeSegment,
  publishPaced,
  startPeer,
  startTrickle,
  udpReceiveBufferErrors,
  waitFor,
} from "./relay-harness.js";

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

function newSession(
  base: string,
  comfystreamUrl: string,
  extra: { control?: boolean; peerWindowFrames?: number } = {},
): RelaySession {
  const session = new RelaySession(
    buildSessionConfig({
      id: "e2e",
      inputUrl: `${base}in`,
      outputUrl: `${base}in-out`,
      ...(extra.control ? { controlUrl: `${base}in-control`, eventsUrl: `${base}in-events` } : {}),
      comfystreamUrl,
      prompts: [PASSTHROUGH_WORKFLOW],
      width: 256,
      height: 256,
      frameRate: 30,
      iceAddresses: ICE_ADDRESSES,
      ...(extra.peerWindowFrames ? { peerWindowFrames: extra.peerWindowFrames } : {}),
    }),
    { reconnectBackoffMs: [300, 2000] },
  );
  cleanups.push(() => session.stop());
  return session;
}

/** A trickle server with `channels`, a stand-in ComfyStream and a collector on the output channel. */
async function startRig(kind: "ts" | "py", channels = ["in", "in-out"]) {
  const { server, base } = await startTrickle(channels);
  cleanups.push(() => server.close());
  const peer = await startPeer(kind);
  cleanups.push(() => peer.stop());
  const output = collectOutput(`${base}in-out`);
  cleanups.push(() => output.close());
  return { base, peer, output };
}

describe("relay session end to end", { skip: needsLoopbackNamespace }, () => {
  for (const kind of ["ts", "py"] as const) {
    test(
      `10 s through the ${kind === "ts" ? "werift+ffmpeg" : "aiortc"} stand-in: decodable IDR-first segments, ` +
        "frames within 5 %, output PTS = input PTS, prompt update delivered, corrupt segment skipped, " +
        "input end completes the session and closes the output",
      { timeout: 90_000 },
      async (t) => {
        const { segments, pts: inputPts } = await makeInputSegments({ seconds: 10 });
        const { base, peer, output } = await startRig(kind, ["in", "in-out", "in-control", "in-events"]);
        const events = new TrickleEventsReader(`${base}in-events`, { startSeq: 0 });
        cleanups.push(() => events.close());
        const statusEvents: Array<Record<string, unknown>> = [];
        void (async () => {
          for await (const e of events) if (e.event.type === "status") statusEvents.push(e.event);
        })().catch(() => undefined);

        const session = newSession(base, peer.url, { control: true });
        await session.start();
        await waitFor(() => session.status().webrtcState === "connected", 20_000, "WebRTC connected");

        // Garbage where segment 4 would start: trickle-level valid, media-level junk.
        const inject = new Map([[4, randomBytes(50_000)]]);
        const publishing = publishPaced(`${base}in`, segments, { inject });

        // Mid-stream: status tells the truth, and a prompt update goes through the control channel.
        await sleep(5000);
        const mid = session.status();
        assert.equal(mid.state, "running");
        assert.equal(mid.webrtcState, "connected");
        assert.ok(mid.fps.input > 15, `input fps ${mid.fps.input}`);
        for (const queue of Object.values(mid.queues)) assert.ok(queue.size <= queue.capacity);
        const control = new TricklePublisher(`${base}in-control`, { contentType: "application/json" });
        await control.start();
        await control.writeSegment(Buffer.from(JSON.stringify({ prompts: [PASSTHROUGH_WORKFLOW] })));
        cleanups.push(() => control.close());
        await waitFor(async () => (await peer.promptUpdates()) >= 1, 5000, "the prompt update at the peer");
        await waitFor(
          () => session.status().lastPromptUpdate?.ok === true,
          5000,
          "the prompt update's reply",
        );

        await publishing; // ends with DELETE of the input channel: end of stream
        await session.whenEnded();
        const final: SessionStatus = session.status();
        assert.equal(
          final.state,
          "completed",
          `final state (last error: ${JSON.stringify(final.lastError)})`,
        );
        assert.deepEqual(
          await withTimeout(output.done, 10_000),
          { closedByServer: true },
          "output channel closed",
        );

        assert.equal(final.segments.corrupt, 1, "the junk segment is counted as corrupt");
        // ai-runner-style status events (every 10 s while running) end with the final state.
        await waitFor(() => statusEvents.some((e) => e.state === "OFFLINE"), 5000, "the final status event");
        const last = statusEvents.at(-1)!;
        assert.equal(last.type, "status");
        assert.ok(typeof last.inference_status === "object" && typeof last.input_status === "object");
        assert.equal(final.segments.in, segments.length + 1);
        assert.ok(
          final.latencyMs.p50 !== null && final.latencyMs.p50 < 1000,
          `latency ${final.latencyMs.p50}`,
        );
        assert.ok(final.promptsGeneration >= 2, "initial prompts + the update"); // An IDR every segment duration: these stand-ins answer PLIs (the relay asks each second),
        // so the peer's own IDRs do and nothing is re-encoded.
        assert.ok(output.segments.length >= 8, `${output.segments.length} output segments for 10 s`);
        assert.equal(final.segments.out, output.segments.length);
        assert.equal(final.outputKeyframes.source, "peer", JSON.stringify(final.outputKeyframes));
        assert.ok(
          final.outputKeyframes.idrIntervalSec.max !== null &&
            final.outputKeyframes.idrIntervalSec.max <= 1.6,
          `output IDR interval ${JSON.stringify(final.outputKeyframes.idrIntervalSec)}`,
        );
        const check = await checkOutputAgainstInput(output.segments, inputPts);
        assert.deepEqual(check.undecodable, [], "every segment decodes");
        assert.deepEqual(check.notIdrFirst, [], "every segment starts with an IDR");
        t.diagnostic(
          `frames ${JSON.stringify(final.frames)}; output ${check.frames} of ${inputPts.length} input`,
        );
        const ratio = check.frames / inputPts.length;
        assert.ok(
          ratio >= 0.95 && ratio <= 1.0,
          `output frames ${check.frames} vs input ${inputPts.length}; frames ${JSON.stringify(final.frames)}, ` +
            `queues ${JSON.stringify(final.queues)}, peer ${JSON.stringify(await peer.describe())}, ` +
            `UDP receive-buffer drops in this namespace ${await udpReceiveBufferErrors()}`,
        );
        assert.deepEqual(check.foreignPts.slice(0, 5), [], "every output PTS is an input PTS");
        assert.equal(check.repeatedPts, 0, "no PTS twice");
      },
    );
  }

  test(
    "the peer killed and restarted mid-stream: the session reconnects with a new offer and output resumes",
    { timeout: 90_000 },
    async () => {
      const { segments } = await makeInputSegments({ seconds: 12 });
      const { server, base } = await startTrickle(["in", "in-out"]);
      cleanups.push(() => server.close());
      let standin = await startTsStandin({ host: "127.0.0.1", port: 0, iceAddresses: ICE_ADDRESSES });
      const port = standin.port;
      cleanups.push(() => standin.close());
      const output = collectOutput(`${base}in-out`);
      cleanups.push(() => output.close());
      const session = newSession(base, standin.url);
      const states: string[] = [];
      session.on("status", (s: SessionStatus) => {
        if (states.at(-1) !== s.state) states.push(s.state);
      });
      await session.start();
      await waitFor(() => session.status().webrtcState === "connected", 20_000, "WebRTC connected");
      const publishing = publishPaced(`${base}in`, segments);

      await waitFor(() => session.status().frames.out > 60, 10_000, "output flowing");
      await standin.close();
      await waitFor(() => session.status().webrtcState !== "connected", 10_000, "the loss noticed");
      const outBeforeRestart = session.status().frames.out;
      assert.equal(session.status().state, "degraded");
      assert.equal(session.status().lastError?.reason, "ComfyStreamDisconnected");

      standin = await startTsStandin({ host: "127.0.0.1", port, iceAddresses: ICE_ADDRESSES });
      await waitFor(() => session.status().webrtcState === "connected", 15_000, "reconnected");
      await waitFor(() => session.status().frames.out > outBeforeRestart + 30, 10_000, "output resumed");
      assert.ok(session.status().reconnects >= 1);
      assert.equal(standin.stats().peersServed, 1, "a new /offer reached the restarted peer");

      await publishing;
      await session.whenEnded();
      assert.equal(session.status().state, "completed");
      assert.ok(states.includes("degraded") && states.indexOf("running") < states.lastIndexOf("running"));
      await withTimeout(output.done, 10_000);
      for (const segment of output.segments) {
        assert.ok((await probeSegment(segment.data)).firstIsKey, `segment ${segment.seq} starts with an IDR`);
      }
    },
  );

  test(
    "passthrough mode: the input's own H.264 goes to ComfyStream untranscoded; output complete, PTS kept",
    { timeout: 60_000 },
    async () => {
      const { segments, pts: inputPts } = await makeInputSegments({
        seconds: 6,
        size: "256x256",
        bFrames: 0,
      });
      const { base, peer, output } = await startRig("ts");
      const session = new RelaySession(
        buildSessionConfig({
          id: "passthrough",
          inputUrl: `${base}in`,
          comfystreamUrl: peer.url,
          prompts: [PASSTHROUGH_WORKFLOW],
          mode: "passthrough",
          iceAddresses: ICE_ADDRESSES,
        }),
      );
      cleanups.push(() => session.stop());
      await session.start();
      await waitFor(() => session.status().webrtcState === "connected", 20_000, "WebRTC connected");
      await publishPaced(`${base}in`, segments);
      await session.whenEnded();
      const final = session.status();
      assert.equal(final.state, "completed", JSON.stringify(final.lastError));
      assert.equal(final.ffmpegRestarts, 0);
      await withTimeout(output.done, 10_000);
      const check = await checkOutputAgainstInput(output.segments, inputPts);
      assert.deepEqual(check.notIdrFirst, [], "every segment starts with an IDR");
      assert.ok(
        check.frames >= inputPts.length * 0.95,
        `output frames ${check.frames} vs input ${inputPts.length}`,
      );
      assert.deepEqual(check.foreignPts.slice(0, 5), [], "every output PTS is an input PTS");
    },
  );

  test(
    "the relay's event loop stalled for 1.5 s mid-stream: ffmpeg's output waits in the pipe, no frame is lost",
    { timeout: 60_000 },
    async (t) => {
      // CI caught this when ffmpeg's output came over a loopback UDP socket: on a starved machine its
      // receive buffer overflowed and whole frames went missing. The pipe that replaced it (issue 12)
      // makes ffmpeg wait instead. A synchronous stall is the same starvation, made deterministic.
      const { segments } = await makeInputSegments({ seconds: 6 });
      const { base, peer } = await startRig("ts");
      // The stand-in runs in this process and stalls too, so afterwards it returns the backlog no
      // faster than it gets it: with the default window of 2 the relay rightly drops part of it as
      // peer-limited (slow-peer.test.ts). What is under test here is the forward hop from ffmpeg.
      const session = newSession(base, peer.url, { peerWindowFrames: 16 });
      await session.start();
      await waitFor(() => session.status().webrtcState === "connected", 20_000, "WebRTC connected");
      const publishing = publishPaced(`${base}in`, segments);
      await waitFor(() => session.status().frames.sent >= 60, 10_000, "frames flowing");
      const stallUntil = performance.now() + 1500;
      while (performance.now() < stallUntil); // nothing in this process runs; ffmpeg fills the pipe
      await publishing;
      await session.whenEnded();
      const final = session.status();
      t.diagnostic(`frames ${JSON.stringify(final.frames)}`);
      assert.equal(final.state, "completed", JSON.stringify(final.lastError));
      assert.equal(final.frames.dropped, 0, "no frame dropped");
      assert.equal(final.frames.sent, final.frames.in, "every input frame went to ComfyStream");
    },
  );

  test(
    "ComfyStream refusing the offer: the session says why, retries, and fails after its budget",
    { timeout: 60_000 },
    async () => {
      const { server, base } = await startTrickle(["in", "in-out"]);
      cleanups.push(() => server.close());
      const standin = await startTsStandin({
        host: "127.0.0.1",
        port: 0,
        iceAddresses: ICE_ADDRESSES,
        failPrompts: true,
      });
      cleanups.push(() => standin.close());
      const session = new RelaySession(
        buildSessionConfig({
          id: "refused",
          inputUrl: `${base}in`,
          comfystreamUrl: standin.url,
          prompts: [PASSTHROUGH_WORKFLOW],
          iceAddresses: ICE_ADDRESSES,
        }),
        { reconnectBackoffMs: [100, 200], reconnectBudget: 3 },
      );
      cleanups.push(() => session.stop());
      await session.start();
      await waitFor(() => session.status().lastError !== undefined, 10_000, "an error in status");
      assert.equal(session.status().lastError?.reason, "ComfyStreamConnectFailed");
      assert.match(session.status().lastError!.message, /500|Internal Server Error/);
      await withTimeout(session.whenEnded(), 20_000);
      assert.equal(session.status().state, "failed");
      assert.equal(session.status().lastError?.reason, "ComfyStreamUnavailable");
      assert.equal(standin.stats().offersFailed, 3);
    },
  );
});

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
