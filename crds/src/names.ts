// Names that identify the RelaySession API on the wire. The operator, the relay pod, the Helm chart
// and the tests all take them from here.

export const RELAY_SESSION_GROUP = "trickle-relay.io";
export const RELAY_SESSION_VERSION = "v1alpha1";
export const RELAY_SESSION_API_VERSION = `${RELAY_SESSION_GROUP}/${RELAY_SESSION_VERSION}` as const;
export const RELAY_SESSION_KIND = "RelaySession";
export const RELAY_SESSION_LIST_KIND = "RelaySessionList";
export const RELAY_SESSION_PLURAL = "relaysessions";
export const RELAY_SESSION_SINGULAR = "relaysession";
export const RELAY_SESSION_SHORT_NAME = "rls";
/** `kubectl get trickle-relay` lists every resource of the project. */
export const RELAY_SESSION_CATEGORY = "trickle-relay";
export const RELAY_SESSION_CRD_NAME = `${RELAY_SESSION_PLURAL}.${RELAY_SESSION_GROUP}` as const;

/**
 * Field managers for server-side apply / merge patches of the status. The operator owns everything
 * in the status except `status.relay`, which only the relay pod writes; separate managers let both
 * own entries of the `conditions` list-map without overwriting each other.
 */
export const OPERATOR_FIELD_MANAGER = "relay-operator";
export const RELAY_POD_FIELD_MANAGER = "relay-pod";

/** The condition every RelaySession carries first: is media flowing end to end right now. */
export const READY_CONDITION = "Ready";
