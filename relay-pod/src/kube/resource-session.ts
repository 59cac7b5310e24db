// `trickle-relay run --session NS/NAME`: the relay pod's whole job (operator/README.md, "The relay
// process"). Read the RelaySession, run the session its spec describes, keep ComfyStream on the
// spec's current prompts, write status.relay, and end with an exit code the operator reads as the
// pod's phase.

import type { KubeAccess } from "./api-client.js";
import type { Logger } from "../common/log.js";
import type { RelaySession as RelaySessionResource } from "../../../crds/src/index.js";
import { buildRelayReport } from "../report/relay-report.js";
import { kubeRelayReportWriter, RelayStatusReporter } from "./status-reporter.js";
import { RelaySession } from "../session/relay-session.js";
import type { PeerHandover } from "../session/peer-handover.js";
import {
  sessionConfigFromResource,
  SessionSpecError,
  type PodSessionSettings,
} from "./config-from-resource.js";
import { RelaySessionWatch } from "./resource-watch.js";
import {
  formatSessionRef,
  loadClusterAccess,
  readRelaySession,
  SessionResourceError,
  type SessionRef,
} from "./session-resource.js";
import { SpecPromptsSync } from "./spec-prompts-sync.js";
import { servePodEndpoints } from "./pod-endpoints.js";
import type { SessionStatus } from "../session/types.js";
import { EXIT_CODES } from "../session/exit-codes.js";

export interface ResourceSessionOptions {
  logger: Logger;
  /** Pod-side settings (ICE addresses, queue sizes, TLS policy); the rest comes from the spec. */
  settings?: PodSessionSettings;
  /** Period of status.relay writes (ms). Default 1000. */
  reportIntervalMs?: number;
  /** Called every `statusLogIntervalMs` with the session's status, for a log line. */
  logStatus?: (status: SessionStatus) => void;
  statusLogIntervalMs?: number;
  /** How long to keep retrying the first read while the apiserver is unreachable (ms). Default 60 000. */
  readRetryMs?: number;
  /** Registers the stop handler (SIGTERM/SIGINT in the CLI). */
  onShutdown?: (stop: () => Promise<void>) => void;
  /** Cluster access to use instead of loading the default kube config (api-client.ts). */
  kubeConfig?: KubeAccess;
  /** Serve /healthz, /readyz and /metrics on this port (pod-endpoints.ts); none when unset. */
  endpointsPort?: number;
  /** Given a getter of the running session's status (a pool pod serves its metrics on its own port). */
  exposeStatus?: (status: () => SessionStatus | undefined) => void;
  /** A warm pool pod's kept ComfyStream connection (session/peer-handover.ts). */
  handover?: PeerHandover;
}

export async function runSessionFromResource(
  ref: SessionRef,
  options: ResourceSessionOptions,
): Promise<number> {
  const log = options.logger.child({ relaySession: formatSessionRef(ref) });
  const running: { session?: RelaySession } = {};
  options.exposeStatus?.(() => running.session?.status());
  // From the start: the kubelet's startup probe asks while the RelaySession is still being read.
  const endpoints =
    options.endpointsPort === undefined
      ? undefined
      : servePodEndpoints(options.endpointsPort, () => running.session?.status(), log);
  try {
    return await runSession(ref, options, log, running);
  } finally {
    endpoints?.close();
  }
}

async function runSession(
  ref: SessionRef,
  options: ResourceSessionOptions,
  log: Logger,
  running: { session?: RelaySession },
): Promise<number> {
  // Registered first: a SIGTERM while the RelaySession is still being read is a clean stop too.
  let stopRequested = false;
  options.onShutdown?.(async () => {
    stopRequested = true;
    // A SIGTERM while the RelaySession lives on (not being deleted) means this pod is being replaced
    // (a restart after a fault, an eviction): the output stream is not over, and ending its channel
    // would make a trickle server that does not create channels on publish (go-livepeer's) refuse
    // the next pod. Only a RelaySession that is gone or being deleted ends the stream.
    const endOutput = await sessionIsEnding(options.kubeConfig, ref, log);
    log.info({ endOutput }, "stopping on request");
    await running.session?.stop({ endOutput });
  });

  let kubeConfig: KubeAccess;
  let resource: RelaySessionResource;
  let session: RelaySession;
  let offerTimeoutMs: number;
  try {
    kubeConfig = options.kubeConfig ?? loadClusterAccess();
    const read = await readWithRetry(
      kubeConfig,
      ref,
      options.readRetryMs ?? 60_000,
      log,
      () => stopRequested,
    );
    if (!read) return EXIT_CODES.ended;
    resource = read;
    const built = sessionConfigFromResource(resource, options.settings);
    for (const note of built.notes) log.info(note);
    offerTimeoutMs = built.offerTimeoutMs;
    session = new RelaySession(built.config, {
      logger: options.logger,
      offerTimeoutMs,
      ...(options.handover ? { handover: options.handover } : {}),
    });
  } catch (err) {
    if (err instanceof SessionResourceError || err instanceof SessionSpecError) {
      log.error({ err: err.message }, "cannot run the relay session");
      process.stderr.write(`trickle-relay: ${err.message}\n`);
      return EXIT_CODES.configError;
    }
    log.error({ err: (err as Error).message }, "cannot read the RelaySession");
    process.stderr.write(`trickle-relay: cannot read the RelaySession: ${(err as Error).message}\n`);
    return EXIT_CODES.failed;
  }

  let promptsError: { component: string; message: string; time: string } | undefined;
  const reporter = new RelayStatusReporter({
    snapshot: () =>
      buildRelayReport(session.status(), {
        appliedPromptsGeneration: prompts.appliedGeneration,
        lastError: promptsError,
      }),
    write: kubeRelayReportWriter(kubeConfig, ref),
    ...(options.reportIntervalMs ? { intervalMs: options.reportIntervalMs } : {}),
    logger: log,
  });
  const prompts = new SpecPromptsSync(
    session,
    resource.metadata.generation ?? 1,
    resource.spec.prompts,
    {
      onApplied: () => reporter.stateChanged(),
      onRejected: (generation, error) => {
        promptsError = {
          component: "comfystream",
          message: `spec.prompts of generation ${generation} not applied: ${error}`.slice(0, 4096),
          time: new Date().toISOString(),
        };
        reporter.stateChanged();
      },
    },
    log,
  );
  session.on("status", () => reporter.stateChanged());

  let deleted = false;
  const uid = resource.metadata.uid;
  const onDeleted = () => {
    if (deleted) return;
    deleted = true;
    log.info("the RelaySession is gone; stopping");
    reporter.stop(); // nothing left to report to
    void session.stop();
  };
  const watch = new RelaySessionWatch(kubeConfig, ref, {
    logger: log,
    onObject: (object) => {
      // Same name, new object: ours was deleted while the watch was down.
      if (uid && object.metadata?.uid && object.metadata.uid !== uid) return onDeleted();
      prompts.observe(object.metadata?.generation, object.spec?.prompts);
    },
    onDeleted,
  });

  if (stopRequested) return EXIT_CODES.ended;
  running.session = session;
  reporter.start();
  watch.start(resource.metadata.resourceVersion);
  const statusTimer = options.logStatus
    ? setInterval(() => options.logStatus!(session.status()), options.statusLogIntervalMs ?? 10_000)
    : undefined;
  statusTimer?.unref();

  try {
    await session.start();
  } catch (err) {
    log.error({ err: (err as Error).message }, "relay session could not start");
  }
  await session.whenEnded();
  clearInterval(statusTimer);
  watch.stop();
  prompts.close();
  if (!deleted) await reporter.finish();

  const final = session.status();
  log.info({ state: final.state, statusWrites: reporter.stats.writes }, "relay process done");
  if (final.state === "failed") {
    process.stderr.write(`relay session failed: ${final.lastError?.reason}: ${final.lastError?.message}\n`);
    return EXIT_CODES.failed;
  }
  return EXIT_CODES.ended;
}

/**
 * Reads the RelaySession; retries while the apiserver is unreachable, not on 403/404. Undefined when
 * a stop was requested meanwhile.
 */
async function readWithRetry(
  kubeConfig: KubeAccess,
  ref: SessionRef,
  retryForMs: number,
  log: Logger,
  stopped: () => boolean,
): Promise<RelaySessionResource | undefined> {
  const deadline = Date.now() + retryForMs;
  for (let attempt = 0; ; attempt++) {
    if (stopped()) return undefined;
    try {
      return await readRelaySession(kubeConfig, ref);
    } catch (err) {
      if (err instanceof SessionResourceError || Date.now() >= deadline) throw err;
      const delay = Math.min(5000, 250 * 2 ** attempt);
      log.warn({ err: (err as Error).message, retryInMs: delay }, "reading the RelaySession failed");
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/**
 * True when the RelaySession is gone or being deleted (or reading it is now refused); false while it
 * lives on or the apiserver cannot be reached.
 */
async function sessionIsEnding(
  kubeConfig: KubeAccess | undefined,
  ref: SessionRef,
  log: Logger,
): Promise<boolean> {
  try {
    const resource = await Promise.race([
      readRelaySession(kubeConfig ?? loadClusterAccess(), ref),
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error("timed out after 3 s")), 3000).unref(),
      ),
    ]);
    return resource.metadata?.deletionTimestamp !== undefined;
  } catch (err) {
    // Gone, or its per-session Role gone with it (owned by the RelaySession, garbage-collected
    // together): this relay read it at start, so a refusal now means the session was deleted.
    if (err instanceof SessionResourceError && [401, 403, 404].includes(err.httpStatus ?? 0)) return true;
    log.warn(
      { err: (err as Error).message },
      "could not read the RelaySession on stop; leaving the output open",
    );
    return false;
  }
}
