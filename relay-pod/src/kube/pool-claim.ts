// A warm pool pod waiting for its session: follows its own pod until the operator's claim lands on
// it (annotation trickle-relay.io/allocated-session = "namespace/name"). A watch of the one pod
// (fieldSelector metadata.name), re-opened from a fresh read after it ends or fails, so a claim
// written while no watch was open is still seen.

import { CoreV1Api, Watch, type KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { ANNOTATION_ALLOCATED_SESSION } from "../../../crds/src/index.js";
import { silentLogger, type Logger } from "../common/log.js";
import { parseSessionRef, type SessionRef } from "./session-resource.js";

export interface PodRef {
  namespace: string;
  name: string;
}

/** The session a pod was claimed for, from its annotation; undefined while idle. */
export function claimedSessionOf(pod: Pick<V1Pod, "metadata"> | undefined): SessionRef | undefined {
  const value = pod?.metadata?.annotations?.[ANNOTATION_ALLOCATED_SESSION];
  if (!value) return undefined;
  try {
    return parseSessionRef(value);
  } catch {
    return undefined;
  }
}

/**
 * Resolves with the claimed session once the pod carries the claim, or undefined when `signal`
 * aborts first (a stop while idle). Read errors are retried with backoff up to 5 s.
 */
export async function waitForClaim(
  kubeConfig: KubeConfig,
  pod: PodRef,
  signal: AbortSignal,
  logger: Logger = silentLogger,
): Promise<SessionRef | undefined> {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const watch = new Watch(kubeConfig);
  const log = logger.child({ component: "pool-claim" });
  for (let errors = 0; !signal.aborted;) {
    let resourceVersion: string | undefined;
    try {
      const current = await core.readNamespacedPod({ namespace: pod.namespace, name: pod.name });
      const claimed = claimedSessionOf(current);
      if (claimed) return claimed;
      resourceVersion = current.metadata?.resourceVersion;
      errors = 0;
    } catch (err) {
      errors++;
      log.warn({ err: (err as Error).message }, "reading the pod failed; retrying");
      await sleep(Math.min(5000, 250 * 2 ** errors), signal);
      continue;
    }
    const claimed = await new Promise<SessionRef | undefined>((resolve) => {
      let request: { abort(): void } | undefined;
      const finish = (value: SessionRef | undefined) => {
        signal.removeEventListener("abort", onAbort);
        request?.abort();
        resolve(value);
      };
      const onAbort = () => finish(undefined);
      signal.addEventListener("abort", onAbort);
      watch
        .watch(
          `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods`,
          { fieldSelector: `metadata.name=${pod.name}`, resourceVersion, timeoutSeconds: 300 },
          (type, object: V1Pod) => {
            if (type === "ADDED" || type === "MODIFIED") {
              const session = claimedSessionOf(object);
              if (session) finish(session);
            }
          },
          () => finish(undefined), // ended or failed: re-read and watch again
        )
        .then((handle) => {
          request = handle;
          if (signal.aborted) handle.abort();
        })
        .catch(() => finish(undefined));
    });
    if (claimed) return claimed;
    // A watch that ends at once (e.g. refused) must not turn this into a busy loop.
    await sleep(250, signal);
  }
  return undefined;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
