/**
 * A scripted HTTP(S) server for trickle client tests: every request is recorded (method, path,
 * headers, body, timing) and answered by the test's own handler, so a test states exactly what the
 * server says and asserts exactly what the client asked. Not a trickle server: it knows nothing of
 * the protocol.
 */
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";

export interface RecordedRequest {
  /** Order of arrival, from 0. */
  index: number;
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  /** ms since the server started, when the request headers arrived. */
  receivedAt: number;
  /** ms since the server started, when the body ended (undefined while not fully read). */
  bodyEndedAt: number | undefined;
  /** The body as read so far (only what readBody() consumed). */
  body: Buffer;
  /** Reads the request body to its end (idempotent). Rejects if the client aborts. */
  readBody(): Promise<Buffer>;
  /** True once the client's connection for this request closed. */
  readonly socketClosed: boolean;
  req: http.IncomingMessage;
  res: http.ServerResponse;
}

export type ScriptedHandler = (request: RecordedRequest) => void | Promise<void>;

export interface ScriptedServer {
  /** Base URL, e.g. http://127.0.0.1:PORT */
  url: string;
  requests: RecordedRequest[];
  /** Resolves when at least `count` requests arrived (optionally matching), or rejects after timeoutMs. */
  waitForRequests(
    count: number,
    timeoutMs?: number,
    filter?: (request: RecordedRequest) => boolean,
  ): Promise<RecordedRequest[]>;
  /** ms since the server started. */
  now(): number;
  close(): Promise<void>;
}

export interface ScriptedServerOptions {
  tls?: { key: string | Buffer; cert: string | Buffer };
}

export async function startScriptedServer(
  handler: ScriptedHandler,
  options: ScriptedServerOptions = {},
): Promise<ScriptedServer> {
  const startedAt = performance.now();
  const now = () => performance.now() - startedAt;
  const requests: RecordedRequest[] = [];
  const arrivalWaiters = new Set<() => void>();

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    let bodyPromise: Promise<Buffer> | undefined;
    let socketClosed = false;
    req.socket.once("close", () => (socketClosed = true));
    const recorded: RecordedRequest = {
      index: requests.length,
      method: req.method ?? "",
      path: req.url ?? "",
      headers: req.headers,
      receivedAt: now(),
      bodyEndedAt: undefined,
      body: Buffer.alloc(0),
      get socketClosed() {
        return socketClosed;
      },
      readBody() {
        bodyPromise ??= new Promise<Buffer>((resolve, reject) => {
          req.on("data", (chunk: Buffer) => {
            recorded.body = Buffer.concat([recorded.body, chunk]);
          });
          req.once("end", () => {
            recorded.bodyEndedAt = now();
            resolve(recorded.body);
          });
          req.once("error", reject);
          req.once("aborted", () => reject(new Error("client aborted the request")));
        });
        return bodyPromise;
      },
      req,
      res,
    };
    requests.push(recorded);
    for (const wake of [...arrivalWaiters]) wake();
    Promise.resolve()
      .then(() => handler(recorded))
      .catch((error: unknown) => {
        if (!res.headersSent) {
          res.statusCode = 599;
          res.end(`scripted handler failed: ${String(error)}`);
        } else res.destroy();
      });
  };

  const server = options.tls ? https.createServer(options.tls, onRequest) : http.createServer(onRequest);
  // Idle keep-alive sockets must not hold up close().
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;

  return {
    url: `${options.tls ? "https" : "http"}://127.0.0.1:${port}`,
    requests,
    now,
    waitForRequests(count, timeoutMs = 5000, filter = () => true) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const matching = requests.filter(filter);
          if (matching.length >= count) {
            arrivalWaiters.delete(check);
            clearTimeout(timer);
            resolve(matching);
          }
        };
        const timer = setTimeout(() => {
          arrivalWaiters.delete(check);
          const seen = requests.map((r) => `${r.method} ${r.path}`).join(", ");
          reject(new Error(`timed out waiting for ${count} requests; saw: ${seen}`));
        }, timeoutMs);
        arrivalWaiters.add(check);
        check();
      });
    },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/** Splits a recorded path like /ai/trickle/vid/12 into its last segment. */
export function lastPathPart(request: RecordedRequest): string {
  return request.path.split("/").at(-1) ?? "";
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Reads a whole async iterable of buffers. */
export async function collect(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Sends a raw interim `100 Continue` (what the GL server emits every 10 s on an idle POST, spec §5.1). */
export function sendContinue(res: http.ServerResponse): void {
  res.writeContinue();
}
