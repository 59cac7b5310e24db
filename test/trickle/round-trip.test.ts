// Trickle end to end over real HTTP: the CLI publisher and subscriber against the server, with a real
// MPEG-TS file from ffmpeg, and the faults a live deployment meets (trickle-protocol.md §5, §11, §13).
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { TsSegmentCutter } from "../../relay-pod/src/media/ts-cutter.js";

const CLI = "dist/relay-pod/src/cli.js";
const FFMPEG = process.env.FFMPEG_BIN ?? "ffmpeg";
const work = mkdtempSync(join(tmpdir(), "trickle-rt-"));
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
});

interface RequestLogEntry {
  method: string;
  url: string;
  at: number;
  endedAt?: number;
}

/** A trickle server behind a plain node:http listener that records each request and when it ended. */
async function startLoggedServer(
  options: ConstructorParameters<typeof TrickleServer>[0],
  port = 0,
): Promise<{
  trickle: TrickleServer;
  http: Server;
  base: string;
  log: RequestLogEntry[];
  stop(): Promise<void>;
  crash(): Promise<void>;
}> {
  const trickle = new TrickleServer(options);
  const log: RequestLogEntry[] = [];
  const http = createServer((req, res) => {
    const entry: RequestLogEntry = { method: req.method!, url: req.url!, at: performance.now() };
    log.push(entry);
    res.on("finish", () => (entry.endedAt = performance.now()));
    if (!trickle.handle(req, res)) {
      res.statusCode = 404;
      res.end();
    }
  });
  http.requestTimeout = 0;
  await new Promise<void>((resolve) => http.listen(port, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}/ai/trickle/`;
  const stop = async () => {
    await trickle.close();
    http.closeAllConnections();
    await new Promise((resolve) => http.close(resolve));
  };
  /** Like a killed process: connections cut, nothing told to anyone (no end-of-stream answers). */
  const crash = async () => {
    http.closeAllConnections();
    await new Promise((resolve) => http.close(resolve));
  };
  cleanups.push(stop);
  return { trickle, http, base, log, stop, crash };
}

/** A live encoder: ffmpeg -re writing MPEG-TS to stdout; `bytes` collects everything it wrote. */
function liveTs(seconds: number): { stdout: NodeJS.ReadableStream; bytes: Promise<Buffer> } {
  const ffmpeg = spawn(FFMPEG, [
    ...["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"],
    ...[
      "-t",
      String(seconds),
      "-c:v",
      "libx264",
      "-preset",
      "veryfast",
      "-g",
      "30",
      "-f",
      "mpegts",
      "pipe:1",
    ],
  ]);
  cleanups.push(() => ffmpeg.kill("SIGKILL"));
  const parts: Buffer[] = [];
  ffmpeg.stdout.on("data", (d: Buffer) => parts.push(d));
  const bytes = new Promise<Buffer>((resolve) => ffmpeg.once("close", () => resolve(Buffer.concat(parts))));
  return { stdout: ffmpeg.stdout, bytes };
}

/** The segments the publisher will make of this input: the same cutter, in process. */
function expectedSegments(ts: Buffer, minDurationSec: number): Buffer[] {
  const segments: Buffer[] = [];
  let parts: Buffer[] = [];
  const cutter = new TsSegmentCutter({
    minDurationSec,
    onSegmentStart: () => (parts = []),
    onData: (c) => parts.push(Buffer.from(c)),
    onSegmentEnd: () => segments.push(Buffer.concat(parts)),
  });
  cutter.push(ts);
  cutter.end();
  return segments;
}

function startCli(
  args: string[],
  stdin?: NodeJS.ReadableStream,
): { child: ChildProcess; done: Promise<number | null>; stderr: () => string } {
  const child = spawn(process.execPath, [CLI, ...args], {
    stdio: [stdin ? "pipe" : "ignore", "ignore", "pipe"],
    env: { ...process.env, TRICKLE_RELAY_LOG_LEVEL: "warn" },
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  if (stdin) stdin.pipe(child.stdin!);
  cleanups.push(() => child.kill("SIGKILL"));
  const done = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, done, stderr: () => stderr };
}

describe("trickle round trip over real HTTP", () => {
  test(
    "an ffmpeg MPEG-TS file published with the CLI and read back by the CLI subscriber is byte-identical, " +
      "segment by segment, with POST and GET preconnects observed (spec §5.6)",
    { timeout: 60_000 },
    async () => {
      const { base, log } = await startLoggedServer({ channels: [{ name: "rt", mimeType: "video/MP2T" }] });
      const outDir = join(work, "out/");
      const subscriber = startCli(["trickle", "subscribe", `${base}rt`, "--start-seq", "0", "--out", outDir]);
      await sleep(300);
      const encoder = liveTs(5);
      const publisher = startCli(
        ["trickle", "publish", `${base}rt`, "--segment-duration", "1"],
        encoder.stdout,
      );
      assert.equal(await publisher.done, 0, publisher.stderr());
      const expected = expectedSegments(await encoder.bytes, 1);
      assert.ok(expected.length >= 4, `${expected.length} segments`);
      assert.equal(await subscriber.done, 0, subscriber.stderr()); // the publisher's DELETE ends the stream

      // Zero-padded names: a plain sort (as `cat out/*.ts` does) is the stream's order.
      const files = readdirSync(outDir).sort();
      assert.deepEqual(
        files,
        expected.map((_, i) => `${String(i).padStart(6, "0")}.ts`),
      );
      for (const [i, segment] of expected.entries()) {
        assert.ok(readFileSync(join(outDir, files[i]!)).equals(segment), `segment ${i} is byte-identical`);
      }

      // Publisher preconnect: POST n+1 arrived before POST n finished.
      for (let n = 0; n < expected.length - 1; n++) {
        const post = log.find((e) => e.method === "POST" && e.url.endsWith(`/rt/${n}`));
        const next = log.find((e) => e.method === "POST" && e.url.endsWith(`/rt/${n + 1}`));
        assert.ok(
          post?.endedAt && next && next.at < post.endedAt,
          `POST ${n + 1} preconnected before POST ${n} ended`,
        );
      }
      // Subscriber preconnect: GET n+1 arrived before GET n's body finished.
      for (let n = 0; n < expected.length - 1; n++) {
        const get = log.find((e) => e.method === "GET" && e.url.endsWith(`/rt/${n}`));
        const next = log.find((e) => e.method === "GET" && e.url.endsWith(`/rt/${n + 1}`));
        assert.ok(
          get?.endedAt && next && next.at < get.endedAt,
          `GET ${n + 1} preconnected before GET ${n} ended`,
        );
      }
      assert.ok(
        log.some((e) => e.method === "DELETE" && e.url.endsWith("/rt")),
        "the publisher ended the stream",
      );
    },
  );

  test(
    "a subscriber 5 segments behind gets 470 and resyncs to the live edge, counting the gap (spec §4.4, §5.2)",
    { timeout: 20_000 },
    async () => {
      const { base } = await startLoggedServer({
        channels: [{ name: "lag", mimeType: "application/octet-stream" }],
      });
      const publisher = new TricklePublisher(`${base}lag`);
      await publisher.start();
      for (let i = 0; i < 10; i++) await publisher.writeSegment(Buffer.from(`segment-${i}`));
      // Segments 0..9 written and POST 10 preconnected: the ring (5 slots) holds 6..10. A reader at 4 is
      // 5 behind: 470 with Lp-Trickle-Latest 10, and like the reference clients it jumps to the live
      // edge (spec §11.2, §13) rather than replaying what is left.
      const subscriber = new TrickleSubscriber(`${base}lag`, { startSeq: 4 });
      cleanups.push(() => subscriber.close());
      const firstPromise = subscriber.next();
      await sleep(300);
      await publisher.writeSegment(Buffer.from("segment-10"));
      const first = await firstPromise;
      assert.ok(first);
      assert.equal(first.seq, 10);
      let body = "";
      for await (const chunk of first.body) body += chunk.toString();
      assert.equal(body, "segment-10");
      assert.ok(subscriber.stats.resyncs >= 1, JSON.stringify(subscriber.stats));
      // ...and it keeps following the live stream.
      const next = subscriber.next();
      await publisher.writeSegment(Buffer.from("segment-11"));
      const live = await next;
      assert.equal(live?.seq, 11);
      await publisher.close();
    },
  );

  test(
    "a publisher killed mid-segment: the half-written segment is left open (500 to the dead client), " +
      "and a restarted publisher with /next + Lp-Trickle-Reset releases the stuck reader and continues (spec §5.1, §5.4)",
    { timeout: 30_000 },
    async () => {
      const { base, log } = await startLoggedServer({ channels: [{ name: "pk", mimeType: "video/MP2T" }] });
      const received: Array<{ seq: number; bytes: number }> = [];
      const subscriber = new TrickleSubscriber(`${base}pk`, { startSeq: 0 });
      cleanups.push(() => subscriber.close());
      const reading = (async () => {
        for await (const segment of subscriber) {
          let bytes = 0;
          for await (const chunk of segment.body) bytes += chunk.length;
          received.push({ seq: segment.seq, bytes });
          if (received.length >= 3) break;
        }
      })();
      // A publisher in a child process: one whole segment, then half of the next, then SIGKILL.
      const script = `
        import { TricklePublisher } from "${process.cwd()}/dist/relay-pod/src/trickle/publisher.js";
        const p = new TricklePublisher(process.argv[1]);
        await p.start();
        await p.writeSegment(Buffer.alloc(1000, 1));
        const w = await p.nextSegment();
        await w.write(Buffer.alloc(500, 2));
        process.stdout.write("half\\n");
        setInterval(() => {}, 1000);`;
      const child = spawn(process.execPath, ["--input-type=module", "-e", script, `${base}pk`], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      cleanups.push(() => child.kill("SIGKILL"));
      await new Promise<void>((resolve) => child.stdout!.once("data", () => resolve()));
      await sleep(200);
      child.kill("SIGKILL");
      await sleep(300);
      assert.deepEqual(received, [{ seq: 0, bytes: 1000 }], "segment 1 is still open, its reader waiting");

      const restarted = new TricklePublisher(`${base}pk`, { start: "next" });
      await restarted.start();
      await restarted.writeSegment(Buffer.alloc(700, 3));
      await reading;
      assert.deepEqual(received, [
        { seq: 0, bytes: 1000 },
        { seq: 1, bytes: 500 }, // closed by the reset with what had arrived
        { seq: 2, bytes: 700 },
      ]);
      assert.ok(log.some((e) => e.method === "GET" && e.url.endsWith("/pk/next")));
      await restarted.close();
    },
  );

  test(
    "the server restarted mid-stream: the publisher carries on in its own numbering and the subscriber " +
      "follows it after retrying, losing nothing (spec §13)",
    { timeout: 30_000 },
    async () => {
      const channels = [{ name: "rs", mimeType: "application/octet-stream" }];
      const first = await startLoggedServer({ channels });
      const port = Number(new URL(first.base).port);
      const publisher = new TricklePublisher(`${first.base}rs`);
      await publisher.start();
      const subscriber = new TrickleSubscriber(`${first.base}rs`, { startSeq: 0, retryDelayMs: 300 });
      cleanups.push(() => subscriber.close());
      const received: string[] = [];
      const reading = (async () => {
        for await (const segment of subscriber) {
          let body = "";
          for await (const chunk of segment.body) body += chunk.toString();
          received.push(body);
          if (body === "final") break;
        }
      })();
      for (let i = 0; i < 3; i++) {
        await publisher.writeSegment(Buffer.from(`before-${i}`));
        await sleep(100);
      }
      await first.crash();
      await sleep(500);
      await startLoggedServer({ channels }, port); // orchestrators re-create their channels on start
      for (let i = 0; i < 4; i++) {
        await publisher.writeSegment(Buffer.from(i === 3 ? "final" : `after-${i}`)).catch(() => undefined);
        await sleep(200);
      }
      await Promise.race([reading, sleep(10_000)]);
      // Measured: the publisher retries its preconnected POST on the new server (nothing was sent on
      // it yet) and the subscriber retries its GET, so nothing is lost.
      assert.deepEqual(received, [
        "before-0",
        "before-1",
        "before-2",
        "after-0",
        "after-1",
        "after-2",
        "final",
      ]);
      assert.ok(subscriber.stats.retries >= 1, "the subscriber retried through the outage");
      await publisher.close();
    },
  );
});
