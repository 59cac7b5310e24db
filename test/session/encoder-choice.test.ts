// The GPU codec choice through whole sessions, with the real ffmpeg of this machine (no GPU): auto
// relays with x264 and says why; nvenc forced fails the session with that reason (the RelaySession,
// its REST view, its CR report and `trickle-relay run`'s exit); x264 forced and passthrough say so.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { findRepositoryRoot } from "../../crds/src/generate.js";
import { RelaySession } from "../../relay-pod/src/session/relay-session.js";
import { buildSessionConfig, type SessionConfigInput } from "../../relay-pod/src/session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import { sessionView } from "../../relay-pod/src/report/session-view.js";
import { buildRelayReport } from "../../relay-pod/src/report/relay-report.js";
import { probeGpuCodecs } from "../../relay-pod/src/media/encoder-probe.js";
import {
  FFMPEG,
  ICE_ADDRESSES,
  relaySessionThrough,
  startPeer,
  startTrickle,
  waitFor,
} from "./relay-harness.js";

const run = promisify(execFile);
const CLI = join(findRepositoryRoot(), "dist/relay-pod/src/cli.js");
const hasNvenc = (await probeGpuCodecs(FFMPEG)).nvenc.ok;
const noGpu = { skip: hasNvenc ? "this machine has a working NVENC" : false };

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

/** A session on a fresh trickle server and the TS stand-in, started; `start` is its outcome. */
async function startSession(extra: Partial<SessionConfigInput>) {
  const { server, base } = await startTrickle(["in", "in-out"]);
  cleanups.push(() => server.close());
  const peer = await startPeer("ts");
  cleanups.push(() => peer.stop());
  const session = new RelaySession(
    buildSessionConfig({
      id: "codec",
      inputUrl: `${base}in`,
      comfystreamUrl: peer.url,
      prompts: [PASSTHROUGH_WORKFLOW],
      width: 256,
      height: 256,
      iceAddresses: ICE_ADDRESSES,
      ...extra,
    }),
  );
  cleanups.push(() => session.stop());
  const start = await session.start().then(
    () => undefined,
    (err: unknown) => err as Error,
  );
  return { session, start };
}

describe("encoder choice in a session", { skip: needsLoopbackNamespace }, () => {
  test(
    "auto without a GPU: x264 relays the stream, status says why",
    { ...noGpu, timeout: 60_000 },
    async () => {
      const peer = await startPeer("ts");
      cleanups.push(() => peer.stop());
      const { final, output } = await relaySessionThrough(peer.url, {
        seconds: 3,
        session: { encoder: "auto", width: 256, height: 256 },
        cleanups,
      });
      assert.equal(final.state, "completed", JSON.stringify(final.lastError));
      assert.ok(output.length >= 2, `${output.length} output segments`);
      assert.equal(final.encoder, "x264");
      assert.equal(final.decoder, "software");
      assert.match(final.codecReason, /^x264: no CUDA device \(.*(libcuda|CUDA).*\)$/);
      const view = sessionView(final);
      assert.equal(view.encoder, "x264");
      assert.equal(view.decoder, "software");
      assert.equal(view.codec_reason, final.codecReason);
      const report = buildRelayReport(final);
      assert.equal(report.encoder, "x264");
      assert.equal(report.codecReason, final.codecReason);
    },
  );

  test(
    "nvenc forced without a GPU: the session fails, and every status names the reason",
    noGpu,
    async () => {
      const { session, start } = await startSession({ encoder: "nvenc" });
      assert.ok(start instanceof Error, "start() rejects");
      await session.whenEnded();
      const status = session.status();
      assert.equal(status.state, "failed");
      assert.equal(status.lastError?.reason, "EncoderUnavailable");
      assert.match(
        status.lastError?.message ?? "",
        /encoder nvenc was required but NVENC is unusable: no CUDA device \(h264_nvenc: /,
      );
      assert.equal(status.encoder, null);
      assert.equal(status.codecReason, status.lastError?.message);
      const view = sessionView(status);
      assert.equal(view.status, "failed");
      assert.equal((view.last_error as { reason: string }).reason, "EncoderUnavailable");
      const report = buildRelayReport(status);
      assert.equal(report.lastError?.component, "ffmpeg");
      assert.match(report.lastError?.message ?? "", /^EncoderUnavailable: encoder nvenc was required/);
    },
  );

  test("x264 forced says so; passthrough encodes nothing", async () => {
    const forced = await startSession({ encoder: "x264" });
    assert.equal(forced.start, undefined);
    const status = forced.session.status();
    assert.deepEqual(
      [status.encoder, status.decoder, status.codecReason],
      ["x264", "software", "x264: forced (encoder x264), no GPU probe"],
    );
    // Stopped once connected: a stop in the middle of the offer is another test's subject.
    await waitFor(() => forced.session.status().webrtcState === "connected", 20_000, "WebRTC connected");
    await forced.session.stop();

    const passthrough = await startSession({ mode: "passthrough", encoder: "nvenc" });
    assert.equal(passthrough.start, undefined);
    const p = passthrough.session.status();
    assert.deepEqual([p.encoder, p.decoder], ["none (passthrough)", "none (passthrough)"]);
    assert.match(p.codecReason, /passthrough/);
    await waitFor(() => passthrough.session.status().webrtcState === "connected", 20_000, "connected");
    await passthrough.session.stop();
  });

  test(
    "trickle-relay run --encoder nvenc without a GPU exits 1 naming the reason; --help lists --encoder",
    noGpu,
    async () => {
      const { stdout } = await run(process.execPath, [CLI, "run", "--help"]);
      assert.match(stdout, /--encoder <encoder>/);
      assert.match(stdout.replace(/\s+/g, " "), /choices: "auto", "nvenc", "x264", default: "auto"/);
      const { server, base } = await startTrickle(["in", "in-out"]);
      cleanups.push(() => server.close());
      const result = await run(
        process.execPath,
        [
          ...[CLI, "run", "--input", `${base}in`, "--comfystream", "http://127.0.0.1:9"],
          ...["--encoder", "nvenc", "--ice-address", ICE_ADDRESSES[0]!],
        ],
        { env: { ...process.env, TRICKLE_RELAY_LOG_LEVEL: "error" }, timeout: 30_000 },
      ).then(
        () => ({ code: 0, stderr: "" }),
        (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
      );
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /relay session failed: EncoderUnavailable: encoder nvenc was required/);
      assert.match(result.stderr, /no CUDA device/);
      const bad = await run(process.execPath, [CLI, "run", "--encoder", "cuda"]).then(
        () => ({ code: 0, stderr: "" }),
        (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
      );
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--encoder <encoder>' argument 'cuda' is invalid/);
    },
  );
});
