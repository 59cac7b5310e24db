import type { Command } from "commander";
import { TrickleServer } from "../trickle/server.js";
import { createLogger } from "../common/log.js";
import { collect, onShutdownSignal, parsePort, parsePositiveNumber } from "../common/cli-options.js";

export function registerTrickleServer(program: Command): void {
  program
    .command("trickle-server")
    .description("Run a trickle server (go-livepeer compatible) on this machine")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "TCP port (0 picks a free one)", parsePort, 2939)
    .option("--base-path <path>", "URL path under which channels live", "/ai/trickle/")
    .option(
      "--channel <name[=mime]>",
      "create a channel at start, MIME default application/octet-stream (repeatable)",
      collect,
      [],
    )
    .option("--autocreate", "create channels on first publish (POST {ch}/{seq}) or POST {ch}", true)
    .option("--no-autocreate", "only serve channels given with --channel (orchestrator behaviour)")
    .option("--changefeed", "publish channel additions/removals on the _changes channel", false)
    .option(
      "--idle-timeout <seconds>",
      "remove channels with no new segment for this long",
      parsePositiveNumber,
      300,
    )
    .option(
      "--max-segment-mb <MiB>",
      "largest segment kept in memory; a bigger upload is refused",
      parsePositiveNumber,
      64,
    )
    .action(async (opts) => {
      const logger = createLogger("trickle-server");
      const basePath = normaliseBasePath(opts.basePath as string);
      const channels = (opts.channel as string[]).map(parseChannelSpec);
      const server = new TrickleServer({
        basePath,
        autocreate: opts.autocreate as boolean,
        changefeed: opts.changefeed as boolean,
        idleTimeoutMs: (opts.idleTimeout as number) * 1000,
        maxSegmentBytes: Math.round((opts.maxSegmentMb as number) * 1024 * 1024),
        channels,
        logger,
      });
      const { url } = await server.listen(opts.port as number, opts.host as string);
      logger.info(
        { url, channels: channels.map((c) => c.name), autocreate: opts.autocreate },
        "trickle server listening",
      );
      process.stdout.write(`trickle server listening on ${url}\n`);
      onShutdownSignal(async () => {
        logger.info("stopping trickle server");
        await server.close();
      });
    });
}

function normaliseBasePath(path: string): string {
  let p = path.startsWith("/") ? path : `/${path}`;
  if (!p.endsWith("/")) p += "/";
  return p;
}

function parseChannelSpec(spec: string): { name: string; mimeType?: string } {
  const eq = spec.indexOf("=");
  if (eq < 0) return { name: spec };
  return { name: spec.slice(0, eq), mimeType: spec.slice(eq + 1) };
}
