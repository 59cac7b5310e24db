/**
 * A warm pool pod's warm-up through the real ComfyStream server (test/peers/real-comfystream.ts:
 * livepeer/comfystream + the embedded ComfyUI, on the CPU): `trickle-relay run --pool-pod` as a real
 * process sends its short synthetic stream with the pool's warm-up workflow
 * (TRICKLE_RELAY_WARMUP_PROMPTS, as the operator sets it from spec.template.warmup.prompts) through
 * the server, and only then answers its readiness probe. Then, claimed for a RelaySession on a real
 * kube-apiserver (the claim written as the operator writes it), it streams that session through the
 * same server at once: the session takes over the warm-up's connection (session/peer-handover.ts).
 * Offering anew there would get no frame back for ~30 s (the real server notices a closed peer only
 * at ICE consent expiry), which is what this test would show. Skipped, with the reason, where the
 * real server or the apiserver cannot run.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import { freePorts, resolveEnvtestAssets, startControlPlane } from "../../infra/apiserver.js";
import {
  REAL_WORKFLOWS,
  realComfyStreamUnavailable,
  startRealComfyStream,
} from "../../peers/real-comfystream.js";
import { ICE_ADDRESSES, makeInputSegments, publishPaced, startTrickle } from "../../session/relay-harness.js";
import { repoRoot, waitFor } from "../operator-harness.js";
import { claimAsOperator, poolWithOnePod, startPoolPodProcess } from "./pool-pod-process.js";
import { createPooledSession, PoolKubectl } from "./pool-harness.js";

const unavailable = realComfyStreamUnavailable() ?? (await resolveEnvtestAssets()).skipReason;
const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

const WARMUP_SECONDS = 4;

describe("pool pod through the real ComfyStream", { skip: unavailable || false }, () => {
  test(
    "not Ready while warming; Ready once the warm-up went through; claimed, its session streams at once",
    { timeout: 400_000 },
    async (t) => {
      const server = await startRealComfyStream();
      cleanups.push(() => server.stop());
      const cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds")] });
      cleanups.push(() => cp.stop());
      const kc = new KubeConfig();
      kc.loadFromFile(cp.kubeconfigPath);
      const kubectl = new PoolKubectl(cp);
      const ns = "warmup";
      const { podName } = await poolWithOnePod(kubectl, kc, ns);
      const [readyPort] = await freePorts(1);
      const relay = startPoolPodProcess({
        comfystreamUrl: server.url,
        readyPort,
        warmupSeconds: WARMUP_SECONDS,
        kubeconfig: cp.kubeconfigPath,
        namespace: ns,
        podName,
        args: [
          // Light on the CPU server: it is slow (see its README), the warm-up only has to go through.
          ...["--width", "256", "--height", "256", "--frame-rate", "15"],
          ...ICE_ADDRESSES.flatMap((address) => ["--ice-address", address]),
        ],
        env: { TRICKLE_RELAY_WARMUP_PROMPTS: JSON.stringify([REAL_WORKFLOWS.passthrough]) },
      });
      cleanups.push(async () => {
        relay.kill();
        await relay.exited;
      });
      const { readyz, metrics, output } = relay;

      const started = Date.now();
      await waitFor("readiness endpoint up", 30_000, async () => (await readyz()) !== 0);
      assert.equal(await readyz(), 503, "not Ready while the warm-up runs");
      assert.match(await metrics(), /trickle_relay_pool_pod_state\{state="warming"\} 1/);

      await waitFor(
        `Ready after the warm-up (relay log:\n${output().slice(-2000)}\nComfyStream log:\n${server.logTail()})`,
        240_000,
        async () => (await readyz()) === 200,
        500,
      );
      const text = await metrics();
      assert.match(text, /trickle_relay_pool_pod_state\{state="ready"\} 1/);
      const warmup = Number(/^trickle_relay_pool_pod_warmup_seconds (\S+)$/m.exec(text)?.[1]);
      t.diagnostic(
        `warm-up through the real ComfyStream: ${warmup.toFixed(1)} s (process start → Ready ${((Date.now() - started) / 1000).toFixed(1)} s)`,
      );
      assert.ok(
        warmup >= WARMUP_SECONDS,
        `the ${WARMUP_SECONDS} s stream went through (warm-up took ${warmup} s)`,
      );
      await relay.logged(/warm and idle: ready for a session/);

      // Claimed for a session, as the operator claims: it streams through the same server at once.
      const trickle = await startTrickle(["one", "one-out"]);
      cleanups.push(() => trickle.server.close());
      const custom = kc.makeApiClient(CustomObjectsApi);
      const session = await createPooledSession(custom, ns, "one", { inputUrl: `${trickle.base}one` });
      await claimAsOperator(kc, ns, podName, session);
      const relayStatus = async () =>
        (await kubectl.sessions(ns)).find((s) => s.metadata.name === "one")?.status?.relay;
      await waitFor("the claimed session connected", 60_000, async () => {
        return (await relayStatus())?.webrtc?.connectionState === "connected";
      });
      const { segments } = await makeInputSegments({ seconds: 8, size: "512x512" });
      const publishing = publishPaced(`${trickle.base}one`, segments);
      const streamed = await waitFor(
        `frames back through the real server (relay log:\n${output().slice(-3000)}\nComfyStream log:\n${server.logTail()})`,
        60_000,
        async () => {
          const relay = await relayStatus();
          return (relay?.framesOut ?? 0) >= 60 ? relay : undefined;
        },
        500,
      );
      await publishing;
      t.diagnostic(`claimed session: framesIn ${streamed.framesIn}, framesOut ${streamed.framesOut}`);
      assert.match(output(), /"tookOver":true/, "the session took over the warm-up's connection");
    },
  );
});
