// The relay pod's own Kubernetes API access: a kube config or the pod's service account, JSON
// requests and watches. Only what the relay needs: read and watch its RelaySession and its claim
// Lease, merge-patch status.relay and a pod annotation.
//
// Why not @kubernetes/client-node (the operator uses it): importing it costs a relay process
// ~55 MB of RSS and 350-500 ms of start-up (all of its generated models and APIs load with
// KubeConfig), about half of a relay pod's memory and a third of a cold pod's start before its
// first frame (docs/architecture.md). The relay makes a handful of calls per session.

import { readFileSync, existsSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, dirname, isAbsolute, join } from "node:path";
import { Agent, request } from "undici";
import { parse as parseYaml } from "yaml";

/** A refused or failed API request: the HTTP status and the apiserver's Status message. */
export class KubeApiError extends Error {
  /** Also as `statusCode`, as watch callers read it. */
  readonly statusCode: number;
  constructor(
    readonly code: number,
    message: string,
    readonly body?: unknown,
  ) {
    super(`HTTP ${code}: ${message}`);
    this.name = "KubeApiError";
    this.statusCode = code;
  }
}

export interface RequestOptions {
  /** Query parameters (undefined values left out). */
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  /** Default application/json; "merge" sends application/merge-patch+json. */
  patch?: "merge";
  signal?: AbortSignal;
}

export type WatchEventHandler = (type: string, object: unknown) => void;

/** One open watch; `abort()` ends it, and its done callback is then not called. */
export interface WatchHandle {
  abort(): void;
}

export interface KubeAccess {
  /** Where requests go (for messages). */
  readonly server: string;
  /** A JSON request; resolves with the parsed body, rejects with KubeApiError on a non-2xx answer. */
  request<T = unknown>(
    method: "GET" | "PATCH" | "PUT" | "POST",
    path: string,
    options?: RequestOptions,
  ): Promise<T>;
  /**
   * A watch (`?watch=true`); `onEvent` per event, `onDone` once when it ends by itself: null after a
   * clean end, an Error (name "TimeoutError" when nothing arrived for the idle timeout) or a
   * KubeApiError. Never after the caller's abort(), nor from inside it (no re-entrant callbacks).
   */
  watch(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    onEvent: WatchEventHandler,
    onDone: (err: Error | null) => void,
  ): Promise<WatchHandle>;
}

export interface ClusterAccessConfig {
  server: string;
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** A fixed bearer token, or a file re-read as it rotates (the service account's bound token). */
  token?: string;
  tokenFile?: string;
  basicAuth?: { username: string; password: string };
  insecureSkipTlsVerify?: boolean;
  tlsServerName?: string;
  /** A request not answered within this long fails (ms, default 30 000); watches use idleTimeoutMs. */
  requestTimeoutMs?: number;
  /** A watch with no bytes for this long ends with a TimeoutError (ms, default 30 000). */
  idleTimeoutMs?: number;
}

const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";
const TOKEN_REREAD_MS = 60_000;

/** $KUBECONFIG (its first file), else ~/.kube/config, else the pod's service account (in-cluster). */
export function loadKubeAccess(): KubeAccess {
  const files = (process.env.KUBECONFIG ?? "").split(delimiter).filter((file) => file !== "");
  const existing = files.find((file) => existsSync(file));
  if (existing) return kubeAccess(configFromKubeconfig(existing));
  if (files.length > 0) throw new Error(`KUBECONFIG names no existing file (${files.join(", ")})`);
  const home = join(homedir(), ".kube", "config");
  if (existsSync(home)) return kubeAccess(configFromKubeconfig(home));
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT;
  if (host && port && existsSync(join(SERVICE_ACCOUNT_DIR, "token"))) {
    return kubeAccess({
      server: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
      ca: readFileSync(join(SERVICE_ACCOUNT_DIR, "ca.crt")),
      tokenFile: join(SERVICE_ACCOUNT_DIR, "token"),
    });
  }
  throw new Error(
    "no Kubernetes cluster configured: set KUBECONFIG, or run in a pod with a service account token",
  );
}

interface KubeconfigFile {
  "current-context"?: string;
  contexts?: Array<{ name: string; context?: { cluster?: string; user?: string } }>;
  clusters?: Array<{ name: string; cluster?: Record<string, unknown> }>;
  users?: Array<{ name: string; user?: Record<string, unknown> }>;
}

/** The current context of a kubeconfig file: server, TLS and a token, client certificate or password. */
export function configFromKubeconfig(file: string): ClusterAccessConfig {
  const doc = parseYaml(readFileSync(file, "utf8")) as KubeconfigFile | null;
  const contextName = doc?.["current-context"];
  const context = doc?.contexts?.find((c) => c.name === contextName)?.context;
  if (!context) throw new Error(`kubeconfig ${file}: no current context ("${contextName ?? ""}")`);
  const cluster = doc?.clusters?.find((c) => c.name === context.cluster)?.cluster;
  const server = cluster?.server;
  if (!cluster || typeof server !== "string") {
    throw new Error(`kubeconfig ${file}: context "${contextName}" names no cluster with a server`);
  }
  const user = doc?.users?.find((u) => u.name === context.user)?.user ?? {};
  if (user.exec || user["auth-provider"]) {
    throw new Error(
      `kubeconfig ${file}: user "${context.user}" authenticates through a plugin (exec/auth-provider), ` +
        "which the relay does not run; give it a token or a client certificate (a pod uses its service account)",
    );
  }
  const relative = (path: unknown) =>
    typeof path === "string" ? (isAbsolute(path) ? path : join(dirname(file), path)) : undefined;
  const data = (inline: unknown, path: unknown): Buffer | undefined => {
    if (typeof inline === "string") return Buffer.from(inline, "base64");
    const resolved = relative(path);
    return resolved ? readFileSync(resolved) : undefined;
  };
  const config: ClusterAccessConfig = { server };
  const ca = data(cluster["certificate-authority-data"], cluster["certificate-authority"]);
  if (ca) config.ca = ca;
  const cert = data(user["client-certificate-data"], user["client-certificate"]);
  const key = data(user["client-key-data"], user["client-key"]);
  if (cert) config.cert = cert;
  if (key) config.key = key;
  if (typeof user.token === "string") config.token = user.token;
  const tokenFile = relative(user.tokenFile);
  if (tokenFile) config.tokenFile = tokenFile;
  if (typeof user.username === "string" && typeof user.password === "string") {
    config.basicAuth = { username: user.username, password: user.password };
  }
  if (cluster["insecure-skip-tls-verify"] === true) config.insecureSkipTlsVerify = true;
  if (typeof cluster["tls-server-name"] === "string") config.tlsServerName = cluster["tls-server-name"];
  return config;
}

export function kubeAccess(config: ClusterAccessConfig): KubeAccess {
  const server = config.server.replace(/\/+$/, "");
  const agent = new Agent({
    connect: {
      ...(config.ca ? { ca: config.ca } : {}),
      ...(config.cert ? { cert: config.cert } : {}),
      ...(config.key ? { key: config.key } : {}),
      ...(config.tlsServerName ? { servername: config.tlsServerName } : {}),
      rejectUnauthorized: config.insecureSkipTlsVerify !== true,
    },
  });
  let token = config.token;
  let tokenReadAt = -Infinity;
  const authorization = (): string | undefined => {
    if (config.tokenFile && performance.now() - tokenReadAt > TOKEN_REREAD_MS) {
      token = readFileSync(config.tokenFile, "utf8").trim();
      tokenReadAt = performance.now();
    }
    if (token) return `Bearer ${token}`;
    if (config.basicAuth) {
      const { username, password } = config.basicAuth;
      return `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
    }
    return undefined;
  };
  const headers = (extra: Record<string, string>): Record<string, string> => {
    const auth = authorization();
    return { accept: "application/json", ...(auth ? { authorization: auth } : {}), ...extra };
  };
  const url = (path: string, query?: RequestOptions["query"]) => {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query ?? {}))
      if (value !== undefined) params.set(name, String(value));
    const search = params.toString();
    return `${server}${path}${search ? `?${search}` : ""}`;
  };

  return {
    server,
    async request<T>(method: "GET" | "PATCH" | "PUT" | "POST", path: string, options: RequestOptions = {}) {
      const contentType = options.patch === "merge" ? "application/merge-patch+json" : "application/json";
      const response = await request(url(path, options.query), {
        method,
        headers: headers(options.body !== undefined ? { "content-type": contentType } : {}),
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
        dispatcher: agent,
        signal: options.signal ?? AbortSignal.timeout(config.requestTimeoutMs ?? 30_000),
      });
      const text = await response.body.text();
      const parsed = parseJson(text);
      if (response.statusCode < 200 || response.statusCode > 299) {
        throw new KubeApiError(response.statusCode, statusMessage(parsed, text), parsed);
      }
      return parsed as T;
    },

    async watch(path, query, onEvent, onDone) {
      const controller = new AbortController();
      let finished = false;
      const end = () => {
        if (finished) return false;
        finished = true;
        clearTimeout(idleTimer);
        if (!controller.signal.aborted) controller.abort();
        return true;
      };
      const done = (err: Error | null) => {
        if (end()) onDone(err);
      };
      const idleMs = config.idleTimeoutMs ?? 30_000;
      let idleTimer: NodeJS.Timeout | undefined;
      const resetIdle = () => {
        clearTimeout(idleTimer);
        idleTimer = setTimeout(() => {
          const err = new Error(`watch: nothing for ${idleMs} ms`);
          err.name = "TimeoutError";
          done(err);
        }, idleMs);
      };
      const handle: WatchHandle = { abort: () => void end() };
      resetIdle();
      try {
        const response = await request(url(path, { ...query, watch: true }), {
          method: "GET",
          headers: headers({}),
          dispatcher: agent,
          signal: controller.signal,
        });
        if (response.statusCode !== 200) {
          const text = await response.body.text().catch(() => "");
          const parsed = parseJson(text);
          done(new KubeApiError(response.statusCode, statusMessage(parsed, text), parsed));
          return handle;
        }
        let buffered = "";
        response.body.setEncoding("utf8");
        response.body.on("data", (chunk: string) => {
          resetIdle();
          buffered += chunk;
          for (let newline = buffered.indexOf("\n"); newline >= 0; newline = buffered.indexOf("\n")) {
            const line = buffered.slice(0, newline).trim();
            buffered = buffered.slice(newline + 1);
            if (!line || finished) continue;
            const event = parseJson(line) as { type?: string; object?: unknown } | undefined;
            if (event && typeof event === "object" && typeof event.type === "string") {
              onEvent(event.type, event.object);
            }
          }
        });
        response.body.on("end", () => done(null));
        response.body.on("error", (err: Error) => done(err));
      } catch (err) {
        done(err as Error);
      }
      return handle;
    },
  };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function statusMessage(parsed: unknown, text: string): string {
  const message = (parsed as { message?: unknown } | undefined)?.message;
  return typeof message === "string" ? message : text.slice(0, 300) || "no body";
}
