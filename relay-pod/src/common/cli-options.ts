import { InvalidArgumentError } from "commander";

/** Shared option parsers: each turns a bad value into a message that says what was expected. */

export function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidArgumentError(`expected a TCP port 0-65535, got "${value}"`);
  }
  return port;
}

export function parsePositiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0)
    throw new InvalidArgumentError(`expected a positive number, got "${value}"`);
  return n;
}

export function parsePositiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0)
    throw new InvalidArgumentError(`expected a positive integer, got "${value}"`);
  return n;
}

/** Frame sizes: 64-2048 and a multiple of 8 (what the RelaySession API allows). */
export function parseDimension(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 64 || n > 2048 || n % 8 !== 0) {
    throw new InvalidArgumentError(`expected a size in pixels, 64-2048 and a multiple of 8; got "${value}"`);
  }
  return n;
}

/** kbit/s, 100-50000 (what the RelaySession API allows for spec.video.bitrateKbps). */
export function parseBitrateKbps(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 100 || n > 50_000) {
    throw new InvalidArgumentError(`expected a bitrate in kbit/s, an integer 100-50000; got "${value}"`);
  }
  return n;
}

/** Seconds, 0.25-10 (what the RelaySession API allows for spec.video.keyframeIntervalSeconds). */
export function parseKeyframeInterval(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0.25 || n > 10) {
    throw new InvalidArgumentError(`expected a keyframe interval in seconds, 0.25-10; got "${value}"`);
  }
  return n;
}

export function parseSeq(value: string): number {
  if (!/^-?\d+$/.test(value))
    throw new InvalidArgumentError(`expected an integer sequence number, got "${value}"`);
  const n = Number(value);
  if (n < -2)
    throw new InvalidArgumentError(`sequence numbers are >= 0, or -1 (next) / -2 (current); got ${n}`);
  return n;
}

export function parseHttpUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(`expected an http(s) URL, got "${value}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new InvalidArgumentError(`expected an http(s) URL, got "${value}"`);
  }
  return value;
}

/** For repeatable options: `--x a --x b` → ["a", "b"]. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * Waits for SIGINT or SIGTERM, then runs `stop`; a second signal of either kind exits at once
 * (status 130). The handlers stay installed after the first signal: with `once`, a second SIGTERM
 * found none and killed the process by the signal instead.
 */
export function onShutdownSignal(stop: (signal: NodeJS.Signals) => Promise<void> | void): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      process.stderr.write(`${signal} again: exiting without waiting for the shutdown to finish\n`);
      process.exit(130);
    }
    stopping = true;
    void Promise.resolve(stop(signal)).catch((err: unknown) => {
      process.stderr.write(`error while stopping: ${(err as Error).message}\n`);
      process.exitCode = 1;
    });
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
}
