import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { InvalidArgumentError, type Command } from "commander";
import { createLogger, type Logger } from "../common/log.js";
import { iceAddressesFromEnv } from "../webrtc/ice-config.js";
import type { SessionManager } from "../server/session-manager.js";
import type { ApiServer } from "../server/api.js";
import { TRICKLE_MOUNT_PATH } from "../server/trickle-mount.js";
import { describeReadError, readBearerTokenFile } from "../server/bearer-auth.js";
import type { TrickleServer } from "../trickle/server.js";
import {
  collect,
  onShutdownSignal,
  parsePort,
  parsePositiveInteger,
  parsePositiveNumber,
} from "../common/cli-options.js";

/** Bad options exit 2, as `run` does (1 is left for failures at run time). */
const EXIT_BAD_OPTIONS = 2;
/** How long closing the listener may take after the drain before the process exits anyway. */
const CLOSE_GRACE_MS = 2000;

export function registerServe(program: Command): void {
  program
    .command("serve")
    .description(
      "Run the standalone relay service: the REST API of the older Python Trickle Relay Service " +
        "(POST /session/start, DELETE /session/{id}, GET /session/{id}/status, GET /sessions, GET /health), " +
        "plus POST /session/{id}/prompts, /metrics and the session pages under /ui/. On SIGTERM/SIGINT it refuses new sessions, " +
        "stops the running ones (each ends its output stream), waits up to --drain-timeout and exits 0; " +
        "a second signal exits at once.",
    )
    .option("--host <host>", "address to listen on", "0.0.0.0")
    .option("--port <port>", "TCP port", parsePort, 8890)
    .option(
      "--trickle-server",
      `also serve trickle channels under ${TRICKLE_MOUNT_PATH} (created on first publish; open to all, ` +
        "no token: trickle clients send none)",
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
    .option("--tls-cert <file>", "serve HTTPS with this PEM certificate (chain); needs --tls-key")
    .option("--tls-key <file>", "the PEM private key of --tls-cert")
    .option(
      "--api-token-file <file>",
      "require 'Authorization: Bearer <token>' on every route but GET /health, the trickle mount and the " +
        "read-only session pages (GET /ui/...); the token is the file's content without surrounding " +
        "whitespace, 16+ characters",
    )
    .option(
      "--no-ui",
      "do not serve the session pages under /ui/ (live thumbnails, graphs, prompts editor; readable " +
        "without the token, stream URLs hidden; edits and stops need it)",
    )
    .option(
      "--start-rate <n>",
      "POST /session/start per client IP: sustained starts a minute (0 turns the limit off)",
      parseNonNegativeNumber,
      10,
    )
    .option(
      "--start-burst <n>",
      "POST /session/start per client IP: starts allowed at once before --start-rate applies",
      parsePositiveInteger,
      5,
    )
    .option(
      "--drain-timeout <seconds>",
      "on SIGTERM/SIGINT, how long to wait for running sessions to stop before exiting",
      parsePositiveNumber,
      10,
    )
    .action(async (opts, command: Command) => {
      const fail = (message: string): never =>
        command.error(`error: ${message}`, { exitCode: EXIT_BAD_OPTIONS });
      let tls: { cert: Buffer; key: Buffer } | undefined;
      let apiToken: string | undefined;
      try {
        tls = readTlsFiles(opts.tlsCert as string | undefined, opts.tlsKey as string | undefined);
        if (opts.apiTokenFile !== undefined)
          apiToken = readBearerTokenFile(opts.apiTokenFile as string, "--api-token-file");
      } catch (err) {
        return fail((err as Error).message);
      }

      const logger = createLogger("trickle-relay-serve");
      // Loaded here, not at the top: the other commands (and --help) need neither fastify nor werift.
      const [
        { RelaySession },
        { SessionManager },
        { buildApiServer },
        { createRelayMetrics },
        { TrickleServer },
      ] = await Promise.all([
        import("../session/relay-session.js"),
        import("../server/session-manager.js"),
        import("../server/api.js"),
        import("../report/metrics.js"),
        import("../trickle/server.js"),
      ]);
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
      const startRate = opts.startRate as number;
      const startRateLimit =
        startRate > 0 ? { perMinute: startRate, burst: opts.startBurst as number } : undefined;
      const app = buildApiServer({
        sessions,
        metricsRegistry: createRelayMetrics(() => sessions.statuses()),
        logger,
        ...(trickleServer ? { trickleServer } : {}),
        ...(tls ? { tls } : {}),
        ...(apiToken !== undefined ? { apiToken } : {}),
        ...(startRateLimit ? { startRateLimit } : {}),
        ui: opts.ui as boolean,
      });
      const address = await app.listen({ host: opts.host as string, port: opts.port as number });
      logger.info(
        {
          address,
          trickle: trickleServer ? `${address}${TRICKLE_MOUNT_PATH}` : undefined,
          tls: tls !== undefined,
          auth:
            apiToken !== undefined
              ? "bearer token (GET /health, the trickle mount and GET /ui/ open)"
              : "none",
          startRateLimit: startRateLimit ?? "none",
        },
        "relay service listening",
      );
      process.stdout.write(`relay service listening on ${address}\n`);
      onShutdownSignal((signal) =>
        shutDown({
          signal,
          sessions,
          app,
          trickleServer,
          drainTimeoutMs: (opts.drainTimeout as number) * 1000,
          logger,
        }),
      );
    });
}

/**
 * Graceful shutdown: new sessions are refused (503) from the first moment; every running session is
 * stopped, which ends its output stream (DELETE of the output channel); after at most the drain
 * timeout the listener (and the in-process trickle server, which answered the end of stream to its
 * subscribers meanwhile) is closed and the process exits 0.
 */
async function shutDown(context: {
  signal: NodeJS.Signals;
  sessions: SessionManager;
  app: ApiServer;
  trickleServer: TrickleServer | undefined;
  drainTimeoutMs: number;
  logger: Logger;
}): Promise<void> {
  const { signal, sessions, app, trickleServer, drainTimeoutMs, logger } = context;
  const started = performance.now();
  const running = sessions.statuses().filter((s) => !["completed", "stopped", "failed"].includes(s.state));
  logger.info(
    { signal, running: running.map((s) => s.id), drainTimeoutSec: drainTimeoutMs / 1000 },
    "shutting down: refusing new sessions and stopping the running ones (a second signal exits at once)",
  );
  const left = await sessions.drain(drainTimeoutMs);
  const ms = Math.round(performance.now() - started);
  if (left.length > 0) {
    logger.warn({ sessions: left, ms }, "drain timeout passed with sessions still stopping; exiting anyway");
  } else {
    logger.info({ stopped: running.length, ms }, "every session stopped");
  }
  const closed = (async () => {
    // The trickle server first: it answers its waiting subscribers before connections are cut.
    await trickleServer?.close();
    await app.close();
  })();
  const grace = new Promise<void>((resolve) => setTimeout(resolve, CLOSE_GRACE_MS).unref());
  await Promise.race([
    closed.catch((err: unknown) => logger.warn({ err }, "closing the listener failed")),
    grace,
  ]);
  logger.info({ ms: Math.round(performance.now() - started) }, "relay service stopped");
  process.exit(0);
}

/** Both files or neither; each read now, so a bad path is reported at start, naming the file. */
function readTlsFiles(
  certPath: string | undefined,
  keyPath: string | undefined,
): { cert: Buffer; key: Buffer } | undefined {
  if (certPath === undefined && keyPath === undefined) return undefined;
  if (certPath === undefined) throw new Error("--tls-key needs --tls-cert (the certificate it belongs to)");
  if (keyPath === undefined) throw new Error("--tls-cert needs --tls-key (the certificate's private key)");
  const read = (flag: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`${flag} ${path} ${describeReadError(err)}`);
    }
  };
  const cert = read("--tls-cert", certPath);
  const key = read("--tls-key", keyPath);
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new Error(
      `--tls-cert ${certPath} and --tls-key ${keyPath} are not a usable PEM certificate and matching key: ${(err as Error).message}`,
    );
  }
  return { cert, key };
}

function parseNonNegativeNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`expected a number >= 0, got "${value}"`);
  return n;
}
