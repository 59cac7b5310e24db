/**
 * The operator process: informers for RelaySessions and relay pods fill a workqueue keyed
 * `namespace/name`; while this replica holds the Lease, workers run the reconciler on those keys.
 * Informers run whether or not this replica leads, so a standby's cache is warm when it takes over,
 * and /readyz means "caches synced", independent of leadership (controller-runtime's behaviour).
 * Losing the lease ends the process (a fresh replica is safer than a half-stopped one).
 */
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import {
  ApiException,
  CustomObjectsApi,
  type KubeConfig,
  type V1Lease,
  type V1Pod,
} from "@kubernetes/client-node";
import Fastify, { type FastifyInstance } from "fastify";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import {
  LABEL_POOL,
  RELAY_POOL_PLURAL,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelayPool,
  type RelaySession,
} from "../../crds/src/index.js";
import { silentLogger, type Logger } from "../../relay-pod/src/index.js";
import {
  dropPooledConnections,
  isRequestTimeout,
  loadKubeConfig,
  withRequestTimeout,
} from "./kube/client.js";
import { createNamespacedInformers, type InformerGroup } from "./kube/informer-group.js";
import { OwnerIndex } from "./kube/owner-index.js";
import { LeaderElector } from "./kube/leader-election.js";
import { WorkQueue } from "./kube/workqueue.js";
import { RelaySessionReconciler, podOwnerUid, sweepOrphanPods } from "./relaysession/reconciler.js";
import { EventRecorder } from "./relaysession/events.js";
import type { RelayPodDefaults } from "./relaysession/desired-pod.js";
import {
  LABEL_MANAGED_BY,
  OPERATOR_NAME,
  RELAY_POD_SELECTOR,
  sessionKeyOfPod,
} from "./relaysession/labels.js";
import { poolPodShapes } from "./relaysession/pool-shapes.js";
import type { PoolAccess } from "./relaysession/pooled-session.js";
import {
  PodLeases,
  PoolMetrics,
  RelayPoolReconciler,
  sortPoolPods,
  type SessionArrival,
} from "./relaypool/index.js";
import { readGatewayToken } from "./gateway/auth.js";
import { buildGatewayServer } from "./gateway/gateway.js";
import { WritePriority } from "./kube/write-priority.js";

export const DEFAULT_RELAY_IMAGE = "trickle-relay/relay:0.1.0";

export interface OperatorOptions {
  kubeconfigPath?: string;
  /** A loaded KubeConfig (tests, benchmarks); wins over kubeconfigPath. */
  kubeConfig?: KubeConfig;
  /** Namespaces to watch; empty = all. */
  namespaces: string[];
  relayImage: string;
  /** Installation-wide relay pod defaults (RELAY_DEFAULT_* environment, Helm `relay.*`). */
  relayDefaults?: RelayPodDefaults;
  leaderElection?: {
    namespace: string;
    name: string;
    identity?: string;
    leaseDurationSeconds: number;
    renewDeadlineSeconds: number;
    retryPeriodSeconds: number;
  };
  /** 0 = no metrics server. */
  metricsPort: number;
  /** 0 = any free port (tests); see healthAddress(). */
  healthPort: number;
  bindAddress: string;
  concurrency: number;
  gateway?: { port: number; tokenFile: string; namespace: string };
  logger?: Logger;
  /** Periodic re-reconcile of every session (controller-runtime's SyncPeriod). */
  resyncMs?: number;
  /**
   * A watch that delivers nothing (not even its end) for this long is abandoned and relisted; a
   * list gets at most this long too (capped at 60 s). Default 5 min (`--watch-timeout`).
   */
  watchdogMs?: number;
  /** Bound of one API call of the reconciler (pods, RBAC, status, Events); default 30 s. */
  requestTimeoutMs?: number;
  /**
   * A RelayPool's round runs at most once per this many ms (default POOL_BATCH_MS): sessions and
   * events arriving meanwhile are handled together in the next round instead of one round each.
   */
  poolBatchMs?: number;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/**
 * Default spacing of one pool's rounds. A round looks at all of the pool's pods and sessions; in a
 * burst every claim, label write and session creation would start another (bench:pool: ~1.6 rounds
 * per session, half the operator's CPU), so they are batched.
 */
export const POOL_BATCH_MS = 20;

export class Operator extends EventEmitter {
  readonly registry = new Registry();
  private readonly options: OperatorOptions;
  private readonly log: Logger;
  private readonly kubeConfig: KubeConfig;
  private sessions: InformerGroup<RelaySession> | undefined;
  private pods: InformerGroup<V1Pod> | undefined;
  private podsByOwner: OwnerIndex<V1Pod> | undefined;
  private pools: InformerGroup<RelayPool> | undefined;
  private cachedReadShapes: ReturnType<typeof poolPodShapes> | undefined;
  /** The claim Leases of pool pods (only with the RelayPool API). */
  private leases: InformerGroup<V1Lease> | undefined;
  private readonly queue: WorkQueue;
  /** RelayPool keys; one pool is reconciled (and allocated from) by one worker at a time. */
  private readonly poolQueue: WorkQueue;
  private readonly poolMetrics: PoolMetrics;
  /** Session uid → when and in which order the watch saw it (first come, first served). */
  private readonly arrivals = new Map<string, SessionArrival>();
  private arrivalSeq = 0;
  private poolWorkersDone: Promise<void> | undefined;
  private elector: LeaderElector | undefined;
  private healthServer: FastifyInstance | undefined;
  private metricsServer: FastifyInstance | undefined;
  private gatewayServer: FastifyInstance | undefined;
  private leading = false;
  private stopping = false;
  private workersDone: Promise<void> | undefined;
  private readonly isLeader: Gauge;
  private readonly reconciles: Counter<"result">;
  private readonly reconcileSeconds: Histogram;

  constructor(options: OperatorOptions) {
    super();
    this.options = options;
    this.log = options.logger ?? silentLogger;
    this.kubeConfig = options.kubeConfig ?? loadKubeConfig(options.kubeconfigPath);
    collectDefaultMetrics({ register: this.registry });
    this.isLeader = new Gauge({
      name: "trickle_relay_operator_leader",
      help: "1 while this replica holds the leader Lease (or runs without leader election)",
      registers: [this.registry],
    });
    this.reconciles = new Counter({
      name: "trickle_relay_operator_reconcile_total",
      help: "Reconciles of RelaySessions by result (success, requeue, error)",
      labelNames: ["result"],
      registers: [this.registry],
    });
    this.reconcileSeconds = new Histogram({
      name: "trickle_relay_operator_reconcile_duration_seconds",
      help: "Time spent in one reconcile",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [this.registry],
    });
    const sessionsByPhase = new Gauge({
      name: "trickle_relay_operator_sessions",
      help: "RelaySessions in the cache by status.phase",
      labelNames: ["phase"],
      registers: [this.registry],
      collect: () => {
        sessionsByPhase.reset();
        for (const session of this.allSessions()) {
          sessionsByPhase.inc({ phase: session.status?.phase ?? "New" });
        }
      },
    });
    this.queue = new WorkQueue({ name: "relaysessions", metrics: this.registry, logger: this.log });
    this.poolQueue = new WorkQueue({
      name: "relaypools",
      metrics: this.registry,
      logger: this.log,
      minIntervalMs: options.poolBatchMs ?? POOL_BATCH_MS,
    });
    this.poolMetrics = new PoolMetrics(this.registry);
  }

  /** Starts servers and informers, then leads (or waits to lead). Resolves once running. */
  async start(): Promise<void> {
    await this.startHealthServer();
    if (this.options.metricsPort > 0) await this.startMetricsServer();
    const poolsServed = await this.relayPoolsServed();
    this.createInformers(poolsServed);
    await Promise.all([
      this.sessions!.start(),
      this.pods!.start(),
      this.pools?.start(),
      this.leases?.start(),
    ]);
    this.log.info(
      { namespaces: this.options.namespaces.length ? this.options.namespaces : "all" },
      "caches synced",
    );
    if (this.options.gateway) await this.startGateway(this.options.gateway);

    const election = this.options.leaderElection;
    if (!election) {
      this.startLeading();
      return;
    }
    const identity = election.identity ?? process.env.POD_NAME ?? `${hostname()}-${process.pid}`;
    this.elector = new LeaderElector({
      kubeConfig: this.kubeConfig,
      namespace: election.namespace,
      name: election.name,
      identity,
      leaseDurationSeconds: election.leaseDurationSeconds,
      renewDeadlineSeconds: election.renewDeadlineSeconds,
      retryPeriodSeconds: election.retryPeriodSeconds,
      logger: this.log,
    });
    this.log.info({ lease: `${election.namespace}/${election.name}`, identity }, "waiting for leadership");
    void this.elector
      .run({
        onStartedLeading: () => this.startLeading(),
        onStoppedLeading: () => {
          if (this.stopping) return;
          this.isLeader.set(0);
          this.emit("fatal", new Error("lost the leader Lease"));
        },
      })
      .catch((err: unknown) => {
        if (!this.stopping) this.emit("fatal", err);
      });
  }

  get isLeading(): boolean {
    return this.leading;
  }

  /** Where /healthz and /readyz answer (after start()). */
  healthAddress(): string {
    const address = this.healthServer?.server.address();
    if (!address || typeof address === "string") throw new Error("health server is not listening");
    return `http://${this.options.bindAddress}:${address.port}`;
  }

  gatewayAddress(): string | undefined {
    const address = this.gatewayServer?.server.address();
    if (!address || typeof address === "string") return undefined;
    return `http://${this.options.bindAddress}:${address.port}`;
  }

  /** Graceful: workers finish their current reconcile, the Lease is released, servers close. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await Promise.all([this.queue.shutdown(), this.poolQueue.shutdown()]);
    await this.workersDone?.catch(() => undefined);
    await this.poolWorkersDone?.catch(() => undefined);
    await this.elector?.release().catch(() => undefined);
    await Promise.all([this.sessions?.stop(), this.pods?.stop(), this.pools?.stop(), this.leases?.stop()]);
    await Promise.all(
      [this.gatewayServer, this.metricsServer, this.healthServer].map((server) =>
        server?.close().catch(() => undefined),
      ),
    );
    this.isLeader.set(0);
    this.leading = false;
  }

  private synced(): boolean {
    return (
      this.sessions?.synced === true &&
      this.pods?.synced === true &&
      this.pools?.synced !== false &&
      this.leases?.synced !== false
    );
  }

  private allSessions(): RelaySession[] {
    return this.sessions?.list() ?? [];
  }

  /**
   * Whether the apiserver serves RelayPools. A cluster that still has only the RelaySession CRD (the
   * operator upgraded before `kubectl apply -f crds/`) must keep running sessions: its pool informer
   * would never sync, and /readyz would never pass. The same for RBAC from an older chart (403).
   * Any other answer counts as served.
   */
  private async relayPoolsServed(): Promise<boolean> {
    const api = this.kubeConfig.makeApiClient(CustomObjectsApi);
    const common = {
      group: RELAY_SESSION_GROUP,
      version: RELAY_SESSION_VERSION,
      plural: RELAY_POOL_PLURAL,
      limit: 1,
    };
    const namespace = this.options.namespaces[0];
    try {
      await (namespace
        ? api.listNamespacedCustomObject({ ...common, namespace })
        : api.listClusterCustomObject(common));
    } catch (err) {
      if (err instanceof ApiException && (err.code === 404 || err.code === 403)) {
        this.log.warn(
          { status: err.code },
          err.code === 404
            ? "the RelayPool API is not served (CRD not installed): warm pools are off; apply crds/ and restart the operator"
            : "not allowed to list RelayPools (RBAC from an older chart?): warm pools are off; upgrade the chart and restart the operator",
        );
        return false;
      }
    }
    return true;
  }

  private createInformers(poolsServed: boolean): void {
    const crPath = `/apis/${RELAY_SESSION_GROUP}/${RELAY_SESSION_VERSION}`;
    const common = {
      kubeConfig: this.kubeConfig,
      logger: this.log,
      metrics: this.registry,
      resyncMs: this.options.resyncMs,
      watchdogMs: this.options.watchdogMs,
      listTimeoutMs:
        this.options.watchdogMs === undefined ? undefined : Math.min(60_000, this.options.watchdogMs),
    };
    this.sessions = createNamespacedInformers<RelaySession>(this.options.namespaces, (namespace) => ({
      ...common,
      name: `relaysessions/${namespace ?? "*"}`,
      path: namespace
        ? `${crPath}/namespaces/${namespace}/${RELAY_SESSION_PLURAL}`
        : `${crPath}/${RELAY_SESSION_PLURAL}`,
    }));
    const enqueueSession = (session: RelaySession) => {
      this.enqueue(session.metadata?.namespace, session.metadata?.name);
      // A pooled session's changes (new, finished, gone) are its pool's business too.
      const pool = session.spec?.poolRef?.name;
      if (pool && session.metadata?.namespace) this.poolQueue.add(`${session.metadata.namespace}/${pool}`);
    };
    for (const event of ["add", "update", "delete", "resync"] as const)
      this.sessions.on(event, enqueueSession);
    this.sessions.on("add", (session: RelaySession) => {
      const uid = session.metadata?.uid;
      if (!uid || this.arrivals.has(uid)) return;
      this.arrivals.set(uid, { seq: this.arrivalSeq++, firstSeenMs: Date.now() });
    });
    this.sessions.on("delete", (session: RelaySession) => this.arrivals.delete(session.metadata?.uid ?? ""));

    // Without the RelayPool API: no pool informer; pooled sessions wait (PoolNotFound).
    if (poolsServed) {
      this.pools = createNamespacedInformers<RelayPool>(this.options.namespaces, (namespace) => ({
        ...common,
        name: `relaypools/${namespace ?? "*"}`,
        path: namespace
          ? `${crPath}/namespaces/${namespace}/${RELAY_POOL_PLURAL}`
          : `${crPath}/${RELAY_POOL_PLURAL}`,
      }));
      for (const event of ["add", "update", "delete", "resync"] as const)
        this.pools.on(event, (pool: RelayPool) => {
          if (pool.metadata?.namespace && pool.metadata.name)
            this.poolQueue.add(`${pool.metadata.namespace}/${pool.metadata.name}`);
        });
      // Warm pods' claim Leases (crds/src/relay-pool.ts): a new one makes its pod claimable.
      this.leases = createNamespacedInformers<V1Lease>(this.options.namespaces, (namespace) => ({
        ...common,
        name: `leases/${namespace ?? "*"}`,
        path: namespace
          ? `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`
          : "/apis/coordination.k8s.io/v1/leases",
        labelSelector: `${LABEL_MANAGED_BY}=${OPERATOR_NAME},${LABEL_POOL}`,
      }));
      for (const event of ["add", "update", "delete"] as const)
        this.leases.on(event, (lease: V1Lease) => {
          const pool = lease.metadata?.labels?.[LABEL_POOL];
          if (pool && lease.metadata?.namespace) this.poolQueue.add(`${lease.metadata.namespace}/${pool}`);
        });
    }

    this.pods = createNamespacedInformers<V1Pod>(this.options.namespaces, (namespace) => ({
      ...common,
      name: `pods/${namespace ?? "*"}`,
      path: namespace ? `/api/v1/namespaces/${namespace}/pods` : "/api/v1/pods",
      labelSelector: RELAY_POD_SELECTOR,
    }));
    // A pod event means its session needs a look (the pod → owner mapping of controller-runtime).
    const enqueueOwner = (pod: V1Pod) => {
      const key = sessionKeyOfPod(pod);
      if (key) this.queue.add(key);
      const pool = pod.metadata?.labels?.[LABEL_POOL];
      if (pool && pod.metadata?.namespace) this.poolQueue.add(`${pod.metadata.namespace}/${pool}`);
    };
    for (const event of ["add", "update", "delete"] as const) this.pods.on(event, enqueueOwner);
    this.podsByOwner = new OwnerIndex(this.pods, podOwnerUid);
  }

  private enqueue(namespace: string | undefined, name: string | undefined): void {
    if (namespace && name) this.queue.add(`${namespace}/${name}`);
  }

  private startLeading(): void {
    if (this.stopping || this.leading) return;
    this.leading = true;
    this.isLeader.set(1);
    this.log.info("leading: reconciling RelaySessions");
    // A call that hangs must not pin a worker: it fails and the queue retries it with backoff.
    const kubeConfig = withRequestTimeout(
      this.kubeConfig,
      this.options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    );
    // Warm pod claims go first; Events and pooled sessions' statuses wait while claims are in flight.
    const priority = new WritePriority();
    const events = new EventRecorder({
      kubeConfig,
      logger: this.log,
      background: priority,
    });
    const reconciler = new RelaySessionReconciler({
      kubeConfig,
      sessions: this.sessions!,
      pods: {
        list: (namespace) => this.pods!.list(namespace),
        byOwner: (uid) => this.podsByOwner!.byOwner(uid),
      },
      events,
      relayImage: this.options.relayImage,
      relayDefaults: this.options.relayDefaults,
      logger: this.log,
      pools: this.poolAccess(),
      background: priority,
    });
    this.startPoolWorkers(kubeConfig, events, priority);
    void sweepOrphanPods({
      kubeConfig,
      pods: this.pods!.list(),
      sessions: this.allSessions(),
      logger: this.log,
    }).catch((err: unknown) => this.log.warn({ err }, "orphan pod sweep failed"));
    for (const session of this.allSessions())
      this.enqueue(session.metadata?.namespace, session.metadata?.name);
    this.workersDone = this.queue.run(this.options.concurrency, async (key) => {
      const end = this.reconcileSeconds.startTimer();
      try {
        const result = await reconciler.reconcile(key);
        this.reconciles.inc({ result: result?.requeueAfterMs !== undefined ? "requeue" : "success" });
        return result;
      } catch (err) {
        this.reconciles.inc({ result: "error" });
        if (isRequestTimeout(err)) dropPooledConnections(kubeConfig);
        this.log.warn({ key, err }, "reconcile failed; retrying with backoff");
        throw err;
      } finally {
        end();
      }
    });
  }

  /** What the session controller may ask of pools: the pool cache, idle pods, an allocation round. */
  private poolAccess(): PoolAccess {
    return {
      get: (namespace, name) => this.pools?.get(namespace, name),
      idleReadyPods: (namespace, name) =>
        sortPoolPods(this.pods!.list(namespace), name, this.readShapes(), this.podLeases(namespace)).idleReady
          .length,
      claimPending: (namespace, sessionUid, attempt) =>
        (this.leases?.list(namespace) ?? []).some((lease) => {
          const claim = this.readShapes().leaseClaim(lease);
          return claim.kind === "session" && claim.sessionUid === sessionUid && claim.attempt === attempt;
        }),
      requestAllocation: (namespace, name) => this.poolQueue.add(`${namespace}/${name}`),
    };
  }

  private podLeases(namespace: string): PodLeases {
    return new PodLeases(this.pods!.list(namespace), this.leases?.list(namespace) ?? [], this.readShapes());
  }

  /** Pool pod shapes for reading the caches (made once: each set holds its own API clients). */
  private readShapes(): ReturnType<typeof poolPodShapes> {
    this.cachedReadShapes ??= poolPodShapes(this.shapeOptions());
    return this.cachedReadShapes;
  }

  private shapeOptions() {
    return {
      kubeConfig: this.kubeConfig,
      relayImage: this.options.relayImage,
      ...(this.options.relayDefaults ? { relayDefaults: this.options.relayDefaults } : {}),
    };
  }

  private startPoolWorkers(kubeConfig: KubeConfig, events: EventRecorder, priority: WritePriority): void {
    const reconciler = new RelayPoolReconciler({
      kubeConfig,
      pools: { get: (namespace, name) => this.pools?.get(namespace, name) },
      pods: { list: (namespace) => this.pods!.list(namespace) },
      leases: { list: (namespace) => this.leases?.list(namespace) ?? [] },
      sessions: {
        list: (namespace) => this.sessions!.list(namespace),
        get: (namespace, name) => this.sessions!.get(namespace, name),
      },
      shapes: poolPodShapes({ ...this.shapeOptions(), kubeConfig }),
      arrival: (uid) => this.arrivals.get(uid),
      events,
      metrics: this.poolMetrics,
      requeue: (key, afterMs) => (afterMs ? this.poolQueue.addAfter(key, afterMs) : this.poolQueue.add(key)),
      logger: this.log,
      priority,
    });
    for (const pool of this.pools?.list() ?? [])
      if (pool.metadata?.namespace && pool.metadata.name)
        this.poolQueue.add(`${pool.metadata.namespace}/${pool.metadata.name}`);
    this.poolWorkersDone = this.poolQueue.run(
      Math.max(1, Math.ceil(this.options.concurrency / 2)),
      async (key) => {
        try {
          return await reconciler.reconcile(key);
        } catch (err) {
          if (isRequestTimeout(err)) dropPooledConnections(kubeConfig);
          this.log.warn({ pool: key, err }, "pool reconcile failed; retrying with backoff");
          throw err;
        }
      },
    );
  }

  private async startHealthServer(): Promise<void> {
    const app = Fastify({ logger: false });
    app.get("/healthz", async () => ({ status: "ok" }));
    app.get("/readyz", async (_request, reply) => {
      if (this.stopping) return reply.code(503).send({ status: "stopping" });
      if (!this.synced()) return reply.code(503).send({ status: "caches not synced" });
      return { status: "ok", leader: this.leading };
    });
    await app.listen({ port: this.options.healthPort, host: this.options.bindAddress });
    this.healthServer = app;
  }

  private async startMetricsServer(): Promise<void> {
    const app = Fastify({ logger: false });
    app.get("/metrics", async (_request, reply) =>
      reply.type(this.registry.contentType).send(await this.registry.metrics()),
    );
    await app.listen({ port: this.options.metricsPort, host: this.options.bindAddress });
    this.metricsServer = app;
  }

  private async startGateway(gateway: NonNullable<OperatorOptions["gateway"]>): Promise<void> {
    const token = readGatewayToken(gateway.tokenFile);
    const app = buildGatewayServer({
      kubeConfig: this.kubeConfig,
      namespace: gateway.namespace,
      token,
      logger: this.log,
      // The session pages list what the operator watches; its RBAC lets it read those sessions.
      uiNamespaces: this.options.namespaces,
    });
    await app.listen({ port: gateway.port, host: this.options.bindAddress });
    this.gatewayServer = app as unknown as FastifyInstance;
    this.log.info({ port: gateway.port, namespace: gateway.namespace }, "REST gateway listening");
  }
}
