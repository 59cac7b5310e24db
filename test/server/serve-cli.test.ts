/**
 * `trickle-relay serve` as a process (node dist/relay-pod/src/cli.js serve …): its hardening flags,
 * refused with a message naming what is wrong; HTTPS with a bearer token and the trickle mount; and
 * the graceful shutdown: on SIGTERM a running real session (stand-in ComfyStream peer, ffmpeg input
 * on a trickle server of the test's own) is stopped, its output channel gets its end of stream, and
 * the process exits 0 within the drain timeout.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { needsLoopbackNamespace } from "../infra/netns.js";
import {
  ICE_ADDRESSES,
  collectOutput,
  makeInputSegments,
  publishPaced,
  startPeer,
  startTrickle,
  waitFor,
  type Peer,
} from "../session/relay-harness.js";
import type { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { makeSelfSignedCertificate, request, type TestCertificate } from "./hardening-helpers.js";

const CLI = path.resolve(import.meta.dirname, "../../relay-pod/src/cli.js");
const TOKEN = "fedcba9876543210fedcba9876543210";
const WORKFLOW = [
  {
    "1": { inputs: { images: ["2", 0] }, class_type: "SaveTensor" },
    "2": { inputs: {}, class_type: "LoadTensor" },
  },
];

interface Serve {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>;
}

function spawnServe(args: string[]): Serve {
  const child = spawn(process.execPath, [CLI, "serve", "--host", "127.0.0.1", "--port", "0", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, TRICKLE_RELAY_LOG_JSON: "1" },
  });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>(
    (resolve) => child.on("exit", (code, signal) => resolve({ code, signal, atMs: performance.now() })),
  );
  return { child, output: () => output, exited };
}

/** The URL the service printed once it listens. */
async function listening(serve: Serve): Promise<string> {
  let url: string | undefined;
  await waitFor(
    () => {
      if (serve.child.exitCode !== null) throw new Error(`serve exited early:\n${serve.output()}`);
      url = /relay service listening on (\S+)/.exec(serve.output())?.[1];
      return url !== undefined;
    },
    15_000,
    "serve to listen",
  );
  return url!;
}

/** Runs `serve` with options that must be refused: exit status 2 and the message on stderr. */
async function refused(args: string[]): Promise<string> {
  const serve = spawnServe(args);
  const timer = setTimeout(() => serve.child.kill("SIGKILL"), 15_000);
  const { code } = await serve.exited;
  clearTimeout(timer);
  assert.equal(code, 2, `exit status for ${args.join(" ")}:\n${serve.output()}`);
  return serve.output();
}

describe("serve: hardening flags", () => {
  let cert: TestCertificate;
  before(async () => {
    cert = await makeSelfSignedCertificate();
    await writeFile(path.join(cert.dir, "empty-token"), "\n");
    await writeFile(path.join(cert.dir, "short-token"), "abc\n");
    await writeFile(path.join(cert.dir, "token"), `${TOKEN}\n`);
  });
  after(() => cert?.remove());

  it("--help describes every hardening flag", async () => {
    const serve = spawnServe(["--help"]);
    assert.equal((await serve.exited).code, 0);
    for (const flag of [
      "--tls-cert <file>",
      "--tls-key <file>",
      "--api-token-file <file>",
      "--start-rate <n>",
      "--start-burst <n>",
      "--drain-timeout <seconds>",
      "--no-ui",
    ]) {
      assert.ok(serve.output().includes(flag), `--help mentions ${flag}`);
    }
    assert.match(serve.output(), /GET \/health, the trickle mount/);
  });

  it("--tls-cert without --tls-key (and the reverse) is refused", async () => {
    assert.match(await refused(["--tls-cert", cert.certPath]), /error: --tls-cert needs --tls-key/);
    assert.match(await refused(["--tls-key", cert.keyPath]), /error: --tls-key needs --tls-cert/);
  });

  it("an unreadable or unusable TLS file is refused, naming it", async () => {
    const missing = path.join(cert.dir, "missing.pem");
    assert.match(
      await refused(["--tls-cert", missing, "--tls-key", cert.keyPath]),
      new RegExp(`--tls-cert ${missing} does not exist`),
    );
    assert.match(
      await refused(["--tls-cert", cert.certPath, "--tls-key", cert.dir]),
      new RegExp(`--tls-key ${cert.dir} is a directory`),
    );
    assert.match(
      await refused(["--tls-cert", cert.keyPath, "--tls-key", cert.certPath]),
      /are not a usable PEM certificate and matching key/,
    );
  });

  it("an empty, short or missing token file is refused, naming it", async () => {
    const empty = path.join(cert.dir, "empty-token");
    assert.match(
      await refused(["--api-token-file", empty]),
      new RegExp(`--api-token-file ${empty} is empty`),
    );
    assert.match(
      await refused(["--api-token-file", path.join(cert.dir, "short-token")]),
      /holds a token of 3 characters; use at least 16/,
    );
    assert.match(await refused(["--api-token-file", path.join(cert.dir, "nope")]), /nope does not exist/);
  });

  it("HTTPS with a token: /health open, the API needs the token, the trickle mount works without; SIGTERM exits 0", async () => {
    const serve = spawnServe([
      ...["--tls-cert", cert.certPath, "--tls-key", cert.keyPath],
      ...["--api-token-file", path.join(cert.dir, "token"), "--trickle-server"],
    ]);
    try {
      const url = await listening(serve);
      assert.match(url, /^https:\/\/127\.0\.0\.1:\d+$/);
      const ca = cert.cert;
      assert.equal((await request(`${url}/health`, { ca })).text, '{"status":"healthy"}');
      assert.equal((await request(`${url}/sessions`, { ca })).status, 401);
      const authorized = await request(`${url}/sessions`, {
        ca,
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      assert.equal(authorized.status, 200);
      const posted = await request(`${url}/ai/trickle/cli-tls/0`, { method: "POST", ca, body: "segment" });
      assert.equal(posted.status, 200, posted.text);
      assert.equal((await request(`${url}/ai/trickle/cli-tls/0`, { ca })).text, "segment");
    } finally {
      serve.child.kill("SIGTERM");
    }
    const { code } = await serve.exited;
    assert.equal(code, 0, serve.output());
    assert.match(serve.output(), /relay service stopped/);
  });
});

describe("serve: SIGTERM drains running sessions", { skip: needsLoopbackNamespace }, () => {
  let trickle: { server: TrickleServer; base: string };
  let peer: Peer;
  let serve: Serve | undefined;
  const publishing = new AbortController();

  before(async () => {
    trickle = await startTrickle(["drain-in", "drain-in-out"]);
    peer = await startPeer("ts");
  });
  after(async () => {
    publishing.abort();
    if (serve && serve.child.exitCode === null) serve.child.kill("SIGKILL");
    await peer?.stop();
    await trickle?.server.close();
  });

  it("stops the session, whose output channel gets its end of stream, and exits 0 within --drain-timeout", async () => {
    const { segments } = await makeInputSegments({ seconds: 30 });
    const input = publishPaced(`${trickle.base}drain-in`, segments, { signal: publishing.signal }).catch(
      () => undefined,
    );
    serve = spawnServe(["--drain-timeout", "6", ...ICE_ADDRESSES.flatMap((a) => ["--ice-address", a])]);
    const url = await listening(serve);
    const started = await request(`${url}/session/start`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        session_id: "drain",
        input_stream_url: `${trickle.base}drain-in`,
        comfystream_url: peer.url,
        prompts: WORKFLOW,
        width: 320,
        height: 240,
      }),
    });
    assert.equal(started.status, 200, started.text);
    assert.equal(started.json.output_stream_url, `${trickle.base}drain-in-out`);
    const output = collectOutput(`${trickle.base}drain-in-out`);
    await waitFor(() => output.segments.length >= 2, 30_000, `output segments (log:\n${serve.output()})`);

    const signalledAt = performance.now();
    serve.child.kill("SIGTERM");
    const { code, atMs } = await serve.exited;
    const tookMs = atMs - signalledAt;
    assert.equal(code, 0, serve.output());
    assert.ok(tookMs < 6000, `exited ${Math.round(tookMs)} ms after SIGTERM (drain timeout 6 s)`);

    const ended = await Promise.race([
      output.done,
      new Promise<"still open">((resolve) => setTimeout(() => resolve("still open"), 3000)),
    ]);
    assert.deepEqual(
      ended,
      { closedByServer: true },
      "the output channel's subscriber saw its end of stream",
    );
    assert.equal(trickle.server.hasChannel("drain-in-out"), false, "the session DELETEd its output channel");
    const log = serve.output();
    assert.match(log, /shutting down: refusing new sessions/);
    assert.match(log, /"stopped":1,.*"msg":"every session stopped"/);
    assert.match(log, /relay service stopped/);
    publishing.abort();
    await input;
  });
});
