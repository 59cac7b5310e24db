/**
 * The trickle server restarted under a running session (issue 17 part 5): killed like a process
 * (connections cut, nothing told to anyone), back on the same port a moment later with its channels
 * re-created, as an orchestrator does on start. The session's input subscriber and output publisher
 * retry, the session stays up and output resumes (the output segment cut by the crash is dropped
 * and counted, OutputSegmentFailed; it used to fail the session with OutputFailed "socket hang
 * up"). Client-level detail (nothing lost, numbering) is in test/trickle/round-trip.test.ts.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { RelaySession } from "../../relay-pod/src/session/relay-session.js";
import { buildSessionConfig } from "../../relay-pod/src/session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { startTsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { collectOutput, ICE_ADDRESSES, makeInputSegments, waitFor } from "./relay-harness.js";

const cleanups: Array<() => Promise<unknown> | unknown> = [];
/** Closed last, after the session stopped (a session stopping against a closed server is slow). */
const serverCleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  for (const cleanup of serverCleanups) await cleanup().catch(() => undefined);
});

/** A trickle server on `port` (0: any) whose crash() cuts every connection without a word. */
async function startTrickleOn(port: number): Promise<{ base: string; port: number; crash(): Promise<void> }> {
  const trickle = new TrickleServer({
    channels: [
      { name: "in", mimeType: "video/MP2T" },
      { name: "in-out", mimeType: "video/MP2T" },
    ],
  });
  const http: Server = createServer((req, res) => {
    if (!trickle.handle(req, res)) res.writeHead(404).end();
  });
  http.requestTimeout = 0;
  await new Promise<void>((resolve) => http.listen(port, "127.0.0.1", resolve));
  const actual = (http.address() as AddressInfo).port;
  const crash = async () => {
    http.closeAllConnections();
    await new Promise((resolve) => http.close(resolve));
  };
  serverCleanups.push(async () => {
    await trickle.close();
    await crash().catch(() => undefined);
  });
  return { base: `http://127.0.0.1:${actual}/ai/trickle/`, port: actual, crash };
}

describe("the trickle server restarted under a running session", { skip: needsLoopbackNamespace }, () => {
  test("the session stays up, input and output retry, output resumes", { timeout: 90_000 }, async () => {
    const { segments } = await makeInputSegments({ seconds: 20 });
    const first = await startTrickleOn(0);
    const standin = await startTsStandin({ host: "127.0.0.1", port: 0, iceAddresses: ICE_ADDRESSES });
    cleanups.push(() => standin.close());
    const session = new RelaySession(
      buildSessionConfig({
        id: "trickle-restart",
        inputUrl: `${first.base}in`,
        outputUrl: `${first.base}in-out`,
        comfystreamUrl: standin.url,
        prompts: [PASSTHROUGH_WORKFLOW],
        width: 256,
        height: 256,
        frameRate: 30,
        iceAddresses: ICE_ADDRESSES,
      }),
      { reconnectBackoffMs: [300, 2000] },
    );
    cleanups.push(() => session.stop());
    await session.start();
    await waitFor(() => session.status().webrtcState === "connected", 20_000, "WebRTC connected");
    const output = collectOutput(`${first.base}in-out`);
    cleanups.push(() => output.close());

    // A live publisher that keeps going through the outage (its failed writes are the outage's).
    const publisher = new TricklePublisher(`${first.base}in`, { contentType: "video/MP2T" });
    cleanups.push(() => publisher.close().catch(() => undefined));
    let stopPublishing = false;
    const publishing = (async () => {
      for (const segment of segments) {
        if (stopPublishing) break;
        await publisher.writeSegment(segment).catch(() => undefined);
        await sleep(1000);
      }
    })();

    await waitFor(() => session.status().frames.out > 60, 15_000, "output flowing");
    await first.crash();
    await sleep(700);
    await startTrickleOn(first.port);
    const outAfterRestart = session.status().frames.out;
    const segmentsAfterRestart = session.status().segments.out;
    await waitFor(() => session.status().frames.out > outAfterRestart + 60, 20_000, "output resumed").catch(
      (error: Error) => {
        const s = session.status();
        throw new Error(
          `${error.message}: state ${s.state}, frames ${JSON.stringify(s.frames)}, segments ${JSON.stringify(s.segments)}, ` +
            `lastError ${JSON.stringify(s.lastError)}, publisher ${JSON.stringify(publisher.stats)}`,
        );
      },
    );
    const status = session.status();
    assert.ok(
      ["running", "degraded"].includes(status.state),
      `state ${status.state}: ${status.lastError?.message}`,
    );
    await waitFor(
      () => session.status().segments.out > segmentsAfterRestart,
      20_000,
      "output segments acknowledged by the restarted server",
    );
    // The output segment cut by the crash was dropped and counted, not fatal.
    assert.notEqual(status.lastError?.reason, "OutputFailed");
    stopPublishing = true;
    await publishing;
    await session.stop();
    assert.equal(session.status().state, "stopped");
  });
});
