import pino, { type Logger } from "pino";

export interface CapturedLogger {
  logger: Logger;
  /** Parsed JSON log lines. */
  lines: Array<{ level: number; msg?: string; [key: string]: unknown }>;
  /** Lines at warn (40) or above. */
  problems(): Array<{ level: number; msg?: string }>;
}

/** A pino logger that keeps its lines in memory, so tests can assert what was (not) logged. */
export function captureLogger(): CapturedLogger {
  const lines: CapturedLogger["lines"] = [];
  const logger = pino(
    { level: "debug" },
    {
      write(line: string) {
        lines.push(JSON.parse(line) as CapturedLogger["lines"][number]);
      },
    },
  );
  return { logger, lines, problems: () => lines.filter((line) => line.level >= 40) };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `probe` every 25 ms until it returns something other than undefined/false. */
export async function eventually<T>(
  what: string,
  timeoutMs: number,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(25);
  }
}
