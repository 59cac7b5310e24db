/**
 * The operator's permissions, written out once for the chart tests: exactly what the chart must
 * grant (rendered rules are compared to this), and what the real-apiserver tests check with
 * `kubectl auth can-i` / real requests. Derived from operator/README.md (the contract).
 */
export interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** Rules in each watched namespace (ClusterRole when cluster-wide). */
export function operatorRules(): Rule[] {
  return [
    {
      apiGroups: ["trickle-relay.io"],
      resources: ["relaysessions"],
      verbs: ["get", "list", "watch", "delete"],
    },
    {
      apiGroups: ["trickle-relay.io"],
      resources: ["relaysessions/status"],
      verbs: ["get", "patch", "update"],
    },
    { apiGroups: ["trickle-relay.io"], resources: ["relaysessions/finalizers"], verbs: ["update"] },
    { apiGroups: ["trickle-relay.io"], resources: ["relaypools"], verbs: ["get", "list", "watch"] },
    { apiGroups: ["trickle-relay.io"], resources: ["relaypools/status"], verbs: ["get", "patch", "update"] },
    // update: a recycled warm pool pod given back; patch: the claim's labels, its state label.
    {
      apiGroups: [""],
      resources: ["pods"],
      verbs: ["get", "list", "watch", "create", "delete", "update", "patch"],
    },
    // A warm pool pod's claim Lease (resourceVersion-guarded updates claim, drain and free it).
    {
      apiGroups: ["coordination.k8s.io"],
      resources: ["leases"],
      verbs: ["get", "list", "watch", "create", "update", "delete"],
    },
    { apiGroups: [""], resources: ["serviceaccounts"], verbs: ["get", "list", "watch", "create", "delete"] },
    {
      apiGroups: ["rbac.authorization.k8s.io"],
      resources: ["roles", "rolebindings"],
      verbs: ["get", "list", "watch", "create", "delete"],
    },
    { apiGroups: [""], resources: ["events"], verbs: ["create", "patch"] },
    { apiGroups: ["events.k8s.io"], resources: ["events"], verbs: ["create", "patch"] },
  ];
}

/** The REST gateway, in its namespace only (operator/src/gateway/README.md). */
export const gatewayRules: Rule[] = [
  {
    apiGroups: ["trickle-relay.io"],
    resources: ["relaysessions"],
    verbs: ["create", "get", "list", "patch", "delete"],
  },
];

/** Leader election, in the release namespace only. */
export function leaseRules(leaseName: string): Rule[] {
  return [
    { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["create"] },
    {
      apiGroups: ["coordination.k8s.io"],
      resources: ["leases"],
      resourceNames: [leaseName],
      verbs: ["get", "update"],
    },
  ];
}

/** One `kubectl auth can-i` question: verb, resource[.group], optional subresource. */
export interface Access {
  verb: string;
  resource: string;
  subresource?: string;
}

/** Everything the operator does in a watched namespace (operator/README.md). */
export const operatorActions: Access[] = [
  { verb: "get", resource: "relaysessions.trickle-relay.io" },
  { verb: "list", resource: "relaysessions.trickle-relay.io" },
  { verb: "watch", resource: "relaysessions.trickle-relay.io" },
  { verb: "delete", resource: "relaysessions.trickle-relay.io" },
  { verb: "get", resource: "relaysessions.trickle-relay.io", subresource: "status" },
  { verb: "patch", resource: "relaysessions.trickle-relay.io", subresource: "status" },
  { verb: "update", resource: "relaysessions.trickle-relay.io", subresource: "status" },
  { verb: "update", resource: "relaysessions.trickle-relay.io", subresource: "finalizers" },
  { verb: "get", resource: "pods" },
  { verb: "list", resource: "pods" },
  { verb: "watch", resource: "pods" },
  { verb: "create", resource: "pods" },
  { verb: "delete", resource: "pods" },
  { verb: "update", resource: "pods" },
  { verb: "patch", resource: "pods" },
  { verb: "watch", resource: "leases.coordination.k8s.io" },
  { verb: "update", resource: "leases.coordination.k8s.io" },
  { verb: "delete", resource: "leases.coordination.k8s.io" },
  { verb: "list", resource: "relaypools.trickle-relay.io" },
  { verb: "watch", resource: "relaypools.trickle-relay.io" },
  { verb: "patch", resource: "relaypools.trickle-relay.io", subresource: "status" },
  { verb: "create", resource: "serviceaccounts" },
  { verb: "delete", resource: "serviceaccounts" },
  { verb: "get", resource: "roles.rbac.authorization.k8s.io" },
  { verb: "create", resource: "roles.rbac.authorization.k8s.io" },
  { verb: "create", resource: "rolebindings.rbac.authorization.k8s.io" },
  { verb: "delete", resource: "rolebindings.rbac.authorization.k8s.io" },
  { verb: "create", resource: "events" },
  { verb: "patch", resource: "events" },
  { verb: "create", resource: "events.events.k8s.io" },
];

/** Things the operator never needs: each must be refused in every namespace. */
export const forbiddenActions: Access[] = [
  { verb: "get", resource: "secrets" },
  { verb: "list", resource: "secrets" },
  { verb: "create", resource: "deployments.apps" },
  { verb: "create", resource: "relaysessions.trickle-relay.io" }, // only with the REST gateway
  { verb: "update", resource: "relaysessions.trickle-relay.io" }, // never writes spec/metadata
  { verb: "patch", resource: "relaysessions.trickle-relay.io" },
  { verb: "update", resource: "relaypools.trickle-relay.io" }, // kubectl scale is the user's
  { verb: "create", resource: "pods", subresource: "exec" },
  { verb: "update", resource: "roles.rbac.authorization.k8s.io" },
  { verb: "escalate", resource: "roles.rbac.authorization.k8s.io" },
  { verb: "bind", resource: "roles.rbac.authorization.k8s.io" },
  { verb: "create", resource: "configmaps" },
];
