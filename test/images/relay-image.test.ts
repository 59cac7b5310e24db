// The relay image runs a real session: a trickle server and the TypeScript stand-in ComfyStream peer
// run here, the relay runs in its container (non-root, read-only root filesystem, tmpfs /tmp, all
// capabilities dropped), all of them in one loopback-only network namespace (see sandbox.ts). Then
// `docker stop` (SIGTERM) must end it cleanly: exit 0 within seconds, output channel closed. Both
// ways the image is started: as `docker run` does (tini is PID 1) and as the operator's pods do
// (`command: ["trickle-relay"]` replaces the entrypoint, so Node is PID 1).
import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { Readable } from "node:stream";
import {
  collectOutput,
  checkOutputAgainstInput,
  makeInputSegments,
  publishPaced,
  startPeer,
  startTrickle,
  waitFor,
} from "../session/relay-harness.js";
import {
  IMAGE_UID,
  ImageContainer,
  RELAY_IMAGE,
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

const skip = await imageTestsSkipReason([RELAY_IMAGE]);
const TIMEOUT_MS = 270_000;

const LAUNCHES = [
  { name: "docker run (tini is PID 1)", entrypoint: undefined },
  { name: "the operator's pod command (Node is PID 1)", entrypoint: ["trickle-relay"] },
];

async function sessionThenStop(entrypoint: string[] | undefined): Promise<void> {
  assertLoopbackOnly();
  const { server, base } = await startTrickle(["in", "in-out"]);
  const peer = await startPeer("ts");
  const { segments, pts } = await makeInputSegments({ seconds: 30 });
  const output = collectOutput(`${base}in-out`);
  const publishing = new AbortController();
  let logs = "";
  let containerId: string | undefined;
  try {
    let container = new ImageContainer(RELAY_IMAGE)
      .withNetworkMode(`container:${sandboxId}`)
      .withUser(`${IMAGE_UID}:${IMAGE_UID}`)
      .withReadOnlyRootFilesystem()
      .withTmpFs({ "/tmp": "rw,nosuid,nodev,size=64m" })
      .withDroppedCapabilities("ALL")
      .withSecurityOpt("no-new-privileges")
      .withEnvironment({ TRICKLE_RELAY_ICE_ADDRESSES: "127.0.0.2" })
      .withCommand(["run", "--input", `${base}in`, "--comfystream", peer.url])
      .withLabels({ "trickle-relay.test": "relay-image", ...sandboxLabels() })
      .withLogConsumer((stream: Readable) => {
        stream.on("data", (chunk: Buffer) => (logs = (logs + chunk.toString()).slice(-8_000)));
      })
      .withStartupTimeout(60_000);
    if (entrypoint) container = container.withEntrypoint(entrypoint);
    const relay = await container.start();
    containerId = relay.getId();
    const { pid } = await inspectContainer(containerId);
    assert.equal(processUid(pid), IMAGE_UID, "the container's processes run as the image's non-root user");

    // Input keeps flowing while the relay is stopped: the stop must not wait for the input to end.
    const publisher = publishPaced(`${base}in`, segments, { signal: publishing.signal });
    await waitFor(
      () => output.segments.length >= 3,
      120_000,
      `3 output segments (relay log:\n${logs})`,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}\npeer: ${JSON.stringify(await peer.describe())}`);
    });

    const stopStarted = Date.now();
    await relay.stop({ timeout: 10_000, remove: false });
    const stopMs = Date.now() - stopStarted;
    const state = await inspectContainer(containerId);
    assert.equal(state.exitCode, 0, `relay exit code after SIGTERM (log:\n${logs})`);
    assert.ok(stopMs < 8_000, `relay took ${stopMs} ms to stop after SIGTERM (10 s is the kill deadline)`);
    await waitFor(() => /"signal":"SIGTERM"/.test(logs), 3_000, `the relay logging SIGTERM (log:\n${logs})`);

    const ended = await Promise.race([
      output.done,
      new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), 10_000)),
    ]);
    assert.notEqual(ended, "timeout", "the output channel did not end after the relay stopped");
    assert.equal(ended !== "timeout" && ended.closedByServer, true, "the relay ended its output stream");

    publishing.abort();
    await publisher.catch(() => undefined);
    const check = await checkOutputAgainstInput(output.segments, pts);
    assert.ok(check.frames > 0, "output segments decode to frames");
    assert.deepEqual(check.undecodable, [], "every output segment decodes on its own");
    assert.deepEqual(check.notIdrFirst, [], "every output segment starts on an IDR");
    assert.deepEqual(check.foreignPts, [], "output PTS are input PTS");
    process.stderr.write(
      `relay image: ${output.segments.length} segments, ${check.frames} frames; stopped in ${stopMs} ms\n`,
    );
  } finally {
    publishing.abort();
    output.close();
    if (containerId) await removeContainer(containerId);
    await peer.stop();
    await server.close();
  }
}

if (!sandboxId) {
  test("relay image: non-root user, entrypoint, OCI labels", { skip }, () =>
    assertImageDeclares(RELAY_IMAGE, "trickle-relay"),
  );
  test(
    "relay image (run inside a loopback-only sandbox)",
    { skip, timeout: TIMEOUT_MS + 30_000 },
    async () => {
      await runInSandbox(fileURLToPath(import.meta.url), RELAY_IMAGE, TIMEOUT_MS);
    },
  );
} else {
  for (const launch of LAUNCHES) {
    test(
      `relay image, started like ${launch.name}: a session, then docker stop ends it cleanly`,
      { skip },
      () => sessionThenStop(launch.entrypoint),
    );
  }
}
