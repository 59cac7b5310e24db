/**
 * Per-session RBAC: the ServiceAccount, Role and RoleBinding `NAME-relay` through which a relay pod
 * reports its session's status. Separate from the pod lifecycle because it is create-if-missing
 * with its own rate limit, not part of any attempt; the objects are owned by the session, so the
 * garbage collector removes them with it. A Role whose rules an older operator wrote differently
 * (e.g. a pool's Role before its pods watched their claim Leases) is replaced: the operator may
 * create and delete Roles, never update or escalate them.
 */
import { CoreV1Api, RbacAuthorizationV1Api, type KubeConfig } from "@kubernetes/client-node";
import { OPERATOR_FIELD_MANAGER, type RelaySession } from "../../../crds/src/index.js";
import { canonicalJson } from "../kube/canonical-json.js";
import { apiCode } from "./api-errors.js";
import { desiredRelayRbac, type RelayRbac } from "./desired-pod.js";

const DEFAULT_RBAC_RECHECK_MS = 10 * 60_000;

export class SessionRbac {
  private readonly core: CoreV1Api;
  private readonly rbac: RbacAuthorizationV1Api;
  private readonly recheckMs: number;
  /** Session uid → when its RBAC was last ensured. */
  private readonly ensuredAt = new Map<string, number>();

  /** `recheckMs`: RBAC is re-asserted at most this often per session (default 10 min). */
  constructor(kubeConfig: KubeConfig, recheckMs: number | undefined) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.rbac = kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    this.recheckMs = recheckMs ?? DEFAULT_RBAC_RECHECK_MS;
  }

  /** ServiceAccount, Role, RoleBinding `NAME-relay`; AlreadyExists is fine. */
  async ensure(session: RelaySession): Promise<void> {
    await this.ensureObjects(session.metadata.uid ?? "", session.metadata.namespace ?? "default", () =>
      desiredRelayRbac(session),
    );
  }

  /** The same for any owner (a RelayPool's pods share one set): `uid` keys the rate limit. */
  async ensureObjects(uid: string, namespace: string, desired: () => RelayRbac): Promise<void> {
    const ensuredAt = this.ensuredAt.get(uid);
    if (ensuredAt !== undefined && Date.now() - ensuredAt < this.recheckMs) return;
    const { serviceAccount, role, roleBinding } = desired();
    const fieldManager = OPERATOR_FIELD_MANAGER;
    const ignoreExists = async (create: () => Promise<unknown>) => {
      try {
        await create();
      } catch (error) {
        if (apiCode(error) !== 409) throw error;
      }
    };
    await ignoreExists(() =>
      this.core.createNamespacedServiceAccount({ namespace, body: serviceAccount, fieldManager }),
    );
    try {
      await this.rbac.createNamespacedRole({ namespace, body: role, fieldManager });
    } catch (error) {
      if (apiCode(error) !== 409) throw error;
      const name = role.metadata?.name ?? "";
      const current = await this.rbac.readNamespacedRole({ namespace, name });
      if (canonicalJson(current.rules ?? []) !== canonicalJson(role.rules ?? [])) {
        await this.rbac.deleteNamespacedRole({
          namespace,
          name,
          body: { preconditions: { uid: current.metadata?.uid } },
        });
        await ignoreExists(() => this.rbac.createNamespacedRole({ namespace, body: role, fieldManager }));
      }
    }
    await ignoreExists(() =>
      this.rbac.createNamespacedRoleBinding({ namespace, body: roleBinding, fieldManager }),
    );
    this.ensuredAt.set(uid, Date.now());
    // Bounded: forget sessions that were never seen again.
    if (this.ensuredAt.size > 10_000) this.ensuredAt.delete(this.ensuredAt.keys().next().value!);
  }

  /** The session is gone (or going): a session of the same uid never comes back. */
  forget(uid: string): void {
    this.ensuredAt.delete(uid);
  }
}
