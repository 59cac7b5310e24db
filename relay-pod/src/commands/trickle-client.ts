import { createWriteStream, existsSync, mkdirSync, statSync, type WriteStream } from "node:fs";
import { once } from "node:events";
import { join } from "node:path";
import { Option, type Command } from "commander";
import { TricklePublisher } from "../trickle/publisher.js";
import { TrickleSubscriber } from "../trickle/subscriber.js";
import { looksLikeMpegTs, SegmentedPublisher } from "../session/segmented-publisher.js";
import { segmentFileName } from "../trickle/segment-files.js";
import { createLogger } from "../common/log.js";
import { formatBytes } from "../common/format-bytes.js";
import {
  onShutdownSignal,
  parseHttpUrl,
  parsePositiveInteger,
  parsePositiveNumber,
  parseSeq,
} from "../common/cli-options.js";

export function registerTrickleClient(program: Command): void {
  const trickle = program.command("trickle").description("Publish to or subscribe from a trickle channel");

  trickle
    .command("publish")
    .description(
      "Publish standard input to a trickle channel. MPEG-TS input is cut into segments at keyframes; " +
        "anything else is cut every --segment-bytes.",
    )
    .argument("<url>", "channel URL, e.g. http://127.0.0.1:2939/ai/trickle/mystream", parseHttpUrl)
    .option(
      "--segment-duration <seconds>",
      "MPEG-TS: shortest segment, cut at the next keyframe after it",
      parsePositiveNumber,
      1,
    )
    .option("--segment-bytes <bytes>", "other content: bytes per segment", parsePositiveInteger, 1024 * 1024)
    .option("--content-type <mime>", "MIME of the data (default: video/MP2T when stdin looks like MPEG-TS)")
    .addOption(
      new Option("--start <mode>", "first seq: 0 (Go clients) or the server's /next with Lp-Trickle-Reset")
        .choices(["zero", "next"])
        .default("zero"),
    )
    .option("--insecure", "do not verify the server's TLS certificate", false)
    .option("--keep-channel", "do not send DELETE for the channel when stdin ends", false)
    .action(async (url: string, opts) => {
      const logger = createLogger("trickle-publish");
      await publishStdin(url, {
        segmentDurationSec: opts.segmentDuration as number,
        segmentBytes: opts.segmentBytes as number,
        contentType: opts.contentType as string | undefined,
        start: opts.start as "zero" | "next",
        insecureTls: opts.insecure as boolean,
        keepChannel: opts.keepChannel as boolean,
        logger,
      });
    });

  trickle
    .command("subscribe")
    .description(
      "Read a trickle channel and write its segments to a file, a folder (one file per segment) or stdout",
    )
    .argument("<url>", "channel URL", parseHttpUrl)
    .option(
      "--start-seq <n>",
      "first segment: -1 waits for the next, -2 is the current one, n >= 0 that one",
      parseSeq,
      -1,
    )
    .option(
      "--out <target>",
      "FILE (segments concatenated), DIR/ (one file per segment: 000000.ts, 000001.ts, …) or - for stdout",
      "-",
    )
    .option("--max-segments <n>", "stop after this many segments", parsePositiveInteger)
    .option("--insecure", "do not verify the server's TLS certificate", false)
    .action(async (url: string, opts) => {
      const logger = createLogger("trickle-subscribe");
      await subscribeToOutput(url, {
        startSeq: opts.startSeq as number,
        out: opts.out as string,
        maxSegments: opts.maxSegments as number | undefined,
        insecureTls: opts.insecure as boolean,
        logger,
      });
    });
}

interface PublishOptions {
  segmentDurationSec: number;
  segmentBytes: number;
  contentType: string | undefined;
  start: "zero" | "next";
  insecureTls: boolean;
  keepChannel: boolean;
  logger: ReturnType<typeof createLogger>;
}

async function publishStdin(url: string, options: PublishOptions): Promise<void> {
  const { logger } = options;
  const input = process.stdin[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const first = await input.next();
  if (first.done) {
    process.stderr.write("trickle publish: standard input was empty; nothing to publish\n");
    process.exitCode = 1;
    return;
  }
  const firstChunk = first.value;
  const isTs = options.contentType ? /mp2t/i.test(options.contentType) : looksLikeMpegTs(firstChunk);
  const contentType = options.contentType ?? (isTs ? "video/MP2T" : "application/octet-stream");

  const publisher = new TricklePublisher(url, {
    contentType,
    start: options.start,
    insecureTls: options.insecureTls,
    logger,
  });
  await publisher.start();

  const segmented = new SegmentedPublisher(publisher, {
    mpegTs: isTs,
    segmentDurationSec: options.segmentDurationSec,
    segmentBytes: options.segmentBytes,
    onSegmentEnd: ({ seq, bytes, ms }) =>
      process.stderr.write(`segment ${seq}: ${formatBytes(bytes)} in ${(ms / 1000).toFixed(1)} s\n`),
  });
  let interrupted = false;
  onShutdownSignal(async () => {
    interrupted = true;
    await segmented.abort();
    await publisher.close();
  });

  try {
    await segmented.push(firstChunk);
    for (let next = await input.next(); !next.done && !interrupted; next = await input.next()) {
      await segmented.push(next.value);
    }
    if (!interrupted) await segmented.end();
  } finally {
    if (!interrupted) {
      if (!options.keepChannel) await publisher.close();
      logger.info({ segments: segmented.segments, bytes: segmented.bytes }, "published");
      process.stderr.write(`published ${segmented.segments} segments, ${formatBytes(segmented.bytes)}\n`);
    }
  }
}

interface SubscribeOptions {
  startSeq: number;
  out: string;
  maxSegments: number | undefined;
  insecureTls: boolean;
  logger: ReturnType<typeof createLogger>;
}

async function subscribeToOutput(url: string, options: SubscribeOptions): Promise<void> {
  const subscriber = new TrickleSubscriber(url, {
    startSeq: options.startSeq,
    insecureTls: options.insecureTls,
    logger: options.logger,
  });
  onShutdownSignal(() => subscriber.close());

  const toDirectory = options.out !== "-" && (options.out.endsWith("/") || isDirectory(options.out));
  if (toDirectory) mkdirSync(options.out, { recursive: true });
  let single: WriteStream | NodeJS.WriteStream | undefined;
  if (!toDirectory) single = options.out === "-" ? process.stdout : createWriteStream(options.out);

  let count = 0;
  let bytes = 0;
  try {
    for await (const segment of subscriber) {
      const target =
        single ??
        createWriteStream(join(options.out, segmentFileName(segment.seq, extensionFor(segment.contentType))));
      let segmentBytes = 0;
      for await (const chunk of segment.body) {
        segmentBytes += chunk.length;
        if (!target.write(chunk)) await once(target, "drain");
      }
      if (!single) await closeStream(target as WriteStream);
      bytes += segmentBytes;
      count += 1;
      if (options.out !== "-" || !process.stdout.isTTY) {
        process.stderr.write(`segment ${segment.seq}: ${formatBytes(segmentBytes)}\n`);
      }
      if (options.maxSegments !== undefined && count >= options.maxSegments) break;
    }
  } finally {
    subscriber.close();
    if (single && single !== process.stdout) await closeStream(single as WriteStream);
  }
  process.stderr.write(`received ${count} segments, ${formatBytes(bytes)}\n`);
}

function isDirectory(path: string): boolean {
  return existsSync(path) && statSync(path).isDirectory();
}

function extensionFor(contentType: string | undefined): string {
  if (!contentType) return ".bin";
  if (/mp2t/i.test(contentType)) return ".ts";
  if (/jsonl/i.test(contentType)) return ".jsonl";
  if (/json/i.test(contentType)) return ".json";
  if (/^text\//i.test(contentType)) return ".txt";
  return ".bin";
}

async function closeStream(stream: WriteStream): Promise<void> {
  await new Promise<void>((resolve, reject) =>
    stream.end((err?: Error | null) => (err ? reject(err) : resolve())),
  );
}
