// The operator image starts against a real API server (envtest-style kube-apiserver + etcd, the
// RelaySession CRD installed), serves /healthz and /readyz, and stops cleanly on SIGTERM. It runs
// as the image's non-root user on a read-only root filesystem, with the kubeconfig mounted
// read-only, in the same loopback-only network namespace as the API server (see sandbox.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFile, chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Readable } from "node:stream";
import { freePorts, resolveEnvtestAssets, startControlPlane } from "../infra/apiserver.js";
import { waitFor } from "../session/relay-harness.js";
import {
  IMAGE_UID,
  ImageContainer,
  OPERATOR_IMAGE,
  assertLoopbackOnly,
  assertImageDeclares,
  imageTestsSkipReason,
  inspectContainer,
  processUid,
  removeContainer,
  runInSandbox,
  sandboxId,
  sandboxLabels,
} from "./sandbox.js";

const TIMEOUT_MS = 240_000;
let skip = await imageTestsSkipReason([OPERATOR_IMAGE]);
if (!skip && sandboxId) skip = (await resolveEnvtestAssets()).skipReason;

async function httpStatus(url: string): Promise<number> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return 0;
  }
}

if (!sandboxId) {
  test("operator image: non-root user, entrypoint, OCI labels", { skip }, () =>
    assertImageDeclares(OPERATOR_IMAGE, "trickle-relay-operator"),
  );
  test(
    "operator image (run inside a loopback-only sandbox)",
    { skip, timeout: TIMEOUT_MS + 30_000 },
    async () => {
      await runInSandbox(fileURLToPath(import.meta.url), OPERATOR_IMAGE, TIMEOUT_MS);
    },
  );
} else {
  test(
    "operator image: serves /healthz and /readyz against the API server; SIGTERM stops it",
    { skip },
    async () => {
      assertLoopbackOnly();
      const cp = await startControlPlane({ crdPaths: ["crds/trickle-relay.io_relaysessions.yaml"] });
      // The container user must be able to read it; the token is a throw-away test token.
      const dir = await mkdtemp(join(tmpdir(), "operator-image-"));
      const kubeconfig = join(dir, "kubeconfig");
      await copyFile(cp.kubeconfigPath, kubeconfig);
      await chmod(dir, 0o755);
      await chmod(kubeconfig, 0o644);
      const [healthPort, metricsPort] = (await freePorts(2)) as [number, number];
      let logs = "";
      let containerId: string | undefined;
      try {
        const operator = await new ImageContainer(OPERATOR_IMAGE)
          .withNetworkMode(`container:${sandboxId}`)
          .withUser(`${IMAGE_UID}:${IMAGE_UID}`)
          .withReadOnlyRootFilesystem()
          .withTmpFs({ "/tmp": "rw,nosuid,nodev,size=16m" })
          .withDroppedCapabilities("ALL")
          .withSecurityOpt("no-new-privileges")
          .withBindMounts([{ source: kubeconfig, target: "/kubeconfig", mode: "ro" }])
          .withCommand([
            ...["--kubeconfig", "/kubeconfig", "--health-port", String(healthPort)],
            ...["--metrics-port", String(metricsPort), "--bind-address", "127.0.0.1", "--no-leader-elect"],
          ])
          .withLabels({ "trickle-relay.test": "operator-image", ...sandboxLabels() })
          .withLogConsumer((stream: Readable) => {
            stream.on("data", (chunk: Buffer) => (logs = (logs + chunk.toString()).slice(-8_000)));
          })
          .withStartupTimeout(60_000)
          .start();
        containerId = operator.getId();
        const { pid } = await inspectContainer(containerId);
        assert.equal(
          processUid(pid),
          IMAGE_UID,
          "the container's processes run as the image's non-root user",
        );

        const health = `http://127.0.0.1:${healthPort}`;
        const failed = async (what: string) => {
          const state = await inspectContainer(containerId!).catch(() => undefined);
          return `${what} (container ${state?.running ? "running" : `exited ${state?.exitCode}`}; log:\n${logs})`;
        };
        await waitFor(
          async () => (await httpStatus(`${health}/healthz`)) === 200,
          60_000,
          "/healthz 200",
        ).catch(async () => assert.fail(await failed("/healthz never answered 200")));
        await waitFor(
          async () => (await httpStatus(`${health}/readyz`)) === 200,
          60_000,
          "/readyz 200",
        ).catch(async () => assert.fail(await failed("/readyz never answered 200")));
        assert.equal(await httpStatus(`http://127.0.0.1:${metricsPort}/metrics`), 200, "/metrics answers");

        const stopStarted = Date.now();
        await operator.stop({ timeout: 10_000, remove: false });
        const stopMs = Date.now() - stopStarted;
        const state = await inspectContainer(containerId);
        assert.equal(state.exitCode, 0, `operator exit code after SIGTERM (log:\n${logs})`);
        assert.ok(
          stopMs < 8_000,
          `operator took ${stopMs} ms to stop after SIGTERM (10 s is the kill deadline)`,
        );
      } finally {
        if (containerId) await removeContainer(containerId);
        await cp.stop();
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
}
