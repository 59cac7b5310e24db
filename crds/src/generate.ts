// Writes the RelaySession CRD YAML from the TypeScript declarations.
//
//   npm run gen:crds              (re)write crds/trickle-relay.io_relaysessions.yaml
//   npm run gen:crds -- --check   exit 1 if the committed file differs from what would be written

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CRD_YAML_PATH, renderRelaySessionCrdYaml } from "./crd.js";

/** The repository root: the nearest folder above this module holding the project's package.json. */
export function findRepositoryRoot(start = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = start; ; dir = dirname(dir)) {
    const packageJson = join(dir, "package.json");
    if (existsSync(packageJson)) {
      const name = (JSON.parse(readFileSync(packageJson, "utf8")) as { name?: string }).name;
      if (name === "trickle-relay") return dir;
    }
    if (dirname(dir) === dir) throw new Error(`no trickle-relay package.json above ${start}`);
  }
}

export interface CrdFileState {
  upToDate: boolean;
  /** One line for humans, naming the fix when the file is stale. */
  message: string;
}

/** Compares the CRD file at `target` with what the TypeScript declarations produce now. */
export function checkGeneratedCrd(target: string): CrdFileState {
  const current = existsSync(target) ? readFileSync(target, "utf8") : undefined;
  if (current === renderRelaySessionCrdYaml()) return { upToDate: true, message: `${target} is up to date` };
  return {
    upToDate: false,
    message:
      `${target} is ${current === undefined ? "missing" : "stale"}: the TypeScript in crds/src changed; ` +
      "run `npm run build && npm run gen:crds` and commit the result",
  };
}

function main(args: string[]): number {
  const unknown = args.filter((arg) => arg !== "--check");
  if (unknown.length > 0) {
    console.error(`gen:crds: unknown argument ${unknown.join(" ")} (usage: gen:crds [--check])`);
    return 2;
  }
  const target = join(findRepositoryRoot(), CRD_YAML_PATH);
  const state = checkGeneratedCrd(target);
  if (args.includes("--check")) {
    (state.upToDate ? console.log : console.error)(`gen:crds: ${state.message}`);
    return state.upToDate ? 0 : 1;
  }
  if (state.upToDate) {
    console.log(`gen:crds: ${CRD_YAML_PATH} unchanged`);
  } else {
    writeFileSync(target, renderRelaySessionCrdYaml());
    console.log(`gen:crds: wrote ${CRD_YAML_PATH}`);
  }
  return 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = main(process.argv.slice(2));
