/**
 * A ComfyStream connection kept open from one session to the next (session/peer-handover.ts), as a
 * warm pool pod does with its warm-up's. Through the TS stand-in told to notice a closed client the
 * way aiortc does (closeDetection "consent": only at ICE consent expiry, ~30 s), and like the real
 * server then to return nothing to a newer peer while the old one lingers (spec
 * comfystream-webrtc.md §1.5; measured on the real server in real-comfystream-sessions.test.ts).
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { silentLogger } from "../../relay-pod/src/common/log.js";
import { startTsStandin, type TsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { PeerHandover } from "../../relay-pod/src/session/peer-handover.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import { ICE_ADDRESSES, relaySessionThrough } from "./relay-harness.js";

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

/** The passthrough workflow with one input changed: other prompts than the first session's. */
function editedPassthrough(): unknown {
  const edited = structuredClone(PASSTHROUGH_WORKFLOW) as Record<string, { inputs: Record<string, unknown> }>;
  const [first] = Object.values(edited);
  first!.inputs.edited = true;
  return edited;
}

async function aiortcLikeStandin(): Promise<TsStandin> {
  const standin = await startTsStandin({
    port: 0,
    mode: "passthrough",
    closeDetection: "consent",
    iceAddresses: ICE_ADDRESSES,
  });
  cleanups.push(() => standin.close());
  return standin;
}

describe("the next session after a clean end (ComfyStream that notices a close only by ICE consent)", () => {
  test("offering anew right after the first session ended: no frame comes back (the hazard)", async () => {
    const standin = await aiortcLikeStandin();
    const first = await relaySessionThrough(standin.url, { seconds: 3, cleanups });
    assert.ok(first.final.frames.returned > 30, `first session: ${JSON.stringify(first.final.frames)}`);
    const second = await relaySessionThrough(standin.url, { seconds: 4, cleanups });
    // As measured on the real server: 0 returned, the first frames sent, the rest held back by the
    // relay's window as peer-limited.
    const { frames } = second.final;
    assert.ok(frames.in > 60 && frames.sent >= 1, `second session: ${JSON.stringify(frames)}`);
    assert.equal(frames.returned, 0, "the lingering first peer keeps the pipeline");
    assert.equal(standin.stats().offers, 2);
  });

  test("with a PeerHandover the next session takes over the open connection: no offer, frames back", async () => {
    const standin = await aiortcLikeStandin();
    const handover = new PeerHandover(silentLogger);
    cleanups.push(() => handover.close());
    const first = await relaySessionThrough(standin.url, {
      seconds: 3,
      cleanups,
      sessionOptions: { handover },
    });
    assert.ok(first.final.frames.returned > 30, `first session: ${JSON.stringify(first.final.frames)}`);
    assert.equal(handover.available, true, "the first session's connection is kept at its clean end");

    const second = await relaySessionThrough(standin.url, {
      seconds: 4,
      cleanups,
      // Other prompts than the first session's: they go over the kept connection.
      session: { prompts: [editedPassthrough()] },
      sessionOptions: { handover },
    });
    const { frames } = second.final;
    assert.equal(second.final.state, "completed");
    assert.ok(frames.returned >= frames.sent * 0.9, `frames back: ${JSON.stringify(frames)}`);
    assert.ok(second.output.length >= 3, `output segments: ${second.output.length}`);
    const stats = standin.stats();
    assert.equal(stats.offers, 1, "one offer for both sessions");
    assert.equal(handover.handedOver, 1);
    // The second session's numbering continues the first's on the same SRTP context.
    assert.equal(stats.srtpReplayDrops, 0, "no packet dropped as an SRTP replay");
    assert.equal(stats.promptUpdates, 1, "the second session's prompts went over the kept connection");
    assert.equal(
      second.final.promptsGeneration,
      1,
      `its own prompts are its first generation (${JSON.stringify(second.final.lastPromptUpdate)})`,
    );
    assert.equal(handover.available, true, "kept again for the session after");
  });
});
