/**
 * ComfyStreamPeer against the Python stand-in (Debian aiortc 1.4.0, the stack ComfyStream runs on):
 * the interop facts the relay depends on — H.264 negotiation, PLI → IDR, constant RTP timestamp
 * offset, control replies — and how aiortc notices a closed relay peer (ICE consent only).
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, describe, test } from "node:test";
import { ComfyStreamPeer } from "../../relay-pod/src/webrtc/comfystream-peer.js";
import { H264Depacketizer } from "../../relay-pod/src/webrtc/h264-depacketizer.js";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { PYTHON, PyStandin } from "../peers/py-standin/launch.js";
import { ICE_ADDRESSES, PASSTHROUGH_WORKFLOW, startRtpSource, waitFor } from "./helpers.js";

const skip = needsLoopbackNamespace || (existsSync(PYTHON) ? false : `needs ${PYTHON} with python3-aiortc`);
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

describe("ComfyStreamPeer ↔ aiortc stand-in", { skip, timeout: 90_000 }, () => {
  test("media with PLI-driven IDRs, constant timestamp offset, update_prompts; close noticed through ICE consent", async (t) => {
    const server = await PyStandin.start(["--mode", "filter", "--ice-consent-interval", "0.5"]);
    cleanups.push(() => server.stop());
    const peer = new ComfyStreamPeer({
      comfystreamUrl: server.baseUrl,
      prompts: [PASSTHROUGH_WORKFLOW],
      width: 320,
      height: 240,
      iceAddresses: ICE_ADDRESSES,
      offerTimeoutMs: 20_000,
      pliIntervalMs: 1000,
    });
    cleanups.push(() => peer.close());
    await peer.connect();

    const depacketizer = new H264Depacketizer();
    const returned: Array<{ rtpTimestamp: number; keyframe: boolean }> = [];
    peer.on("rtp", (packet: Parameters<H264Depacketizer["push"]>[0]) => {
      for (const unit of depacketizer.push(packet)) returned.push(unit);
    });
    const sent = new Set<number>();
    const source = await startRtpSource({
      seconds: 4,
      onPacket: (packet) => {
        peer.sendRtp(packet);
        if ((packet[1]! & 0x80) !== 0) sent.add(packet.readUInt32BE(4));
      },
    });
    cleanups.push(() => source.stop());
    await source.done;
    await new Promise((resolve) => setTimeout(resolve, 1000));

    const keyframes = returned.filter((unit) => unit.keyframe).length;
    t.diagnostic(
      `aiortc: sent ${sent.size} frames, ${returned.length} access units back, ${keyframes} IDRs, ` +
        `${depacketizer.stats.lostPackets} packets lost, ${peer.stats.plisSent} PLIs sent`,
    );
    assert.ok(returned.length >= 0.85 * sent.size, `${returned.length} of ${sent.size} frames back`);
    assert.ok(keyframes >= 3, `${keyframes} IDRs in 4 s with a PLI every second`);
    const offset = (returned[0]!.rtpTimestamp - [...sent][0]!) >>> 0;
    const unmatched = returned.filter((unit) => !sent.has((unit.rtpTimestamp - offset) >>> 0)).length;
    assert.equal(unmatched, 0, "returned RTP timestamp = sent + one constant");

    const updated = { ...PASSTHROUGH_WORKFLOW, "2": { class_type: "LoadTensor", inputs: { tag: "v2" } } };
    assert.deepEqual(await peer.updatePrompts([updated]), { type: "prompts_updated", success: true });
    assert.equal((await server.stats()).prompt_updates, 1);

    // aiortc ignores close_notify for its connectionState; with consent checks every 0.5 s the
    // peer ends after ~6 unanswered ones (about 30 s with ComfyStream's default 5 s).
    await peer.close();
    const closedAt = Date.now();
    await waitFor(
      async () => (await server.stats()).peers.length === 0,
      15_000,
      "aiortc to end the closed peer",
      250,
    );
    t.diagnostic(`aiortc ended the closed peer after ${Date.now() - closedAt} ms (consent interval 0.5 s)`);
  });
});
