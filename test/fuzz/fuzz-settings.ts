/**
 * Settings shared by the fuzz tests: a fixed seed (a failure prints its seed and path, and a rerun
 * finds the same input), a bounded number of runs and a time limit per property so `npm test` stays
 * short on a slow, shared machine. FUZZ_SEED / FUZZ_RUNS override them for a longer hunt, e.g.
 *   FUZZ_SEED=$RANDOM FUZZ_RUNS=5000 bash test/infra/run-tests.sh dist/test/fuzz/*.test.js
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import vm from "node:vm";
import fc from "fast-check";

const DEFAULT_SEED = 20261207;
const DEFAULT_RUNS = 200;

export const FUZZ_SEED = Number(process.env.FUZZ_SEED ?? DEFAULT_SEED);
export const FUZZ_RUNS = Number(process.env.FUZZ_RUNS ?? DEFAULT_RUNS);

/** Parameters for fc.assert: fixed seed, bounded runs, and at most `timeLimitMs` per property. */
export function fuzzParameters<T>(timeLimitMs = 5_000): fc.Parameters<T> {
  return {
    seed: FUZZ_SEED,
    numRuns: FUZZ_RUNS,
    interruptAfterTimeLimit: timeLimitMs,
    // An interrupted run still passed every input it tried; it only tried fewer.
    markInterruptAsFailure: false,
  };
}

/** test/fuzz/corpus, from the compiled dist/test/fuzz as from the source. */
export const CORPUS_DIR = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../../test/fuzz/corpus",
);

/** Every file of one corpus folder, by name (sorted, so failures name the same file every run). */
export function corpusFiles(folder: string): { name: string; bytes: Buffer }[] {
  const dir = path.join(CORPUS_DIR, folder);
  return readdirSync(dir)
    .filter((name) => !name.startsWith("."))
    .sort()
    .map((name) => ({ name, bytes: readFileSync(path.join(dir, name)) }));
}

v8.setFlagsFromString("--expose-gc");
/** The collector, so that memory figures count what is still held, not garbage awaiting collection. */
const collectGarbage = vm.runInNewContext("gc") as () => void;

/** Buffer (ArrayBuffer) memory still reachable now. */
export function heldBufferBytes(): number {
  collectGarbage();
  collectGarbage();
  return process.memoryUsage().arrayBuffers;
}

export const MiB = 1024 * 1024;
