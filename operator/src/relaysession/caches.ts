/**
 * What the RelaySession reconciler and its parts read (the informer caches, as narrow interfaces the
 * tests can fill) and what a reconcile returns. Apart so that the parts need not import the
 * reconciler that uses them.
 */
import type { V1Pod } from "@kubernetes/client-node";
import type { RelaySession } from "../../../crds/src/index.js";

export interface ReconcileResult {
  requeueAfterMs?: number;
}

/** Read access to the RelaySession informer cache. */
export interface SessionCache {
  get(namespace: string, name: string): RelaySession | undefined;
}

/** Read access to the relay pod informer cache. */
export interface PodCache {
  list(namespace?: string): V1Pod[];
  /** The cached pods whose owning session has this uid (`podOwnerUid`); an index, not a scan. */
  byOwner(uid: string): V1Pod[];
}
