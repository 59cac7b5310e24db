/**
 * How the trickle server answers on node:http so that it looks like go-livepeer's server: Go's
 * http.Error text bodies, empty bodies, and the "answer early, then close" path that must not lose
 * its answer to a TCP reset. Separate because both the routing (server.ts) and the streaming
 * halves (server-streams.ts) answer this way.
 */
import type http from "node:http";
import type net from "node:net";

/** Value of `Lp-Trickle-Closed` once a channel has ended (§5.2, §5.3). */
export const CLOSED_VALUE = "terminated";
/** How long a connection we answered early keeps draining the client's body before we drop it (Go: 500 ms). */
const LINGER_MS = 500;

/** Go's http.Error: plain text, nosniff, message + "\n". */
export function sendTextError(
  res: http.ServerResponse,
  status: number,
  message: string,
  extraHeaders: Record<string, string> = {},
): void {
  const body = `${message}\n`;
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "X-Content-Type-Options": "nosniff",
    "Content-Length": Buffer.byteLength(body),
    ...extraHeaders,
  });
  res.end(body);
}

export function sendEmpty(
  res: http.ServerResponse,
  status: number,
  headers: Record<string, string | number> = {},
): void {
  res.writeHead(status, { ...headers, "Content-Length": 0 });
  res.end();
}

/**
 * After a response with `Connection: close` that may precede the end of the request body, Node would
 * destroy the socket as soon as the response is flushed; unread body bytes then make the kernel send
 * a RST, which can make the client lose our response. Instead half-close, keep draining, and drop the
 * socket after LINGER_MS or when the client closes (what Go's server does).
 */
function lingerOnClose(socket: net.Socket): void {
  const lingering = socket as net.Socket & { destroySoon?: () => void };
  lingering.destroySoon = () => {
    socket.end();
    socket.resume();
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    timer.unref();
    socket.once("close", () => clearTimeout(timer));
  };
}

/** Sends a final response that may precede the end of the request body, then drops the connection. */
export function respondAndClose(req: http.IncomingMessage, res: http.ServerResponse, send: () => void): void {
  if (res.headersSent) return;
  res.setHeader("Connection", "close");
  lingerOnClose(req.socket);
  req.resume();
  send();
}

export function headerValue(req: http.IncomingMessage, name: string): string {
  const value = req.headers[name];
  return (Array.isArray(value) ? value[0] : value) ?? "";
}
