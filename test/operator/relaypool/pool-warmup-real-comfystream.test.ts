/**
 * A warm pool pod's warm-up through the real ComfyStream server (test/peers/real-comfystream.ts:
 * livepeer/comfystream + the embedded ComfyUI, on the CPU): `trickle-relay run --pool-pod` as a real
 * process sends its short synthetic stream with the pool's warm-up workflow
 * (TRICKLE_RELAY_WARMUP_PROMPTS, as the operator sets it from spec.template.warmup.prompts) through
 * the server, and only then answers its readiness probe. Skipped, with the reason, where the real
 * server cannot run (not set up, or no loopback-only network namespace).
 *
 * No apiserver is needed up to Ready; the relay's kubeconfig points at a closed port, so after the
 * warm-up it keeps retrying to read its pod (idle, Ready) until it is stopped.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { freePorts } from "../../infra/apiserver.js";
import {
  REAL_WORKFLOWS,
  realComfyStreamUnavailable,
  startRealComfyStream,
} from "../../peers/real-comfystream.js";
import { ICE_ADDRESSES } from "../../session/relay-harness.js";
import { repoRoot, waitFor } from "../operator-harness.js";

const unavailable = realComfyStreamUnavailable();
const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

const WARMUP_SECONDS = 4;

describe("pool pod warm-up through the real ComfyStream", { skip: unavailable ?? false }, () => {
  test(
    "not Ready while warming; Ready once the warm-up stream went through the real server",
    { timeout: 300_000 },
    async (t) => {
      const server = await startRealComfyStream();
      cleanups.push(() => server.stop());
      const dir = await mkdtemp(join(tmpdir(), "pool-warmup-"));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      const kubeconfig = join(dir, "kubeconfig");
      await writeFile(
        kubeconfig,
        [
          "apiVersion: v1",
          "kind: Config",
          "clusters: [{name: none, cluster: {server: 'https://127.0.0.1:9'}}]",
          "users: [{name: none, user: {token: none}}]",
          "contexts: [{name: none, context: {cluster: none, user: none}}]",
          "current-context: none",
        ].join("\n"),
      );
      const [readyPort] = await freePorts(1);
      const relay = spawn(
        process.execPath,
        [
          join(repoRoot, "dist/relay-pod/src/cli.js"),
          ...["run", "--pool-pod", "--pool-comfystream", server.url],
          ...["--warmup-seconds", String(WARMUP_SECONDS), "--ready-port", String(readyPort)],
          // Light on the CPU server: it is slow (see its README), the warm-up only has to go through.
          ...["--width", "256", "--height", "256", "--frame-rate", "15"],
          ...ICE_ADDRESSES.flatMap((address) => ["--ice-address", address]),
        ],
        {
          stdio: ["ignore", "pipe", "pipe"],
          env: {
            ...process.env,
            KUBECONFIG: kubeconfig,
            POD_NAMESPACE: "warmup",
            POD_NAME: "gpu-warm-0",
            TRICKLE_RELAY_LOG_JSON: "1",
            TRICKLE_RELAY_WARMUP_PROMPTS: JSON.stringify([REAL_WORKFLOWS.passthrough]),
          },
        },
      );
      let output = "";
      relay.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
      relay.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
      const exited = new Promise<void>((resolve) => relay.once("exit", () => resolve()));
      cleanups.push(async () => {
        relay.kill("SIGKILL");
        await exited;
      });
      const readyz = async () => {
        try {
          return (await fetch(`http://127.0.0.1:${readyPort}/readyz`)).status;
        } catch {
          return 0;
        }
      };
      const metrics = async () => (await fetch(`http://127.0.0.1:${readyPort}/metrics`)).text();

      const started = Date.now();
      await waitFor("readiness endpoint up", 30_000, async () => (await readyz()) !== 0);
      assert.equal(await readyz(), 503, "not Ready while the warm-up runs");
      assert.match(await metrics(), /trickle_relay_pool_pod_state\{state="warming"\} 1/);

      await waitFor(
        `Ready after the warm-up (relay log:\n${output.slice(-2000)}\nComfyStream log:\n${server.logTail()})`,
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
      assert.match(output, /warm and idle: ready for a session/);
    },
  );
});
