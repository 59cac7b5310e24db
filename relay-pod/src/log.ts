import pino, { type Logger } from "pino";

export type { Logger };

/**
 * The process logger: JSON lines by default (what log shippers expect), human-readable when
 * stderr is a terminal. Level from TRICKLE_RELAY_LOG_LEVEL (default "info").
 */
export function createLogger(name: string, options: { level?: string; pretty?: boolean } = {}): Logger {
  const level = options.level ?? process.env.TRICKLE_RELAY_LOG_LEVEL ?? "info";
  const pretty =
    options.pretty ?? (process.stderr.isTTY === true && process.env.TRICKLE_RELAY_LOG_JSON !== "1");
  if (pretty) {
    return pino({
      name,
      level,
      transport: { target: "pino-pretty", options: { destination: 2, colorize: true } },
    });
  }
  return pino({ name, level }, pino.destination({ dest: 2, sync: false }));
}

/** A logger that drops everything, for library code used without a caller-supplied logger. */
export const silentLogger: Logger = pino({ level: "silent" });
