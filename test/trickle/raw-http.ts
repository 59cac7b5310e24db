/**
 * Small HTTP helpers for the trickle server tests: every request uses a fresh connection (no agent
 * pooling, so one test's held-open sockets never affect another), records interim 1xx responses and
 * the arrival time of every body chunk, and always gives up after a bounded time.
 */
import http from "node:http";
import net from "node:net";

export interface TimedChunk {
  at: number;
  data: Buffer;
}

export interface HttpResult {
  status: number;
  statusMessage: string;
  /** Lower-cased header names. */
  headers: http.IncomingHttpHeaders;
  body: string;
  bodyBytes: Buffer;
  chunks: TimedChunk[];
  /** Interim responses (e.g. 100 Continue) with their arrival time. */
  interim: Array<{ status: number; at: number }>;
  /** Time the response head arrived (ms since the request was opened). */
  headersAt: number;
  /** Time the body ended. */
  endAt: number;
}

export interface OpenRequest {
  req: http.ClientRequest;
  /** Resolves when the response body has ended (or rejects on error/timeout). */
  result: Promise<HttpResult>;
  /** Resolves as soon as the response head arrives. */
  headers: Promise<http.IncomingMessage>;
  interim: Array<{ status: number; at: number }>;
  startedAt: number;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  /** Give up (reject and destroy the socket) after this long. Default 5 s. */
  timeoutMs?: number;
}

/** Opens a request and leaves its body open; the caller writes/ends `req`. */
export function openRequest(url: string, options: RequestOptions = {}): OpenRequest {
  const startedAt = Date.now();
  const interim: Array<{ status: number; at: number }> = [];
  // Split by hand: WHATWG URL parsing would normalise paths such as "%2E%2E" that tests send on purpose.
  const parts = /^http:\/\/([^/:]+):(\d+)(\/.*)$/.exec(url);
  if (parts === null) throw new Error(`unsupported test URL: ${url}`);
  const req = http.request({
    host: parts[1],
    port: Number(parts[2]),
    path: parts[3],
    method: options.method ?? "GET",
    headers: options.headers ?? {},
    agent: false,
  });
  const timeoutMs = options.timeoutMs ?? 5000;
  let resolveHeaders!: (res: http.IncomingMessage) => void;
  let rejectHeaders!: (err: Error) => void;
  const headers = new Promise<http.IncomingMessage>((resolve, reject) => {
    resolveHeaders = resolve;
    rejectHeaders = reject;
  });
  headers.catch(() => {});
  const result = new Promise<HttpResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      const err = new Error(`request ${options.method ?? "GET"} ${url} timed out after ${timeoutMs} ms`);
      rejectHeaders(err);
      reject(err);
      req.destroy();
    }, timeoutMs);
    req.on("information", (info) => interim.push({ status: info.statusCode, at: Date.now() - startedAt }));
    req.on("error", (err) => {
      clearTimeout(timer);
      rejectHeaders(err);
      reject(err);
    });
    req.on("response", (res) => {
      const headersAt = Date.now() - startedAt;
      resolveHeaders(res);
      const chunks: TimedChunk[] = [];
      res.on("data", (data: Buffer) => chunks.push({ at: Date.now() - startedAt, data }));
      res.on("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      res.on("end", () => {
        clearTimeout(timer);
        const bodyBytes = Buffer.concat(chunks.map((chunk) => chunk.data));
        resolve({
          status: res.statusCode ?? 0,
          statusMessage: res.statusMessage ?? "",
          headers: res.headers,
          body: bodyBytes.toString("utf8"),
          bodyBytes,
          chunks,
          interim,
          headersAt,
          endAt: Date.now() - startedAt,
        });
      });
    });
  });
  result.catch(() => {});
  return { req, result, headers, interim, startedAt };
}

/** A complete request with an optional body. */
export function request(
  url: string,
  options: RequestOptions & { body?: string | Buffer } = {},
): Promise<HttpResult> {
  const open = openRequest(url, options);
  if (options.body !== undefined) open.req.end(options.body);
  else open.req.end();
  return open.result;
}

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits `ms` and tells whether `promise` is still unsettled then (for "this request must block" checks). */
export async function isStillPending(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await delay(ms);
  return !settled;
}

/**
 * Writes raw bytes to host:port and collects everything the server sends until it closes the
 * connection or `timeoutMs` passes. For byte-level checks (status line, reason phrase).
 */
export function rawExchange(port: number, text: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const received: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(Buffer.concat(received).toString("latin1"));
    }, timeoutMs);
    socket.on("connect", () => socket.write(text));
    socket.on("data", (data) => received.push(data));
    socket.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(received).toString("latin1"));
    });
  });
}
