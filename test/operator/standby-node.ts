/**
 * A second, API-only Node that stays Ready while the real node is made to fail. Kubernetes' node
 * lifecycle controller treats "every node NotReady" as its own connectivity problem ("master
 * disruption mode": it lifts the NoExecute taints and evicts nothing), so a one-node cluster can
 * never show a node failure. This node has no kubelet: the test renews its Lease (the heartbeat the
 * controller reads) every 2 s, and it is cordoned so that nothing is scheduled onto it.
 */
import {
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
} from "@kubernetes/client-node";
import type { ControlPlane } from "../infra/apiserver.js";

export const STANDBY_NODE = "standby-no-kubelet";
const LEASE_NAMESPACE = "kube-node-lease";
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

export interface StandbyNode {
  stop(): Promise<void>;
}

export async function startStandbyNode(cp: ControlPlane): Promise<StandbyNode> {
  const config = new KubeConfig();
  config.loadFromFile(cp.kubeconfigPath);
  const core = config.makeApiClient(CoreV1Api);
  const leases = config.makeApiClient(CoordinationV1Api);
  const node = await core.createNode({
    body: { metadata: { name: STANDBY_NODE }, spec: { unschedulable: true } },
  });
  const now = new Date();
  await core.patchNodeStatus(
    {
      name: STANDBY_NODE,
      body: {
        status: {
          conditions: [
            {
              type: "Ready",
              status: "True",
              reason: "StandbyHeartbeat",
              message: "an API-only node whose Lease the test renews",
              lastHeartbeatTime: now,
              lastTransitionTime: now,
            },
          ],
        },
      },
    },
    mergePatch,
  );
  await leases.createNamespacedLease({
    namespace: LEASE_NAMESPACE,
    body: {
      metadata: {
        name: STANDBY_NODE,
        namespace: LEASE_NAMESPACE,
        ownerReferences: [{ apiVersion: "v1", kind: "Node", name: STANDBY_NODE, uid: node.metadata!.uid! }],
      },
      spec: { holderIdentity: STANDBY_NODE, leaseDurationSeconds: 40, renewTime: new V1MicroTime() },
    },
  });
  let stopped = false;
  const renew = async (): Promise<void> => {
    while (!stopped) {
      await leases
        .patchNamespacedLease(
          {
            namespace: LEASE_NAMESPACE,
            name: STANDBY_NODE,
            body: { spec: { renewTime: new V1MicroTime() } },
          },
          mergePatch,
        )
        .catch(() => undefined); // a missed renewal is what the grace period is for
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  };
  const renewing = renew();
  return {
    async stop() {
      stopped = true;
      await renewing;
      await core.deleteNode({ name: STANDBY_NODE }).catch(() => undefined);
    },
  };
}
