/**
 * A real Kubernetes control plane for tests, envtest style: etcd + kube-apiserver (+ optionally
 * kube-controller-manager running only the garbage-collector and namespace controllers), all on
 * 127.0.0.1 with free ports and throw-away data, so it also works inside the loopback-only network
 * namespace of test/infra/run-tests.sh.
 *
 * The binaries come from test/infra/envtest/assets.sh (KUBEBUILDER_ASSETS, or Kubernetes 1.20.2
 * built from Debian bookworm sources and cached; run-tests.sh builds them before the tests start).
 * Typical use:
 *
 *   const assets = await resolveEnvtestAssets();
 *   test("…", { skip: assets.skipReason }, async () => {
 *     const cp = await startControlPlane({ controllerManager: true });
 *     try {
 *       const kc = new KubeConfig(); kc.loadFromFile(cp.kubeconfigPath);
 *       await cp.kubectl(["apply", "-f", "-"], { input: yaml });
 *     } finally { await cp.stop(); }
 *   });
 *
 * Authentication: a static admin token (group system:masters) from a token file, authorization
 * RBAC. `createUserToken(user, groups)` returns a token for any identity (pre-provision identities
 * with `users` to avoid an apiserver restart, see below); `createServiceAccountToken` uses the
 * TokenRequest API; `kubectl(["--as", user, …])` impersonates without a token.
 *
 * Garbage collection: CRDs created after the controller manager started reach its garbage collector
 * only at its fixed 30 s rediscovery — install them with `crdPaths` or call
 * `restartControllerManager()` after creating them. Process logs are in `logDir`; a failed start
 * throws with the tail of the failing component's log.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, readFileSync, rmSync, type WriteStream } from "node:fs";
import { appendFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { request as httpRequest } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export interface ControlPlaneOptions {
  /** Also run kube-controller-manager with the garbagecollector and namespace controllers. */
  controllerManager?: boolean;
  /** Keep the process logs (etcd.log, kube-apiserver.log, …) here; default: a temp dir removed on stop. */
  logDir?: string;
  /** Identities to put in the static token file up front, so createUserToken needs no restart. */
  users?: Array<{ name: string; groups?: string[] }>;
  /**
   * CRD manifests (files or folders, as for `kubectl apply -f`) to install and wait for before the
   * controller manager starts — like envtest's CRDDirectoryPaths.
   */
  crdPaths?: string[];
  /** Folder with the binaries; default: resolveEnvtestAssets(). */
  assetsDir?: string;
  /** kubectl binary; default: see chooseKubectl(). */
  kubectl?: string;
  /** Upper bound for each component to become ready (ms). Default 90 s. */
  startTimeoutMs?: number;
  /**
   * For a real kubelet (test/infra/real-node/): authorization Node,RBAC, the ServiceAccount
   * admission plugin on, and the controller manager running every controller a node needs (node
   * lifecycle, which lifts the not-ready taint; ReplicaSets and Deployments; the ServiceAccount and
   * token controllers, so that pods get real token secrets mounted) instead of only garbage
   * collection and namespaces. Implies `controllerManager`.
   */
  forRealNode?: boolean;
  /** Extra kube-apiserver flags, e.g. `--enable-admission-plugins=PodSecurityPolicy`. */
  extraApiserverArgs?: string[];
  /** Extra kube-controller-manager flags, e.g. a shorter `--node-monitor-grace-period`. */
  extraControllerManagerArgs?: string[];
  /**
   * More kube-controller-manager controllers beside garbagecollector and namespace, e.g.
   * `horizontalpodautoscaling` for an HPA scaling a custom resource. Implies `controllerManager`
   * (ignored with `forRealNode`, which runs them all).
   */
  extraControllers?: string[];
  /**
   * Where etcd keeps its data: "disk" (default: the temp dir, i.e. the machine's disk, so every
   * write waits for an fsync there) or "tmpfs" (/dev/shm: fsync costs nothing — benchmarks only, to
   * show how much of a figure is this machine's disk; a production etcd has a dedicated SSD).
   */
  etcdData?: "disk" | "tmpfs";
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ControlPlane {
  /** kubeconfig with the admin token (system:masters) as the current context. */
  kubeconfigPath: string;
  /** https://127.0.0.1:PORT */
  server: string;
  /** The static admin bearer token. */
  token: string;
  /** PEM bundle that verifies the apiserver's serving certificate (also embedded in the kubeconfig). */
  caFile?: string;
  /** The apiserver's port on 127.0.0.1. */
  port: number;
  /** etcd's client URL (http://127.0.0.1:PORT), e.g. for its /metrics. */
  etcdUrl: string;
  /** Folder with the process logs. */
  logDir: string;
  /** The kubectl binary kubectl() runs. */
  kubectlPath: string;
  /** Stops every process and removes the temp data (and logs unless logDir was given). Idempotent. */
  stop(): Promise<void>;
  /**
   * Fault injection: stops kube-apiserver (SIGTERM, 3 s grace; `crash: true` → SIGKILL, connections
   * just drop) and starts it again on the same port, certificate and etcd; resolves when ready.
   */
  restartApiserver(options?: { crash?: boolean }): Promise<void>;
  /**
   * Restarts kube-controller-manager, e.g. so that its garbage collector sees CRDs created after
   * start at once instead of after its 30 s rediscovery. Only with `controllerManager: true`.
   */
  restartControllerManager(): Promise<void>;
  /** Runs kubectl with --kubeconfig (admin). Never throws on a non-zero exit. */
  kubectl(args: string[], options?: { input?: string; timeoutMs?: number }): Promise<KubectlResult>;
  /**
   * A bearer token authenticating as `user` with `groups`. The apiserver (1.20) reads its token file
   * only at start, so an identity not pre-provisioned via `options.users` costs one apiserver
   * restart (~5–10 s). Identities are authenticated only; grant them RBAC roles in the test.
   */
  createUserToken(user: string, groups: string[]): Promise<string>;
  /** A bound token (TokenRequest API) for an existing ServiceAccount: system:serviceaccount:ns:name. */
  createServiceAccountToken(namespace: string, name: string, expirationSeconds?: number): Promise<string>;
}

const repoRoot = findRepoRoot(dirname(fileURLToPath(import.meta.url)));
const assetsScript = join(repoRoot, "test/infra/envtest/assets.sh");
const DEFAULT_START_TIMEOUT_MS = 90_000;
/**
 * SIGTERM grace before SIGKILL. kube-apiserver 1.20 stops listening at once but then waits up to
 * a minute for open requests (the controller manager's watches), so it gets a short grace.
 */
const STOP_GRACE_MS = 10_000;
const APISERVER_STOP_GRACE_MS = 3_000;

function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, "utf8")).name === "trickle-relay") return dir;
    if (dirname(dir) === dir) throw new Error(`no trickle-relay package.json above ${from}`);
  }
}

export type EnvtestAssets = { dir: string; skipReason: false } | { dir: undefined; skipReason: string };

let assetsPromise: Promise<EnvtestAssets> | undefined;

/**
 * Locates the control-plane binaries via `assets.sh --check`. It never builds them: the first build
 * takes minutes and needs Debian's archive, so test/infra/run-tests.sh (and `npm run envtest:assets`)
 * does it before the tests start, outside the loopback-only namespace and outside any test's timeout.
 * Resolves to a skip reason only when not root; as root missing assets are an error, so CI cannot
 * silently skip the suite.
 */
export function resolveEnvtestAssets(): Promise<EnvtestAssets> {
  assetsPromise ??= (async () => {
    const result = await run("bash", [assetsScript, "--check"], { timeoutMs: 60_000 });
    const dir = result.stdout.trim();
    if (result.code === 0 && dir !== "") return { dir, skipReason: false };
    const reason =
      `envtest assets (kube-apiserver, kube-controller-manager, etcd) are not built: ` +
      `${lastLines(result.stderr, 4) || `assets.sh --check exited ${result.code}`}. ` +
      "Tests never build them; run the tests with `npm test` or `bash test/infra/run-tests.sh FILE...`, " +
      "which build them first, or run `npm run -s envtest:assets` once.";
    if (process.getuid?.() === 0) throw new Error(reason);
    return { dir: undefined, skipReason: reason };
  })();
  return assetsPromise;
}

/**
 * kubectl within the version skew of the apiserver: the kubectl built with the assets (same
 * version) when present, else the oldest versioned kubectl next to the one on PATH (Google Cloud
 * SDK ships kubectl.1.27 … 1.33; 1.27 is beyond the ±1 skew for a 1.20 server, though it and 1.32
 * passed the harness test's apply/wait/get/delete/--as), else `kubectl`. TRICKLE_RELAY_KUBECTL overrides.
 */
export function chooseKubectl(assetsDir: string | undefined): string {
  if (process.env.TRICKLE_RELAY_KUBECTL) return process.env.TRICKLE_RELAY_KUBECTL;
  if (assetsDir && existsSync(join(assetsDir, "kubectl"))) return join(assetsDir, "kubectl");
  const onPath = spawnSync("bash", ["-c", "command -v kubectl"], { encoding: "utf8" }).stdout.trim();
  if (onPath) {
    const realDir = dirname(
      spawnSync("readlink", ["-f", onPath], { encoding: "utf8" }).stdout.trim() || onPath,
    );
    const versioned = spawnSync(
      "bash",
      ["-c", `ls -1 "${realDir}"/kubectl.1.* 2>/dev/null | sort -V | head -n 1`],
      {
        encoding: "utf8",
      },
    ).stdout.trim();
    if (versioned) return versioned;
    return onPath;
  }
  return "kubectl";
}

// ---------------------------------------------------------------------------------------------
// Child processes: tracked so they die with the test process (exit handler) and, via setpriv's
// parent-death signal, even when the test process is SIGKILLed.

const liveChildren = new Set<ChildProcess>();
/** Temp dirs of control planes not stopped yet; removed on a normal exit that skipped stop(). */
const liveWorkDirs = new Set<string>();
let exitHookInstalled = false;
const hasSetpriv = spawnSync("bash", ["-c", "setpriv --help 2>/dev/null | grep -q pdeathsig"]).status === 0;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of liveChildren) child.kill("SIGKILL");
    for (const dir of liveWorkDirs) rmSync(dir, { recursive: true, force: true });
  });
}

interface Component {
  name: string;
  child: ChildProcess;
  exited: Promise<number | null>;
  log: WriteStream;
  logPath: string;
}

function startComponent(name: string, binary: string, args: string[], logDir: string): Component {
  installExitHook();
  const logPath = join(logDir, `${name}.log`);
  const log = createWriteStream(logPath, { flags: "a" });
  const [command, commandArgs] = hasSetpriv
    ? ["setpriv", ["--pdeathsig", "SIGKILL", "--", binary, ...args]]
    : [binary, args];
  const child = spawn(command, commandArgs, { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  liveChildren.add(child);
  const exited = new Promise<number | null>((resolveExit) => {
    child.once("error", (err) => {
      log.write(`spawn error: ${err.message}\n`);
      liveChildren.delete(child);
      resolveExit(-1);
    });
    child.once("exit", (code, signal) => {
      liveChildren.delete(child);
      log.write(`\n[harness] ${name} exited code=${code} signal=${signal}\n`);
      resolveExit(code);
    });
  });
  return { name, child, exited, log, logPath };
}

async function stopComponent(
  component: Component | undefined,
  { graceMs = STOP_GRACE_MS, signal = "SIGTERM" }: { graceMs?: number; signal?: NodeJS.Signals } = {},
): Promise<void> {
  if (!component) return;
  if (component.child.exitCode === null && component.child.signalCode === null) {
    component.child.kill(signal);
    const timer = setTimeout(() => component.child.kill("SIGKILL"), graceMs);
    await component.exited;
    clearTimeout(timer);
  }
  await new Promise<void>((done) => component.log.end(done));
}

async function logTail(component: Component): Promise<string> {
  try {
    return lastLines(await readFile(component.logPath, "utf8"), 25);
  } catch {
    return "";
  }
}

/** Polls `probe` until it returns true; fails early when the component exits. */
async function waitFor(component: Component, what: string, timeoutMs: number, probe: () => Promise<boolean>) {
  const deadline = Date.now() + timeoutMs;
  let exitedCode: number | null | undefined;
  void component.exited.then((code) => (exitedCode = code));
  for (;;) {
    if (exitedCode !== undefined) {
      throw new Error(
        `${component.name} exited (code ${exitedCode}) before ${what}:\n${await logTail(component)}`,
      );
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${component.name}: ${what} not reached within ${timeoutMs} ms:\n${await logTail(component)}`,
      );
    }
    await sleep(250);
  }
}

// ---------------------------------------------------------------------------------------------

export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const assetsDir = options.assetsDir ?? (await requireAssets());
  const startTimeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const forRealNode = options.forRealNode === true;
  const workDir = await mkdtemp(join(tmpdir(), "trickle-relay-envtest-"));
  installExitHook();
  liveWorkDirs.add(workDir);
  const logDir = options.logDir ? resolve(options.logDir) : join(workDir, "logs");
  await mkdir(logDir, { recursive: true });
  const certDir = join(workDir, "certs");
  await mkdir(certDir, { recursive: true });

  const [etcdClientPort, etcdPeerPort, apiserverPort] = await freePorts(3);
  const server = `https://127.0.0.1:${apiserverPort}`;
  const adminToken = randomToken();
  const tokenFile = join(workDir, "tokens.csv");
  const knownTokens = new Map<string, string>(); // "user|groups" -> token
  await writeFile(tokenFile, tokenLine(adminToken, "admin", ["system:masters"]));
  for (const user of options.users ?? []) {
    const token = randomToken();
    knownTokens.set(identityKey(user.name, user.groups ?? []), token);
    await appendFile(tokenFile, tokenLine(token, user.name, user.groups ?? []));
  }

  // Service-account token signing key: mandatory flags since 1.20.
  const saKey = join(workDir, "sa.key");
  const saPub = join(workDir, "sa.pub");
  await runChecked("openssl", ["genrsa", "-out", saKey, "2048"]);
  await runChecked("openssl", ["rsa", "-in", saKey, "-pubout", "-out", saPub]);

  const etcdDataDir =
    options.etcdData === "tmpfs"
      ? await mkdtemp(join("/dev/shm", "trickle-relay-etcd-"))
      : join(workDir, "etcd");
  liveWorkDirs.add(etcdDataDir); // removed at exit even without stop()
  let etcd: Component | undefined;
  let apiserver: Component | undefined;
  let controllerManager: Component | undefined;
  let stopped = false;

  const stopAll = async () => {
    if (stopped) return;
    stopped = true;
    await stopComponent(controllerManager);
    await stopComponent(apiserver, { graceMs: APISERVER_STOP_GRACE_MS });
    await stopComponent(etcd);
    await rm(workDir, { recursive: true, force: true }); // logs survive only in options.logDir
    await rm(etcdDataDir, { recursive: true, force: true });
    liveWorkDirs.delete(etcdDataDir);
    liveWorkDirs.delete(workDir);
  };

  const apiserverArgs = [
    `--etcd-servers=http://127.0.0.1:${etcdClientPort}`,
    "--bind-address=127.0.0.1",
    // Without it the apiserver looks for a default route's interface, and the test namespace has none.
    "--advertise-address=127.0.0.1",
    `--secure-port=${apiserverPort}`,
    // 1.20 still opens an unauthenticated port 8080 by default; tests must not share a fixed port.
    "--insecure-port=0",
    `--cert-dir=${certDir}`,
    "--service-cluster-ip-range=10.0.0.0/24", // a config value only; nothing is routed there
    // The `kubernetes` Service endpoints would point at 127.0.0.1, which Endpoints validation rejects.
    "--endpoint-reconciler-type=none",
    `--token-auth-file=${tokenFile}`,
    `--authorization-mode=${forRealNode ? "Node,RBAC" : "RBAC"}`,
    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
    `--service-account-key-file=${saPub}`,
    `--service-account-signing-key-file=${saKey}`,
    "--api-audiences=https://kubernetes.default.svc.cluster.local",
    // Like envtest: no ServiceAccount admission (it would wait for token controllers we don't run),
    // unless a real kubelet needs the token secrets it adds to pods.
    ...(forRealNode
      ? ["--kubelet-preferred-address-types=InternalIP,Hostname"]
      : ["--disable-admission-plugins=ServiceAccount"]),
    "--allow-privileged=true",
    "--profiling=false",
    "--v=1",
    ...(options.extraApiserverArgs ?? []),
  ];

  const startApiserver = async () => {
    apiserver = startComponent("kube-apiserver", join(assetsDir, "kube-apiserver"), apiserverArgs, logDir);
    const component = apiserver;
    await waitFor(component, "/readyz ok", startTimeoutMs, async () => {
      const ca = await readCa(certDir);
      if (!ca) return false;
      const res = await httpsGet(`${server}/readyz`, adminToken, ca);
      return res.status === 200;
    });
  };

  try {
    etcd = startComponent(
      "etcd",
      join(assetsDir, "etcd"),
      [
        "--name=envtest",
        `--data-dir=${etcdDataDir}`,
        `--listen-client-urls=http://127.0.0.1:${etcdClientPort}`,
        `--advertise-client-urls=http://127.0.0.1:${etcdClientPort}`,
        `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-cluster=envtest=http://127.0.0.1:${etcdPeerPort}`,
        "--initial-cluster-state=new",
      ],
      logDir,
    );
    const etcdComponent = etcd;
    await waitFor(etcdComponent, "/health ok", startTimeoutMs, async () => {
      const res = await httpGet(`http://127.0.0.1:${etcdClientPort}/health`);
      return res.status === 200 && res.body.includes('"true"');
    });

    await startApiserver();

    const caFile = join(certDir, "apiserver.crt");
    const kubeconfigPath = join(workDir, "kubeconfig");
    await writeFile(kubeconfigPath, kubeconfigYaml(server, (await readCa(certDir)) ?? "", adminToken));

    const kubectlPath = options.kubectl ?? chooseKubectl(assetsDir);

    const kubectl = (args: string[], kubectlOptions: { input?: string; timeoutMs?: number } = {}) =>
      run(kubectlPath, [`--kubeconfig=${kubeconfigPath}`, ...args], {
        input: kubectlOptions.input,
        timeoutMs: kubectlOptions.timeoutMs ?? 60_000,
      });

    // CRDs installed before the controller manager starts are in the garbage collector's first
    // discovery; CRDs created later are only noticed by its 30 s rediscovery (fixed in 1.20).
    if (options.crdPaths?.length) {
      const applied = await kubectl(["apply", ...options.crdPaths.flatMap((path) => ["-f", resolve(path)])]);
      if (applied.code !== 0) throw new Error(`installing CRDs failed: ${applied.stderr}`);
      const established = await kubectl([
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=60s",
      ]);
      if (established.code !== 0) throw new Error(`CRDs not established: ${established.stderr}`);
    }

    const startControllerManager = async () => {
      const logOffset = await fileSize(join(logDir, "kube-controller-manager.log"));
      controllerManager = startComponent(
        "kube-controller-manager",
        join(assetsDir, "kube-controller-manager"),
        [
          `--kubeconfig=${kubeconfigPath}`,
          ...(forRealNode
            ? [
                // No pod CIDRs to allocate and no CSR signing keys here; everything else a node needs.
                "--controllers=*,-nodeipam,-csrsigning",
                `--service-account-private-key-file=${saKey}`,
                `--root-ca-file=${caFile}`,
              ]
            : [
                `--controllers=${["garbagecollector", "namespace", ...(options.extraControllers ?? [])].join(",")}`,
              ]),
          "--leader-elect=false",
          "--bind-address=127.0.0.1",
          // No serving at all: nothing scrapes it, and serving would need authn/authz delegation.
          "--port=0",
          "--secure-port=0",
          "--v=1",
          ...(options.extraControllerManagerArgs ?? []),
        ],
        logDir,
      );
      const kcm = controllerManager;
      // No health endpoint without serving; "ready" = the garbage collector's informers synced
      // (looking only at this run's part of the appended log).
      await waitFor(kcm, "the garbage collector's caches synced", startTimeoutMs, async () => {
        const text = (await readFile(kcm.logPath)).subarray(logOffset).toString("utf8");
        return /Caches are synced for garbage collector/.test(text);
      });
    };
    const withControllerManager =
      options.controllerManager || !!options.extraControllers?.length || forRealNode;
    if (withControllerManager) await startControllerManager();

    const restartApiserver = async ({ crash = false }: { crash?: boolean } = {}) => {
      await stopComponent(apiserver, crash ? { signal: "SIGKILL" } : { graceMs: APISERVER_STOP_GRACE_MS });
      await startApiserver();
    };

    const restartControllerManager = async () => {
      if (!withControllerManager) throw new Error("started without controllerManager: true");
      await stopComponent(controllerManager);
      await startControllerManager();
    };

    const controlPlane: ControlPlane = {
      kubeconfigPath,
      server,
      token: adminToken,
      caFile,
      port: apiserverPort,
      etcdUrl: `http://127.0.0.1:${etcdClientPort}`,
      logDir,
      kubectlPath,
      stop: stopAll,
      restartApiserver,
      restartControllerManager,
      kubectl,
      async createUserToken(user, groups) {
        const key = identityKey(user, groups);
        const existing = knownTokens.get(key);
        if (existing) return existing;
        const token = randomToken();
        knownTokens.set(key, token);
        await appendFile(tokenFile, tokenLine(token, user, groups));
        await restartApiserver();
        return token;
      },
      async createServiceAccountToken(namespace, name, expirationSeconds = 3600) {
        const body = JSON.stringify({
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: { expirationSeconds },
        });
        const ca = (await readCa(certDir)) ?? "";
        const res = await httpsPost(
          `${server}/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`,
          adminToken,
          ca,
          body,
        );
        if (res.status !== 201 && res.status !== 200) {
          throw new Error(`TokenRequest for ${namespace}/${name} failed: HTTP ${res.status} ${res.body}`);
        }
        return (JSON.parse(res.body) as { status: { token: string } }).status.token;
      },
    };
    return controlPlane;
  } catch (err) {
    await stopAll();
    throw err;
  }
}

async function requireAssets(): Promise<string> {
  const assets = await resolveEnvtestAssets();
  if (assets.dir === undefined) throw new Error(assets.skipReason);
  return assets.dir;
}

// ---------------------------------------------------------------------------------------------
// Helpers

async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

function randomToken(): string {
  return randomBytes(24).toString("hex");
}

function identityKey(user: string, groups: string[]): string {
  return `${user}|${[...groups].sort().join(",")}`;
}

/** token-auth-file line: token,user,uid,"group1,group2" */
function tokenLine(token: string, user: string, groups: string[]): string {
  if (/[",\n]/.test(user) || groups.some((g) => /[",\n]/.test(g))) {
    throw new Error(
      `user/group names for the token file must not contain quotes, commas or newlines: ${user}`,
    );
  }
  return `${token},${user},${user}${groups.length ? `,"${groups.join(",")}"` : ""}\n`;
}

function kubeconfigYaml(server: string, caPem: string, token: string): string {
  const cluster = caPem
    ? `    certificate-authority-data: ${Buffer.from(caPem).toString("base64")}`
    : "    insecure-skip-tls-verify: true";
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: envtest",
    "  cluster:",
    `    server: ${server}`,
    cluster,
    "users:",
    "- name: envtest-admin",
    "  user:",
    `    token: ${token}`,
    "contexts:",
    "- name: envtest",
    "  context:",
    "    cluster: envtest",
    "    user: envtest-admin",
    "    namespace: default",
    "current-context: envtest",
    "",
  ].join("\n");
}

/** The apiserver writes a self-signed serving cert (with its CA appended) into --cert-dir on first start. */
async function readCa(certDir: string): Promise<string | undefined> {
  try {
    const pem = await readFile(join(certDir, "apiserver.crt"), "utf8");
    return pem.includes("END CERTIFICATE") ? pem : undefined;
  } catch {
    return undefined;
  }
}

/** `count` distinct free TCP ports on 127.0.0.1. */
export async function freePorts(count: number): Promise<number[]> {
  // Hold all listeners open together so the kernel hands out distinct ports.
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<import("node:net").Server>((ok, fail) => {
          const srv = createServer();
          srv.once("error", fail);
          srv.listen(0, "127.0.0.1", () => ok(srv));
        }),
    ),
  );
  const ports = servers.map((srv) => (srv.address() as import("node:net").AddressInfo).port);
  await Promise.all(servers.map((srv) => new Promise((done) => srv.close(done))));
  return ports;
}

interface HttpResult {
  status: number;
  body: string;
}

function httpGet(url: string): Promise<HttpResult> {
  return new Promise((ok, fail) => {
    const req = httpRequest(url, { timeout: 2000 }, (res) => collect(res, ok));
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", fail);
    req.end();
  });
}

function httpsGet(url: string, token: string, ca: string): Promise<HttpResult> {
  return httpsCall("GET", url, token, ca);
}

function httpsPost(url: string, token: string, ca: string, body: string): Promise<HttpResult> {
  return httpsCall("POST", url, token, ca, body);
}

function httpsCall(
  method: string,
  url: string,
  token: string,
  ca: string,
  body?: string,
): Promise<HttpResult> {
  return new Promise((ok, fail) => {
    const req = httpsRequest(
      url,
      {
        method,
        ca,
        timeout: 5000,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body ? { "content-type": "application/json", "content-length": Buffer.byteLength(body) } : {}),
        },
      },
      (res) => collect(res, ok),
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", fail);
    req.end(body);
  });
}

function collect(res: import("node:http").IncomingMessage, ok: (r: HttpResult) => void): void {
  const chunks: Buffer[] = [];
  res.on("data", (c: Buffer) => chunks.push(c));
  res.on("end", () => ok({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
}

function run(
  command: string,
  args: string[],
  options: { input?: string | undefined; timeoutMs: number },
): Promise<KubectlResult> {
  return new Promise((ok) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    const timer = setTimeout(() => {
      stderr += `\n[harness] ${command} killed after ${options.timeoutMs} ms`;
      child.kill("SIGKILL");
    }, options.timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      ok({ code: -1, stdout, stderr: stderr + err.message });
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      ok({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.on("error", () => {}); // the process may exit before reading its input
    child.stdin.end(options.input ?? "");
  });
}

async function runChecked(command: string, args: string[]): Promise<void> {
  const result = await run(command, args, { timeoutMs: 60_000 });
  if (result.code !== 0)
    throw new Error(`${command} ${args.join(" ")} failed (${result.code}): ${result.stderr}`);
}

function lastLines(text: string, count: number): string {
  return text.trimEnd().split("\n").slice(-count).join("\n");
}

function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}
