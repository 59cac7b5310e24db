// The relay pod's access to its own RelaySession: which one (NAMESPACE/NAME), the kube config, and
// reading it. The pod's Role allows exactly this object (resourceNames: [NAME]).

import { KubeApiError, loadKubeAccess, type KubeAccess } from "./api-client.js";
import {
  RELAY_SESSION_GROUP,
  RELAY_SESSION_KIND,
  RELAY_SESSION_PLURAL,
  RELAY_SESSION_VERSION,
} from "../../../crds/src/index.js";
import type { RelaySession } from "../../../crds/src/index.js";

export interface SessionRef {
  namespace: string;
  name: string;
}

/** Something the pod cannot fix by retrying: a bad reference, no kube config, no such resource or no access. */
export class SessionResourceError extends Error {
  constructor(
    message: string,
    /** HTTP status of the failed request, when there was one. */
    readonly httpStatus?: number,
  ) {
    super(message);
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** "NAMESPACE/NAME" → its parts; namespaces are DNS labels, names DNS subdomains. */
export function parseSessionRef(value: string): SessionRef {
  const parts = value.split("/");
  const [namespace, name] = parts;
  if (
    parts.length !== 2 ||
    !namespace ||
    !name ||
    namespace.length > 63 ||
    !DNS_LABEL.test(namespace) ||
    name.length > 253 ||
    !DNS_SUBDOMAIN.test(name)
  ) {
    throw new SessionResourceError(`expected NAMESPACE/NAME of a RelaySession, got "${value}"`);
  }
  return { namespace, name };
}

export function formatSessionRef(ref: SessionRef): string {
  return `${ref.namespace}/${ref.name}`;
}

/** $KUBECONFIG (else ~/.kube/config), else the pod's service account (in-cluster). */
export function loadClusterAccess(): KubeAccess {
  try {
    return loadKubeAccess();
  } catch (err) {
    throw new SessionResourceError(`cannot load the kube config: ${(err as Error).message}`);
  }
}

/**
 * Lists the one RelaySession through `fieldSelector=metadata.name=NAME` (RBAC authorizes that against
 * resourceNames). Returns it, or undefined when it does not exist, and the list's resourceVersion:
 * the current one, from which a watch can always start (an object's own resourceVersion may be older
 * than the apiserver's watch window).
 */
export async function listOwnRelaySession(
  kubeConfig: KubeAccess,
  ref: SessionRef,
): Promise<{ object: RelaySession | undefined; resourceVersion: string | undefined }> {
  const list = await kubeConfig.request<{ items?: RelaySession[]; metadata?: { resourceVersion?: string } }>(
    "GET",
    relaySessionsPath(ref.namespace),
    { query: { fieldSelector: `metadata.name=${ref.name}` } },
  );
  return {
    object: list.items?.find((item) => item.metadata?.name === ref.name),
    resourceVersion: list.metadata?.resourceVersion,
  };
}

/** `/apis/trickle-relay.io/v1alpha1/namespaces/NS/relaysessions` (the watch path). */
export function relaySessionsPath(namespace: string): string {
  return `/apis/${RELAY_SESSION_GROUP}/${RELAY_SESSION_VERSION}/namespaces/${encodeURIComponent(namespace)}/${RELAY_SESSION_PLURAL}`;
}

/**
 * GETs the RelaySession. 404 and 403 become a SessionResourceError that says what to check;
 * anything else (apiserver unreachable, 5xx) is thrown as is, for the caller to retry.
 */
export async function readRelaySession(kubeConfig: KubeAccess, ref: SessionRef): Promise<RelaySession> {
  try {
    const object = await kubeConfig.request<RelaySession>(
      "GET",
      `${relaySessionsPath(ref.namespace)}/${encodeURIComponent(ref.name)}`,
    );
    if (object?.kind !== RELAY_SESSION_KIND) {
      throw new SessionResourceError(`${formatSessionRef(ref)} is not a ${RELAY_SESSION_KIND}`);
    }
    return object;
  } catch (err) {
    if (err instanceof KubeApiError) {
      const what = `${RELAY_SESSION_KIND} ${formatSessionRef(ref)}`;
      if (err.code === 404) throw new SessionResourceError(`${what} not found`, 404);
      if (err.code === 403 || err.code === 401) {
        throw new SessionResourceError(
          `not allowed to read ${what} (HTTP ${err.code}): the pod's service account needs get/watch on it, see the per-session Role`,
          err.code,
        );
      }
    }
    throw err;
  }
}
