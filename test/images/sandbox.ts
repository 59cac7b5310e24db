/**
 * Running the project's container images in tests, with every byte on loopback.
 *
 * The problem: the suite runs in a private loopback-only network namespace (test/infra/run-tests.sh),
 * but the Docker engine runs in the host's namespace (it must: image builds reach the npm registry
 * and Debian's archive from there). The engine's socket is a file, so it answers from inside the
 * test namespace, yet a `--network host` container joins the *engine's* namespace: it could not
 * reach a trickle server on the test's 127.0.0.1, and its WebRTC stack would gather candidates on
 * the host's real interfaces, which tests must never touch.
 *
 * The solution is the one a Kubernetes pod uses: a sandbox container with `--network none` owns a
 * fresh namespace that holds nothing but `lo` (docker brings it up with 127.0.0.1; we add
 * 127.0.0.2, as run-tests.sh does); the containers under test join it with
 * `--network container:<sandbox>`, and the test itself runs inside it too: the test file re-runs
 * itself under `nsenter --net=/proc/<sandbox pid>/ns/net` (root only). Trickle server, stand-in
 * peer, API server and the containers then all share one loopback-only namespace, whichever
 * namespace the engine lives in, and nothing in a container ever sees a non-loopback interface.
 *
 * Tests skip, with the reason, when this machine cannot do it: not root, no engine, images not built.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { networkInterfaces } from "node:os";
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";

// No Ryuk: its image cannot be pulled here, and every test removes its own containers.
process.env.TESTCONTAINERS_RYUK_DISABLED = "true";
// The host name for mapped ports, which these tests never use. Without it testcontainers, seeing
// /.dockerenv (this machine has one), asks the engine for its "bridge" network, which does not
// exist here (the engine runs with --bridge=none), and gives up on the engine.
process.env.TESTCONTAINERS_HOST_OVERRIDE ??= "localhost";
const { GenericContainer, getContainerRuntimeClient, ImageName } = await import("testcontainers");
type StartedTestContainer = import("testcontainers").StartedTestContainer;

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const version = (JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string })
  .version;
export const RELAY_IMAGE = `trickle-relay/relay:${version}`;
export const OPERATOR_IMAGE = `trickle-relay/operator:${version}`;
/** The uid both Dockerfiles run as. */
export const IMAGE_UID = 10001;

const SANDBOX_ENV = "TRICKLE_RELAY_DOCKER_SANDBOX";
const SANDBOX_LABEL = "trickle-relay.test.sandbox";
/** Set inside the re-run: the id of the sandbox container whose network namespace we are in. */
export const sandboxId = process.env[SANDBOX_ENV];

/** GenericContainer with the one missing knob: a read-only root filesystem. */
export class ImageContainer extends GenericContainer {
  withReadOnlyRootFilesystem(): this {
    this.hostConfig.ReadonlyRootfs = true;
    return this;
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Why the image tests cannot run here, or false when they can. */
export async function imageTestsSkipReason(images: string[]): Promise<string | false> {
  if (process.getuid?.() !== 0) return "needs root (joins a container's network namespace with nsenter)";
  for (const tool of ["nsenter", "ip"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0)
      return `needs ${tool} (util-linux, iproute2)`;
  }
  let client: Awaited<ReturnType<typeof getContainerRuntimeClient>>;
  try {
    client = await withTimeout(getContainerRuntimeClient(), 20_000, "Docker engine");
  } catch (err) {
    return (
      `no Docker engine reachable (${(err as Error).message}): container image tests skipped; ` +
      "start one with `bash test/infra/images/docker-engine.sh start` (.ci/run does)"
    );
  }
  for (const image of images) {
    if (!(await withTimeout(client.image.exists(ImageName.fromString(image)), 20_000, "image lookup"))) {
      return `image ${image} not built: run \`bash test/infra/images/build-images.sh\` (.ci/run does)`;
    }
  }
  return false;
}

/** What an image declares: labels, user, entrypoint. */
export async function imageConfig(
  image: string,
): Promise<{ labels: Record<string, string>; user: string; entrypoint: string[]; cmd: string[] }> {
  const client = await getContainerRuntimeClient();
  const info = await client.image.inspect(ImageName.fromString(image));
  const toList = (v: unknown): string[] =>
    Array.isArray(v) ? (v as string[]) : typeof v === "string" ? [v] : [];
  return {
    labels: info.Config.Labels ?? {},
    user: info.Config.User ?? "",
    entrypoint: toList(info.Config.Entrypoint),
    cmd: toList(info.Config.Cmd),
  };
}

/** The OCI annotations both images carry. */
export const OCI_LABELS = ["title", "description", "source", "version", "revision", "licenses"].map(
  (key) => `org.opencontainers.image.${key}`,
);

/**
 * What both images must declare: a numeric non-root user (so runAsNonRoot can check it), their
 * command last in the entrypoint, and the OCI labels.
 */
export async function assertImageDeclares(image: string, command: string): Promise<void> {
  const config = await imageConfig(image);
  assert.match(
    config.user,
    /^[1-9][0-9]*(:[0-9]+)?$/,
    "a numeric non-root user, so runAsNonRoot can check it",
  );
  assert.equal(config.entrypoint.at(-1), command);
  for (const label of OCI_LABELS) assert.ok(config.labels[label], `label ${label}`);
}

/** Container state after it ended (testcontainers' stop() does not report it). */
export async function inspectContainer(
  id: string,
): Promise<{ exitCode: number; pid: number; running: boolean }> {
  const client = await getContainerRuntimeClient();
  const info = await client.container.inspect(client.container.getById(id));
  return { exitCode: info.State.ExitCode, pid: info.State.Pid, running: info.State.Running };
}

export async function removeContainer(id: string): Promise<void> {
  const client = await getContainerRuntimeClient();
  await client.container
    .getById(id)
    .remove({ force: true, v: true })
    .catch(() => undefined);
}

/** Labels for a container that joins the sandbox, so the sandbox's owner can clean it up. */
export function sandboxLabels(): Record<string, string> {
  return { [SANDBOX_LABEL]: sandboxId ?? "" };
}

/** The effective uid of a running process, from /proc (the containers share our PID view). */
export function processUid(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("Uid:"));
  return Number(line?.split(/\s+/)[2]);
}

/** Inside the sandbox: fails loudly unless the only interface is loopback. */
export function assertLoopbackOnly(): void {
  const names = Object.keys(networkInterfaces());
  if (names.some((name) => name !== "lo")) {
    throw new Error(`the sandbox network namespace has non-loopback interfaces: ${names.join(", ")}`);
  }
}

/**
 * Outside the sandbox: starts a `--network none` sandbox container from `image`, gives its loopback
 * 127.0.0.2 too, re-runs `testFile` (a compiled test file) inside its network namespace with
 * `node --test`, streams that run's report to stderr, and throws with its tail when it fails.
 */
export async function runInSandbox(testFile: string, image: string, timeoutMs: number): Promise<void> {
  const sandbox: StartedTestContainer = await new ImageContainer(image)
    .withNetworkMode("none")
    .withEntrypoint(["/usr/bin/tini", "--", "sleep", String(Math.ceil(timeoutMs / 1000) + 60)])
    .withCommand([])
    .withReadOnlyRootFilesystem()
    .withLabels({ "trickle-relay.test": "sandbox" })
    // If this process dies, the sandbox still ends (its sleep is bounded) and removes itself.
    .withAutoRemove(true)
    .withStartupTimeout(60_000)
    .start();
  try {
    const { pid } = await inspectContainer(sandbox.getId());
    const netns = `--net=/proc/${pid}/ns/net`;
    const lo = spawnSync("nsenter", [netns, "ip", "addr", "add", "127.0.0.2/32", "dev", "lo"], {
      encoding: "utf8",
    });
    if (lo.status !== 0) throw new Error(`cannot add 127.0.0.2 in the sandbox: ${lo.stderr}`);

    const env: NodeJS.ProcessEnv = {
      ...process.env,
      [SANDBOX_ENV]: sandbox.getId(),
      TRICKLE_RELAY_NETNS: "1",
    };
    delete env.NODE_TEST_CONTEXT; // the re-run reports in plain text, not to our test runner
    const args = [netns, "--", process.execPath, "--test", "--test-reporter=spec", "--test-force-exit"];
    args.push(`--test-timeout=${timeoutMs - 15_000}`, testFile);
    const child = spawn("nsenter", args, { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] });
    let report = "";
    const relay = (chunk: Buffer): void => {
      report = (report + chunk.toString()).slice(-20_000);
      // Marked, so that the re-run's own summary is not mistaken for this run's.
      process.stderr.write(chunk.toString().replace(/^(?=.)/gm, "  sandbox │ "));
    };
    child.stdout.on("data", relay);
    child.stderr.on("data", relay);
    const killer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    clearTimeout(killer);
    if (code !== 0)
      throw new Error(`the tests inside the sandbox failed (exit ${code}):\n${report.slice(-6_000)}`);
  } finally {
    // Containers the re-run left behind (it was killed, say) go first, then the sandbox.
    const client = await getContainerRuntimeClient();
    for (const info of await client.container.list().catch(() => [])) {
      if (info.Labels?.[SANDBOX_LABEL] === sandbox.getId()) await removeContainer(info.Id);
    }
    await sandbox.stop({ timeout: 5_000 }).catch(() => undefined);
  }
}
