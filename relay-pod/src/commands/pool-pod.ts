// `trickle-relay run --pool-pod`: the relay of a warm RelayPool pod. It warms up first (waits for
// its ComfyStream to answer, then sends a short synthetic stream through it with the pool's
// workflows, so that models are loaded and compiled before a real frame arrives), only then answers
// its readiness probe, idles until the operator claims the pod for a session, and then runs that
// session at once, exactly as `run --session` does. With --pool-recycle a cleanly ended session is
// followed by a ComfyStream health check and the next claim (the operator unclaims the pod once it
// sees the pod's recycled mark). Its state (warming, ready, allocated, draining)
// is on /metrics; the operator mirrors it in the pod label trickle-relay.io/pool-state.

import { createServer } from "node:http";
import { Gauge, Registry } from "prom-client";
import type { Logger } from "../common/log.js";
import { ProgressLine } from "../common/progress-line.js";
import { onShutdownSignal } from "../common/cli-options.js";
import { EXIT_CODES } from "../session/exit-codes.js";
import type { SessionStatus } from "../session/types.js";
import { createRelayMetrics } from "../report/metrics.js";
import { listenRetryingWhileInUse } from "../kube/pod-endpoints.js";
import type { SessionConfigInput } from "../session/config.js";
import { POOL_POD_STATES, type PoolPodState } from "../../../crds/src/index.js";
import { PeerHandover } from "../session/peer-handover.js";

export interface PoolPodOptions {
  comfystreamUrl: string;
  /** The pool's offer timeout (spec.template.comfystream.offerTimeoutSeconds). */
  offerTimeoutSeconds?: number;
  warmupSeconds: number;
  /** Longest wait for ComfyStream to answer at all (image pulls are done; its start is not). */
  warmupTimeoutMs: number;
  readyPort: number;
  /** spec.recycle: after a clean end, health check and back to idle (the operator unclaims the pod). */
  recycle?: boolean;
  /** The stream settings of the warm-up (size, rate, encoder) and the pod-side session settings. */
  session: Omit<SessionConfigInput, "id" | "inputUrl" | "comfystreamUrl">;
  logger: Logger;
}

const WARMUP_ATTEMPTS = 3;

export async function runPoolPod(options: PoolPodOptions): Promise<number> {
  const log = options.logger.child({ component: "pool-pod" });
  const namespace = process.env.POD_NAMESPACE;
  const name = process.env.POD_NAME;
  if (!namespace || !name) {
    process.stderr.write("trickle-relay: --pool-pod needs POD_NAMESPACE and POD_NAME (downward API)\n");
    return EXIT_CODES.configError;
  }
  const status = new PoolPodStatus();
  // The warm-up's ComfyStream connection stays open for the first session, and each cleanly ended
  // session's for the next: ComfyStream would not serve a new peer for ~30 s (peer-handover.ts).
  // A kept connection lost while idle (ComfyStream restarted, or closed it) means warming up again,
  // not Ready meanwhile: a session offering anew right after would get nothing for ~30 s.
  let rewarming: Promise<void> | undefined;
  let rewarmFailed = false;
  const handover = new PeerHandover(log, () => {
    if (status.state !== "ready" || rewarming) return;
    status.set("warming");
    log.warn("the kept ComfyStream connection was lost: warming up again");
    rewarming = warmUp(options, log, idle.signal, handover)
      .then((ok) => {
        if (ok) {
          status.set("ready");
          log.info("warm and idle again: ready for a session");
        } else if (!idle.signal.aborted) {
          rewarmFailed = true;
          idle.abort(); // the pool replaces this pod
        }
      })
      .finally(() => (rewarming = undefined));
  });
  // Listening may wait for the port (see serveReadiness); the warm-up need not wait with it.
  const server = serveReadiness(options.readyPort, status);
  server.listening.catch(() => undefined); // awaited below, before the pod can be Ready
  const idle = new AbortController();
  let stopSession: (() => Promise<void>) | undefined;
  onShutdownSignal(async (signal) => {
    log.info({ signal, state: status.state }, "stopping");
    status.set("draining");
    idle.abort();
    await stopSession?.();
    await handover.close();
  });

  try {
    const started = performance.now();
    if (!(await warmUp(options, log, idle.signal, handover))) {
      if (idle.signal.aborted) return EXIT_CODES.ended;
      process.stderr.write(
        "trickle-relay: the warm-up through ComfyStream failed; the pool replaces this pod\n",
      );
      return EXIT_CODES.failed;
    }
    await server.listening;
    status.warmupSeconds.set((performance.now() - started) / 1000);
    status.set("ready");
    log.info({ warmupSeconds: (performance.now() - started) / 1000 }, "warm and idle: ready for a session");

    const { loadClusterAccess } = await import("../kube/session-resource.js");
    const { markRecycled, waitForClaim } = await import("../kube/pool-claim.js");
    const { runSessionFromResource } = await import("../kube/resource-session.js");
    const kubeConfig = loadClusterAccess();
    for (let endedClaim: string | undefined; ;) {
      const claim = await waitForClaim(kubeConfig, { namespace, name }, idle.signal, log, endedClaim);
      if (rewarmFailed) {
        process.stderr.write(
          "trickle-relay: warming up again through ComfyStream failed; the pool replaces this pod\n",
        );
        return EXIT_CODES.failed;
      }
      if (!claim) return EXIT_CODES.ended;
      // Claimed while warming up again (the operator saw Ready just before): the session then
      // takes over the new connection.
      await rewarming;
      status.set("allocated");
      const claimed = claim.session;
      log.info({ session: `${claimed.namespace}/${claimed.name}` }, "claimed: starting the session");
      const code = await runSessionFromResource(claimed, {
        logger: options.logger,
        settings: {
          comfystreamUrl: options.comfystreamUrl,
          ...(options.offerTimeoutSeconds ? { offerTimeoutSeconds: options.offerTimeoutSeconds } : {}),
          iceAddresses: options.session.iceAddresses ?? [],
          insecureTls: options.session.insecureTls ?? false,
          ...(options.session.queueCapacities ? { queueCapacities: options.session.queueCapacities } : {}),
        },
        onShutdown: (stop) => (stopSession = stop),
        handover,
        exposeStatus: (getStatus) => (status.session = getStatus),
      });
      status.session = () => undefined;
      // Only a clean end is recycled: after a failure ComfyStream's state is unknown, the pod goes.
      if (!options.recycle || code !== EXIT_CODES.ended || idle.signal.aborted) return code;
      status.set("warming");
      if (!(await healthy(options.comfystreamUrl)) && !(await warmUp(options, log, idle.signal, handover))) {
        if (idle.signal.aborted) return EXIT_CODES.ended;
        process.stderr.write("trickle-relay: ComfyStream failed its health check after the session\n");
        return EXIT_CODES.failed;
      }
      status.set("ready");
      // The session's end and this pod's return to idle, in one mark the operator acts on.
      await markRecycled(kubeConfig, { namespace, name }, claim.allocatedAt, idle.signal);
      log.info({ session: `${claimed.namespace}/${claimed.name}` }, "session ended cleanly; idle again");
      endedClaim = claim.allocatedAt;
    }
  } finally {
    server.close();
    await handover.close();
  }
}

/** The pod's state for its readiness probe and /metrics. */
class PoolPodStatus {
  readonly registry = new Registry();
  state: PoolPodState = "warming";
  /** The claimed session's status, while one runs. */
  session: () => SessionStatus | undefined = () => undefined;
  readonly sessionRegistry = createRelayMetrics(() => {
    const current = this.session();
    return current ? [current] : [];
  });
  private readonly stateGauge = new Gauge({
    name: "trickle_relay_pool_pod_state",
    help: "1 for the warm pool pod's current state (warming, ready, allocated, draining)",
    labelNames: ["state"],
    registers: [this.registry],
  });
  readonly warmupSeconds = new Gauge({
    name: "trickle_relay_pool_pod_warmup_seconds",
    help: "How long this pod's warm-up took (ComfyStream up, synthetic stream through it)",
    registers: [this.registry],
  });

  constructor() {
    this.set("warming");
  }

  set(state: PoolPodState): void {
    this.state = state;
    for (const each of POOL_POD_STATES) this.stateGauge.set({ state: each }, each === state ? 1 : 0);
  }
}

/** /readyz: 200 only while warm and idle (the operator hands out Ready pods only); /metrics. */
function serveReadiness(port: number, status: PoolPodStatus): { listening: Promise<void>; close(): void } {
  const server = createServer((request, response) => {
    if (request.url === "/readyz") {
      const ready = status.state === "ready";
      response.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(status.state);
    } else if (request.url === "/metrics") {
      // The pod's pool state, and the claimed session's own metrics (the same names `serve` and a
      // per-session pod expose), so the dashboard's per-session panels cover pooled sessions too.
      void Promise.all([status.registry.metrics(), status.sessionRegistry.metrics()]).then(
        ([pool, session]) => {
          response.writeHead(200, { "content-type": status.registry.contentType }).end(`${pool}\n${session}`);
        },
      );
    } else {
      response.writeHead(404).end();
    }
  });
  // Where pods share the node's network (hostNetwork), the port may still be held for a moment by
  // the pool pod this one replaces. Until it listens the probe fails, so the pod is not Ready.
  return listenRetryingWhileInUse(server, port);
}

/**
 * ComfyStream answers (any HTTP reply), then, unless warmupSeconds is 0, a synthetic stream of that
 * length goes through it with the pool's workflows (the demo's pipeline: trickle server, test pattern,
 * one relay session) and must come back. False when it never worked or a stop came first.
 */
async function warmUp(
  options: PoolPodOptions,
  log: Logger,
  signal: AbortSignal,
  handover: PeerHandover,
): Promise<boolean> {
  const deadline = Date.now() + options.warmupTimeoutMs;
  for (;;) {
    if (signal.aborted) return false;
    try {
      await fetch(options.comfystreamUrl, { signal: AbortSignal.timeout(5000) });
      break;
    } catch {
      if (Date.now() > deadline) {
        log.error({ comfystream: options.comfystreamUrl }, "ComfyStream never answered");
        return false;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  if (options.warmupSeconds === 0) return true;
  const { runDemo } = await import("../demo/demo.js");
  for (let attempt = 1; attempt <= WARMUP_ATTEMPTS && !signal.aborted; attempt++) {
    const code = await runDemo(
      {
        duration: options.warmupSeconds,
        out: "/tmp/trickle-relay-warmup",
        comfystream: options.comfystreamUrl,
        filter: "null",
        session: { ...options.session, prompts: warmupPrompts(options.session.prompts) },
        handover,
      },
      log,
      new ProgressLine(process.stderr),
    );
    if (code === 0) return true;
    log.warn({ attempt, code }, "warm-up stream failed; trying again");
  }
  return false;
}

/** ComfyStream answers at all (any HTTP reply) within 5 s. */
async function healthy(comfystreamUrl: string): Promise<boolean> {
  try {
    await fetch(comfystreamUrl, { signal: AbortSignal.timeout(5000) });
    return true;
  } catch {
    return false;
  }
}

/** The pool's warm-up workflows (TRICKLE_RELAY_WARMUP_PROMPTS, JSON), else the session default. */
function warmupPrompts(fallback: unknown): unknown {
  const json = process.env.TRICKLE_RELAY_WARMUP_PROMPTS;
  if (!json) return fallback;
  try {
    return JSON.parse(json);
  } catch {
    return fallback;
  }
}
