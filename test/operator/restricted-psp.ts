/**
 * The "restricted" Pod Security Standard as Kubernetes 1.20 can enforce it: Pod Security admission
 * (the `pod-security.kubernetes.io/enforce` namespace label) only arrived in 1.22 (alpha; beta 1.23,
 * GA 1.25), so the real test node's apiserver runs the PodSecurityPolicy admission plugin with one
 * policy modelled on the upstream restricted example (non-root, no privilege escalation, every
 * capability dropped, runtime/default seccomp, only configMap/emptyDir/projected/secret/downwardAPI/
 * CSI/PVC volumes, no host namespaces or ports). Being the only policy, it binds everyone, even the
 * cluster admin; the session namespace's ServiceAccounts (whose pods the operator creates) are
 * allowed to use it by a RoleBinding there. AppArmor is left out: this kernel has none.
 */
import type { ControlPlane } from "../infra/apiserver.js";

export const RESTRICTED_PSP_NAME = "trickle-relay-restricted";
export const PSP_ADMISSION_ARGS = ["--enable-admission-plugins=PodSecurityPolicy"];

export async function installRestrictedPsp(cp: ControlPlane, sessionNamespace: string): Promise<void> {
  const manifests = [
    {
      apiVersion: "policy/v1beta1",
      kind: "PodSecurityPolicy",
      metadata: {
        name: RESTRICTED_PSP_NAME,
        annotations: {
          "seccomp.security.alpha.kubernetes.io/allowedProfileNames": "docker/default,runtime/default",
          "seccomp.security.alpha.kubernetes.io/defaultProfileName": "runtime/default",
        },
      },
      spec: {
        privileged: false,
        allowPrivilegeEscalation: false,
        requiredDropCapabilities: ["ALL"],
        volumes: [
          "configMap",
          "emptyDir",
          "projected",
          "secret",
          "downwardAPI",
          "csi",
          "persistentVolumeClaim",
        ],
        hostNetwork: false,
        hostIPC: false,
        hostPID: false,
        runAsUser: { rule: "MustRunAsNonRoot" },
        seLinux: { rule: "RunAsAny" },
        supplementalGroups: { rule: "MustRunAs", ranges: [{ min: 1, max: 65535 }] },
        fsGroup: { rule: "MustRunAs", ranges: [{ min: 1, max: 65535 }] },
        readOnlyRootFilesystem: false,
      },
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRole",
      metadata: { name: "psp:restricted" },
      rules: [
        {
          apiGroups: ["policy"],
          resources: ["podsecuritypolicies"],
          resourceNames: [RESTRICTED_PSP_NAME],
          verbs: ["use"],
        },
      ],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: "psp:restricted", namespace: sessionNamespace },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "psp:restricted" },
      subjects: [
        {
          apiGroup: "rbac.authorization.k8s.io",
          kind: "Group",
          name: `system:serviceaccounts:${sessionNamespace}`,
        },
      ],
    },
  ];
  const input = manifests.map((m) => JSON.stringify(m)).join("\n");
  const result = await cp.kubectl(["apply", "-f", "-"], { input });
  if (result.code !== 0)
    throw new Error(`installing the restricted PodSecurityPolicy failed: ${result.stderr}`);
}
