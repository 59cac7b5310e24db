/**
 * Command lines of the real node's kubelet and kube-scheduler (Kubernetes 1.20.2, built by
 * node-assets.sh), with the flags that worked by hand on this machine (specs §4.3b) and why.
 */

/** Node name and InternalIP (--node-ip refuses loopback; the hostname override becomes both). */
export const NODE_NAME = "127.0.0.1";
/** The kubelet's identity for the Node authorizer. */
export const NODE_USER = { name: `system:node:${NODE_NAME}`, groups: ["system:nodes"] };
/** The sandbox image: pause built from the Kubernetes source tree (no registry to pull from). */
export const PAUSE_IMAGE = "k8s.gcr.io/pause:3.2";

export interface KubeletPaths {
  kubeconfig: string;
  rootDir: string;
  certDir: string;
  volumePluginDir: string;
  dockershimRoot: string;
  dockerHost: string;
  dockershimSocket: string;
}

export function kubeletArgs(paths: KubeletPaths, ports: { kubelet: number; healthz: number }): string[] {
  return [
    `--kubeconfig=${paths.kubeconfig}`,
    `--hostname-override=${NODE_NAME}`,
    "--container-runtime=docker",
    `--docker-endpoint=${paths.dockerHost}`,
    `--container-runtime-endpoint=unix://${paths.dockershimSocket}`,
    `--experimental-dockershim-root-directory=${paths.dockershimRoot}`,
    `--pod-infra-container-image=${PAUSE_IMAGE}`,
    "--cgroup-driver=cgroupfs",
    "--fail-swap-on=false",
    "--make-iptables-util-chains=false",
    `--root-dir=${paths.rootDir}`,
    `--cert-dir=${paths.certDir}`,
    `--volume-plugin-dir=${paths.volumePluginDir}`,
    "--address=127.0.0.1",
    `--port=${ports.kubelet}`,
    "--read-only-port=0",
    "--healthz-bind-address=127.0.0.1",
    `--healthz-port=${ports.healthz}`,
    // The apiserver reaches the kubelet (logs, exec) without client certificates here.
    "--anonymous-auth=true",
    "--authorization-mode=AlwaysAllow",
    // This VM refuses negative OOM scores (the kubelet build is patched for its containers too).
    "--oom-score-adj=0",
    // With the kernel-tunables patch: differing sysctls are logged, never written.
    "--protect-kernel-defaults=true",
    // The test machine's disk and memory are shared: evict only when truly nothing is left, and
    // never garbage-collect the images copied in (they cannot be pulled again).
    "--eviction-hard=memory.available<1Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%",
    "--image-gc-high-threshold=100",
    "--image-gc-low-threshold=99",
    // Faster pod status and node heartbeats than the defaults, for test latency.
    "--node-status-update-frequency=4s",
    "--sync-frequency=10s",
    "--v=1",
  ];
}

export function schedulerArgs(kubeconfig: string): string[] {
  return [`--kubeconfig=${kubeconfig}`, "--leader-elect=false", "--port=0", "--secure-port=0", "--v=1"];
}
