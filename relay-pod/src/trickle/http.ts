/**
 * Low-level HTTP plumbing shared by the trickle publisher and subscriber.
 *
 * Uses node:http / node:https directly (spec §8, §14 Client 5): they expose interim 1xx responses
 * ('information'), deliver a final response that arrives before the request body is finished, and
 * stream chunked request bodies without a Content-Length.
 */
import http from "node:http";
import https from "node:https";

/** Trickle header names, lower-cased as node exposes them (spec §6). */
export const TrickleHeader = {
  seq: "lp-trickle-seq",
  latest: "lp-trickle-latest",
  closed: "lp-trickle-closed",
  reset: "lp-trickle-reset",
} as const;

/** Upper bound for bodies read into memory for error messages and small control replies. */
const SMALL_BODY_LIMIT_BYTES = 64 * 1024;

/**
 * A keep-alive agent per client. Keep-alive lets sequential requests reuse sockets, and the
 * default unlimited `maxSockets` means an idle preconnected POST or a blocked GET (spec §5.6) holds
 * its own socket and never queues other requests behind it.
 */
export function createTrickleAgent(url: URL, insecureTls: boolean): http.Agent {
  if (url.protocol === "https:") {
    // Orchestrators normally serve self-signed certificates (spec §8).
    return new https.Agent({ keepAlive: true, rejectUnauthorized: !insecureTls });
  }
  if (url.protocol === "http:") return new http.Agent({ keepAlive: true });
  throw new Error(`unsupported trickle URL protocol ${url.protocol} in ${url.href}`);
}

/** Parses and normalises a channel URL: no trailing slash, so `${channel}/${seq}` is well formed. */
export function parseChannelUrl(channelUrl: string): URL {
  const url = new URL(channelUrl);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`unsupported trickle URL protocol ${url.protocol} in ${channelUrl}`);
  }
  url.pathname = url.pathname.replace(/\/+$/, "");
  url.search = "";
  url.hash = "";
  return url;
}

/** `{channel}/{suffix}` (a seq or `next`). */
export function channelChildUrl(channel: URL, suffix: string | number): URL {
  const child = new URL(channel.href);
  child.pathname = `${channel.pathname}/${suffix}`;
  return child;
}

export interface StartRequestOptions {
  method: string;
  headers?: http.OutgoingHttpHeaders;
  agent: http.Agent;
}

/** Starts a request without sending a body; the caller writes, ends or destroys it. */
export function startRequest(url: URL, options: StartRequestOptions): http.ClientRequest {
  const requestFn = url.protocol === "https:" ? https.request : http.request;
  return requestFn(url, { method: options.method, headers: options.headers, agent: options.agent });
}

export interface BufferedResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * A request with an optional small body whose response is read whole (capped): `/next`,
 * `DELETE`. Rejects on network errors and on `timeoutMs` without a complete response.
 */
export function requestBuffered(
  url: URL,
  options: StartRequestOptions & { body?: string; timeoutMs?: number },
): Promise<BufferedResponse> {
  return new Promise((resolve, reject) => {
    const req = startRequest(url, options);
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            req.destroy(new Error(`${options.method} ${url.href} timed out after ${options.timeoutMs} ms`));
          }, options.timeoutMs);
    req.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    req.on("response", (res) => {
      readSmallBody(res).then(
        (body) => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        },
        (error: Error) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
    req.end(options.body);
  });
}

/** Reads a response body as text up to a cap (the rest is drained and ignored). */
export async function readSmallBody(
  res: http.IncomingMessage,
  limitBytes = SMALL_BODY_LIMIT_BYTES,
): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    if (size < limitBytes) {
      const part = chunk.subarray(0, limitBytes - size);
      chunks.push(part);
      size += part.length;
    }
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** First value of a header (node joins or arrays some duplicates). */
export function headerValue(headers: http.IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  if (Array.isArray(value)) return value[0];
  return value;
}

/**
 * A decimal header value as an integer, or undefined when absent, not an integer, or beyond
 * Number.MAX_SAFE_INTEGER (where seq + 1 === seq and gap counts would be nonsense).
 */
export function integerHeader(headers: http.IncomingHttpHeaders, name: string): number | undefined {
  const value = headerValue(headers, name)?.trim();
  if (value === undefined || !/^-?\d{1,16}$/.test(value)) return undefined;
  const parsed = Number.parseInt(value, 10);
  return Number.isSafeInteger(parsed) ? parsed : undefined;
}

/** End of stream is signalled by the presence of `Lp-Trickle-Closed`, whatever its value (spec §6). */
export function hasClosedHeader(headers: http.IncomingHttpHeaders): boolean {
  return headers[TrickleHeader.closed] !== undefined;
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export function toError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}
