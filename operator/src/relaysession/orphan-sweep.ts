/**
 * The orphan sweep: deletes relay pods whose RelaySession no longer exists. Separate from the
 * reconciler because it works from the pods, not from a session key: it runs at startup and on
 * resync, and also without a reconciler (operator.ts calls it before the controller starts).
 */
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import {
  RELAY_SESSION_GROUP,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
  type RelaySession,
} from "../../../crds/src/index.js";
import { silentLogger } from "../../../relay-pod/src/index.js";
import { apiCode } from "./api-errors.js";
import { LABEL_MANAGED_BY, OPERATOR_NAME } from "./labels.js";
import { deletePodIfSame, podOwnerUid } from "./pod-lifecycle.js";
import type { SessionCache } from "./caches.js";

async function readSessionUid(
  customObjects: CustomObjectsApi,
  namespace: string,
  name: string,
): Promise<string | undefined> {
  try {
    const session = (await customObjects.getNamespacedCustomObject({
      group: RELAY_SESSION_GROUP,
      version: RELAY_SESSION_VERSION,
      namespace,
      plural: RELAY_SESSION_PLURAL,
      name,
    })) as RelaySession;
    return session.metadata.uid;
  } catch (error) {
    if (apiCode(error) === 404) return undefined;
    throw error;
  }
}

export interface SweepOrphanPodsOptions {
  kubeConfig: KubeConfig;
  /** Candidate pods, e.g. the pod informer's list; only the operator's relay pods are considered. */
  pods: readonly V1Pod[];
  /** Known sessions (a cache or a list); a pod whose owner is not among them is checked live. */
  sessions: SessionCache | readonly RelaySession[];
  logger?: Logger;
}

/**
 * Deletes relay pods whose owning RelaySession (by uid) no longer exists — the garbage collector
 * normally does this; the sweep covers operator downtime and clusters without one. Run it at
 * startup and on resync. A session counts as gone only after a live read, so an unsynced cache
 * deletes nothing. Returns the deleted pods as "namespace/name".
 */
export async function sweepOrphanPods(options: SweepOrphanPodsOptions): Promise<string[]> {
  const core = options.kubeConfig.makeApiClient(CoreV1Api);
  const customObjects = options.kubeConfig.makeApiClient(CustomObjectsApi);
  const logger = options.logger ?? silentLogger;
  const known = options.sessions;
  const knownUid = (namespace: string, name: string): string | undefined =>
    Array.isArray(known)
      ? (known as readonly RelaySession[]).find(
          (session) => session.metadata.namespace === namespace && session.metadata.name === name,
        )?.metadata.uid
      : (known as SessionCache).get(namespace, name)?.metadata.uid;

  const byOwner = new Map<string, { namespace: string; sessionName: string; uid: string; pods: V1Pod[] }>();
  for (const pod of options.pods) {
    if (pod.metadata?.labels?.[LABEL_MANAGED_BY] !== OPERATOR_NAME) continue;
    const uid = podOwnerUid(pod);
    // Idle warm pods belong to their RelayPool (its garbage collection and controller), not a session.
    const sessionName = pod.metadata?.ownerReferences?.find(
      (ref) => ref.controller && ref.kind === "RelaySession",
    )?.name;
    const namespace = pod.metadata?.namespace;
    if (!uid || !sessionName || !namespace || pod.metadata?.deletionTimestamp) continue;
    const key = `${namespace}/${uid}`;
    const group = byOwner.get(key) ?? { namespace, sessionName, uid, pods: [] };
    group.pods.push(pod);
    byOwner.set(key, group);
  }
  const deleted: string[] = [];
  for (const group of byOwner.values()) {
    if (knownUid(group.namespace, group.sessionName) === group.uid) continue;
    if ((await readSessionUid(customObjects, group.namespace, group.sessionName)) === group.uid) continue;
    for (const pod of group.pods) {
      await deletePodIfSame(core, pod);
      deleted.push(`${group.namespace}/${pod.metadata?.name}`);
    }
  }
  if (deleted.length > 0) logger.info({ pods: deleted }, "deleted orphaned relay pods");
  return deleted;
}
