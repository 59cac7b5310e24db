// The objects a RelaySession should have: its relay pod for the current attempt and its per-session
// RBAC. Pure functions of the session (and the operator's relay image), as operator/README.md lays
// them out; the reconciler compares what exists against these.

import { createHash } from "node:crypto";
import type {
  V1Container,
  V1EnvVar,
  V1OwnerReference,
  V1Pod,
  V1PolicyRule,
  V1ResourceRequirements,
  V1Role,
  V1RoleBinding,
  V1SecurityContext,
  V1Toleration,
  V1ServiceAccount,
} from "@kubernetes/client-node";
import {
  RELAY_SESSION_API_VERSION,
  RELAY_SESSION_GROUP,
  RELAY_SESSION_KIND,
  RELAY_SESSION_PLURAL,
  type ComfyStreamSidecarSpec,
  type RelaySession,
  type ResourceRequirements,
} from "../../../crds/src/index.js";
import {
  ANNOTATION_POD_SPEC_HASH,
  APP_NAME,
  COMFYSTREAM_CONTAINER,
  LABEL_ATTEMPT,
  LABEL_COMPONENT,
  LABEL_MANAGED_BY,
  LABEL_NAME,
  LABEL_SESSION,
  LABEL_SESSION_UID,
  OPERATOR_NAME,
  RELAY_COMPONENT,
  RELAY_CONTAINER,
  relayPodName,
  relayRbacName,
  sessionLabelValue,
} from "./labels.js";
import { canonicalJson } from "../kube/canonical-json.js";
import { DEFAULT_NODE_LOST_TOLERATION_SECONDS, withNodeLostTolerations } from "./node-loss.js";

/** The label every relay pod carries with its session's name (the pod informer selects on it). */
export const SESSION_LABEL = LABEL_SESSION;

export interface DesiredPodOptions {
  /** The operator's --relay-image, used unless spec.pod.image overrides it. */
  relayImage: string;
  /** 0 for the first pod, status.restarts after. */
  attempt: number;
  /** The installation's defaults (Helm `relay.*`); a session's own `spec.pod` fields win. */
  defaults?: RelayPodDefaults;
}

/** Installation-wide relay pod defaults, from the operator's RELAY_DEFAULT_* environment. */
export interface RelayPodDefaults {
  resources?: V1ResourceRequirements;
  nodeSelector?: Record<string, string>;
  tolerations?: V1Toleration[];
  runtimeClassName?: string;
  /**
   * The GPU's extended resource name (default nvidia.com/gpu). A ComfyStream sidecar whose
   * resources name no GPU gets one of these: ComfyStream without a GPU is not a useful session.
   */
  gpuResourceName?: string;
  /** tolerationSeconds of the node not-ready/unreachable NoExecute tolerations (node-loss.ts). */
  nodeLostTolerationSeconds?: number;
}

export const DEFAULT_GPU_RESOURCE_NAME = "nvidia.com/gpu";

/** The only writable path of the relay container (ffmpeg and werift temp files). */
export const RELAY_TMP_PATH = "/tmp";
export const TMP_VOLUME = "tmp";

/**
 * Hash of everything in the spec that shapes the pod, i.e. all of it but `prompts` (the relay applies
 * prompt edits live). sha256, first 16 hex digits: short enough for an annotation, collision-free
 * in practice for one session's history.
 */
export function podSpecHash(session: Pick<RelaySession, "spec">): string {
  const { prompts: _prompts, ...podShaping } = session.spec;
  void _prompts;
  return createHash("sha256").update(canonicalJson(podShaping)).digest("hex").slice(0, 16);
}

/** Controller owner reference: the garbage collector removes the object with its session. */
export function sessionOwnerReference(session: RelaySession): V1OwnerReference {
  return controllerReference(RELAY_SESSION_KIND, session.metadata);
}

/** A controller owner reference to one of our resources (a RelaySession or a RelayPool). */
export function controllerReference(
  kind: string,
  metadata: { name?: string; uid?: string },
): V1OwnerReference {
  return {
    apiVersion: RELAY_SESSION_API_VERSION,
    kind,
    name: metadata.name ?? "",
    uid: metadata.uid ?? "",
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function commonLabels(session: RelaySession): Record<string, string> {
  return {
    [LABEL_NAME]: APP_NAME,
    [LABEL_COMPONENT]: RELAY_COMPONENT,
    [LABEL_MANAGED_BY]: OPERATOR_NAME,
    [LABEL_SESSION]: sessionLabelValue(session.metadata.name ?? ""),
    [LABEL_SESSION_UID]: session.metadata.uid ?? "",
  };
}

/** Schema quantities are int-or-string; core/v1 wants strings. */
export function toResourceRequirements(
  resources: ResourceRequirements | undefined,
): V1ResourceRequirements | undefined {
  if (!resources) return undefined;
  const toStrings = (map: Record<string, string | number> | undefined) =>
    map === undefined ? undefined : Object.fromEntries(Object.entries(map).map(([k, v]) => [k, String(v)]));
  const result: V1ResourceRequirements = {};
  const limits = toStrings(resources.limits);
  const requests = toStrings(resources.requests);
  if (limits) result.limits = limits;
  if (requests) result.requests = requests;
  return result;
}

export const fieldEnv = (name: string, fieldPath: string): V1EnvVar => ({
  name,
  valueFrom: { fieldRef: { apiVersion: "v1", fieldPath } },
});

/** The "restricted" Pod Security Standard for the relay: non-root, no privileges, read-only root. */
export function relaySecurityContext(): V1SecurityContext {
  return {
    // The user comes from the image (Dockerfile.relay: USER 10001, numeric so the kubelet can verify it).
    runAsNonRoot: true,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ["ALL"] },
    seccompProfile: { type: "RuntimeDefault" },
  };
}

/**
 * ComfyStream images run as root and write into their workspace, so the sidecar only gets what it
 * tolerates: no privilege escalation, no capabilities, the runtime's seccomp profile.
 */
function sidecarSecurityContext(): V1SecurityContext {
  return {
    allowPrivilegeEscalation: false,
    capabilities: { drop: ["ALL"] },
    seccompProfile: { type: "RuntimeDefault" },
  };
}

export function comfystreamContainer(sidecar: ComfyStreamSidecarSpec, gpuResourceName: string): V1Container {
  const container: V1Container = {
    name: COMFYSTREAM_CONTAINER,
    image: sidecar.image,
    ports: [{ name: "comfystream", containerPort: sidecar.port, protocol: "TCP" }],
    securityContext: sidecarSecurityContext(),
  };
  if (sidecar.imagePullPolicy) container.imagePullPolicy = sidecar.imagePullPolicy;
  if (sidecar.args) container.args = [...sidecar.args];
  if (sidecar.env) container.env = sidecar.env.map((env) => ({ ...env }) as V1EnvVar);
  const resources = toResourceRequirements(sidecar.resources) ?? {};
  if (!requestsGpu(resources, gpuResourceName)) {
    resources.limits = { ...resources.limits, [gpuResourceName]: "1" };
  }
  container.resources = resources;
  return container;
}

/** Whether container resources name a GPU: `gpuResourceName` or any `…/gpu`, in limits or requests. */
export function requestsGpu(resources: V1ResourceRequirements | undefined, gpuResourceName: string): boolean {
  const namesGpu = (map: Record<string, string> | undefined) =>
    Object.keys(map ?? {}).some((key) => key === gpuResourceName || key.endsWith("/gpu"));
  return namesGpu(resources?.limits) || namesGpu(resources?.requests);
}

/**
 * What the NVIDIA container runtime needs to give a container the GPU's video engines: the device
 * plugin narrows NVIDIA_VISIBLE_DEVICES to the allocated GPU, and without "video" in the driver
 * capabilities the container gets no libnvidia-encode / libnvcuvid, so NVENC and NVDEC fail even
 * with a GPU (the runtime's default is "utility,compute").
 */
export const RELAY_GPU_ENV: readonly V1EnvVar[] = [
  { name: "NVIDIA_VISIBLE_DEVICES", value: "all" },
  { name: "NVIDIA_DRIVER_CAPABILITIES", value: "compute,video,utility" },
];

/** The URL the relay posts its offer to: the given server, or the sidecar on the pod's loopback. */
export function comfystreamUrlOfSpec(comfystream: NonNullable<RelaySession["spec"]["comfystream"]>): string {
  return comfystream.url ?? `http://127.0.0.1:${comfystream.sidecar?.port ?? 8889}`;
}

/** The relay pod of `session` for `options.attempt`, exactly as the operator creates it. */
export function desiredRelayPod(session: RelaySession, options: DesiredPodOptions): V1Pod {
  const namespace = session.metadata.namespace ?? "default";
  const name = session.metadata.name ?? "";
  const placement = session.spec.pod ?? {};

  const relay: V1Container = {
    name: RELAY_CONTAINER,
    image: placement.image ?? options.relayImage,
    command: ["trickle-relay"],
    args: [
      "run",
      "--session",
      `${namespace}/${name}`,
      // A cold pod of a pooled session: its spec names the pool, whose template gave the ComfyStream.
      ...(session.spec.poolRef && session.spec.comfystream
        ? [
            "--pool-comfystream",
            comfystreamUrlOfSpec(session.spec.comfystream),
            "--pool-offer-timeout",
            String(session.spec.comfystream.offerTimeoutSeconds ?? 300),
          ]
        : []),
    ],
    env: [
      fieldEnv("RELAY_SESSION_NAMESPACE", "metadata.namespace"),
      // Downward API via the session label, unless the name had to be shortened to fit a label.
      sessionLabelValue(name) === name
        ? fieldEnv("RELAY_SESSION_NAME", `metadata.labels['${LABEL_SESSION}']`)
        : { name: "RELAY_SESSION_NAME", value: name },
      fieldEnv("POD_NAME", "metadata.name"),
    ],
    ...relayEndpointsAndProbes(),
    securityContext: relaySecurityContext(),
    volumeMounts: [{ name: TMP_VOLUME, mountPath: RELAY_TMP_PATH }],
  };
  if (placement.imagePullPolicy) relay.imagePullPolicy = placement.imagePullPolicy;
  const defaults = options.defaults ?? {};
  const relayResources = toResourceRequirements(placement.resources) ?? structuredClone(defaults.resources);
  if (relayResources) relay.resources = relayResources;
  // A relay container with a GPU of its own encodes with NVENC (spec.video.encoder auto or nvenc).
  if (requestsGpu(relayResources, defaults.gpuResourceName ?? DEFAULT_GPU_RESOURCE_NAME)) {
    relay.env!.push(...RELAY_GPU_ENV.map((env) => ({ ...env })));
  }

  const containers = [relay];
  const sidecar = session.spec.comfystream?.sidecar;
  if (sidecar)
    containers.push(comfystreamContainer(sidecar, defaults.gpuResourceName ?? DEFAULT_GPU_RESOURCE_NAME));

  const pod: V1Pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: relayPodName(name, options.attempt),
      namespace,
      labels: { ...commonLabels(session), [LABEL_ATTEMPT]: String(options.attempt) },
      annotations: { [ANNOTATION_POD_SPEC_HASH]: podSpecHash(session) },
      ownerReferences: [sessionOwnerReference(session)],
    },
    spec: {
      restartPolicy: "Never",
      serviceAccountName: relayRbacName(name),
      automountServiceAccountToken: true,
      enableServiceLinks: false,
      securityContext: { seccompProfile: { type: "RuntimeDefault" } },
      containers,
      volumes: [{ name: TMP_VOLUME, emptyDir: {} }],
    },
  };
  const spec = pod.spec!;
  const maxDuration = session.spec.lifetime?.maxDurationSeconds;
  if (maxDuration !== undefined) spec.activeDeadlineSeconds = maxDuration;
  const nodeSelector = placement.nodeSelector ?? defaults.nodeSelector;
  if (nodeSelector) spec.nodeSelector = { ...nodeSelector };
  spec.tolerations = withNodeLostTolerations(
    (placement.tolerations ?? defaults.tolerations) as V1Toleration[] | undefined,
    defaults.nodeLostTolerationSeconds ?? DEFAULT_NODE_LOST_TOLERATION_SECONDS,
  );
  if (placement.affinity) spec.affinity = structuredClone(placement.affinity);
  const runtimeClassName = placement.runtimeClassName ?? defaults.runtimeClassName;
  if (runtimeClassName) spec.runtimeClassName = runtimeClassName;
  if (placement.priorityClassName) spec.priorityClassName = placement.priorityClassName;
  if (placement.imagePullSecrets)
    spec.imagePullSecrets = placement.imagePullSecrets.map((s) => ({ name: s.name }));
  return pod;
}

export interface RelayRbac {
  serviceAccount: V1ServiceAccount;
  role: V1Role;
  roleBinding: V1RoleBinding;
}

/**
 * ServiceAccount, Role and RoleBinding `NAME-relay`: the relay pod may read and watch only its own
 * RelaySession and patch only its status. Owned by the session, so they go with it.
 */
export function desiredRelayRbac(session: RelaySession): RelayRbac {
  const sessionName = session.metadata.name ?? "";
  return relayRbacObjects(
    {
      name: relayRbacName(sessionName),
      namespace: session.metadata.namespace ?? "default",
      labels: commonLabels(session),
      owner: sessionOwnerReference(session),
    },
    [
      {
        apiGroups: [RELAY_SESSION_GROUP],
        resources: [RELAY_SESSION_PLURAL],
        resourceNames: [sessionName],
        verbs: ["get", "list", "watch"],
      },
      {
        apiGroups: [RELAY_SESSION_GROUP],
        resources: [`${RELAY_SESSION_PLURAL}/status`],
        resourceNames: [sessionName],
        verbs: ["get", "patch"],
      },
    ],
  );
}

/** The port of the relay's /healthz, /readyz and /metrics: `run --ready-port`'s default (relay-pod/src/kube/pod-endpoints.ts). */
export const RELAY_ENDPOINTS_PORT = 8892;

/**
 * The per-session relay container's `metrics` port and probes. Startup: /healthz answers from the
 * process's first moments, allowed 90 s (the relay retries binding for 60 s where pods share the
 * node's network). Liveness: a minute without an answer means a wedged process. Readiness: /readyz
 * is 200 while the session runs with ComfyStream connected (the RelaySession's Ready condition
 * says the same from status.relay; this one is the pod's own).
 */
function relayEndpointsAndProbes(): Pick<
  V1Container,
  "ports" | "startupProbe" | "livenessProbe" | "readinessProbe"
> {
  return {
    ports: [{ name: "metrics", containerPort: RELAY_ENDPOINTS_PORT, protocol: "TCP" }],
    startupProbe: { httpGet: { path: "/healthz", port: "metrics" }, periodSeconds: 2, failureThreshold: 45 },
    livenessProbe: {
      httpGet: { path: "/healthz", port: "metrics" },
      periodSeconds: 10,
      timeoutSeconds: 5,
      failureThreshold: 6,
    },
    readinessProbe: { httpGet: { path: "/readyz", port: "metrics" }, periodSeconds: 5, failureThreshold: 1 },
  };
}

/**
 * A relay's ServiceAccount, a Role with `rules` and the RoleBinding between them, all named `name`,
 * labelled and owned alike (per-session pods and warm pool pods differ only in rules and owner).
 */
export function relayRbacObjects(
  identity: { name: string; namespace: string; labels: Record<string, string>; owner: V1OwnerReference },
  rules: V1PolicyRule[],
): RelayRbac {
  const { name, namespace } = identity;
  const metadata = () => ({ name, namespace, labels: identity.labels, ownerReferences: [identity.owner] });
  return {
    serviceAccount: { apiVersion: "v1", kind: "ServiceAccount", metadata: metadata() },
    role: { apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role", metadata: metadata(), rules },
    roleBinding: {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: metadata(),
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name },
      subjects: [{ kind: "ServiceAccount", name, namespace }],
    },
  };
}
