// Where benchmark figures go: a JSON file with the machine and command that produced them, and a
// Markdown table beside it for people.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
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

/** In a results .md, what follows this line was written by hand and a re-run keeps it. */
export const HAND_WRITTEN_MARKER = "<!-- written by hand below: a re-run of the benchmark keeps it -->";

/**
 * Writes `report` as JSON to `out` and `markdown` next to it (same name, .md). An analysis written by
 * hand below HAND_WRITTEN_MARKER in the existing .md is kept after the new figures.
 */
export function writeResults(out: string, report: unknown, markdown: string): void {
  const path = resolve(out);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(report, null, 2) + "\n");
  const mdPath = path.replace(/\.json$/, ".md");
  const previous = existsSync(mdPath) ? readFileSync(mdPath, "utf8") : "";
  const kept = previous.indexOf(HAND_WRITTEN_MARKER);
  writeFileSync(mdPath, kept < 0 ? markdown : `${markdown.trimEnd()}\n\n${previous.slice(kept)}`);
  process.stderr.write(`results written to ${path}\n`);
}

export function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
