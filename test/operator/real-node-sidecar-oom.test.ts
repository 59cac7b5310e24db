/**
 * Fault matrix (docs/fault-matrix.md), on the real kubelet 1.20.2 of test/infra/real-node/ with
 * the operator in cluster from its chart: **the ComfyStream sidecar OOM-killed.**
 *
 * The stand-in ComfyStream image runs as the session pod's sidecar under a 256 MiB memory limit.
 * Its test-only fault injection (STANDIN_FAULT_INJECTION=oom-on-sigusr2, then SIGUSR2 through
 * `kubectl exec`) makes it allocate memory until the kernel OOM-kills it in its real cgroup; docker
 * reports OOMKilled to the kubelet. The pod's restartPolicy is Never, so the kubelet does not restart
 * the sidecar in place; the operator sees it terminated, ends the attempt at once (`SidecarExited`,
 * naming OOMKilled) rather than leave the relay retrying a peer that cannot come back, and the next
 * pod brings a fresh sidecar; output resumes.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { waitFor } from "../session/relay-harness.js";
import { chooseNode } from "./e2e-node.js";
import { POLL_MS, startFaultCluster, type FaultCluster } from "./real-node-faults.js";
import { buildStandinComfyStreamImage, STANDIN_COMFYSTREAM_IMAGE } from "./standin-comfystream-image.js";

const choice = await chooseNode();
console.log(`# ${choice.line} (test/operator/real-node-sidecar-oom.test.ts)`);
const skip =
  needsLoopbackNamespace || (choice.kind === "real" ? false : `needs the real node (${choice.line})`);

describe(`the ComfyStream sidecar OOM-killed: ${choice.label}`, { skip }, () => {
  let f: FaultCluster;
  const cleanups: Array<() => unknown> = [];

  before(async () => {
    f = await startFaultCluster({
      choice,
      outputs: ["oom-out"],
      inputSeconds: 240,
      extendedResources: { "nvidia.com/gpu": "1" },
    });
    cleanups.push(() => f.stop());
    await buildStandinComfyStreamImage(f.cluster.realNode!);
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  });

  test("the attempt ends at once (SidecarExited, OOMKilled), a new pod with a fresh sidecar, output resumes", async () => {
    await f.applySession("oom", "oom-out", (doc) => {
      doc.spec.comfystream = {
        sidecar: {
          image: STANDIN_COMFYSTREAM_IMAGE,
          imagePullPolicy: "Never",
          port: 8889,
          args: ["--mode", "passthrough"],
          env: [{ name: "STANDIN_FAULT_INJECTION", value: "oom-on-sigusr2" }],
          resources: { limits: { memory: "256Mi" } },
        },
      };
    });
    await waitFor(
      async () => ((await f.getSession("oom")).status?.relay?.outputFps ?? 0) > 5,
      60_000,
      "output fps > 5",
      POLL_MS,
    );
    const t0 = Date.now();
    // tini (pid 1 of the container) forwards the signal to the stand-in.
    const poked = await f.kubectl([
      "exec",
      "oom-relay-0",
      "-c",
      "comfystream",
      "--",
      "node",
      "-e",
      "process.kill(1, 'SIGUSR2')",
    ]);
    assert.equal(poked.code, 0, poked.stderr);

    // The Ready condition names SidecarExited only until the next pod's own state replaces it; the
    // session's Event keeps it.
    const sidecarEvent = async () =>
      (
        await f.getJson<{ items: Array<{ message?: string }> }>([
          "events",
          "--field-selector",
          "involvedObject.name=oom,reason=SidecarExited",
        ])
      )?.items[0]?.message;
    let oomInPodStatus = false;
    await waitFor(
      async () => {
        const sidecar = (await f.getPod("oom-relay-0"))?.status?.containerStatuses?.find(
          (c) => c.name === "comfystream",
        );
        if (sidecar?.state?.terminated?.reason === "OOMKilled") oomInPodStatus = true;
        return (await f.getSession("oom")).status?.restarts === 1 && (await sidecarEvent()) !== undefined;
      },
      60_000,
      "the session counts the sidecar's exit (restarts 1, a SidecarExited event)",
      POLL_MS,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}${await f.context("oom-relay-0")}`);
    });
    const countedMs = Date.now() - t0;
    assert.match(
      (await sidecarEvent()) ?? "",
      /pod oom-relay-0: the comfystream sidecar exited with code 137 \(OOMKilled\).*; restarting \(restart 1 of 3\)/,
    );

    await waitFor(
      async () => {
        const s = await f.getSession("oom");
        return (
          s.status?.phase === "Running" &&
          s.status.podName === "oom-relay-1" &&
          (s.status.relay?.outputFps ?? 0) > 5
        );
      },
      90_000,
      "session Running in oom-relay-1 with output fps > 5",
      POLL_MS,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}${await f.context("oom-relay-1")}`);
    });
    const resumedMs = Date.now() - t0;
    const sidecar = (await f.getPod("oom-relay-1"))?.status?.containerStatuses?.find(
      (c) => c.name === "comfystream",
    );
    assert.equal(sidecar?.restartCount, 0);
    assert.ok(sidecar?.state?.running, "the new sidecar runs");
    await f.outputFlowsSince("oom", Date.now());
    await waitFor(
      async () => (await f.getPod("oom-relay-0")) === undefined,
      60_000,
      "oom-relay-0 removed",
      POLL_MS,
    );
    assert.deepEqual(
      (await f.sessionPods("oom")).map((p) => p.metadata?.name),
      ["oom-relay-1"],
    );
    console.log(
      `# sidecar OOM (SIGUSR2 at 0 s): OOMKilled seen in the pod's status: ${oomInPodStatus}; ` +
        `restart counted at ${countedMs} ms; Running with output fps > 5 in the new pod at ${resumedMs} ms`,
    );
    await f.deleteAndCheckGone("oom");
  });
});
