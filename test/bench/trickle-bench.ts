/**
 * Trickle server benchmark: throughput and fan-out of one publisher to N subscribers, and the time
 * from a publisher's write to a subscriber's read.
 *
 *   npm run bench:trickle [-- --seconds 6 --out bench-results/trickle.json]
 *
 * The server runs in its own process (as it would in production), the publisher and the subscribers
 * in this one, all on 127.0.0.1. Each chunk carries the time it was written, so the subscriber side
 * measures write→read latency on one clock.
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { machineInfo, round, writeResults } from "./results.js";
import { parseArgs } from "node:util";
import { TricklePublisher } from "../../relay-pod/src/trickle/publisher.js";
import { TrickleSubscriber } from "../../relay-pod/src/trickle/subscriber.js";
import { TrickleServer } from "../../relay-pod/src/trickle/server.js";

const HEADER = 16; // 8 bytes magic+seq, 8 bytes write time (performance.now() in µs)
const MAGIC = 0x7472636b; // "trck"

interface ScenarioResult {
  publishMbps: number;
  subscribers: number;
  seconds: number;
  bytesPublished: number;
  bytesDelivered: number;
  deliveredMbps: number;
  deliveredShare: number;
  chunksReceived: number;
  latencyMs: { p50: number; p95: number; p99: number; max: number };
  serverCpuPercentOfOneCore: number;
  serverRssMb: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: "string", default: "6" },
      out: { type: "string", default: "bench-results/trickle.json" },
      "server-child": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      "npm run bench:trickle [-- --seconds N --out FILE]\n" +
        "Measures trickle throughput, fan-out (1 publisher at 2 and 20 Mbit/s to 1, 10, 100 subscribers)\n" +
        "and publisher-write to subscriber-read latency. Writes JSON and a Markdown table next to it.\n",
    );
    return;
  }
  if (values["server-child"]) return runServerChild();

  const seconds = Number(values.seconds);
  const results: ScenarioResult[] = [];
  for (const publishMbps of [2, 20]) {
    for (const subscribers of [1, 10, 100]) {
      process.stderr.write(
        `scenario: ${publishMbps} Mbit/s to ${subscribers} subscribers, ${seconds} s ... `,
      );
      const result = await runScenario(publishMbps, subscribers, seconds);
      results.push(result);
      process.stderr.write(
        `delivered ${result.deliveredMbps.toFixed(1)} Mbit/s (${(result.deliveredShare * 100).toFixed(1)} %), ` +
          `latency p50 ${result.latencyMs.p50} ms p95 ${result.latencyMs.p95} ms, server CPU ${result.serverCpuPercentOfOneCore} %\n`,
      );
    }
  }
  const report = {
    benchmark: "trickle",
    command: "npm run bench:trickle",
    date: new Date().toISOString(),
    machine: machineInfo(),
    method:
      "trickle server in a child process on 127.0.0.1; one publisher writing 20 ms chunks into 1 s segments; " +
      "N subscribers from seq -1; latency = subscriber read time - publisher write time, same clock",
    results,
  };
  writeResults(values.out!, report, toMarkdown(report));
}

async function runScenario(
  publishMbps: number,
  subscriberCount: number,
  seconds: number,
): Promise<ScenarioResult> {
  const server = await startServerChild();
  const channelUrl = `${server.url}bench`;
  const latencies: number[] = [];
  let bytesDelivered = 0;
  let chunksReceived = 0;

  const subscribers = Array.from(
    { length: subscriberCount },
    () => new TrickleSubscriber(channelUrl, { startSeq: -1 }),
  );
  const readers = subscribers.map(async (subscriber) => {
    try {
      for await (const segment of subscriber) {
        let pending: Buffer | undefined;
        for await (const chunk of segment.body) {
          const now = performance.now();
          bytesDelivered += chunk.length;
          // Chunk boundaries on the wire need not match the publisher's writes: scan for headers.
          const data = pending ? Buffer.concat([pending, chunk]) : chunk;
          pending = undefined;
          let offset = 0;
          while (offset + HEADER <= data.length) {
            if (data.readUInt32BE(offset) !== MAGIC) {
              offset++;
              continue;
            }
            const size = data.readUInt32BE(offset + 4);
            if (offset + size > data.length) break;
            latencies.push(now - data.readDoubleBE(offset + 8));
            chunksReceived++;
            offset += size;
          }
          if (offset < data.length) pending = data.subarray(offset);
        }
      }
    } catch {
      // end of the scenario closes subscribers mid-read
    }
  });

  // Every subscriber must be waiting on the first segment before it starts, or the late ones would
  // resolve seq -1 past it and the share delivered would measure start-up, not fan-out.
  const waitDeadline = Date.now() + 10_000;
  while ((await server.stats()).subscribers < subscriberCount && Date.now() < waitDeadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const publisher = new TricklePublisher(channelUrl, { contentType: "application/octet-stream" });
  await publisher.start();
  const chunkIntervalMs = 20;
  const chunkBytes = Math.round((publishMbps * 1e6) / 8 / (1000 / chunkIntervalMs));
  const chunksPerSegment = 1000 / chunkIntervalMs;
  const totalChunks = Math.round((seconds * 1000) / chunkIntervalMs);
  let bytesPublished = 0;
  const cpuBefore = await server.usage();
  const startedAt = performance.now();
  let writer = await publisher.nextSegment();
  for (let i = 0; i < totalChunks; i++) {
    if (i > 0 && i % chunksPerSegment === 0) {
      await writer.end();
      writer = await publisher.nextSegment();
    }
    const chunk = Buffer.alloc(chunkBytes);
    chunk.writeUInt32BE(MAGIC, 0);
    chunk.writeUInt32BE(chunkBytes, 4);
    chunk.writeDoubleBE(performance.now(), 8);
    await writer.write(chunk);
    bytesPublished += chunkBytes;
    const due = startedAt + (i + 1) * chunkIntervalMs;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  await writer.end();
  const elapsedSec = (performance.now() - startedAt) / 1000;
  const cpuAfter = await server.usage();
  await new Promise((r) => setTimeout(r, 300));
  await publisher.close();
  for (const s of subscribers) s.close();
  await Promise.race([Promise.all(readers), new Promise((r) => setTimeout(r, 3000))]);
  await server.stop();

  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    round(latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN);
  const expected = bytesPublished * subscriberCount;
  return {
    publishMbps,
    subscribers: subscriberCount,
    seconds: round(elapsedSec),
    bytesPublished,
    bytesDelivered,
    deliveredMbps: round((bytesDelivered * 8) / 1e6 / elapsedSec),
    deliveredShare: round(bytesDelivered / expected, 4),
    chunksReceived,
    latencyMs: { p50: pct(50), p95: pct(95), p99: pct(99), max: round(latencies.at(-1) ?? NaN) },
    serverCpuPercentOfOneCore: round(((cpuAfter.cpuMicros - cpuBefore.cpuMicros) / 1e6 / elapsedSec) * 100),
    serverRssMb: round(cpuAfter.rss / 2 ** 20),
  };
}

interface ServerChild {
  url: string;
  stats(): Promise<{ subscribers: number }>;
  usage(): Promise<{ cpuMicros: number; rss: number }>;
  stop(): Promise<void>;
}

async function startServerChild(): Promise<ServerChild> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ["--server-child"], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const url = await new Promise<string>((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error("benchmark server did not start within 10 s")), 10_000);
    child.once("message", (m: { url: string }) => {
      clearTimeout(timer);
      resolvePromise(m.url);
    });
    child.once("exit", (code) => reject(new Error(`benchmark server exited with ${code}`)));
  });
  return {
    url,
    usage: () =>
      new Promise((resolvePromise) => {
        child.once("message", (m: { cpuMicros: number; rss: number }) => resolvePromise(m));
        child.send("usage");
      }),
    stats: () =>
      new Promise((resolvePromise) => {
        child.once("message", (m: { subscribers: number }) => resolvePromise(m));
        child.send("stats");
      }),
    stop: async () => {
      child.send("stop");
      await new Promise((r) => child.once("exit", r));
    },
  };
}

async function runServerChild(): Promise<void> {
  const server = new TrickleServer({ channels: [{ name: "bench", mimeType: "application/octet-stream" }] });
  const { url } = await server.listen(0, "127.0.0.1");
  process.on("message", async (m) => {
    if (m === "usage") {
      const u = process.cpuUsage();
      process.send!({ cpuMicros: u.user + u.system, rss: process.memoryUsage().rss });
    } else if (m === "stats") {
      process.send!(server.stats());
    } else if (m === "stop") {
      await server.close();
      process.exit(0);
    }
  });
  process.send!({ url });
}

function toMarkdown(report: {
  date: string;
  machine: Record<string, unknown>;
  results: ScenarioResult[];
}): string {
  const lines = [
    `# Trickle benchmark (${report.date})`,
    "",
    `Machine: ${JSON.stringify(report.machine)}. Command: \`npm run bench:trickle\`.`,
    "",
    "| publish Mbit/s | subscribers | delivered Mbit/s | delivered share | latency p50 ms | p95 ms | p99 ms | server CPU % of a core | server RSS MB |",
    "|---|---|---|---|---|---|---|---|---|",
    ...report.results.map(
      (r) =>
        `| ${r.publishMbps} | ${r.subscribers} | ${r.deliveredMbps} | ${(r.deliveredShare * 100).toFixed(1)} % | ${r.latencyMs.p50} | ${r.latencyMs.p95} | ${r.latencyMs.p99} | ${r.serverCpuPercentOfOneCore} | ${r.serverRssMb} |`,
    ),
    "",
  ];
  return lines.join("\n");
}

await main();
