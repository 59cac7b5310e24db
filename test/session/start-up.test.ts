// A session started while its input already flows (the usual case: a gateway starts the relay for a
// live stream) starts relaying at the live edge. Before issue 12 it skipped the whole input segment
// in progress when ComfyStream connected, and with it up to one GOP of waiting: the first frame sent
// was always the next segment's first keyframe. Now the transcoder decodes the segment in progress
// from its start but encodes from the newest frame on, so the first frame out is an IDR of the frame
// that was live when the peer connected.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { needsLoopbackNamespace } from "../infra/netns.js";
import { startTsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { RelaySession } from "../../relay-pod/src/session/relay-session.js";
import { buildSessionConfig } from "../../relay-pod/src/session/config.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import { publishLive } from "../bench/live-input.js";
import {
  ICE_ADDRESSES,
  collectOutput,
  demuxPts,
  makeInputSegments,
  probeSegment,
  startTrickle,
} from "./relay-harness.js";

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

describe("a session started into a live input", { skip: needsLoopbackNamespace }, () => {
  test(
    "joins at the live edge: the first frame out is an IDR made from a frame inside the segment in progress",
    { timeout: 60_000 },
    async (t) => {
      // 3 s segments, so the peer connects in the middle of one, not at a boundary.
      const { segments } = await makeInputSegments({
        seconds: 9,
        size: "320x240",
        bFrames: 0,
        gopSeconds: 3,
      });
      const segmentStarts = new Set(segments.map((segment) => demuxPts(segment)[0]));
      const { server, base } = await startTrickle(["in", "in-out"]);
      cleanups.push(() => server.close());
      const peer = await startTsStandin({ port: 0, iceAddresses: ICE_ADDRESSES, mode: "passthrough" });
      cleanups.push(() => peer.close());
      const output = collectOutput(`${base}in-out`);
      cleanups.push(() => output.close());

      const publishing = publishLive(`${base}in`, segments);
      await sleep(800);
      const session = new RelaySession(
        buildSessionConfig({
          id: "live-edge",
          inputUrl: `${base}in`,
          comfystreamUrl: peer.url,
          prompts: [PASSTHROUGH_WORKFLOW],
          width: 256,
          height: 256,
          iceAddresses: ICE_ADDRESSES,
        }),
      );
      cleanups.push(() => session.stop());
      await session.start();
      await publishing;
      await session.whenEnded();
      await output.done;
      const final = session.status();
      t.diagnostic(`frames ${JSON.stringify(final.frames)}; segments ${JSON.stringify(final.segments)}`);
      assert.equal(final.state, "completed", JSON.stringify(final.lastError));

      const outputPts = output.segments.flatMap((segment) => demuxPts(segment.data));
      assert.ok(outputPts.length > 0, "frames came out");
      const first = outputPts[0]!;
      t.diagnostic(`first output PTS ${first}; input segment starts ${[...segmentStarts].join(", ")}`);
      assert.ok(
        !segmentStarts.has(first),
        "the first frame out is not the start of a later segment: the segment in progress was not skipped",
      );
      const firstSegment = await probeSegment(output.segments[0]!.data);
      assert.ok(firstSegment.firstIsKey, "the output starts with a keyframe");
      assert.equal(final.segments.dropped, 0, "no input segment was dropped whole");
    },
  );
});
