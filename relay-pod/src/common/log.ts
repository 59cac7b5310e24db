import pino, { type Logger } from "pino";
import { prettyFactory } from "pino-pretty";

export type { Logger };

export interface LoggerOptions {
  level?: string;
  /** Human-readable lines instead of JSON; default: when stderr is a terminal (see createLogger). */
  pretty?: boolean;
  /**
   * Where human-readable lines go (default stderr). A command that draws its own progress line on
   * the terminal passes a writer that moves that line out of the way first.
   */
  writePretty?: (text: string) => void;
}

/**
 * The process logger: JSON lines by default (what log shippers expect), human-readable when
 * stderr is a terminal, unless TRICKLE_RELAY_LOG_JSON=1. Level from TRICKLE_RELAY_LOG_LEVEL
 * (default "info").
 *
 * Human-readable lines are formatted in this thread and written synchronously, in order with the
 * process's other output (a worker-thread transport would write to the terminal on its own
 * schedule, in the middle of a progress line, and loses what is logged just before exit).
 */
export function createLogger(name: string, options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env.TRICKLE_RELAY_LOG_LEVEL ?? "info";
  const pretty =
    options.pretty ?? (process.stderr.isTTY === true && process.env.TRICKLE_RELAY_LOG_JSON !== "1");
  if (pretty) {
    const format = prettyFactory({ colorize: process.stderr.isTTY === true });
    const writePretty = options.writePretty ?? ((text: string) => process.stderr.write(text));
    return pino({ name, level }, { write: (line: string) => writePretty(format(line)) });
  }
  return pino({ name, level }, pino.destination({ dest: 2, sync: false }));
}

/** A logger that drops everything, for library code used without a caller-supplied logger. */
export const silentLogger: Logger = pino({ level: "silent" });
