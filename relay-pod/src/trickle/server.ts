/**
 * Trickle server, wire-compatible with go-livepeer's reference server (GL `trickle/trickle_server.go`).
 * The authority is /work/shared/specs/trickle-protocol.md; section numbers below refer to it.
 *
 * Routes under `basePath` (§2): POST {ch} (create), DELETE {ch} (end of stream), GET {ch}/next,
 * GET|POST|DELETE {ch}/{seq}. Each channel keeps a ring of 5 segments, slot = seq % 5 (§4).
 *
 * This file routes and validates requests and answers the short ones. The rest, by concern:
 * server-channels.ts (channel set, idle sweep, changefeed), server-streams.ts (POST body into a
 * segment, segment out to a GET), server-segment.ts (segment storage), server-responses.ts (Go-like
 * answers on node:http).
 *
 * Choices where the reference is silent, crashes or races (§17) — all deliberate:
 * - seq <= -3 on any method → 400 "Invalid idx\n" (GL panics and drops the connection).
 * - seq -2 on POST or DELETE, and seq -1 on DELETE → 400 "Invalid idx\n" (GL panics).
 * - Non-integers (anything but an optional sign and decimal digits, e.g. "abc", "1.5", "0x10", "")
 *   and integers beyond 2^53 → 400 "Invalid idx\n" (like Go's strconv.Atoi). "next" is only a route
 *   for GET; POST/DELETE {ch}/next → 400 "Invalid idx\n".
 * - Re-POST of a seq whose segment is already complete: answered at once with the zero-byte
 *   completion (200, Connection: close, Lp-Trickle-Seq) and the body is discarded; the stored
 *   segment is unchanged. This is the outcome GL's race produced in the LAB trace (S15), made
 *   deterministic. Re-POST of a still-open seq appends to it (§5.1, like GL).
 * - A POST whose client aborts before sending any byte leaves the segment as it was (open, nextWrite
 *   unchanged), so a publisher may retry the same seq; after some bytes it gets 500 "Server error\n"
 *   (if the socket still exists; always for a malformed chunked body) and the segment is left open (§5.1).
 * - A zero-byte completion caused by DELETE {ch} does not move nextWrite, so waiters woken by the
 *   same DELETE report the pre-close Lp-Trickle-Latest (matches S13).
 * - Segment size cap (`maxSegmentBytes`, default 64 MiB; GL has none): a POST that would take a
 *   segment past the cap stores the bytes up to exactly the cap, closes the segment (subscribers end
 *   normally with those bytes), and gets 413 "Segment too large: limit is N bytes\n" with
 *   Connection: close; the rest of its body is discarded. Memory per segment is thus ≤ the cap.
 * - Channel names must be one path segment of 1..256 characters from [A-Za-z0-9._~!$&'()*+,;=:@-]
 *   (after percent-decoding), and not "." or "..". Others → 400 "Invalid stream name\n".
 *   Extra path segments or an empty name → 404 "404 page not found\n" (what Go's ServeMux says);
 *   an empty seq ("{ch}/") → 400 "Invalid idx\n".
 * - Other methods on a valid route → 405 with an Allow header.
 * - The idle sweep publishes one `{"removed":[name]}` changefeed segment per removed channel.
 * - Node adds `Date` and, on keep-alive connections, `Connection: keep-alive`/`Keep-Alive` headers
 *   that Go does not send; clients ignore them.
 */
import http from "node:http";
import type net from "node:net";
import { silentLogger, type Logger } from "../common/log.js";
import { ChannelStore, isValidChannelName } from "./server-channels.js";
import { CLOSED_VALUE, headerValue, respondAndClose, sendEmpty, sendTextError } from "./server-responses.js";
import { receiveSegment, streamSegment } from "./server-streams.js";

// Part of this module's API from before they moved out; importers keep using server.js.
export { CHANGEFEED_CHANNEL, isValidChannelName } from "./server-channels.js";

export interface TrickleServerOptions {
  /** Default "/ai/trickle/"; must start and end with "/" ("/" allowed). */
  basePath?: string;
  /** Default false (orchestrator behaviour). POST {ch} with Expect-Content creates; first POST {ch}/{seq} creates with its Content-Type. */
  autocreate?: boolean;
  /** Default false; `_changes` channel (§10). */
  changefeed?: boolean;
  /** Default 5 min; channels whose name starts with "_" are exempt (§5.8). */
  idleTimeoutMs?: number;
  /** Default 60 s. */
  sweepIntervalMs?: number;
  /** Default 10 s: interim "100 Continue" on POSTs still waiting for their first byte (§5.1). */
  keepAliveIntervalMs?: number;
  /** Default 64 MiB; see the header comment for what happens when a POST exceeds it. */
  maxSegmentBytes?: number;
  /** Channels pre-created at construction (default MIME application/octet-stream). */
  channels?: Array<{ name: string; mimeType?: string }>;
  logger?: Logger;
}

export const TRICKLE_DEFAULTS = {
  basePath: "/ai/trickle/",
  idleTimeoutMs: 5 * 60_000,
  sweepIntervalMs: 60_000,
  keepAliveIntervalMs: 10_000,
  maxSegmentBytes: 64 * 1024 * 1024,
  mimeType: "application/octet-stream",
} as const;

const SEQ_PATTERN = /^[+-]?[0-9]+$/;
/** How long close() lets final responses flush before it drops remaining connections. */
const CLOSE_GRACE_MS = 250;

type SeqParse = { ok: true; seq: number } | { ok: false };

/** Percent-decodes the {seq} path part; undecodable text stays as is and fails parseSeq. */
function decodeIndex(part: string | undefined): string | undefined {
  if (part === undefined) return undefined;
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function parseSeq(text: string): SeqParse {
  if (!SEQ_PATTERN.test(text)) return { ok: false };
  const seq = Number(text);
  return Number.isSafeInteger(seq) ? { ok: true, seq } : { ok: false };
}

export class TrickleServer {
  private readonly basePath: string;
  private readonly autocreate: boolean;
  private readonly keepAliveIntervalMs: number;
  private readonly maxSegmentBytes: number;
  private readonly logger: Logger;
  private readonly channels: ChannelStore;
  private httpServer: http.Server | undefined;
  private subscriberCount = 0;
  /** POSTs still reading their body, by socket: a malformed body (clientError) is answered by them. */
  private readonly publishesBySocket = new WeakMap<net.Socket, () => void>();

  constructor(options: TrickleServerOptions = {}) {
    this.basePath = options.basePath ?? TRICKLE_DEFAULTS.basePath;
    if (!this.basePath.startsWith("/") || !this.basePath.endsWith("/")) {
      throw new Error(`basePath must start and end with "/": ${JSON.stringify(this.basePath)}`);
    }
    this.autocreate = options.autocreate ?? false;
    this.keepAliveIntervalMs = options.keepAliveIntervalMs ?? TRICKLE_DEFAULTS.keepAliveIntervalMs;
    this.maxSegmentBytes = options.maxSegmentBytes ?? TRICKLE_DEFAULTS.maxSegmentBytes;
    if (!(this.maxSegmentBytes > 0)) throw new Error("maxSegmentBytes must be positive");
    this.logger = options.logger ?? silentLogger;
    this.channels = new ChannelStore({
      changefeed: options.changefeed ?? false,
      idleTimeoutMs: options.idleTimeoutMs ?? TRICKLE_DEFAULTS.idleTimeoutMs,
      logger: this.logger,
    });
    for (const channel of options.channels ?? []) this.createChannel(channel.name, channel.mimeType);
    this.channels.startSweep(options.sweepIntervalMs ?? TRICKLE_DEFAULTS.sweepIntervalMs);
  }

  /** The option value in effect (exposed so callers and tests can check defaults). */
  get keepAliveInterval(): number {
    return this.keepAliveIntervalMs;
  }

  /** Creates a channel if it does not exist (idempotent; the first MIME type wins). Throws on a bad name. */
  createChannel(name: string, mimeType: string = TRICKLE_DEFAULTS.mimeType): void {
    this.channels.create(name, mimeType);
  }

  /** Closes and removes a channel, like DELETE {ch} (§5.3). Returns false if it did not exist. */
  closeChannel(name: string): boolean {
    return this.channels.remove(name);
  }

  hasChannel(name: string): boolean {
    return this.channels.has(name);
  }

  stats(): { channels: number; segments: number; bufferedBytes: number; subscribers: number } {
    return { ...this.channels.totals(), subscribers: this.subscriberCount };
  }

  /**
   * Handles the request if its path is under basePath; returns false (touching nothing) otherwise,
   * so another node:http server can mount trickle next to its own routes.
   */
  handle(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const rawUrl = req.url ?? "";
    const queryAt = rawUrl.indexOf("?");
    const path = queryAt === -1 ? rawUrl : rawUrl.slice(0, queryAt);
    if (!path.startsWith(this.basePath)) return false;
    req.on("error", (err) => this.logger.debug({ err, url: rawUrl }, "trickle request stream error"));
    res.on("error", (err) => this.logger.debug({ err, url: rawUrl }, "trickle response stream error"));
    try {
      this.route(req, res, path.slice(this.basePath.length));
    } catch (err) {
      this.logger.error({ err, method: req.method, url: rawUrl }, "trickle handler failed");
      if (!res.headersSent) sendTextError(res, 500, "Server error");
      else res.destroy();
    }
    return true;
  }

  /** Listens on its own node:http server. Host defaults to loopback; pass "0.0.0.0" to serve other machines. */
  async listen(port: number, host = "127.0.0.1"): Promise<{ port: number; host: string; url: string }> {
    if (this.httpServer !== undefined) throw new Error("TrickleServer is already listening");
    const server = http.createServer({
      requestTimeout: 0, // GETs and POSTs are held open for as long as a segment lasts
      headersTimeout: 60_000,
      keepAliveTimeout: 10 * 60_000, // the orchestrator's idle keep-alive (§9)
      noDelay: true,
    });
    server.on("request", (req, res) => {
      if (!this.handle(req, res)) sendTextError(res, 404, "404 page not found");
    });
    // A client's `Expect: 100-continue` is answered at once, like Go (§5.1).
    server.on("checkContinue", (req: http.IncomingMessage, res: http.ServerResponse) => {
      res.writeContinue();
      server.emit("request", req, res);
    });
    server.on("clientError", (err, socket: net.Socket) => {
      this.logger.debug({ err }, "trickle client error");
      const failPublish = this.publishesBySocket.get(socket);
      if (failPublish !== undefined) {
        failPublish();
        return;
      }
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      else socket.destroy();
    });
    this.httpServer = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address() as net.AddressInfo;
    const urlHost = address.address.includes(":") ? `[${address.address}]` : address.address;
    const url = `http://${urlHost}:${address.port}${this.basePath}`;
    this.logger.info({ url }, "trickle server listening");
    return { port: address.port, host: address.address, url };
  }

  /** Closes every channel (waiters get their end-of-stream responses), stops the sweep, closes the listener. */
  async close(): Promise<void> {
    this.channels.close();
    const server = this.httpServer;
    if (server === undefined) return;
    this.httpServer = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
    await closed;
    clearTimeout(grace);
  }

  // ---------------------------------------------------------------------------------------------
  // Routing

  private route(req: http.IncomingMessage, res: http.ServerResponse, rest: string): void {
    const parts = rest.split("/");
    if (parts.length > 2 || parts[0] === "") {
      sendTextError(res, 404, "404 page not found");
      return;
    }
    let name: string;
    try {
      name = decodeURIComponent(parts[0] as string);
    } catch {
      sendTextError(res, 400, "Invalid stream name");
      return;
    }
    if (!isValidChannelName(name)) {
      sendTextError(res, 400, "Invalid stream name");
      return;
    }
    const method = req.method ?? "";
    const index = decodeIndex(parts[1]);
    if (index === undefined) {
      if (method === "POST") this.handleCreate(req, res, name);
      else if (method === "DELETE") this.handleDeleteChannel(res, name);
      else this.methodNotAllowed(res, "POST, DELETE");
      return;
    }
    if (method === "GET" && index === "next") this.handleNext(res, name);
    else if (method === "GET") this.handleSubscribe(req, res, name, index);
    else if (method === "POST") this.handlePublish(req, res, name, index);
    else if (method === "DELETE") this.handleDeleteSegment(res, name, index);
    else this.methodNotAllowed(res, "GET, POST, DELETE");
  }

  private methodNotAllowed(res: http.ServerResponse, allow: string): void {
    sendTextError(res, 405, "Method Not Allowed", { Allow: allow });
  }

  // ---------------------------------------------------------------------------------------------
  // Channel-level handlers

  /** POST {ch} (§5.7): 200 if it exists or autocreate made it, else 404. */
  private handleCreate(req: http.IncomingMessage, res: http.ServerResponse, name: string): void {
    req.resume();
    if (!this.channels.has(name)) {
      if (!this.autocreate) {
        sendTextError(res, 404, "Stream not found");
        return;
      }
      this.createChannel(name, headerValue(req, "expect-content") || TRICKLE_DEFAULTS.mimeType);
    }
    sendEmpty(res, 200);
  }

  /** DELETE {ch} (§5.3): unknown channel is 400, not 404. */
  private handleDeleteChannel(res: http.ServerResponse, name: string): void {
    if (!this.closeChannel(name)) {
      sendTextError(res, 400, "Invalid stream");
      return;
    }
    sendEmpty(res, 200);
  }

  /** GET {ch}/next (§3). */
  private handleNext(res: http.ServerResponse, name: string): void {
    const channel = this.channels.get(name);
    if (channel === undefined) {
      sendTextError(res, 404, "Stream not found");
      return;
    }
    const body = String(channel.nextWrite);
    const headers: Record<string, string | number> = {
      "Content-Type": "text/plain; charset=utf-8",
      "Lp-Trickle-Latest": body,
      "Content-Length": Buffer.byteLength(body),
    };
    if (channel.closed) headers["Lp-Trickle-Closed"] = CLOSED_VALUE;
    res.writeHead(200, headers);
    res.end(body);
  }

  // ---------------------------------------------------------------------------------------------
  // Segment-level handlers

  /** DELETE {ch}/{seq} (§5.5). */
  private handleDeleteSegment(res: http.ServerResponse, name: string, index: string): void {
    const channel = this.channels.get(name);
    if (channel === undefined) {
      sendTextError(res, 404, "Stream not found");
      return;
    }
    const parsed = parseSeq(index);
    if (!parsed.ok || parsed.seq < 0) {
      sendTextError(res, 400, "Invalid idx");
      return;
    }
    const segment = channel.find(parsed.seq);
    if (segment === undefined) {
      sendTextError(res, 400, "Nonexistent segment");
      return;
    }
    segment.close();
    sendEmpty(res, 200);
  }

  /** GET {ch}/{seq} (§4.2, §5.2). */
  private handleSubscribe(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    name: string,
    index: string,
  ): void {
    const channel = this.channels.get(name);
    if (channel === undefined) {
      sendTextError(res, 404, "Stream not found");
      return;
    }
    const parsed = parseSeq(index);
    if (!parsed.ok || parsed.seq <= -3) {
      sendTextError(res, 400, "Invalid idx");
      return;
    }
    const latestAtRequest = channel.nextWrite;
    let seq = parsed.seq;
    if (seq === -1) seq = latestAtRequest;
    else if (seq === -2) seq = latestAtRequest > 0 ? latestAtRequest - 1 : 0;
    let segment = channel.find(seq);
    if (segment === undefined) {
      // Grace for readers slightly ahead of the writer: wait on a pre-created segment (§4.2 step 3).
      const preCreate = !channel.closed && (seq === latestAtRequest || (latestAtRequest === 0 && seq === 1));
      if (!preCreate) {
        const body = "Entry not found";
        res.statusMessage = "status code 470";
        res.writeHead(470, {
          "Content-Type": "text/plain; charset=utf-8",
          "Lp-Trickle-Latest": String(latestAtRequest),
          "Lp-Trickle-Seq": String(seq),
          "Content-Length": Buffer.byteLength(body),
        });
        res.end(body);
        return;
      }
      segment = channel.install(seq);
    }
    req.resume();
    this.subscriberCount++;
    streamSegment(res, channel, segment, seq !== latestAtRequest ? latestAtRequest : undefined, () => {
      this.subscriberCount--;
    });
  }

  /** POST {ch}/{seq} (§4.1, §4.3, §5.1, §5.4). */
  private handlePublish(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    name: string,
    index: string,
  ): void {
    const parsed = parseSeq(index);
    let channel = this.channels.get(name);
    if (channel === undefined && this.autocreate && parsed.ok && parsed.seq >= -1) {
      this.createChannel(name, headerValue(req, "content-type") || TRICKLE_DEFAULTS.mimeType);
      channel = this.channels.get(name);
    }
    if (channel === undefined) {
      // Sent without reading the body: it also wakes idle preconnects (§5.1).
      respondAndClose(req, res, () => sendTextError(res, 404, "Stream not found"));
      return;
    }
    if (!parsed.ok || parsed.seq < -1) {
      respondAndClose(req, res, () => sendTextError(res, 400, "Invalid idx"));
      return;
    }
    const seq = parsed.seq === -1 ? channel.nextWrite : parsed.seq;
    if (headerValue(req, "lp-trickle-reset") !== "") {
      // A restarted publisher unblocks readers stuck on its earlier, half-written segments (§5.4).
      for (const segment of channel.ring) if (segment !== undefined && segment.seq < seq) segment.close();
    }
    receiveSegment(req, res, channel, seq, {
      maxSegmentBytes: this.maxSegmentBytes,
      keepAliveIntervalMs: this.keepAliveIntervalMs,
      log: this.logger.child({ channel: name, seq }),
      publishesBySocket: this.publishesBySocket,
    });
  }
}
