// Sessions through one real ComfyStream server (test/peers/real-comfystream.ts) one after the other,
// as a relay pod meets it (issue 15, part 4): ComfyStream serves one peer at a time, so the second
// session only works if the first one's end really freed the server; and a prompts update sent
// mid-stream is acknowledged by the real server (update_prompts on its control channel) while video
// keeps coming back. Skipped, with the reason, where the real server cannot run.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { RelaySession } from "../../relay-pod/src/session/relay-session.js";
import { PeerHandover } from "../../relay-pod/src/session/peer-handover.js";
import { silentLogger } from "../../relay-pod/src/common/log.js";
import { buildSessionConfig } from "../../relay-pod/src/session/config.js";
import {
  REAL_WORKFLOWS,
  realComfyStreamUnavailable,
  startRealComfyStream,
  type RealComfyStream,
} from "../peers/real-comfystream.js";
import {
  collectOutput,
  ICE_ADDRESSES,
  makeInputSegments,
  publishPaced,
  relaySessionThrough,
  startTrickle,
  waitFor,
} from "./relay-harness.js";

const unavailable = realComfyStreamUnavailable();
const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

/** 8 s through `server` (with a PeerHandover: as a warm pool pod's session); what came back. */
async function sessionThrough(
  server: RealComfyStream,
  handover?: PeerHandover,
): Promise<{ ok: boolean; detail: string }> {
  const run = await relaySessionThrough(server.url, {
    seconds: 8,
    size: "512x512",
    session: { prompts: [REAL_WORKFLOWS.passthrough] },
    ...(handover ? { sessionOptions: { handover } } : {}),
    connectTimeoutMs: 120_000,
    cleanups,
  });
  const ok = run.final.state === "completed" && run.final.frames.returned >= 60 && run.output.length > 0;
  return {
    ok,
    detail: `state ${run.final.state}, frames ${JSON.stringify(run.final.frames)}\n${server.logTail()}`,
  };
}

describe("one real ComfyStream server, sessions one after the other", { skip: unavailable ?? false }, () => {
  let server: RealComfyStream;
  // One real server at a time: the next suite starts its own.
  after(() => server?.stop());

  test(
    "the first session: a prompts update mid-stream is acknowledged and video keeps coming back",
    { timeout: 240_000 },
    async () => {
      server = await startRealComfyStream();
      cleanups.push(() => server.stop());
      const seconds = 12;
      const { segments } = await makeInputSegments({ seconds, size: "512x512" });
      const trickle = await startTrickle(["in", "in-out"]);
      cleanups.push(() => trickle.server.close());
      const output = collectOutput(`${trickle.base}in-out`);
      cleanups.push(() => output.close());
      const session = new RelaySession(
        buildSessionConfig({
          id: "first",
          inputUrl: `${trickle.base}in`,
          comfystreamUrl: server.url,
          prompts: [REAL_WORKFLOWS.passthrough],
          iceAddresses: ICE_ADDRESSES,
        }),
        { reconnectBackoffMs: [300, 3000], drainTimeoutMs: 3000 },
      );
      cleanups.push(() => session.stop());
      await session.start();
      await waitFor(() => session.status().webrtcState === "connected", 120_000, "WebRTC connected");
      const publishing = publishPaced(`${trickle.base}in`, segments);
      await waitFor(() => session.status().frames.returned > 30, 30_000, "frames back before the update");
      // The same workflow with a changed input: what a `kubectl patch rls … spec.prompts` sends.
      const edited = structuredClone(REAL_WORKFLOWS.passthrough) as Record<
        string,
        { inputs: Record<string, unknown> }
      >;
      edited["1"]!.inputs.edited = true;
      const reply = await session.updatePrompts([edited]);
      assert.equal(reply.ok, true, `update_prompts: ${JSON.stringify(reply)}\n${server.logTail()}`);
      await waitFor(
        () => session.status().promptsGeneration === 2,
        20_000,
        "prompts generation 2 acknowledged",
      );
      const returnedAtUpdate = session.status().frames.returned;
      await publishing;
      await session.whenEnded();
      const final = session.status();
      assert.equal(final.state, "completed", `${JSON.stringify(final.frames)}\n${server.logTail()}`);
      assert.ok(
        final.frames.returned > returnedAtUpdate + 30,
        `frames after the update: ${JSON.stringify(final.frames)}`,
      );
      assert.ok(output.segments.length > 0, "output segments");
    },
  );

  const anotherSession = () => sessionThrough(server);

  // Found here: the relay's peer is gone, but aiortc in ComfyStream notices only when ICE consent
  // expires (~30 s), and until then it keeps the old peer: the new one connects, yet no frame comes
  // back (measured: 0 of 240 returned, 2 sent, the rest held back by the relay's window as
  // peer-limited). A relay pod re-created right after a crash meets exactly this.
  test(
    "a second session right after the first ended returns video",
    {
      timeout: 240_000,
      todo: "real ComfyStream frees its peer only at ICE consent expiry (~30 s); see the comment",
    },
    async () => {
      assert.ok(server, "the first test started the server");
      const { ok, detail } = await anotherSession();
      assert.ok(ok, detail);
    },
  );

  test(
    "a session after the old peer's ICE consent expired (35 s) returns video",
    { timeout: 240_000 },
    async () => {
      assert.ok(server, "the first test started the server");
      await new Promise((resolve) => setTimeout(resolve, 35_000));
      const { ok, detail } = await anotherSession();
      assert.ok(ok, detail);
    },
  );
});

// What a warm pool pod does (its warm-up's connection, then each recycled session's): the session
// after a clean end takes over the open connection instead of offering, so the hazard above never
// arises (session/peer-handover.ts). A fresh server: the sessions above leave a lingering peer.
describe(
  "one real ComfyStream server, the next session taking over the connection",
  { skip: unavailable ?? false },
  () => {
    test(
      "a second session after the first and 40 s idle, taking over its open connection, returns video",
      { timeout: 300_000 },
      async () => {
        const server = await startRealComfyStream();
        cleanups.push(() => server.stop());
        const handover = new PeerHandover(silentLogger);
        cleanups.push(() => handover.close());
        const first = await sessionThrough(server, handover);
        assert.ok(first.ok, `first session: ${first.detail}`);
        assert.equal(handover.available, true, "the first session's connection is kept");
        // A warm pod idles until it is claimed: for longer than ICE consent's 30 s, the kept
        // connection stays up (consent checks and RTCP go on both ways without media).
        await new Promise((resolve) => setTimeout(resolve, 40_000));
        assert.equal(handover.available, true, `still kept after 40 s idle\n${server.logTail()}`);
        const second = await sessionThrough(server, handover);
        assert.ok(second.ok, `second session: ${second.detail}`);
        assert.equal(
          handover.handedOver,
          1,
          "the second session offered nothing: it took the connection over",
        );
        assert.equal(handover.available, true, "and kept again after the second");
      },
    );
  },
);

describe("the real ComfyStream server killed mid-stream", { skip: unavailable ?? false }, () => {
  test(
    "the session notices, reconnects to the restarted server with a new offer, and video comes back again",
    { timeout: 300_000 },
    async (t) => {
      let server = await startRealComfyStream();
      cleanups.push(() => server.stop());
      const { segments } = await makeInputSegments({ seconds: 90, size: "512x512" });
      const trickle = await startTrickle(["in", "in-out"]);
      cleanups.push(() => trickle.server.close());
      const output = collectOutput(`${trickle.base}in-out`);
      cleanups.push(() => output.close());
      const session = new RelaySession(
        buildSessionConfig({
          id: "killed",
          inputUrl: `${trickle.base}in`,
          comfystreamUrl: server.url,
          prompts: [REAL_WORKFLOWS.passthrough],
          iceAddresses: ICE_ADDRESSES,
        }),
        // Enough failed connects to outlast the restart (~10 s to healthy, then warm-up in /offer).
        { reconnectBackoffMs: [300, 3000], reconnectBudget: 30, drainTimeoutMs: 3000 },
      );
      cleanups.push(() => session.stop());
      await session.start();
      await waitFor(() => session.status().webrtcState === "connected", 120_000, "WebRTC connected");
      const stopPublishing = new AbortController();
      const publishing = publishPaced(`${trickle.base}in`, segments, { signal: stopPublishing.signal });
      cleanups.push(() => stopPublishing.abort());
      await waitFor(() => session.status().frames.returned > 30, 30_000, "frames back before the kill");

      const killedAt = performance.now();
      await server.kill();
      await waitFor(
        () => session.status().webrtcState !== "connected",
        60_000,
        "the session noticing the dead peer",
      );
      const detectedMs = performance.now() - killedAt;
      server = await startRealComfyStream({ port: server.port });
      await waitFor(
        () => session.status().reconnects >= 1 && session.status().webrtcState === "connected",
        120_000,
        `a reconnect to the restarted server: ${JSON.stringify(session.status().lastError)}`,
      );
      const returnedAtReconnect = session.status().frames.returned;
      const segmentsAtReconnect = output.segments.length;
      await waitFor(
        () => session.status().frames.returned > returnedAtReconnect + 30,
        60_000,
        `video back after the reconnect: ${JSON.stringify(session.status().frames)}\n${server.logTail()}`,
      );
      await waitFor(() => output.segments.length > segmentsAtReconnect, 30_000, "output segments again");
      t.diagnostic(
        `dead peer noticed after ${Math.round(detectedMs)} ms; reconnects ${session.status().reconnects}; ` +
          `last error ${JSON.stringify(session.status().lastError)}`,
      );
      // Ending the input ends the session the way a finished stream does.
      stopPublishing.abort();
      await publishing.catch(() => undefined);
      await session.whenEnded();
      assert.equal(session.status().state, "completed", JSON.stringify(session.status().lastError));
    },
  );
});
