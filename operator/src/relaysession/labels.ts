// Names the operator stamps on the objects it creates (operator/README.md, "The relay pod the
// operator creates"). The pod informer, the orphan sweep, the chart and the tests select on these.

import { createHash } from "node:crypto";

export const LABEL_NAME = "app.kubernetes.io/name";
export const LABEL_COMPONENT = "app.kubernetes.io/component";
export const LABEL_MANAGED_BY = "app.kubernetes.io/managed-by";
export const LABEL_SESSION = "trickle-relay.io/session";
export const LABEL_SESSION_UID = "trickle-relay.io/session-uid";
export const LABEL_ATTEMPT = "trickle-relay.io/attempt";
export const ANNOTATION_POD_SPEC_HASH = "trickle-relay.io/pod-spec-hash";

export const APP_NAME = "trickle-relay";
export const RELAY_COMPONENT = "relay";
export const OPERATOR_NAME = "trickle-relay-operator";

/** Label selector matching every relay pod the operator created (for the pod informer and the sweep). */
export const RELAY_POD_SELECTOR = `${LABEL_MANAGED_BY}=${OPERATOR_NAME},${LABEL_COMPONENT}=${RELAY_COMPONENT}`;

export const RELAY_CONTAINER = "relay";
export const COMFYSTREAM_CONTAINER = "comfystream";

/** `NAME-relay-N`: deterministic, so a repeated create of the same attempt is a harmless 409. */
export function relayPodName(sessionName: string, attempt: number): string {
  return `${sessionName}-relay-${attempt}`;
}

/** `NAME-relay`: the ServiceAccount, Role and RoleBinding of one session. */
export function relayRbacName(sessionName: string): string {
  return `${sessionName}-relay`;
}

const LABEL_VALUE_MAX = 63;

/**
 * The session name as a label value. Names longer than a label value allows (63) are cut and
 * suffixed with a short hash so that they stay distinct; selection is by the uid label anyway.
 */
export function sessionLabelValue(sessionName: string): string {
  if (sessionName.length <= LABEL_VALUE_MAX) return sessionName;
  const suffix = createHash("sha256").update(sessionName).digest("hex").slice(0, 10);
  const head = sessionName.slice(0, LABEL_VALUE_MAX - suffix.length - 1).replace(/[-_.]+$/, "");
  return `${head}-${suffix}`;
}

/**
 * "namespace/name" of the session a relay pod belongs to, for mapping pod events to reconcile keys.
 * The controller owner reference holds the full name (the session label may be shortened).
 */
export function sessionKeyOfPod(pod: {
  metadata?: {
    namespace?: string;
    labels?: Record<string, string>;
    ownerReferences?: Array<{ controller?: boolean; kind?: string; name?: string }>;
  };
}): string | undefined {
  const namespace = pod.metadata?.namespace;
  const name =
    pod.metadata?.ownerReferences?.find((ref) => ref.controller && ref.kind === "RelaySession")?.name ??
    pod.metadata?.labels?.[LABEL_SESSION];
  return namespace && name ? `${namespace}/${name}` : undefined;
}
