/**
 * Fast failure detection in a whole session (issue 17 part 2), with the stand-in ComfyStream in its
 * own process: its host goes silent (SIGSTOP) and comes back (SIGCONT), or it is killed (SIGKILL)
 * and restarted: the session notices within seconds, says why, reconnects with backoff, output
 * resumes and the gap is counted in status. And a trickle input that goes quiet without ending is
 * reported as stalled and, past the policy's limit, ends the session with that reason.
 * Detection times are measured in bench-results (test/bench/failure-detection-bench.ts), not here.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { RelaySession } from "../../relay-pod/src/session/relay-session.js";
import { buildSessionConfig } from "../../relay-pod/src/session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { needsLoopbackNamespace } from "../infra/netns.js";
import {
  collectOutput,
  ICE_ADDRESSES,
  makeInputSegments,
  publishPaced,
  startTrickle,
  waitFor,
} from "./relay-harness.js";
import { startStandinProcess } from "./standin-process.js";

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

function newSession(
  base: string,
  comfystreamUrl: string,
  inputStall?: { statusAfterSec: number; endAfterSec: number },
) {
  const session = new RelaySession(
    buildSessionConfig({
      id: "failure",
      inputUrl: `${base}in`,
      outputUrl: `${base}in-out`,
      comfystreamUrl,
      prompts: [PASSTHROUGH_WORKFLOW],
      width: 256,
      height: 256,
      frameRate: 30,
      iceAddresses: ICE_ADDRESSES,
      ...(inputStall ? { inputStall } : {}),
    }),
    { reconnectBackoffMs: [300, 2000] },
  );
  cleanups.push(() => session.stop());
  return session;
}

describe("a dead ComfyStream in a running session", { skip: needsLoopbackNamespace }, () => {
  for (const fault of [
    "host silent (SIGSTOP, then SIGCONT)",
    "process killed (SIGKILL), then restarted",
  ] as const) {
    test(`${fault}: noticed, reconnected, output resumes, gap counted`, { timeout: 120_000 }, async () => {
      const { segments } = await makeInputSegments({ seconds: 25 });
      const { server, base } = await startTrickle(["in", "in-out"]);
      cleanups.push(() => server.close());
      let standin = await startStandinProcess({ iceAddresses: ICE_ADDRESSES });
      cleanups.push(() => standin.stop());
      const output = collectOutput(`${base}in-out`);
      cleanups.push(() => output.close());
      const session = newSession(base, standin.url);
      await session.start();
      await waitFor(() => session.status().webrtcState === "connected", 20_000, "WebRTC connected");
      const controller = new AbortController();
      const publishing = publishPaced(`${base}in`, segments, { signal: controller.signal });
      cleanups.push(() => controller.abort());
      await waitFor(() => session.status().frames.out > 60, 15_000, "output flowing");

      if (fault.startsWith("host silent")) standin.signal("SIGSTOP");
      else await standin.stop();
      await waitFor(() => session.status().webrtcState !== "connected", 8_000, "the loss noticed");
      const lost = session.status();
      assert.equal(lost.state, "degraded");
      assert.equal(lost.lastError?.reason, "ComfyStreamDisconnected");
      assert.match(lost.lastError?.message ?? "", /silent: nothing from ComfyStream/);
      assert.equal(lost.peerOutages?.ongoing, true);
      assert.ok(
        (lost.peerOutages?.lastDetectionMs ?? Infinity) < 5000,
        `noticed after ${lost.peerOutages?.lastDetectionMs} ms`,
      );
      const outAtLoss = lost.frames.out;

      if (fault.startsWith("host silent")) standin.signal("SIGCONT");
      else {
        standin = await startStandinProcess({ iceAddresses: ICE_ADDRESSES, port: standin.port });
        cleanups.push(() => standin.stop());
      }
      await waitFor(() => session.status().frames.out > outAtLoss + 30, 30_000, "output resumed");
      const resumed = session.status();
      assert.equal(resumed.state, "running");
      assert.ok(resumed.reconnects >= 1);
      assert.equal(resumed.peerOutages?.count, 1);
      assert.equal(resumed.peerOutages?.ongoing, false);
      assert.ok((resumed.peerOutages?.lastGapMs ?? 0) > 3000, `gap ${resumed.peerOutages?.lastGapMs} ms`);
      controller.abort();
      await publishing.then((publisher) => publisher.close()).catch(() => undefined);
      await session.stop();
    });
  }
});

describe("a trickle input that goes quiet without ending", { skip: needsLoopbackNamespace }, () => {
  test(
    "status says input stalled; past endAfterSec the session fails with InputStalled",
    { timeout: 60_000 },
    async () => {
      const { segments } = await makeInputSegments({ seconds: 3 });
      const { server, base } = await startTrickle(["in", "in-out"]);
      cleanups.push(() => server.close());
      const standin = await startStandinProcess({ iceAddresses: ICE_ADDRESSES });
      cleanups.push(() => standin.stop());
      const session = newSession(base, standin.url, { statusAfterSec: 2, endAfterSec: 6 });
      const output = collectOutput(`${base}in-out`);
      cleanups.push(() => output.close());
      await session.start();
      // Three segments, then nothing: the publisher stays open (no end of stream).
      const publisher: TricklePublisher = await publishPaced(`${base}in`, segments, { close: false });
      cleanups.push(() => publisher.close());
      await waitFor(() => session.status().input?.stalled === true, 8_000, "stall reported");
      const stalled = session.status();
      assert.equal(stalled.state, "degraded");
      assert.equal(stalled.lastError?.reason, "InputStalled");
      assert.match(
        stalled.lastError?.message ?? "",
        /input stalled: no new input segment for \d+ s \(the session ends after 6 s/,
      );
      await session.whenEnded();
      const ended = session.status();
      assert.equal(ended.state, "failed");
      assert.equal(ended.lastError?.reason, "InputStalled");
      assert.ok((ended.input?.idleSec ?? 0) >= 6);
    },
  );
});
