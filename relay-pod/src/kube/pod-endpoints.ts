/**
 * The relay pod's HTTP endpoints, for the kubelet's probes and for Prometheus (`run --session`):
 *   /healthz  200 while the process answers (liveness: a wedged event loop answers nothing);
 *   /readyz   200 while the session runs with ComfyStream connected, else 503 with the state;
 *   /metrics  the session's Prometheus metrics, the same names `serve` exposes.
 * The operator points the relay container's probes and its `metrics` port here (RELAY_ENDPOINTS_PORT,
 * the same port a warm pool pod answers on). Where pods share the node's network, the port may
 * still be held for a moment by the pod this one replaces: binding is retried, not fatal.
 */
import { createServer, type Server } from "node:http";
import type { Logger } from "../common/log.js";
import { createRelayMetrics } from "../report/metrics.js";
import type { SessionStatus } from "../session/types.js";

/** The port of the relay pod's endpoints (and a pool pod's /readyz). */
export const RELAY_ENDPOINTS_PORT = 8892;
const BIND_RETRY_MS = 1000;
const BIND_RETRY_FOR_MS = 60_000;

export interface PodEndpoints {
  close(): void;
}

/** Serves the endpoints on `port` for the session `status()` gives (undefined before it exists). */
export function servePodEndpoints(
  port: number,
  status: () => SessionStatus | undefined,
  log: Logger,
): PodEndpoints {
  const registry = createRelayMetrics(() => {
    const current = status();
    return current ? [current] : [];
  });
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (path === "/healthz") {
      response.writeHead(200, { "content-type": "text/plain" }).end("ok");
    } else if (path === "/readyz") {
      const current = status();
      const ready = current?.state === "running" && current.webrtcState === "connected";
      response
        .writeHead(ready ? 200 : 503, { "content-type": "text/plain" })
        .end(current ? `${current.state}, WebRTC ${current.webrtcState}` : "starting");
    } else if (path === "/metrics") {
      registry.metrics().then(
        (text) => response.writeHead(200, { "content-type": registry.contentType }).end(text),
        (err: unknown) => response.writeHead(500).end((err as Error).message),
      );
    } else {
      response.writeHead(404).end();
    }
  });
  const listener = listenRetryingWhileInUse(server, port);
  listener.listening.then(
    () => log.info({ port }, "pod endpoints: /healthz /readyz /metrics"),
    (err: Error) =>
      log.error({ err: err.message, port }, "the pod's health and metrics endpoints cannot listen"),
  );
  return {
    close: () => {
      listener.close();
      server.closeAllConnections();
    },
  };
}

/**
 * Listens on `port`, retrying every second for up to a minute while the port is in use (a pod
 * replacing another on the node's network: the old one may still hold it). `listening` resolves
 * once bound and rejects on any other error or when the minute is up; `close` stops the retries.
 */
export function listenRetryingWhileInUse(
  server: Server,
  port: number,
): { listening: Promise<void>; close(): void } {
  let closed = false;
  const started = Date.now();
  const listening = new Promise<void>((resolve, reject) => {
    server.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE" && !closed && Date.now() - started < BIND_RETRY_FOR_MS) {
        setTimeout(() => closed || server.listen(port), BIND_RETRY_MS).unref();
        return;
      }
      reject(err);
    });
    server.once("listening", () => resolve());
    server.listen(port);
  });
  return {
    listening,
    close: () => {
      closed = true;
      server.close();
    },
  };
}
