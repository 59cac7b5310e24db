import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";
import { KubeConfig, type RequestContext } from "@kubernetes/client-node";

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
  timed.applySecurityAuthentication = async (context: RequestContext) => {
    await kubeConfig.applySecurityAuthentication(context);
    if (!context.getSignal()) context.setSignal(AbortSignal.timeout(Math.max(1, Math.ceil(timeoutMs))));
  };
  return timed;
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
