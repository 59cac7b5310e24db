/**
 * A warm pool pod whose kept ComfyStream connection is lost while it idles (session/peer-handover.ts:
 * the warm-up's connection waits there for the first session): `trickle-relay run --pool-pod` as a
 * real process, the TS stand-in ComfyStream over real WebRTC. When ComfyStream goes away the pod is
 * not Ready at once (a session offering anew right after would get nothing back from the real server
 * for ~30 s), warms up again once ComfyStream answers, and is Ready again with a new kept connection.
 *
 * No apiserver is needed while idle: the kubeconfig points at a closed port, so the relay keeps
 * retrying to read its pod until it is stopped.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { startTsStandin } from "../../../relay-pod/src/demo/standin-peer/standin.js";
import { freePorts } from "../../infra/apiserver.js";
import { inLoopbackOnlyNamespace } from "../../infra/netns.js";
import { ICE_ADDRESSES } from "../../session/relay-harness.js";
import { waitFor } from "../operator-harness.js";
import { startPoolPodProcess, UNREACHABLE_KUBECONFIG } from "./pool-pod-process.js";

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

const skip = inLoopbackOnlyNamespace ? false : "not in a loopback-only network namespace";

describe("warm pool pod: its kept ComfyStream connection lost while idle", { skip }, () => {
  test(
    "not Ready at once, warms up again once ComfyStream answers, Ready again",
    { timeout: 120_000 },
    async () => {
      const [comfyPort, readyPort] = await freePorts(2);
      const standin = () =>
        startTsStandin({ port: comfyPort, iceAddresses: ICE_ADDRESSES, mode: "passthrough" });
      let peer = await standin();
      cleanups.push(() => peer.close());
      const dir = await mkdtemp(join(tmpdir(), "pool-rewarm-"));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      const kubeconfig = join(dir, "kubeconfig");
      await writeFile(kubeconfig, UNREACHABLE_KUBECONFIG);
      const relay = startPoolPodProcess({
        comfystreamUrl: peer.url,
        readyPort,
        warmupSeconds: 2,
        kubeconfig,
        namespace: "rewarm",
        podName: "gpu-warm-0",
        args: ["--width", "320", "--height", "240", ...ICE_ADDRESSES.flatMap((a) => ["--ice-address", a])],
      });
      cleanups.push(async () => {
        relay.kill();
        await relay.exited;
      });
      const { readyz } = relay;
      const log = () => relay.output().slice(-3000);

      await waitFor(
        `Ready after the warm-up (relay log:\n${log()})`,
        60_000,
        async () => (await readyz()) === 200,
      );
      await relay.logged(/keeping the ComfyStream connection open for the next session/);

      // ComfyStream goes away (its close_notify fails the kept connection at once).
      await peer.close();
      await waitFor(`not Ready once the kept connection is lost (relay log:\n${log()})`, 10_000, async () => {
        return (await readyz()) === 503;
      });
      await relay.logged(/the kept ComfyStream connection was lost: warming up again/);
      const metrics = await relay.metrics();
      assert.match(metrics, /trickle_relay_pool_pod_state\{state="warming"\} 1/);

      // ComfyStream is back: a new warm-up through it, and Ready again with a new kept connection.
      peer = await standin();
      await waitFor(`Ready again (relay log:\n${log()})`, 60_000, async () => (await readyz()) === 200);
      await relay.logged(/warm and idle again: ready for a session/);
      assert.equal(peer.stats().offers, 1, "the new warm-up's offer");
      assert.equal(peer.stats().activePeers, 1, "its connection is kept open");
    },
  );
});
