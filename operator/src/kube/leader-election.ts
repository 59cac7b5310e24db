/**
 * Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection package does
 * it (client-node has none):
 *
 * - a candidate takes the Lease when nobody holds it, or when the holder's record has not changed for
 *   `leaseDurationSeconds` *as observed locally* (time since this process last saw the record change,
 *   on its own monotonic clock), so clocks of different hosts are never compared;
 * - the leader renews every `retryPeriodSeconds`; if no renewal succeeded for `renewDeadlineSeconds`
 *   it stops leading. renewDeadline < leaseDuration, so it stops before anybody else may start;
 * - every write is a PUT carrying the read resourceVersion: a concurrent writer gets 409 and retries
 *   on its next period, so two candidates can never both believe they won;
 * - `release()` on a graceful stop clears holderIdentity, so a successor takes over at its next retry
 *   instead of waiting out the lease.
 */
import {
  ApiException,
  CoordinationV1Api,
  Observable,
  V1MicroTime,
  type ConfigurationOptions,
  type KubeConfig,
  type RequestContext,
  type ResponseContext,
  type V1Lease,
  type V1LeaseSpec,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import { silentLogger } from "../../../relay-pod/src/index.js";

export interface LeaderElectorOptions {
  kubeConfig: KubeConfig;
  /** Namespace and name of the Lease. */
  namespace: string;
  name: string;
  /** This candidate's unique identity (e.g. the pod name). */
  identity: string;
  /** How long a non-leader waits after the last observed change before taking over (default 15). */
  leaseDurationSeconds?: number;
  /** How long the leader keeps trying to renew before giving up (default 10). */
  renewDeadlineSeconds?: number;
  /** Interval between acquire/renew attempts (default 2). */
  retryPeriodSeconds?: number;
  logger?: Logger;
}

export interface LeaderCallbacks {
  /**
   * Called once this candidate leads. `signal` aborts when leadership ends; work started here must
   * stop then. A returned promise is awaited (up to renewDeadline) before a graceful release.
   */
  onStartedLeading(signal: AbortSignal): void | Promise<void>;
  /** Called after leadership ended (lost or released); not called if it never led. */
  onStoppedLeading(): void;
  /** Called when the observed holder changes (another candidate's identity, or "" when free). */
  onNewLeader?(identity: string): void;
}

/** Randomises retries by up to this fraction, so candidates do not retry in lock-step. */
const JITTER = 0.2;

export class LeaderElector {
  private readonly options: LeaderElectorOptions;
  private readonly log: Logger;
  private readonly api: CoordinationV1Api;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  /** resourceVersion, spec and local (monotonic) time of the last change of the Lease we saw. */
  private observedVersion: string | undefined;
  private observedSpec: V1LeaseSpec | undefined;
  private observedAt = 0;
  private leading = false;
  private running = false;
  private stopRequested = false;
  private wake: (() => void) | undefined;
  private finished: Promise<void> | undefined;
  private leaderWork: Promise<void> | undefined;

  constructor(options: LeaderElectorOptions) {
    this.options = options;
    this.log = (options.logger ?? silentLogger).child({
      lease: `${options.namespace}/${options.name}`,
      identity: options.identity,
    });
    this.api = options.kubeConfig.makeApiClient(CoordinationV1Api);
    this.leaseDurationMs = (options.leaseDurationSeconds ?? 15) * 1000;
    this.renewDeadlineMs = (options.renewDeadlineSeconds ?? 10) * 1000;
    this.retryPeriodMs = (options.retryPeriodSeconds ?? 2) * 1000;
    if (!options.identity) throw new Error("leader election needs a non-empty identity");
    if (this.leaseDurationMs <= this.renewDeadlineMs) {
      throw new Error("leaseDurationSeconds must be greater than renewDeadlineSeconds");
    }
    if (this.renewDeadlineMs <= this.retryPeriodMs * (1 + JITTER)) {
      throw new Error(`renewDeadlineSeconds must be greater than retryPeriodSeconds × ${1 + JITTER}`);
    }
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** The holder of the Lease as last observed ("" when free, undefined before the first read). */
  get leader(): string | undefined {
    return this.observedSpec ? (this.observedSpec.holderIdentity ?? "") : undefined;
  }

  /**
   * Campaigns until this candidate leads, then renews until leadership is lost or release() is
   * called. Resolves when that happened (leadership ended, or release() came before it began).
   */
  async run(callbacks: LeaderCallbacks): Promise<void> {
    if (this.running) throw new Error("LeaderElector.run() is already running");
    this.running = true;
    this.stopRequested = false;
    this.finished = this.campaign(callbacks).finally(() => {
      this.running = false;
    });
    return this.finished;
  }

  /**
   * Stops campaigning. If leading: aborts the leader's signal, waits (up to renewDeadline) for
   * onStartedLeading's promise, clears holderIdentity so a successor need not wait out the lease,
   * then calls onStoppedLeading. Resolves when run() has returned.
   */
  async release(): Promise<void> {
    this.stopRequested = true;
    this.wake?.();
    await this.finished;
  }

  private async campaign(callbacks: LeaderCallbacks): Promise<void> {
    this.log.info("campaigning for leadership");
    while (!(await this.tryAcquireOrRenew(Date.now() + this.renewDeadlineMs, callbacks))) {
      if (this.stopRequested) return;
      await this.sleep(this.retryPeriodMs * (1 + JITTER * Math.random()));
      if (this.stopRequested) return;
    }
    this.leading = true;
    this.log.info("became leader");
    const leadership = new AbortController();
    this.leaderWork = Promise.resolve()
      .then(() => callbacks.onStartedLeading(leadership.signal))
      .catch((err: unknown) => this.log.error({ err }, "onStartedLeading failed"));

    const outcome = await this.renewUntilLostOrStopped(callbacks);
    leadership.abort(new Error(outcome === "lost" ? "leadership lost" : "leadership released"));
    if (outcome === "released") {
      await this.settle(this.leaderWork, this.renewDeadlineMs);
      await this.releaseLease();
    } else {
      this.log.error({ renewDeadlineMs: this.renewDeadlineMs }, "leadership lost: could not renew the lease");
    }
    this.leading = false;
    try {
      callbacks.onStoppedLeading();
    } catch (err) {
      this.log.error({ err }, "onStoppedLeading failed");
    }
  }

  private async renewUntilLostOrStopped(callbacks: LeaderCallbacks): Promise<"lost" | "released"> {
    let lastRenewal = performance.now();
    for (;;) {
      await this.sleep(this.retryPeriodMs);
      if (this.stopRequested) return "released";
      const deadline = lastRenewal + this.renewDeadlineMs;
      if (performance.now() >= deadline) return "lost";
      const renewed = await this.tryAcquireOrRenew(Date.now() + (deadline - performance.now()), callbacks);
      if (renewed) {
        lastRenewal = performance.now();
        continue;
      }
      if (this.heldByOther()) {
        this.log.error({ holder: this.observedSpec?.holderIdentity }, "another candidate holds the lease");
        return "lost";
      }
      if (performance.now() >= deadline) return "lost";
      this.log.warn(
        { sinceLastRenewalMs: Math.round(performance.now() - lastRenewal) },
        "lease renewal failed",
      );
    }
  }

  /** One read-modify-write of the Lease; true when we hold it afterwards. `deadline` is wall-clock ms. */
  private async tryAcquireOrRenew(deadline: number, callbacks: LeaderCallbacks): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    const now = new V1MicroTime();
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ namespace, name }, requestTimeout(deadline));
    } catch (err) {
      if (!(err instanceof ApiException) || err.code !== 404) {
        this.log.debug({ err }, "reading the lease failed");
        return false;
      }
      try {
        const created = await this.api.createNamespacedLease(
          {
            namespace,
            body: {
              metadata: { name, namespace },
              spec: {
                holderIdentity: identity,
                leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
                acquireTime: now,
                renewTime: now,
                leaseTransitions: 0,
              },
            },
          },
          requestTimeout(deadline),
        );
        this.observe(created, callbacks);
        return true;
      } catch (createErr) {
        this.log.debug({ err: createErr }, "creating the lease failed");
        return false;
      }
    }

    this.observe(lease, callbacks);
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? "";
    if (this.heldByOther()) return false;
    const renewing = holder === identity;
    const updated: V1LeaseSpec = {
      ...spec,
      holderIdentity: identity,
      leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
      renewTime: now,
      acquireTime: renewing ? spec.acquireTime : now,
      leaseTransitions: renewing ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
    };
    try {
      const replaced = await this.api.replaceNamespacedLease(
        { namespace, name, body: { ...lease, spec: updated } },
        requestTimeout(deadline),
      );
      this.observe(replaced, callbacks);
      if (!renewing) {
        this.log.info(
          { previousHolder: holder, transitions: updated.leaseTransitions },
          "acquired the lease",
        );
      }
      return true;
    } catch (err) {
      // 409: someone wrote the Lease since we read it; the next attempt reads it afresh.
      this.log.debug({ err }, "updating the lease failed");
      return false;
    }
  }

  /** True while the last observed record names another holder whose lease has not run out locally. */
  private heldByOther(): boolean {
    const holder = this.observedSpec?.holderIdentity ?? "";
    if (holder === "" || holder === this.options.identity) return false;
    const durationMs = (this.observedSpec?.leaseDurationSeconds ?? 0) * 1000 || this.leaseDurationMs;
    return this.observedAt + durationMs > performance.now();
  }

  private observe(lease: V1Lease, callbacks: LeaderCallbacks): void {
    const version = lease.metadata?.resourceVersion;
    if (version === this.observedVersion) return;
    const previousHolder = this.observedSpec?.holderIdentity ?? "";
    this.observedVersion = version;
    this.observedSpec = lease.spec ?? {};
    this.observedAt = performance.now();
    const holder = this.observedSpec.holderIdentity ?? "";
    if (holder !== previousHolder && callbacks.onNewLeader) {
      try {
        callbacks.onNewLeader(holder);
      } catch (err) {
        this.log.error({ err }, "onNewLeader failed");
      }
    }
  }

  /** Hands the lease back: holderIdentity cleared, so the next candidate need not wait. */
  private async releaseLease(): Promise<void> {
    const { namespace, name, identity } = this.options;
    const deadline = Date.now() + this.renewDeadlineMs;
    try {
      const lease = await this.api.readNamespacedLease({ namespace, name }, requestTimeout(deadline));
      if (lease.spec?.holderIdentity !== identity) return;
      const now = new V1MicroTime();
      await this.api.replaceNamespacedLease(
        {
          namespace,
          name,
          body: {
            ...lease,
            spec: {
              ...lease.spec,
              holderIdentity: "",
              leaseDurationSeconds: 1,
              renewTime: now,
              acquireTime: now,
            },
          },
        },
        requestTimeout(deadline),
      );
      this.log.info("released the lease");
    } catch (err) {
      // The successor will take over once the lease runs out.
      this.log.warn({ err }, "releasing the lease failed");
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  private async settle(work: Promise<void> | undefined, timeoutMs: number): Promise<void> {
    if (!work) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([work, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }
}

/** Request options that abort the request at `deadline` (wall-clock ms), at least 100 ms from now. */
function requestTimeout(deadline: number): ConfigurationOptions {
  const timeoutMs = Math.max(100, Math.ceil(deadline - Date.now())); // AbortSignal.timeout wants an integer
  return {
    middleware: [
      {
        pre: (context: RequestContext) => {
          context.setSignal(AbortSignal.timeout(timeoutMs));
          return new Observable(Promise.resolve(context));
        },
        post: (context: ResponseContext) => new Observable(Promise.resolve(context)),
      },
    ],
    middlewareMergeStrategy: "append",
  };
}
