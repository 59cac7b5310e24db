/**
 * How the RelaySession controller reads API failures, and the Retry signal its parts throw when a
 * write met a stale or vanished object. Shared by the reconciler, the pod lifecycle, the status
 * writer, the RBAC step and the orphan sweep, so it sits below all of them.
 */
import { ApiException } from "@kubernetes/client-node";

/** Short waits for things that resolve on their own (a pod finishing its deletion, a conflict). */
export const SHORT_REQUEUE_MS = 1000;

/** A conflict or a vanished object: the reconcile ends and is retried shortly. */
export class Retry extends Error {}

export function apiCode(error: unknown): number | undefined {
  return error instanceof ApiException ? error.code : undefined;
}

export function apiMessage(error: unknown): string {
  if (error instanceof ApiException) {
    try {
      const status = JSON.parse(String(error.body)) as { message?: string };
      if (status.message) return status.message;
    } catch {
      // not a Status body
    }
    return `HTTP ${error.code}`;
  }
  return error instanceof Error ? error.message : String(error);
}
