import type { Command } from "commander";
import { createLogger } from "../common/log.js";
import { RelaySession } from "../session/relay-session.js";
import { iceAddressesFromEnv } from "../webrtc/ice-config.js";
import { SessionManager } from "../server/session-manager.js";
import { buildApiServer, TRICKLE_MOUNT_PATH } from "../server/api.js";
import { createRelayMetrics } from "../report/metrics.js";
import { TrickleServer } from "../trickle/server.js";
import { collect, onShutdownSignal, parsePort, parsePositiveInteger } from "../common/cli-options.js";

export function registerServe(program: Command): void {
  program
    .command("serve")
    .description(
      "Run the standalone relay service: the REST API of the older Python Trickle Relay Service " +
        "(POST /session/start, DELETE /session/{id}, GET /session/{id}/status, GET /sessions, GET /health), " +
        "plus POST /session/{id}/prompts and /metrics",
    )
    .option("--host <host>", "address to listen on", "0.0.0.0")
    .option("--port <port>", "TCP port", parsePort, 8890)
    .option(
      "--trickle-server",
      `also serve trickle channels under ${TRICKLE_MOUNT_PATH} (created on first publish)`,
      false,
    )
    .option("--max-sessions <n>", "most sessions running at once", parsePositiveInteger, 8)
    .option(
      "--ice-address <addr>",
      "address to gather WebRTC candidates on (repeatable; default $TRICKLE_RELAY_ICE_ADDRESSES)",
      collect,
      [],
    )
    .option("--insecure", "do not verify trickle servers' TLS certificates", false)
    .action(async (opts) => {
      const logger = createLogger("trickle-relay-serve");
      const iceAddresses =
        (opts.iceAddress as string[]).length > 0 ? (opts.iceAddress as string[]) : iceAddressesFromEnv();
      const sessions = new SessionManager({
        createSession: (config) => new RelaySession(config, { logger }),
        defaults: { iceAddresses, insecureTls: opts.insecure as boolean },
        maxSessions: opts.maxSessions as number,
        logger,
      });
      const trickleServer = opts.trickleServer
        ? new TrickleServer({ basePath: TRICKLE_MOUNT_PATH, autocreate: true, logger })
        : undefined;
      const app = buildApiServer({
        sessions,
        metricsRegistry: createRelayMetrics(() => sessions.statuses()),
        logger,
        ...(trickleServer ? { trickleServer } : {}),
      });
      const address = await app.listen({ host: opts.host as string, port: opts.port as number });
      logger.info(
        { address, trickle: trickleServer ? `${address}${TRICKLE_MOUNT_PATH}` : undefined },
        "relay service listening",
      );
      process.stdout.write(`relay service listening on ${address}\n`);
      onShutdownSignal(async () => {
        logger.info("stopping relay service");
        await sessions.close();
        await app.close();
        await trickleServer?.close();
      });
    });
}
