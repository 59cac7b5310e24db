/**
 * The claim write without client-node's generated client: the one write a session's allocation time
 * waits for (operator/src/relaypool/allocator.ts).
 *
 * Why not the library: a Lease PUT through client-node 2.0.1 costs ~1.6 ms of the operator's CPU,
 * ~0.75 ms as a plain undici request on the same connection (measured against the test apiserver,
 * 300 sequential writes; bench-results/pool.md). The rest is its per-call model (de)serialization,
 * middleware and WHATWG fetch. In a burst of 100 allocations on a two-core control plane that
 * difference was half of the operator's CPU while claims were in flight. Authentication, TLS, the
 * pooled connection and the request timeout still come from client-node's KubeConfig
 * (applySecurityAuthentication, with operator/src/kube/client.ts's withRequestTimeout), and a
 * failure is the same ApiException the rest of the operator reads (relaypool/api.ts).
 */
import {
  ApiException,
  HttpMethod,
  RequestContext,
  type CoordinationV1Api,
  type KubeConfig,
  type V1Lease,
} from "@kubernetes/client-node";
import { request, type Dispatcher } from "undici";

/** `replaceNamespacedLease` as the allocator calls it, answered as plain JSON. */
export function leanLeaseWrites(kubeConfig: KubeConfig): Pick<CoordinationV1Api, "replaceNamespacedLease"> {
  const server = kubeConfig.getCurrentCluster()?.server.replace(/\/+$/, "") ?? "";
  return {
    replaceNamespacedLease: async ({ namespace, name, body }) => {
      const path = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases/${encodeURIComponent(name)}`;
      return (await sendJson(kubeConfig, `${server}${path}`, "PUT", body)) as V1Lease;
    },
  };
}

async function sendJson(kubeConfig: KubeConfig, url: string, method: "PUT", body: unknown): Promise<unknown> {
  const context = new RequestContext(url, HttpMethod[method]);
  await kubeConfig.applySecurityAuthentication(context);
  const response = await request(url, {
    method,
    headers: {
      ...context.getHeaders(),
      "content-type": "application/json",
      accept: "application/json",
    },
    body: JSON.stringify(body),
    dispatcher: context.getDispatcher() as Dispatcher | undefined,
    signal: context.getSignal(),
  });
  const text = await response.body.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON (a proxy's error page): kept as text in the exception
  }
  if (response.statusCode < 200 || response.statusCode > 299) {
    const status = parsed as { message?: string } | undefined;
    throw new ApiException(
      response.statusCode,
      typeof status === "object" && status?.message ? status.message : `HTTP ${response.statusCode}`,
      parsed,
      response.headers as Record<string, string>,
    );
  }
  return parsed;
}
