// Where benchmark figures go: a JSON file with the machine and command that produced them, and a
// Markdown table beside it for people.
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, resolve } from "node:path";

export function machineInfo(): { cpu: string | undefined; cores: number; memoryGiB: number; node: string } {
  return {
    cpu: cpus()[0]?.model,
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
  };
}

/** Writes `report` as JSON to `out` and `markdown` next to it (same name, .md). */
export function writeResults(out: string, report: unknown, markdown: string): void {
  const path = resolve(out);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(report, null, 2) + "\n");
  writeFileSync(path.replace(/\.json$/, ".md"), markdown);
  process.stderr.write(`results written to ${path}\n`);
}

export function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
