/**
 * The module boundaries of docs/architecture.md, checked two ways:
 * - the lint rule (eslint.config.js, @boundaries/eslint-plugin) rejects each kind of deliberate
 *   violation below and accepts the same import made through the declared entry. The fixtures are
 *   linted as if they lived at the path given, so the checked-in tree stays clean;
 * - relay-pod's public entry is light: following its value imports never reaches the pipeline
 *   (werift, ffmpeg, the session), so the operator process does not load them.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { ESLint } from "eslint";

const ROOT = path.resolve(import.meta.dirname, "../../..");

interface Fixture {
  /** Where the fixture pretends to live. */
  file: string;
  source: string;
  /** Whether the boundary rule must reject it. */
  rejected: boolean;
  why: string;
}

const FIXTURES: Fixture[] = [
  {
    file: "operator/src/relaysession/deep-import.ts",
    source:
      'import { RelaySession } from "../../../relay-pod/src/session/relay-session.js";\nexport const a = RelaySession;\n',
    rejected: true,
    why: "the operator reaching into relay-pod's internals",
  },
  {
    file: "operator/src/main-fixture.ts",
    source:
      'import { createLogger } from "../../relay-pod/src/common/log.js";\nexport const a = createLogger;\n',
    rejected: true,
    why: "the operator's program reaching past relay-pod's entry, even for a shared helper",
  },
  {
    file: "operator/src/relaysession/through-entry.ts",
    source:
      'import { silentLogger } from "../../../relay-pod/src/index.js";\nexport const a = silentLogger;\n',
    rejected: false,
    why: "the operator importing relay-pod's declared entry",
  },
  {
    file: "relay-pod/src/session/deep-crds.ts",
    source:
      'import { defaultOutputUrl } from "../../../crds/src/output-url.js";\nexport const a = defaultOutputUrl;\n',
    rejected: true,
    why: "a deep import into crds",
  },
  {
    file: "relay-pod/src/session/crds-entry.ts",
    source:
      'import { defaultOutputUrl } from "../../../crds/src/index.js";\nexport const a = defaultOutputUrl;\n',
    rejected: false,
    why: "crds through its entry",
  },
  {
    file: "relay-pod/src/media/upward.ts",
    source: 'import { RelaySession } from "../session/relay-session.js";\nexport const a = RelaySession;\n',
    rejected: true,
    why: "a lower stage (media) importing a higher one (session)",
  },
  {
    file: "relay-pod/src/session/upward-kube.ts",
    source: 'export const load = () => import("../kube/resource-session.js");\n',
    rejected: true,
    why: "the pipeline importing its Kubernetes side, even lazily",
  },
  {
    file: "relay-pod/src/trickle/sideways.ts",
    source: 'import { TsSegmentCutter } from "../media/ts-cutter.js";\nexport const a = TsSegmentCutter;\n',
    rejected: true,
    why: "two stages on the same level importing each other",
  },
  {
    file: "relay-pod/src/kube/downward.ts",
    source: 'import { RelaySession } from "../session/relay-session.js";\nexport const a = RelaySession;\n',
    rejected: false,
    why: "kube/ importing the session below it",
  },
  {
    file: "relay-pod/src/session/operator.ts",
    source:
      'import { Reconciler } from "../../../operator/src/relaysession/reconciler.js";\nexport const a = Reconciler;\n',
    rejected: true,
    why: "relay-pod importing the operator",
  },
  {
    file: "crds/src/relay.ts",
    source: 'import { silentLogger } from "../../relay-pod/src/index.js";\nexport const a = silentLogger;\n',
    rejected: true,
    why: "crds importing anything of ours",
  },
  {
    file: "operator/src/kube/upward.ts",
    source: 'import { Reconciler } from "../relaysession/reconciler.js";\nexport const a = Reconciler;\n',
    rejected: true,
    why: "the operator's generic machinery importing a resource's reconciler",
  },
];

describe("module boundaries (lint rule)", () => {
  const eslint = new ESLint({ cwd: ROOT });
  for (const fixture of FIXTURES) {
    it(`${fixture.rejected ? "rejects" : "accepts"} ${fixture.why} (${fixture.file})`, async () => {
      const [result] = await eslint.lintText(fixture.source, { filePath: path.join(ROOT, fixture.file) });
      const boundaryErrors = result!.messages.filter((m) => m.ruleId === "boundaries/dependencies");
      if (fixture.rejected) {
        assert.equal(
          boundaryErrors.length,
          1,
          `expected one boundary error, got: ${JSON.stringify(result!.messages)}`,
        );
        assert.match(boundaryErrors[0]!.message, /no policy allowing dependencies/);
      } else {
        assert.deepEqual(result!.messages, [], "no lint message at all");
      }
    });
  }

  it("the checked-in sources have no boundary violation", async () => {
    const results = await eslint.lintFiles(["relay-pod/src", "operator/src", "crds/src"]);
    const violations = results.flatMap((r) =>
      r.messages
        .filter((m) => m.ruleId?.startsWith("boundaries/"))
        .map((m) => `${path.relative(ROOT, r.filePath)}:${m.line} ${m.message}`),
    );
    assert.deepEqual(violations, []);
    assert.ok(results.length > 50, `linted ${results.length} files`);
  });
});

/** Relative value imports of a TypeScript source (type-only imports load nothing at run time). */
function valueImports(file: string): string[] {
  const source = readFileSync(file, "utf8");
  const found: string[] = [];
  const pattern = /^(?:import|export)\s+(type\s+)?(?:[^"';]*?\sfrom\s+)?["']([^"']+)["']/gm;
  for (const match of source.matchAll(pattern)) {
    if (match[1]) continue;
    found.push(match[2]!);
  }
  return found;
}

describe("relay-pod's public entry stays light", () => {
  it("loads no part of the pipeline (werift, ffmpeg, the session) and no Kubernetes client", () => {
    const entry = path.join(ROOT, "relay-pod/src/index.ts");
    const seen = new Set<string>();
    const packages = new Set<string>();
    const pending = [entry];
    while (pending.length > 0) {
      const file = pending.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      for (const specifier of valueImports(file)) {
        if (specifier.startsWith("."))
          pending.push(path.resolve(path.dirname(file), specifier).replace(/\.js$/, ".ts"));
        else if (!specifier.startsWith("node:")) packages.add(specifier.split("/")[0]!);
      }
    }
    const modules = [...seen].map((f) => path.relative(ROOT, f));
    assert.ok(
      modules.includes("relay-pod/src/server/validation.ts"),
      `followed the entry: ${modules.join(", ")}`,
    );
    const heavy = modules.filter((m) =>
      /^relay-pod\/src\/(session\/relay-session|webrtc\/comfystream-peer|media\/ffmpeg|kube\/)/.test(m),
    );
    assert.deepEqual(heavy, [], "pipeline or Kubernetes modules reached from the entry");
    assert.ok(
      !packages.has("werift") && !packages.has("@kubernetes"),
      `packages: ${[...packages].join(", ")}`,
    );
  });
});
