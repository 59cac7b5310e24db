// Writes the CRD YAML files (RelaySession, RelayPool) from the TypeScript declarations.
//
//   npm run gen:crds              (re)write crds/trickle-relay.io_relaysessions.yaml and _relaypools.yaml
//   npm run gen:crds -- --check   exit 1 if a committed file differs from what would be written

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { generatedCrdFiles, renderRelaySessionCrdYaml } from "./crd.js";

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
export function checkGeneratedCrd(target: string, render = renderRelaySessionCrdYaml): CrdFileState {
  const current = existsSync(target) ? readFileSync(target, "utf8") : undefined;
  if (current === render()) return { upToDate: true, message: `${target} is up to date` };
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
  let stale = 0;
  for (const file of generatedCrdFiles()) {
    const target = join(findRepositoryRoot(), file.path);
    const state = checkGeneratedCrd(target, file.render);
    if (args.includes("--check")) {
      (state.upToDate ? console.log : console.error)(`gen:crds: ${state.message}`);
      if (!state.upToDate) stale += 1;
    } else if (state.upToDate) {
      console.log(`gen:crds: ${file.path} unchanged`);
    } else {
      writeFileSync(target, file.render());
      console.log(`gen:crds: wrote ${file.path}`);
    }
  }
  return stale > 0 ? 1 : 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = main(process.argv.slice(2));
