/**
 * What a kubelet leaves on the host outside its --root-dir, and how the real test node removes it
 * (specs §4.3b caveats): tmpfs mounts of pod volumes (secrets) under the root dir when pods were
 * not torn down by the kubelet itself, the `kubepods` cgroups (cgroupfs driver, cgroup v1: one tree
 * per controller), and per-pod folders in /var/log/pods and /var/log/containers. Only one real test
 * node runs at a time (a lock in real-node.ts), so every `kubepods` cgroup is this node's.
 */
import { readdir, readFile, rm, rmdir } from "node:fs/promises";
import { join } from "node:path";
import { run } from "./process.js";

const CGROUP_ROOT = "/sys/fs/cgroup";
export const POD_LOG_DIRS = ["/var/log/pods", "/var/log/containers"];

/** Mount points at or below `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  return text
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((point): point is string => !!point && (point === dir || point.startsWith(`${dir}/`)))
    .map((point) => point.replace(/\\040/g, " "))
    .sort((a, b) => b.length - a.length);
}

/** Unmounts (lazily) everything at or below `dir`. */
export async function unmountAll(dir: string): Promise<void> {
  for (const point of await mountsUnder(dir)) await run("umount", ["-l", point]);
}

/** Every `kubepods` cgroup folder, deepest first, over all cgroup v1 controllers (and v2 if unified). */
export async function kubepodsCgroups(): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string) => {
    found.push(dir);
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (entry.isDirectory()) await walk(join(dir, entry.name));
    }
  };
  for (const controller of await readdir(CGROUP_ROOT).catch(() => [] as string[])) {
    const top = join(CGROUP_ROOT, controller, "kubepods");
    if ((await readdir(top).catch(() => undefined)) !== undefined) await walk(top);
  }
  return found.sort((a, b) => b.split("/").length - a.split("/").length);
}

/** Removes the kubepods cgroups (empty ones only: the kernel refuses rmdir of a cgroup with tasks). */
export async function removeKubepodsCgroups(): Promise<string[]> {
  const left: string[] = [];
  for (const dir of await kubepodsCgroups()) {
    await rmdir(dir).catch(() => left.push(dir));
  }
  return left;
}

/** Entries of the pod log folders, to tell later which ones a run added. */
export async function podLogEntries(): Promise<Set<string>> {
  const entries = new Set<string>();
  for (const dir of POD_LOG_DIRS) {
    for (const name of await readdir(dir).catch(() => [] as string[])) entries.add(join(dir, name));
  }
  return entries;
}

/** Removes the pod log entries that were not there `before`. */
export async function removeNewPodLogs(before: Set<string>): Promise<void> {
  for (const entry of await podLogEntries()) {
    if (!before.has(entry)) await rm(entry, { recursive: true, force: true });
  }
}
