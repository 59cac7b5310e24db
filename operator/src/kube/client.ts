import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";
import { createHash } from "node:crypto";
import type { AgentOptions } from "node:https";
import { KubeConfig, type Cluster, type RequestContext } from "@kubernetes/client-node";

const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/**
 * Loads the cluster connection the way the operator's `--kubeconfig` flag documents it:
 * an explicit path, else `KUBECONFIG` (a path list, merged like kubectl does), else the in-cluster
 * service account, else `~/.kube/config`. Unlike `KubeConfig.loadFromDefault()` it never falls back
 * to an unauthenticated `http://localhost:8080`: it throws an error that says what was tried.
 */
export function loadKubeConfig(kubeconfigPath?: string): KubeConfig {
  const kc = new KubeConfig();
  const env = process.env.KUBECONFIG?.split(delimiter).filter((file) => file !== "") ?? [];
  const tried: string[] = [];
  if (kubeconfigPath) {
    loadFiles(kc, [kubeconfigPath], "--kubeconfig");
  } else if (env.length > 0) {
    loadFiles(kc, env, "KUBECONFIG");
  } else if (inCluster()) {
    kc.loadFromCluster();
  } else {
    tried.push(
      `in-cluster (KUBERNETES_SERVICE_HOST/PORT and ${SERVICE_ACCOUNT_DIR}/token: ${inClusterProblem()})`,
    );
    const defaultPath = join(homedir(), ".kube", "config");
    if (!existsSync(defaultPath)) {
      tried.push(`${defaultPath} (missing)`);
      throw new Error(
        `no Kubernetes configuration found: pass --kubeconfig or set KUBECONFIG; tried ${tried.join(", ")}`,
      );
    }
    loadFiles(kc, [defaultPath], "default kubeconfig");
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw new Error(
      `kubeconfig has no usable current context (current-context "${kc.getCurrentContext()}" names no cluster)`,
    );
  }
  if (!kc.getCurrentUser()) {
    throw new Error(`kubeconfig context "${kc.getCurrentContext()}" names no user`);
  }
  return kc;
}

/**
 * A view of `kubeConfig` whose API clients (`makeApiClient`) abort every request not answered within
 * `timeoutMs`, unless the call brings its own signal. Without a bound, a request on a connection that
 * died silently (no FIN, no RST: a dropped network path, a frozen apiserver) waits for undici's
 * 300 s headers timeout, and a reconcile worker waits with it. Watches are unaffected: client-node's
 * Watch aborts through its own controller, and the informer's watchdog bounds them.
 */
export function withRequestTimeout(kubeConfig: KubeConfig, timeoutMs: number): KubeConfig {
  // Shares the clusters, users and contexts (and any token refresh state) of the original.
  const timed = Object.create(kubeConfig) as KubeConfig;
  reuseConnections(timed);
  timed.applySecurityAuthentication = async (context: RequestContext) => {
    // Called with `this` = timed so that reuseConnections' createDispatcher applies.
    await KubeConfig.prototype.applySecurityAuthentication.call(timed, context);
    if (!context.getSignal()) context.setSignal(AbortSignal.timeout(Math.max(1, Math.ceil(timeoutMs))));
  };
  return timed;
}

const pools = new WeakMap<KubeConfig, Map<string, unknown>>();

/**
 * Closes the pooled connections of a withRequestTimeout() config, so the next call connects afresh.
 * For after a timed-out call: a connection that died silently (no FIN, no RST) would otherwise stay
 * in the pool and time out every call that lands on it. Calls in flight on it fail and are retried.
 */
export function dropPooledConnections(kubeConfig: KubeConfig): void {
  const agents = pools.get(kubeConfig);
  if (!agents) return;
  for (const agent of agents.values())
    void (agent as { destroy?: () => Promise<void> }).destroy?.()?.catch(() => undefined);
  agents.clear();
}

/** A call that gave up because of withRequestTimeout's bound. */
export function isRequestTimeout(err: unknown): boolean {
  return (
    err instanceof Error &&
    (err.name === "TimeoutError" || (err.cause as Error | undefined)?.name === "TimeoutError")
  );
}

/** What client-node's (private) createDispatcher is called with. */
type CreateDispatcher = (cluster: Cluster | null, agentOptions: AgentOptions) => unknown;

/**
 * client-node 2.0.1 builds a new undici Agent for every API call, so every call pays a TLS handshake:
 * at 1000 sessions that was half the operator's CPU (bench-results/operator.md). One Agent per
 * distinct server + TLS identity keeps connections alive across calls; a rotated client certificate
 * or CA yields a new key and so a new Agent.
 */
function reuseConnections(kubeConfig: KubeConfig): void {
  const target = kubeConfig as unknown as { createDispatcher: CreateDispatcher };
  const create = target.createDispatcher.bind(kubeConfig);
  const agents = new Map<string, unknown>();
  pools.set(kubeConfig, agents);
  target.createDispatcher = (cluster, agentOptions) => {
    const identity = [
      cluster?.server,
      cluster?.skipTLSVerify,
      cluster?.tlsServerName,
      cluster?.proxyUrl,
      agentOptions.ca,
      agentOptions.cert,
      agentOptions.key,
      agentOptions.pfx,
      agentOptions.passphrase,
      agentOptions.rejectUnauthorized,
      agentOptions.servername,
    ];
    // Buffers (CA, certificate, key) hashed as bytes: JSON.stringify turns them into arrays of
    // numbers, which cost ~0.1 ms per API call (3 % of the operator's CPU in a burst of claims).
    const hash = createHash("sha256");
    const feed = (part: unknown): void => {
      if (Buffer.isBuffer(part)) hash.update(part);
      else if (Array.isArray(part)) part.forEach(feed);
      else hash.update(JSON.stringify(part) ?? "undefined");
      hash.update("\0");
    };
    identity.forEach(feed);
    const key = hash.digest("hex");
    if (!agents.has(key)) {
      if (agents.size >= 4) agents.clear(); // rotations only; the dropped Agents close when idle
      agents.set(key, create(cluster, agentOptions));
    }
    return agents.get(key);
  };
}

function loadFiles(kc: KubeConfig, files: string[], source: string): void {
  files.forEach((file, index) => {
    if (!existsSync(file)) throw new Error(`kubeconfig ${file} (from ${source}) does not exist`);
    try {
      if (index === 0) {
        kc.loadFromFile(file);
      } else {
        const next = new KubeConfig();
        next.loadFromFile(file);
        kc.mergeConfig(next);
      }
    } catch (err) {
      throw new Error(`kubeconfig ${file} (from ${source}) cannot be loaded: ${(err as Error).message}`, {
        cause: err,
      });
    }
  });
}

function inCluster(): boolean {
  return inClusterProblem() === undefined;
}

function inClusterProblem(): string | undefined {
  if (!process.env.KUBERNETES_SERVICE_HOST || !process.env.KUBERNETES_SERVICE_PORT) return "env not set";
  if (!existsSync(join(SERVICE_ACCOUNT_DIR, "token"))) return "token file missing";
  return undefined;
}
