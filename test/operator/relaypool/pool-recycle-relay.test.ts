/**
 * `spec.recycle` from the relay's side, as a real process against a real kube-apiserver, with real
 * WebRTC to the TS stand-in ComfyStream (passthrough) inside the loopback-only namespace:
 * `run --pool-pod --pool-recycle` runs a claimed session whose input ends cleanly, checks ComfyStream,
 * is Ready again, marks its pod recycled with the claim's allocated-at, stays up, and runs the next
 * session once the pod is unclaimed and claimed again (both written exactly as the operator writes
 * them: claim Lease and pod labels, each with the read resourceVersion). Without --pool-recycle the
 * same clean end makes the relay exit 0 (the default: the pod is replaced).
 *
 * The stand-in notices a closed client only at ICE consent expiry and serves no newer peer until
 * then, as the real ComfyStream (closeDetection "consent"): each session gets its frames only
 * because it takes over the open connection before it, the warm-up's and then the first session's
 * (session/peer-handover.ts).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CustomObjectsApi, KubeConfig, type V1Pod } from "@kubernetes/client-node";
import {
  freePorts,
  resolveEnvtestAssets,
  startControlPlane,
  type ControlPlane,
} from "../../infra/apiserver.js";
import { inLoopbackOnlyNamespace } from "../../infra/netns.js";
import { ICE_ADDRESSES, makeInputSegments, publishPaced, startTrickle } from "../../session/relay-harness.js";
import { startTsStandin } from "../../../relay-pod/src/demo/standin-peer/standin.js";
import { repoRoot, waitFor } from "../operator-harness.js";
import {
  claimAsOperator,
  poolWithOnePod,
  startPoolPodProcess,
  unclaimAsOperator,
} from "./pool-pod-process.js";
import { createPooledSession, PoolKubectl } from "./pool-harness.js";

const assets = await resolveEnvtestAssets();
const skip =
  assets.skipReason ?? (inLoopbackOnlyNamespace ? false : "not in a loopback-only network namespace");
const cleanups: Array<() => Promise<unknown> | unknown> = [];

describe(
  "recycling pool pod relay (real apiserver, relay process, TS stand-in over WebRTC)",
  { skip },
  () => {
    let cp: ControlPlane;
    let kc: KubeConfig;
    let kubectl: PoolKubectl;

    before(async () => {
      cp = await startControlPlane({ crdPaths: [join(repoRoot, "crds")] });
      kc = new KubeConfig();
      kc.loadFromFile(cp.kubeconfigPath);
      kubectl = new PoolKubectl(cp);
    });
    after(async () => {
      for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
      await cp?.stop();
    });

    async function scenario(ns: string, recycle: boolean) {
      const { pool, core, podName } = await poolWithOnePod(kubectl, kc, ns, { recycle });
      const peer = await startTsStandin({
        port: 0,
        iceAddresses: ICE_ADDRESSES,
        mode: "passthrough",
        closeDetection: "consent",
      });
      cleanups.push(() => peer.close());
      const trickle = await startTrickle(["one", "one-out", "two", "two-out"]);
      cleanups.push(() => trickle.server.close());
      const [readyPort] = await freePorts(1);
      const relay = startPoolPodProcess({
        comfystreamUrl: peer.url,
        readyPort,
        // A short warm-up stream through the stand-in: its connection is the one the sessions take over.
        warmupSeconds: 2,
        kubeconfig: cp.kubeconfigPath,
        namespace: ns,
        podName,
        args: [
          ...(recycle ? ["--pool-recycle"] : []),
          ...ICE_ADDRESSES.flatMap((address) => ["--ice-address", address]),
        ],
      });
      cleanups.push(async () => {
        relay.kill();
        await relay.exited;
      });
      const { readyz } = relay;
      await waitFor("Ready", 30_000, async () => (await readyz()) === 200);
      const { segments } = await makeInputSegments({ seconds: 3, size: "320x240", bFrames: 0 });

      const custom = kc.makeApiClient(CustomObjectsApi);
      const readPod = () => core.readNamespacedPod({ namespace: ns, name: podName });
      /** Creates session `name`, claims the pod for it as the operator does, and streams 3 s that end. */
      const runSession = async (name: string): Promise<V1Pod> => {
        const session = await createPooledSession(custom, ns, name, { inputUrl: `${trickle.base}${name}` });
        await claimAsOperator(kc, ns, podName, session);
        const claimed = await readPod();
        await waitFor(`${name} connected`, 60_000, async () => {
          const sessions = await kubectl.sessions(ns);
          return (
            sessions.find((s) => s.metadata.name === name)?.status?.relay?.webrtc?.connectionState ===
            "connected"
          );
        });
        // The claimed session's own metrics on the pool pod's port, beside its pool state: what the
        // chart's PodMonitor scrapes for the per-session panels.
        const metrics = await (await fetch(`http://127.0.0.1:${readyPort}/metrics`)).text();
        assert.match(metrics, /trickle_relay_pool_pod_state\{state="allocated"\} 1/);
        assert.match(metrics, new RegExp(`trickle_relay_frames_in_total\\{session="${ns}/${name}"\\} \\d+`));
        await publishPaced(`${trickle.base}${name}`, segments);
        return claimed;
      };

      const first = await runSession("one");
      return {
        first,
        readPod,
        runSession,
        readyz,
        output: relay.output,
        logged: relay.logged,
        exited: relay.exited,
        exitCode: relay.exitCode,
        pool,
        core,
        podName,
        peer,
      };
    }

    test(
      "--pool-recycle: after a clean end the relay marks its pod, stays Ready, and runs the next session",
      { timeout: 180_000 },
      async () => {
        const ns = "recycle-relay";
        const s = await scenario(ns, true);
        const allocatedAt = s.first.metadata!.annotations!["trickle-relay.io/allocated-at"]!;
        await waitFor(`the recycled mark (relay log:\n${s.output().slice(-3000)})`, 60_000, async () => {
          const pod = await s.readPod();
          return pod.metadata?.annotations?.["trickle-relay.io/recycled"] === allocatedAt ? pod : undefined;
        });
        assert.equal(await s.readyz(), 200, "Ready again");
        assert.equal(s.exitCode(), undefined, "the relay is still running");
        await s.logged(/session ended cleanly; idle again/);

        // The operator's unclaim, then the next claim: the same relay runs the second session.
        await unclaimAsOperator(kc, s.pool, s.podName);
        await s.runSession("two");
        const second = await waitFor("the second session reported into", 30_000, async () => {
          const sessions = await kubectl.sessions(ns);
          return sessions.find((x) => x.metadata.name === "two")?.status?.relay?.lastUpdateTime;
        });
        assert.ok(second);
        assert.equal(
          (s.output().match(/claimed: starting the session/g) ?? []).length,
          2,
          "two sessions, one process",
        );
        const two = await waitFor("the second session's frames back in its status", 30_000, async () => {
          const sessions = await kubectl.sessions(ns);
          const relay = sessions.find((x) => x.metadata.name === "two")?.status?.relay;
          return (relay?.framesOut ?? 0) > 30 ? relay : undefined;
        });
        assert.ok(two.framesOut! > 30, `framesOut ${two.framesOut}`);
        assert.equal(
          s.peer.stats().offers,
          1,
          "one offer, the warm-up's: the first session took over its connection, the second the first's",
        );
        assert.match(s.output(), /"tookOver":true/);
      },
    );

    test(
      "without --pool-recycle the same clean end exits 0 (the pod is replaced)",
      { timeout: 120_000 },
      async () => {
        const s = await scenario("norecycle-relay", false);
        await Promise.race([s.exited, new Promise((resolve) => setTimeout(resolve, 60_000))]);
        assert.equal(s.exitCode(), 0, s.output().slice(-2000));
        const pod = await s.readPod();
        assert.equal(pod.metadata?.annotations?.["trickle-relay.io/recycled"], undefined, "no recycled mark");
      },
    );
  },
);
