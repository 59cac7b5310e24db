// A warm pool pod waiting for its session: follows its claim Lease (named like the pod, in its
// namespace; crds/src/relay-pool.ts) until the operator's claim lands on it (holderIdentity =
// "namespace/name" of the session, annotation trickle-relay.io/allocated-at). A watch of the one
// Lease (fieldSelector metadata.name), re-opened from a fresh list after it ends or fails, so a claim
// written while no watch was open is still seen. The Lease, not the pod: the claim is the one write
// a session waits for, and a Lease is far cheaper for the apiserver to write than a pod.

import type { V1Lease } from "@kubernetes/client-node";
import {
  ANNOTATION_ALLOCATED_AT,
  ANNOTATION_RECYCLED,
  CLAIM_HOLDER_DRAIN,
  claimLeaseName,
} from "../../../crds/src/index.js";
import { silentLogger, type Logger } from "../common/log.js";
import type { KubeAccess } from "./api-client.js";
import { parseSessionRef, type SessionRef } from "./session-resource.js";

export interface PodRef {
  namespace: string;
  name: string;
}

export interface Claim {
  session: SessionRef;
  /** The claim's time stamp (ANNOTATION_ALLOCATED_AT): tells one claim of the pod from the next. */
  allocatedAt: string;
}

/**
 * The claim a claim Lease carries; undefined while idle, draining, or when it is `ended` (a claim
 * already served).
 */
export function claimOf(
  lease: Pick<V1Lease, "metadata" | "spec"> | undefined,
  ended?: string,
): Claim | undefined {
  const value = lease?.spec?.holderIdentity;
  const allocatedAt = lease?.metadata?.annotations?.[ANNOTATION_ALLOCATED_AT] ?? "";
  if (!value || value === CLAIM_HOLDER_DRAIN || (ended !== undefined && allocatedAt === ended))
    return undefined;
  try {
    return { session: parseSessionRef(value), allocatedAt };
  } catch {
    return undefined;
  }
}

/**
 * Marks the pod recycled after the claim `allocatedAt` (its session ended cleanly, ComfyStream is
 * healthy): the operator then records the session's end and unclaims the pod. Retried with backoff
 * until written or `signal` aborts.
 */
export async function markRecycled(
  kubeConfig: KubeAccess,
  pod: PodRef,
  allocatedAt: string,
  signal: AbortSignal,
): Promise<void> {
  const path = `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`;
  for (let errors = 0; !signal.aborted; errors++) {
    try {
      await kubeConfig.request("PATCH", path, {
        body: { metadata: { annotations: { [ANNOTATION_RECYCLED]: allocatedAt } } },
        patch: "merge",
      });
      return;
    } catch {
      await sleep(Math.min(5000, 250 * 2 ** errors), signal);
    }
  }
}

/**
 * Resolves with the claim once the pod's claim Lease carries one (other than the `ended` claim of a
 * recycled pod, which stays on it until the operator frees the Lease), or undefined when `signal`
 * aborts first (a stop while idle). The Lease may not exist yet (the operator creates it right after
 * the pod). Read errors are retried with backoff up to 5 s.
 */
export async function waitForClaim(
  kubeConfig: KubeAccess,
  pod: PodRef,
  signal: AbortSignal,
  logger: Logger = silentLogger,
  ended?: string,
): Promise<Claim | undefined> {
  const leasesPath = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(pod.namespace)}/leases`;
  const log = logger.child({ component: "pool-claim" });
  const fieldSelector = `metadata.name=${claimLeaseName(pod.name)}`;
  for (let errors = 0; !signal.aborted;) {
    let resourceVersion: string | undefined;
    try {
      const current = await kubeConfig.request<{ items: V1Lease[]; metadata?: { resourceVersion?: string } }>(
        "GET",
        leasesPath,
        { query: { fieldSelector } },
      );
      const claimed = claimOf(current.items[0], ended);
      if (claimed) return claimed;
      resourceVersion = current.metadata?.resourceVersion;
      errors = 0;
    } catch (err) {
      errors++;
      log.warn({ err: (err as Error).message }, "reading the claim Lease failed; retrying");
      await sleep(Math.min(5000, 250 * 2 ** errors), signal);
      continue;
    }
    const claimed = await new Promise<Claim | undefined>((resolve) => {
      let request: { abort(): void } | undefined;
      let settled = false;
      const finish = (value: Claim | undefined) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener("abort", onAbort);
        resolve(value);
        request?.abort();
      };
      const onAbort = () => finish(undefined);
      signal.addEventListener("abort", onAbort);
      kubeConfig
        .watch(
          leasesPath,
          { fieldSelector, resourceVersion, timeoutSeconds: 300 },
          (type, object) => {
            if (type === "ADDED" || type === "MODIFIED") {
              const claim = claimOf(object as V1Lease, ended);
              if (claim) finish(claim);
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
