/**
 * A local kubelet test harness — not a real kubelet. It stands in for one node of the test control
 * plane (test/infra/apiserver.ts), which has no kubelet or container runtime: it registers a Node,
 * heartbeats it, binds unscheduled pods to itself through pods/binding (as the scheduler would,
 * checking nodeSelector, required node affinity, taints and resource requests incl. `nvidia.com/gpu`)
 * and runs each bound pod's containers as local processes, reporting through pods/status like the
 * kubelet (Pending → Running → Succeeded/Failed by restartPolicy Never rules).
 *
 *   const kubelet = await startLocalKubelet({
 *     kubeConfig: adminKubeConfig,
 *     commands: { "trickle-relay": [process.execPath, join(repoRoot, "dist/relay-pod/src/cli.js")] },
 *     gpus: 1,
 *   });
 *   try { … } finally { await kubelet.stop(); }
 *
 * What a container runs: `command` + `args` (or, without `command`, the entrypoint from
 * `options.images`), with the first word mapped through `options.commands` to a local argv prefix.
 * A container that cannot be mapped waits with reason ErrImageNeverPull (the pod stays Pending, as on
 * a node that cannot get the image) or, with `unmappedContainer: "fail"`, fails the pod.
 *
 * Credentials: the ServiceAccount admission plugin is off in the test control plane, so this harness
 * does its part: for a pod with a `serviceAccountName` and automount not disabled it requests a token
 * bound to the pod (TokenRequest API) and hands the process a kubeconfig with it (env KUBECONFIG), so
 * the pod's RBAC is exercised for real. HOME is the pod's own temp dir, so no kubeconfig leaks in.
 *
 * Every process runs in its own process group (killed as a group, so grandchildren such as ffmpeg
 * die too) and, where setpriv exists, with a parent-death signal; stop() leaves no process behind.
 * Not modelled: init containers, probes (a running container is ready), restartPolicy other than
 * Never (treated as Never), resourceFieldRef, volumes, Events, image pulls.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { appendFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { constants as osConstants, tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  Watch,
  setHeaderOptions,
  type V1Container,
  type V1ContainerStatus,
  type V1EnvVar,
  type V1Node,
  type V1NodeSelectorRequirement,
  type V1Pod,
  type V1PodCondition,
  type V1PodStatus,
  type V1Taint,
} from "@kubernetes/client-node";
import { parseQuantity } from "../../crds/src/index.js";

export interface LocalKubeletOptions {
  /** Credentials of the harness itself (node + scheduler + admission duties): the admin kubeconfig. */
  kubeConfig: KubeConfig;
  /** Node name; default "local-kubelet". */
  nodeName?: string;
  /** Only run and schedule pods of these namespaces; default all. */
  namespaces?: string[];
  /** First word of a container's command → local argv prefix, e.g. {"trickle-relay": [node, cli.js]}. */
  commands?: Record<string, string[]>;
  /**
   * Image (exact, or without tag/digest) → its entrypoint, for containers without `command`. The
   * entrypoint's first word goes through `commands` too; if it is not there it is used as is.
   */
  images?: Record<string, { command: string[]; args?: string[] }>;
  /** Environment every container gets first (like an image's ENV; the container's `env` wins). */
  extraEnv?: Record<string, string>;
  /** Variables passed on from the test process; default ["PATH"]. */
  inheritEnv?: string[];
  /** Allocatable `nvidia.com/gpu`; default 0 (then the resource is not advertised). */
  gpus?: number;
  /** Allocatable cpu / memory / pods; defaults "16", "64Gi", "110". */
  cpu?: string;
  memory?: string;
  maxPods?: number;
  /** Extra node labels (kubernetes.io/hostname, os and arch are always set). */
  nodeLabels?: Record<string, string>;
  taints?: V1Taint[];
  /** Bind unscheduled pods to this node; default true. */
  schedule?: boolean;
  /** What an unmappable container does: wait (ErrImageNeverPull, pod Pending) or fail the pod. */
  unmappedContainer?: "wait" | "fail";
  /** Container logs and the harness's own log; default a temp dir removed by stop(). */
  logDir?: string;
  /** Node Ready heartbeat; default 10 s. */
  heartbeatIntervalMs?: number;
  /** Periodic re-sync of every pod (retries of tokens, env, scheduling, status); default 3 s. */
  resyncIntervalMs?: number;
}

export interface LocalContainerInfo {
  name: string;
  state: "waiting" | "running" | "terminated";
  pid?: number;
  exitCode?: number;
  reason?: string;
}

export interface LocalPodInfo {
  namespace: string;
  name: string;
  uid: string;
  phase: string;
  containers: LocalContainerInfo[];
}

export interface LocalKubelet {
  readonly nodeName: string;
  /** Folder with `<namespace>_<name>_<uid8>_<container>.log` files and `local-kubelet.log`. */
  readonly logDir: string;
  /** The pods this node knows it runs or ran (until their objects are deleted). */
  pods(): LocalPodInfo[];
  /** stdout+stderr of the latest pod with that name; "" when there is none. */
  logs(namespace: string, name: string, container?: string): Promise<string>;
  /** Signals a container's process group (default the first container, SIGKILL) — a crash. */
  killContainer(namespace: string, name: string, container?: string, signal?: NodeJS.Signals): void;
  /** Evicts the pod: phase Failed, reason Evicted, processes killed at once. */
  evict(namespace: string, name: string, message?: string): Promise<void>;
  /** Kills every process, stops watches and timers, deletes the Node object. Idempotent. */
  stop(): Promise<void>;
}

const FIELD_MANAGER = "local-kubelet";
const GPU = "nvidia.com/gpu";
const API_CALL_TIMEOUT_MS = 10_000;
const START_TIMEOUT_MS = 30_000;
const DEFAULT_GRACE_SECONDS = 30;
const MINIMUM_GRACE_SECONDS = 2;
/** Kubelet's default for projected service-account tokens. */
const TOKEN_EXPIRATION_SECONDS = 3607;
const TERMINATION_LOG_TAIL_BYTES = 2048;

const strategicMergePatch = setHeaderOptions("Content-Type", PatchStrategy.StrategicMergePatch);
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
const hasSetpriv = spawnSync("bash", ["-c", "setpriv --help 2>/dev/null | grep -q pdeathsig"]).status === 0;

// Process groups still alive in this test process: killed on exit even without stop().
const liveProcessGroups = new Set<number>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const pgid of liveProcessGroups) signalGroup(pgid, "SIGKILL");
  });
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // the group is already gone
  }
}

type ContainerState =
  | { kind: "waiting"; reason: string; message?: string }
  | { kind: "running"; startedAt: string }
  | {
      kind: "terminated";
      exitCode: number;
      signal?: number;
      reason: string;
      message?: string;
      startedAt?: string;
      finishedAt: string;
    };

interface ContainerRun {
  spec: V1Container;
  state: ContainerState;
  logPath: string;
  child?: ChildProcess;
  pid?: number;
  exited?: Promise<void>;
}

interface PodRun {
  uid: string;
  namespace: string;
  name: string;
  pod: V1Pod;
  dir: string;
  startTime: string;
  /** startTime to the millisecond (the API's is in whole seconds): the active deadline counts from it. */
  startTimeMs: number;
  containers: ContainerRun[];
  /** Processes spawned (or the pod failed before that); no further start attempts. */
  started: boolean;
  /** DeadlineExceeded / Evicted / unmappable container: the pod is Failed whatever the exits. */
  failure?: { reason: string; message: string };
  terminating: boolean;
  deadlineTimer?: NodeJS.Timeout;
  killTimers: NodeJS.Timeout[];
  conditionTimes: Map<string, { status: string; time: string }>;
  lastPostedStatus?: string;
}

export async function startLocalKubelet(options: LocalKubeletOptions): Promise<LocalKubelet> {
  const kubelet = new LocalKubeletImpl(options);
  await kubelet.start();
  return kubelet;
}

class LocalKubeletImpl implements LocalKubelet {
  readonly nodeName: string;
  logDir: string;
  private readonly core: CoreV1Api;
  private readonly watch: Watch;
  private workDir = "";
  private ownsLogDir: boolean;
  private stopped = false;
  private stopPromise?: Promise<void>;
  private readonly cache = new Map<string, V1Pod>(); // uid → latest object seen
  private readonly runs = new Map<string, PodRun>(); // uid → local run
  private readonly latestLogs = new Map<string, string>(); // ns/name/container → log path
  private readonly syncStates = new Map<string, { running: boolean; again: boolean }>();
  private readonly timers: NodeJS.Timeout[] = [];
  private watchAbort?: AbortController;
  private watchLoopDone?: Promise<void>;
  private readonly nodeLabels: Record<string, string>;
  private readonly allocatable: Record<string, string>;
  private readonly cluster: { server: string; caData?: string; caFile?: string; skipTLSVerify: boolean };

  constructor(private readonly options: LocalKubeletOptions) {
    this.nodeName = options.nodeName ?? "local-kubelet";
    this.ownsLogDir = options.logDir === undefined;
    this.logDir = options.logDir ? resolve(options.logDir) : "";
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.watch = new Watch(options.kubeConfig);
    const cluster = options.kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error("local-kubelet: the kubeconfig has no current cluster");
    this.cluster = cluster;
    this.nodeLabels = {
      "kubernetes.io/hostname": this.nodeName,
      "kubernetes.io/os": "linux",
      "kubernetes.io/arch": process.arch === "x64" ? "amd64" : process.arch,
      ...options.nodeLabels,
    };
    this.allocatable = {
      cpu: options.cpu ?? "16",
      memory: options.memory ?? "64Gi",
      pods: String(options.maxPods ?? 110),
      "ephemeral-storage": "100Gi",
      ...(options.gpus ? { [GPU]: String(options.gpus) } : {}),
    };
  }

  async start(): Promise<void> {
    installExitHook();
    this.workDir = await mkdtemp(join(tmpdir(), "local-kubelet-"));
    if (this.ownsLogDir) this.logDir = join(this.workDir, "logs");
    await mkdir(this.logDir, { recursive: true });
    await this.registerNode();
    const heartbeat = setInterval(
      () => void this.postNodeStatus().catch((err) => this.log(`heartbeat failed: ${describe(err)}`)),
      this.options.heartbeatIntervalMs ?? 10_000,
    );
    const resync = setInterval(() => {
      for (const uid of new Set([...this.cache.keys(), ...this.runs.keys()])) this.enqueue(uid);
    }, this.options.resyncIntervalMs ?? 3_000);
    this.timers.push(heartbeat, resync);
    for (const timer of this.timers) timer.unref();
    let firstList!: () => void;
    const listed = new Promise<void>((done) => (firstList = done));
    this.watchLoopDone = this.watchLoop(firstList);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((done) => (timer = setTimeout(() => done(true), START_TIMEOUT_MS)));
    const failed = await Promise.race([listed.then(() => false), timedOut]);
    clearTimeout(timer);
    if (failed) {
      await this.stop();
      throw new Error(`local-kubelet: no pod list from the apiserver within ${START_TIMEOUT_MS} ms`);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Node

  private async registerNode(): Promise<void> {
    const node: V1Node = {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: this.nodeName, labels: this.nodeLabels },
      spec: { taints: this.options.taints ?? [] },
    };
    try {
      await this.core.createNode({ body: node, fieldManager: FIELD_MANAGER });
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 409)) throw err;
      await this.core.patchNode(
        {
          name: this.nodeName,
          body: { metadata: node.metadata, spec: node.spec },
          fieldManager: FIELD_MANAGER,
        },
        mergePatch,
      );
    }
    await this.postNodeStatus();
  }

  private async postNodeStatus(): Promise<void> {
    const now = rfc3339();
    const condition = (type: string, status: string, reason: string, message: string) => ({
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: now,
      lastTransitionTime: this.nodeStartTime,
    });
    const status = {
      capacity: this.allocatable,
      allocatable: this.allocatable,
      conditions: [
        condition(
          "MemoryPressure",
          "False",
          "KubeletHasSufficientMemory",
          "local-kubelet has sufficient memory",
        ),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "local-kubelet has no disk pressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID", "local-kubelet has sufficient PID"),
        condition("Ready", "True", "KubeletReady", "local-kubelet test harness is posting ready status"),
      ],
      addresses: [
        { type: "InternalIP", address: "127.0.0.1" },
        { type: "Hostname", address: this.nodeName },
      ],
      nodeInfo: {
        architecture: this.nodeLabels["kubernetes.io/arch"],
        operatingSystem: "linux",
        kubeletVersion: "v1.20.2-local",
        kubeProxyVersion: "",
        containerRuntimeVersion: "local-process://0",
        kernelVersion: "",
        osImage: "local-kubelet test harness",
        machineID: "",
        systemUUID: "",
        bootID: "",
      },
    };
    await withTimeout(
      this.core.patchNodeStatus(
        { name: this.nodeName, body: { status }, fieldManager: FIELD_MANAGER },
        mergePatch,
      ),
    );
  }

  private readonly nodeStartTime = rfc3339();

  // ------------------------------------------------------------------------------------------
  // List + watch: every end of a watch (timeout, error, apiserver restart, 410) leads to a relist,
  // which also catches pods created or deleted while no watch was open.

  private async watchLoop(firstList: () => void): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        const list = await withTimeout(this.core.listPodForAllNamespaces({}));
        if (this.stopped) break;
        const items = (list.items ?? []).map((pod) => plain(pod));
        const seen = new Set<string>();
        for (const pod of items) {
          const uid = pod.metadata?.uid;
          if (!uid) continue;
          seen.add(uid);
          this.cache.set(uid, pod);
        }
        for (const uid of [...this.cache.keys()]) if (!seen.has(uid)) this.cache.delete(uid);
        for (const uid of new Set([...seen, ...this.runs.keys()])) this.enqueue(uid);
        firstList();
        failures = 0;
        await this.watchOnce(list.metadata?.resourceVersion ?? "");
      } catch (err) {
        failures += 1;
        if (!this.stopped) this.log(`pod list/watch failed (${failures}): ${describe(err)}`);
        await sleep(Math.min(100 * 2 ** failures, 2_000));
      }
    }
    firstList();
  }

  /** Resolves when the watch ends, whatever the reason. */
  private watchOnce(resourceVersion: string): Promise<void> {
    return new Promise<void>((done) => {
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        this.watchAbort = undefined;
        done();
      };
      this.watch
        .watch(
          "/api/v1/pods",
          { resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 20 },
          (type: string, object: V1Pod & { code?: number }) => {
            if (type === "ERROR") {
              this.log(`watch ERROR ${JSON.stringify(object)}; relisting`);
              this.watchAbort?.abort();
              end();
              return;
            }
            const uid = object.metadata?.uid;
            if (!uid || type === "BOOKMARK") return;
            if (type === "DELETED") this.cache.delete(uid);
            else this.cache.set(uid, object);
            this.enqueue(uid);
          },
          (err: unknown) => {
            if (err && !this.stopped && !isTimeout(err)) this.log(`watch ended: ${describe(err)}`);
            end();
          },
        )
        .then(
          (abort) => {
            if (ended || this.stopped) abort.abort();
            else this.watchAbort = abort;
          },
          (err: unknown) => {
            this.log(`watch failed to start: ${describe(err)}`);
            end();
          },
        );
    });
  }

  // ------------------------------------------------------------------------------------------
  // Per-pod sync, serialised per uid; a sync requested while one runs runs once more afterwards.

  private enqueue(uid: string): void {
    if (this.stopped) return;
    let state = this.syncStates.get(uid);
    if (!state) {
      state = { running: false, again: false };
      this.syncStates.set(uid, state);
    }
    if (state.running) {
      state.again = true;
      return;
    }
    state.running = true;
    const current = state;
    void (async () => {
      try {
        do {
          current.again = false;
          await this.syncPod(uid).catch((err) => this.log(`sync ${uid} failed: ${describe(err)}`));
        } while (current.again && !this.stopped);
      } finally {
        current.running = false;
        this.syncStates.delete(uid);
      }
    })();
  }

  private watches(pod: V1Pod): boolean {
    const namespaces = this.options.namespaces;
    return !namespaces || namespaces.includes(pod.metadata?.namespace ?? "");
  }

  private async syncPod(uid: string): Promise<void> {
    const pod = this.cache.get(uid);
    const run = this.runs.get(uid);
    if (!pod) {
      // Gone from the API (force-deleted, or deleted by us): nothing left to report.
      if (run) await this.forget(run);
      return;
    }
    if (!this.watches(pod)) return;
    const nodeName = pod.spec?.nodeName;
    if (!nodeName) {
      if (!pod.metadata?.deletionTimestamp) await this.trySchedule(pod);
      return;
    }
    if (nodeName !== this.nodeName) return;
    if (run) run.pod = pod;
    if (pod.metadata?.deletionTimestamp) {
      await this.finishDeletion(pod, run);
      return;
    }
    const phase = pod.status?.phase;
    if (!run) {
      if (phase === "Succeeded" || phase === "Failed") return;
      if (pod.status?.containerStatuses?.some((status) => status.state?.running)) {
        await this.reportLost(pod);
        return;
      }
      await this.startPod(pod);
      return;
    }
    if (!run.started && !run.terminating && !run.failure) await this.tryStartContainers(run);
    this.armDeadline(run);
    await this.postStatus(run);
  }

  // ------------------------------------------------------------------------------------------
  // Scheduling (a one-node scheduler)

  private async trySchedule(pod: V1Pod): Promise<void> {
    if (this.options.schedule === false) return;
    const schedulerName = pod.spec?.schedulerName;
    if (schedulerName && schedulerName !== "default-scheduler") return;
    const misfit = this.whyNotFit(pod);
    const { namespace, name } = podRef(pod);
    if (!misfit) {
      try {
        await withTimeout(
          this.core.createNamespacedPodBinding({
            namespace,
            name,
            body: {
              apiVersion: "v1",
              kind: "Binding",
              metadata: { name, namespace, uid: pod.metadata?.uid },
              target: { apiVersion: "v1", kind: "Node", name: this.nodeName },
            },
            fieldManager: FIELD_MANAGER,
          }),
        );
        this.log(`bound ${namespace}/${name} to ${this.nodeName}`);
      } catch (err) {
        // 409: bound meanwhile (another harness, or a retry); 404: deleted meanwhile.
        if (!(err instanceof ApiException && (err.code === 409 || err.code === 404))) throw err;
      }
      return;
    }
    const message = `0/1 nodes are available: 1 ${misfit}.`;
    const existing = pod.status?.conditions?.find((c) => c.type === "PodScheduled");
    if (existing?.status === "False" && existing.reason === "Unschedulable" && existing.message === message)
      return;
    await this.patchPodStatus(pod, {
      phase: "Pending",
      conditions: [
        {
          type: "PodScheduled",
          status: "False",
          reason: "Unschedulable",
          message,
          lastProbeTime: null,
          lastTransitionTime: rfc3339(),
        } as unknown as V1PodCondition,
      ],
    });
  }

  /** The reason this node does not fit the pod, in the scheduler's words; undefined if it fits. */
  private whyNotFit(pod: V1Pod): string | undefined {
    const spec = pod.spec;
    if (!spec) return "pod has no spec";
    for (const [key, value] of Object.entries(spec.nodeSelector ?? {})) {
      if (this.nodeLabels[key] !== value) return "node(s) didn't match node selector";
    }
    const required = spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution;
    if (required?.nodeSelectorTerms?.length) {
      const matches = required.nodeSelectorTerms.some(
        (term) =>
          (term.matchExpressions ?? []).every((req) => matchesRequirement(this.nodeLabels, req)) &&
          (term.matchFields ?? []).every((req) =>
            matchesRequirement({ "metadata.name": this.nodeName }, req),
          ),
      );
      if (!matches) return "node(s) didn't match node selector";
    }
    for (const taint of this.options.taints ?? []) {
      if (taint.effect === "PreferNoSchedule") continue;
      if (!(spec.tolerations ?? []).some((toleration) => tolerates(toleration, taint))) {
        return `node(s) had taint {${taint.key}: ${taint.value ?? ""}}, that the pod didn't tolerate`;
      }
    }
    const used = new Map<string, number>();
    for (const other of this.cache.values()) {
      if (other.spec?.nodeName !== this.nodeName) continue;
      if (other.status?.phase === "Succeeded" || other.status?.phase === "Failed") continue;
      for (const [resource, amount] of podRequests(other))
        used.set(resource, (used.get(resource) ?? 0) + amount);
      used.set("pods", (used.get("pods") ?? 0) + 1);
    }
    const wanted = podRequests(pod);
    wanted.set("pods", 1);
    const insufficient: string[] = [];
    for (const [resource, amount] of wanted) {
      if (amount <= 0) continue;
      const allocatable = quantityValue(this.allocatable[resource] ?? "0");
      if ((used.get(resource) ?? 0) + amount > allocatable + 1e-9) insufficient.push(resource);
    }
    if (insufficient.length) return insufficient.map((r) => `Insufficient ${r}`).join(", ");
    return undefined;
  }

  // ------------------------------------------------------------------------------------------
  // Running a pod

  private async startPod(pod: V1Pod): Promise<void> {
    const { namespace, name } = podRef(pod);
    const uid = pod.metadata!.uid!;
    const dir = join(this.workDir, "pods", `${namespace}_${name}_${uid.slice(0, 8)}`);
    await mkdir(dir, { recursive: true });
    const run: PodRun = {
      uid,
      namespace,
      name,
      pod,
      dir,
      startTime: rfc3339(),
      startTimeMs: Date.now(),
      started: false,
      terminating: false,
      killTimers: [],
      conditionTimes: new Map(),
      containers: (pod.spec?.containers ?? []).map((spec) => {
        const logPath = join(this.logDir, `${namespace}_${name}_${uid.slice(0, 8)}_${spec.name}.log`);
        this.latestLogs.set(`${namespace}/${name}/${spec.name}`, logPath);
        return { spec, logPath, state: { kind: "waiting", reason: "ContainerCreating" } };
      }),
    };
    if ((pod.spec?.initContainers ?? []).length > 0) {
      this.log(`${namespace}/${name}: init containers are not run by local-kubelet`);
    }
    if ((pod.spec?.restartPolicy ?? "Always") !== "Never") {
      this.log(`${namespace}/${name}: restartPolicy ${pod.spec?.restartPolicy ?? "Always"} treated as Never`);
    }
    this.runs.set(uid, run);
    await this.postStatus(run);
    await this.tryStartContainers(run);
    this.armDeadline(run);
    await this.postStatus(run);
  }

  /**
   * Prepares credentials, environment and argv for every container, then spawns them all. A
   * preparation failure leaves the containers waiting with the kubelet's reason; the next sync
   * retries (the service account or a secret may appear later), except for unmappable commands.
   */
  private async tryStartContainers(run: PodRun): Promise<void> {
    const pod = run.pod;
    const plans: Array<{ container: ContainerRun; argv: string[]; env: Record<string, string> }> = [];
    let unmapped = false;
    for (const container of run.containers) {
      const argv = this.localArgv(container.spec);
      if (typeof argv === "string") {
        unmapped = true;
        container.state = { kind: "waiting", reason: "ErrImageNeverPull", message: argv };
      } else {
        plans.push({ container, argv, env: {} });
      }
    }
    if (unmapped) {
      if (this.options.unmappedContainer === "fail") {
        const finishedAt = rfc3339();
        for (const container of run.containers) {
          const message = container.state.kind === "waiting" ? container.state.message : undefined;
          container.state = {
            kind: "terminated",
            exitCode: 128,
            reason: message ? "ContainerCannotRun" : "Error",
            message: message ?? "not started: another container of the pod cannot run",
            finishedAt,
          };
        }
        run.failure = {
          reason: "ContainerCannotRun",
          message: "a container has no local command (local-kubelet)",
        };
        run.started = true;
      }
      return;
    }

    let kubeconfigPath: string | undefined;
    try {
      kubeconfigPath = await this.mountServiceAccount(run);
    } catch (err) {
      for (const container of run.containers) {
        container.state = {
          kind: "waiting",
          reason: "ContainerCreating",
          message: `MountVolume.SetUp failed for the service account token: ${describe(err)}`,
        };
      }
      return;
    }
    for (const plan of plans) {
      try {
        plan.env = await this.containerEnv(pod, plan.container.spec, kubeconfigPath);
      } catch (err) {
        plan.container.state = {
          kind: "waiting",
          reason: "CreateContainerConfigError",
          message: describe(err),
        };
        return;
      }
      plan.argv = plan.argv.map((word) => expandVars(word, plan.env));
    }
    if (this.stopped || run.terminating || run.started || run.failure) return;
    run.started = true;
    for (const plan of plans) this.spawnContainer(run, plan.container, plan.argv, plan.env);
  }

  /** The local argv, or why there is none. */
  private localArgv(container: V1Container): string[] | string {
    const image = container.image ?? "";
    const entrypoint =
      this.options.images?.[image] ?? this.options.images?.[image.replace(/(@.*|:[^/:]*)$/, "")] ?? undefined;
    const fromImage = !container.command?.length;
    const argv = fromImage
      ? [...(entrypoint?.command ?? []), ...(container.args ?? entrypoint?.args ?? [])]
      : [...container.command!, ...(container.args ?? [])];
    const what = `container "${container.name}" (image "${image}")`;
    if (argv.length === 0) {
      return `local-kubelet: ${what} has no command and its image is not in options.images`;
    }
    const commands = this.options.commands ?? {};
    const prefix = commands[argv[0]!] ?? commands[basename(argv[0]!)];
    if (prefix) return [...prefix, ...argv.slice(1)];
    if (fromImage) return argv; // an entrypoint from options.images is a local command already
    return (
      `local-kubelet: ${what} runs ${JSON.stringify(argv[0])}, which has no local command ` +
      `(options.commands maps: ${Object.keys(commands).join(", ") || "nothing"})`
    );
  }

  /** What the ServiceAccount admission plugin + kubelet would do; returns the kubeconfig path. */
  private async mountServiceAccount(run: PodRun): Promise<string | undefined> {
    const spec = run.pod.spec!;
    const serviceAccountName = spec.serviceAccountName || spec.serviceAccount;
    if (!serviceAccountName || spec.automountServiceAccountToken === false) return undefined;
    const serviceAccount = await withTimeout(
      this.core.readNamespacedServiceAccount({ name: serviceAccountName, namespace: run.namespace }),
    );
    if (
      spec.automountServiceAccountToken === undefined &&
      serviceAccount.automountServiceAccountToken === false
    ) {
      return undefined;
    }
    const tokenRequest = await withTimeout(
      this.core.createNamespacedServiceAccountToken({
        name: serviceAccountName,
        namespace: run.namespace,
        body: {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: {
            audiences: [], // empty = the apiserver's audiences
            expirationSeconds: TOKEN_EXPIRATION_SECONDS,
            boundObjectRef: { apiVersion: "v1", kind: "Pod", name: run.name, uid: run.uid },
          },
        },
      }),
    );
    const token = tokenRequest.status?.token;
    if (!token) throw new Error("TokenRequest returned no token");
    const caPem = this.cluster.caData
      ? Buffer.from(this.cluster.caData, "base64").toString("utf8")
      : this.cluster.caFile
        ? await readFile(this.cluster.caFile, "utf8")
        : undefined;
    const secretsDir = join(run.dir, "serviceaccount");
    await mkdir(secretsDir, { recursive: true });
    await writeFile(join(secretsDir, "token"), token, { mode: 0o600 });
    await writeFile(join(secretsDir, "namespace"), run.namespace);
    if (caPem) await writeFile(join(secretsDir, "ca.crt"), caPem);
    const kubeconfig = {
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        {
          name: "local",
          cluster: {
            server: this.cluster.server,
            ...(caPem
              ? { "certificate-authority-data": Buffer.from(caPem).toString("base64") }
              : { "insecure-skip-tls-verify": this.cluster.skipTLSVerify }),
          },
        },
      ],
      users: [{ name: `system:serviceaccount:${run.namespace}:${serviceAccountName}`, user: { token } }],
      contexts: [
        {
          name: "in-cluster",
          context: {
            cluster: "local",
            user: `system:serviceaccount:${run.namespace}:${serviceAccountName}`,
            namespace: run.namespace,
          },
        },
      ],
      "current-context": "in-cluster",
    };
    const kubeconfigPath = join(secretsDir, "kubeconfig");
    await writeFile(kubeconfigPath, JSON.stringify(kubeconfig, null, 2), { mode: 0o600 });
    return kubeconfigPath;
  }

  private async containerEnv(
    pod: V1Pod,
    container: V1Container,
    kubeconfigPath: string | undefined,
  ): Promise<Record<string, string>> {
    const env: Record<string, string> = {};
    for (const name of this.options.inheritEnv ?? ["PATH"]) {
      const value = process.env[name];
      if (value !== undefined) env[name] = value;
    }
    const server = new URL(this.cluster.server);
    const port = server.port || "443";
    Object.assign(env, {
      HOME: this.runs.get(pod.metadata!.uid!)?.dir ?? tmpdir(),
      HOSTNAME: pod.metadata?.name ?? "",
      KUBERNETES_SERVICE_HOST: server.hostname,
      KUBERNETES_SERVICE_PORT: port,
      KUBERNETES_SERVICE_PORT_HTTPS: port,
      ...(kubeconfigPath ? { KUBECONFIG: kubeconfigPath } : {}),
      ...this.options.extraEnv,
    });
    const namespace = pod.metadata!.namespace!;
    for (const source of container.envFrom ?? []) {
      const prefix = source.prefix ?? "";
      if (source.configMapRef) {
        const data = await this.readConfigMap(
          namespace,
          source.configMapRef.name!,
          source.configMapRef.optional,
        );
        for (const [key, value] of Object.entries(data ?? {})) env[prefix + key] = value;
      }
      if (source.secretRef) {
        const data = await this.readSecret(namespace, source.secretRef.name!, source.secretRef.optional);
        for (const [key, value] of Object.entries(data ?? {})) env[prefix + key] = value;
      }
    }
    // The container's own variables see only those defined before them (and the service ones).
    const defined: Record<string, string> = { ...env };
    for (const variable of container.env ?? []) {
      const value = await this.envValue(pod, variable, defined);
      if (value === undefined) continue;
      env[variable.name] = value;
      defined[variable.name] = value;
    }
    return env;
  }

  private async envValue(
    pod: V1Pod,
    variable: V1EnvVar,
    defined: Record<string, string>,
  ): Promise<string | undefined> {
    if (!variable.valueFrom) return expandVars(variable.value ?? "", defined);
    const namespace = pod.metadata!.namespace!;
    const { fieldRef, configMapKeyRef, secretKeyRef, resourceFieldRef } = variable.valueFrom;
    if (fieldRef) return downwardField(pod, fieldRef.fieldPath, variable.name);
    if (configMapKeyRef) {
      const data = await this.readConfigMap(namespace, configMapKeyRef.name!, configMapKeyRef.optional);
      const value = data?.[configMapKeyRef.key];
      if (value === undefined && !configMapKeyRef.optional) {
        throw new Error(
          `couldn't find key ${configMapKeyRef.key} in ConfigMap ${namespace}/${configMapKeyRef.name}`,
        );
      }
      return value;
    }
    if (secretKeyRef) {
      const data = await this.readSecret(namespace, secretKeyRef.name!, secretKeyRef.optional);
      const value = data?.[secretKeyRef.key];
      if (value === undefined && !secretKeyRef.optional) {
        throw new Error(`couldn't find key ${secretKeyRef.key} in Secret ${namespace}/${secretKeyRef.name}`);
      }
      return value;
    }
    if (resourceFieldRef)
      throw new Error(`env ${variable.name}: resourceFieldRef is not supported by local-kubelet`);
    throw new Error(`env ${variable.name}: unsupported valueFrom`);
  }

  private async readConfigMap(
    namespace: string,
    name: string,
    optional: boolean | undefined,
  ): Promise<Record<string, string> | undefined> {
    try {
      return (await withTimeout(this.core.readNamespacedConfigMap({ namespace, name }))).data ?? {};
    } catch (err) {
      if (optional && err instanceof ApiException && err.code === 404) return undefined;
      if (err instanceof ApiException && err.code === 404) throw new Error(`configmap "${name}" not found`);
      throw err;
    }
  }

  private async readSecret(
    namespace: string,
    name: string,
    optional: boolean | undefined,
  ): Promise<Record<string, string> | undefined> {
    try {
      const data = (await withTimeout(this.core.readNamespacedSecret({ namespace, name }))).data ?? {};
      return Object.fromEntries(
        Object.entries(data).map(([key, value]) => [key, Buffer.from(value, "base64").toString("utf8")]),
      );
    } catch (err) {
      if (optional && err instanceof ApiException && err.code === 404) return undefined;
      if (err instanceof ApiException && err.code === 404) throw new Error(`secret "${name}" not found`);
      throw err;
    }
  }

  private spawnContainer(
    run: PodRun,
    container: ContainerRun,
    argv: string[],
    env: Record<string, string>,
  ): void {
    const [command, args] = hasSetpriv
      ? ["setpriv", ["--pdeathsig", "SIGKILL", "--", ...argv]]
      : [argv[0]!, argv.slice(1)];
    // The log file is the process's stdout and stderr, so grandchildren's output lands there too.
    const logFd = openSync(container.logPath, "a");
    let child: ChildProcess;
    try {
      child = spawn(command, args, { cwd: run.dir, env, detached: true, stdio: ["ignore", logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    const startedAt = rfc3339();
    container.child = child;
    container.pid = child.pid;
    if (child.pid !== undefined) liveProcessGroups.add(child.pid);
    container.state = { kind: "running", startedAt };
    this.log(
      `${run.namespace}/${run.name}/${container.spec.name}: started pid ${child.pid}: ${argv.join(" ")}`,
    );
    container.exited = new Promise<void>((done) => {
      let finishing = false;
      const finish = async (exitCode: number, signal: NodeJS.Signals | null, spawnError?: string) => {
        if (finishing) return;
        finishing = true;
        if (child.pid !== undefined) {
          signalGroup(child.pid, "SIGKILL"); // like a container's PID 1 exiting: the rest goes with it
          liveProcessGroups.delete(child.pid);
        }
        const signalNumber = signal ? osConstants.signals[signal] : undefined;
        const message = spawnError ?? (exitCode !== 0 ? await terminationMessage(container) : undefined);
        container.child = undefined;
        container.state = {
          kind: "terminated",
          exitCode,
          ...(signalNumber !== undefined ? { signal: signalNumber } : {}),
          reason: spawnError ? "StartError" : exitCode === 0 ? "Completed" : "Error",
          startedAt,
          finishedAt: rfc3339(),
          ...(message ? { message } : {}),
        };
        this.log(
          `${run.namespace}/${run.name}/${container.spec.name}: exited code=${exitCode} signal=${signal ?? ""}`,
        );
        done();
        this.enqueue(run.uid);
      };
      child.once("error", (err) => void finish(128, null, err.message));
      child.once(
        "exit",
        (code, signal) => void finish(code ?? 128 + (signal ? osConstants.signals[signal] : 0), signal),
      );
    });
  }

  /** SIGTERM to every running container, SIGKILL after the grace period. Resolves when all exited. */
  private killContainers(run: PodRun, graceSeconds: number): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const container of run.containers) {
      if (container.state.kind !== "running" || container.pid === undefined) continue;
      const pid = container.pid;
      if (graceSeconds <= 0) {
        signalGroup(pid, "SIGKILL");
      } else {
        signalGroup(pid, "SIGTERM");
        const timer = setTimeout(() => signalGroup(pid, "SIGKILL"), graceSeconds * 1000);
        timer.unref();
        run.killTimers.push(timer);
      }
      if (container.exited) waits.push(container.exited);
    }
    return Promise.all(waits).then(() => undefined);
  }

  private armDeadline(run: PodRun): void {
    const seconds = run.pod.spec?.activeDeadlineSeconds;
    if (run.deadlineTimer) clearTimeout(run.deadlineTimer);
    run.deadlineTimer = undefined;
    if (seconds === undefined || seconds === null || run.failure || run.terminating || this.isDone(run))
      return;
    const delay = Math.max(0, run.startTimeMs + seconds * 1000 - Date.now());
    run.deadlineTimer = setTimeout(() => {
      run.deadlineTimer = undefined;
      if (run.failure || run.terminating || this.stopped) return;
      this.log(`${run.namespace}/${run.name}: active deadline of ${seconds} s exceeded`);
      void this.failPod(
        run,
        {
          reason: "DeadlineExceeded",
          message: "Pod was active on the node longer than the specified deadline",
        },
        graceSeconds(run.pod),
      );
    }, delay);
    run.deadlineTimer.unref();
  }

  /** Phase Failed with a pod-level reason; kills what runs, and nothing starts any more. */
  private async failPod(
    run: PodRun,
    failure: { reason: string; message: string },
    killGraceSeconds: number,
  ): Promise<void> {
    run.failure = failure;
    if (run.deadlineTimer) clearTimeout(run.deadlineTimer);
    run.started = true;
    for (const container of run.containers) {
      if (container.state.kind === "waiting") {
        container.state = {
          kind: "terminated",
          exitCode: 137,
          reason: "ContainerStatusUnknown",
          message: `never started: the pod failed (${failure.reason})`,
          finishedAt: rfc3339(),
        };
      }
    }
    this.enqueue(run.uid);
    await this.killContainers(run, killGraceSeconds);
  }

  private isDone(run: PodRun): boolean {
    return run.started && run.containers.every((c) => c.state.kind === "terminated");
  }

  // ------------------------------------------------------------------------------------------
  // Deletion

  private async finishDeletion(pod: V1Pod, run: PodRun | undefined): Promise<void> {
    if (run) {
      if (run.deadlineTimer) clearTimeout(run.deadlineTimer);
      const running = run.containers.some((c) => c.state.kind === "running");
      if (running) {
        if (!run.terminating) {
          run.terminating = true;
          const grace = graceSeconds(pod);
          this.log(`${run.namespace}/${run.name}: deleting: SIGTERM, SIGKILL after ${grace} s`);
          void this.killContainers(run, grace);
        }
        return; // each exit re-syncs; the last one finishes the deletion
      }
      run.terminating = true;
      await this.postStatus(run).catch(() => undefined);
    }
    const { namespace, name } = podRef(pod);
    try {
      await withTimeout(
        this.core.deleteNamespacedPod({
          namespace,
          name,
          gracePeriodSeconds: 0,
          body: { gracePeriodSeconds: 0, preconditions: { uid: pod.metadata?.uid } },
        }),
      );
      this.log(`${namespace}/${name}: deleted (grace period over)`);
    } catch (err) {
      if (!(err instanceof ApiException && (err.code === 404 || err.code === 409))) throw err;
    }
  }

  /** The pod object is gone: kill what still runs and drop the run (logs stay). */
  private async forget(run: PodRun): Promise<void> {
    if (run.deadlineTimer) clearTimeout(run.deadlineTimer);
    const wasTerminating = run.terminating;
    run.terminating = true;
    if (run.containers.some((c) => c.state.kind === "running")) {
      if (!wasTerminating) void this.killContainers(run, graceSeconds(run.pod));
      return; // back here after the exits
    }
    for (const timer of run.killTimers) clearTimeout(timer);
    this.runs.delete(run.uid);
    await rm(run.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  /** A pod started on this node by an earlier harness instance: its processes are gone. */
  private async reportLost(pod: V1Pod): Promise<void> {
    const finishedAt = rfc3339();
    await this.patchPodStatus(pod, {
      phase: "Failed",
      containerStatuses: (pod.spec?.containers ?? []).map((container) => ({
        name: container.name,
        image: container.image ?? "",
        imageID: "",
        ready: false,
        started: false,
        restartCount: 0,
        state: {
          terminated: {
            exitCode: 137,
            reason: "ContainerStatusUnknown",
            message: "The container could not be located when the pod was terminated",
            finishedAt: finishedAt as unknown as Date,
          },
        },
      })),
    });
  }

  // ------------------------------------------------------------------------------------------
  // Status

  private computeStatus(run: PodRun): V1PodStatus {
    const allTerminated = run.containers.every((c) => c.state.kind === "terminated");
    const allRunning = run.containers.every((c) => c.state.kind === "running");
    let phase: string;
    if (run.failure) phase = "Failed";
    else if (!run.started) phase = "Pending";
    else if (allTerminated) {
      phase = run.containers.every((c) => c.state.kind === "terminated" && c.state.exitCode === 0)
        ? "Succeeded"
        : "Failed";
    } else phase = "Running";
    const ready = allRunning && !run.terminating && !run.failure;
    const unready = run.containers.filter((c) => c.state.kind !== "running").map((c) => c.spec.name);
    const notReadyReason =
      phase === "Succeeded" || phase === "Failed" ? "PodCompleted" : "ContainersNotReady";
    const notReadyMessage =
      phase === "Succeeded" || phase === "Failed"
        ? undefined
        : `containers with unready status: [${unready.join(" ")}]`;
    const condition = (type: string, ok: boolean, reason?: string, message?: string) => {
      const status = ok ? "True" : "False";
      let times = run.conditionTimes.get(type);
      if (!times || times.status !== status) {
        times = { status, time: rfc3339() };
        run.conditionTimes.set(type, times);
      }
      return {
        type,
        status,
        lastProbeTime: null,
        lastTransitionTime: times.time,
        reason: ok ? null : (reason ?? null),
        message: ok ? null : (message ?? null),
      } as unknown as V1PodCondition;
    };
    const containerStatuses: V1ContainerStatus[] = run.containers.map((container) => {
      const state = container.state;
      const containerID = container.pid !== undefined ? `local-process://${container.pid}` : undefined;
      return {
        name: container.spec.name,
        image: container.spec.image ?? "",
        imageID: container.spec.image ? `local-kubelet://${container.spec.image}` : "",
        ...(containerID ? { containerID } : {}),
        ready: state.kind === "running" && ready,
        started: state.kind === "running",
        restartCount: 0,
        state:
          state.kind === "waiting"
            ? { waiting: { reason: state.reason, ...(state.message ? { message: state.message } : {}) } }
            : state.kind === "running"
              ? { running: { startedAt: state.startedAt as unknown as Date } }
              : {
                  terminated: {
                    exitCode: state.exitCode,
                    ...(state.signal !== undefined ? { signal: state.signal } : {}),
                    reason: state.reason,
                    ...(state.message ? { message: state.message } : {}),
                    ...(state.startedAt ? { startedAt: state.startedAt as unknown as Date } : {}),
                    finishedAt: state.finishedAt as unknown as Date,
                    ...(containerID ? { containerID } : {}),
                  },
                },
      };
    });
    return {
      phase,
      reason: (run.failure?.reason ?? null) as string,
      message: (run.failure?.message ?? null) as string,
      hostIP: "127.0.0.1",
      podIP: "127.0.0.1",
      podIPs: [{ ip: "127.0.0.1" }],
      startTime: run.startTime as unknown as Date,
      conditions: [
        condition("Initialized", true),
        condition("Ready", ready, notReadyReason, notReadyMessage),
        condition("ContainersReady", ready, notReadyReason, notReadyMessage),
        condition("PodScheduled", true),
      ],
      containerStatuses,
    };
  }

  private async postStatus(run: PodRun): Promise<void> {
    if (this.stopped) return;
    const status = this.computeStatus(run);
    const serialized = JSON.stringify(status);
    if (serialized === run.lastPostedStatus) return;
    const posted = await this.patchPodStatus(run.pod, status);
    if (posted) run.lastPostedStatus = serialized;
  }

  /** Strategic merge patch of pods/status (conditions merge by type); false if the pod is gone. */
  private async patchPodStatus(pod: V1Pod, status: V1PodStatus): Promise<boolean> {
    const { namespace, name } = podRef(pod);
    try {
      await withTimeout(
        this.core.patchNamespacedPodStatus(
          {
            namespace,
            name,
            body: { metadata: { uid: pod.metadata?.uid }, status },
            fieldManager: FIELD_MANAGER,
          },
          strategicMergePatch,
        ),
      );
      return true;
    } catch (err) {
      if (err instanceof ApiException && (err.code === 404 || err.code === 409)) return false;
      throw err;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Test hooks

  pods(): LocalPodInfo[] {
    return [...this.runs.values()].map((run) => ({
      namespace: run.namespace,
      name: run.name,
      uid: run.uid,
      phase: this.computePhase(run),
      containers: run.containers.map((c) => ({
        name: c.spec.name,
        state: c.state.kind,
        ...(c.state.kind === "running" && c.pid !== undefined ? { pid: c.pid } : {}),
        ...(c.state.kind === "terminated" ? { exitCode: c.state.exitCode } : {}),
        ...(c.state.kind !== "running" ? { reason: c.state.reason } : {}),
      })),
    }));
  }

  private computePhase(run: PodRun): string {
    return this.computeStatus({ ...run, conditionTimes: new Map() }).phase ?? "Unknown";
  }

  async logs(namespace: string, name: string, container?: string): Promise<string> {
    let path = container ? this.latestLogs.get(`${namespace}/${name}/${container}`) : undefined;
    if (!container) {
      const prefix = `${namespace}/${name}/`;
      path = [...this.latestLogs.entries()].find(([key]) => key.startsWith(prefix))?.[1];
    }
    if (!path) return "";
    return readFile(path, "utf8").catch(() => "");
  }

  killContainer(
    namespace: string,
    name: string,
    container?: string,
    signal: NodeJS.Signals = "SIGKILL",
  ): void {
    const run = this.findRun(namespace, name);
    const target = container ? run.containers.find((c) => c.spec.name === container) : run.containers[0];
    if (!target || target.state.kind !== "running" || target.pid === undefined) {
      throw new Error(`local-kubelet: ${namespace}/${name} has no running container ${container ?? ""}`);
    }
    this.log(`${namespace}/${name}/${target.spec.name}: test hook sends ${signal}`);
    signalGroup(target.pid, signal);
  }

  async evict(
    namespace: string,
    name: string,
    message = "The node was low on resource: memory.",
  ): Promise<void> {
    await this.failPod(this.findRun(namespace, name), { reason: "Evicted", message }, 0);
  }

  private findRun(namespace: string, name: string): PodRun {
    const runs = [...this.runs.values()].filter((r) => r.namespace === namespace && r.name === name);
    const run = runs.at(-1);
    if (!run) throw new Error(`local-kubelet: pod ${namespace}/${name} is not on node ${this.nodeName}`);
    return run;
  }

  stop(): Promise<void> {
    this.stopPromise ??= (async () => {
      this.stopped = true;
      for (const timer of this.timers) clearInterval(timer);
      this.watchAbort?.abort();
      const exits: Promise<void>[] = [];
      for (const run of this.runs.values()) {
        if (run.deadlineTimer) clearTimeout(run.deadlineTimer);
        for (const timer of run.killTimers) clearTimeout(timer);
        exits.push(this.killContainers(run, 0));
      }
      await Promise.race([Promise.all(exits), sleep(5_000)]);
      await Promise.race([this.watchLoopDone, sleep(5_000)]);
      await withTimeout(this.core.deleteNode({ name: this.nodeName }), 3_000).catch(() => undefined);
      await rm(join(this.workDir, "pods"), { recursive: true, force: true });
      if (this.ownsLogDir) await rm(this.workDir, { recursive: true, force: true });
    })();
    return this.stopPromise;
  }

  private log(line: string): void {
    if (!this.logDir) return;
    void appendFile(join(this.logDir, "local-kubelet.log"), `${new Date().toISOString()} ${line}\n`).catch(
      () => undefined,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function podRef(pod: V1Pod): { namespace: string; name: string } {
  return { namespace: pod.metadata?.namespace ?? "default", name: pod.metadata?.name ?? "" };
}

/** The kubelet's grace period for killing a pod's containers: never below 2 s, as there. */
function graceSeconds(pod: V1Pod): number {
  const requested =
    pod.metadata?.deletionGracePeriodSeconds ??
    pod.spec?.terminationGracePeriodSeconds ??
    DEFAULT_GRACE_SECONDS;
  return Math.max(MINIMUM_GRACE_SECONDS, requested);
}

/** terminationMessagePolicy FallbackToLogsOnError: the log tail is the message of a failed container. */
async function terminationMessage(container: ContainerRun): Promise<string | undefined> {
  if (container.spec.terminationMessagePolicy !== "FallbackToLogsOnError") return undefined;
  const text = await readFile(container.logPath, "utf8").catch(() => "");
  return text.slice(-TERMINATION_LOG_TAIL_BYTES).trimEnd() || undefined;
}

/** The downward API fields a pod's env can refer to. */
function downwardField(pod: V1Pod, fieldPath: string, variable: string): string {
  const labelOrAnnotation = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (labelOrAnnotation) {
    const map = labelOrAnnotation[1] === "labels" ? pod.metadata?.labels : pod.metadata?.annotations;
    return map?.[labelOrAnnotation[2]!] ?? "";
  }
  switch (fieldPath) {
    case "metadata.name":
      return pod.metadata?.name ?? "";
    case "metadata.namespace":
      return pod.metadata?.namespace ?? "";
    case "metadata.uid":
      return pod.metadata?.uid ?? "";
    case "spec.nodeName":
      return pod.spec?.nodeName ?? "";
    case "spec.serviceAccountName":
      return pod.spec?.serviceAccountName ?? "";
    case "status.podIP":
    case "status.podIPs":
    case "status.hostIP":
      return "127.0.0.1";
    default:
      throw new Error(`env ${variable}: unsupported fieldRef ${fieldPath}`);
  }
}

/** Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, unknown ones stay. */
function expandVars(input: string, defined: Record<string, string>): string {
  return input.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name: string | undefined) =>
    match === "$$" ? "$" : (defined[name!] ?? match),
  );
}

function matchesRequirement(labels: Record<string, string>, requirement: V1NodeSelectorRequirement): boolean {
  const value = labels[requirement.key];
  const values = requirement.values ?? [];
  switch (requirement.operator) {
    case "In":
      return value !== undefined && values.includes(value);
    case "NotIn":
      return value === undefined || !values.includes(value);
    case "Exists":
      return value !== undefined;
    case "DoesNotExist":
      return value === undefined;
    case "Gt":
      return value !== undefined && Number(value) > Number(values[0]);
    case "Lt":
      return value !== undefined && Number(value) < Number(values[0]);
    default:
      return false;
  }
}

function tolerates(
  toleration: { key?: string; operator?: string; value?: string; effect?: string },
  taint: V1Taint,
): boolean {
  if (toleration.effect && toleration.effect !== taint.effect) return false;
  if (!toleration.key) return toleration.operator === "Exists";
  if (toleration.key !== taint.key) return false;
  return toleration.operator === "Exists" || (toleration.value ?? "") === (taint.value ?? "");
}

/** Sum of container requests per resource (a limit alone counts as the request, as the apiserver defaults it). */
function podRequests(pod: V1Pod): Map<string, number> {
  const total = new Map<string, number>();
  for (const container of pod.spec?.containers ?? []) {
    const resources = { ...container.resources?.limits, ...container.resources?.requests };
    for (const [resource, quantity] of Object.entries(resources)) {
      total.set(resource, (total.get(resource) ?? 0) + quantityValue(String(quantity)));
    }
  }
  return total;
}

/** A resource quantity as a float ("500m" → 0.5, "1Gi" → 1073741824); unparseable → Infinity (never fits). */
function quantityValue(quantity: string): number {
  return parseQuantity(quantity.trim()) ?? Number.POSITIVE_INFINITY;
}

/** A typed client-node object as plain JSON (Date → string), the shape watch events have. */
function plain<T>(object: T): T {
  return JSON.parse(JSON.stringify(object)) as T;
}

function rfc3339(date = new Date()): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

function withTimeout<T>(promise: Promise<T>, ms = API_CALL_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`API call timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function isTimeout(err: unknown): boolean {
  return err instanceof Error && err.name === "TimeoutError";
}

function describe(err: unknown): string {
  if (err instanceof ApiException) return `HTTP ${err.code}: ${String(err.body).slice(0, 300)}`;
  return err instanceof Error ? err.message : String(err);
}

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms).unref());
}
