// The input-stall limits as a user sets them: `trickle-relay run` flags, the REST start body, and a
// RelaySession's spec.inputStall (schema defaults, cross-field check, the relay's config) — each
// reaching the session's stall policy, each refusing nonsense with the setting's own name.
// The policy itself (status after N s, end after M s) is proven in peer-failure.test.ts.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import {
  RELAY_SESSION_API_VERSION,
  RELAY_SESSION_KIND,
  applySchemaDefaults,
  relaySessionSpecSchema,
  validateAgainstSchema,
  validateRelaySessionSpec,
  type RelaySession,
  type RelaySessionSpec,
  type RelaySessionSpecInput,
} from "../../crds/src/index.js";
import { findRepositoryRoot } from "../../crds/src/generate.js";
import {
  sessionConfigFromResource,
  SessionSpecError,
} from "../../relay-pod/src/kube/config-from-resource.js";
import { parseStartRequest, RequestValidationError } from "../../relay-pod/src/server/validation.js";
import { buildSessionConfig } from "../../relay-pod/src/session/config.js";
import { DEFAULT_INPUT_STALL_POLICY, inputStallPolicyFrom } from "../../relay-pod/src/session/input-stall.js";

const runCli = promisify(execFile);
const CLI = join(findRepositoryRoot(), "dist/relay-pod/src/cli.js");
const names = { statusAfterSec: "A", policy: "P", endAfterSec: "E" };
const startBody = {
  input_stream_url: "http://127.0.0.1:1/in",
  comfystream_url: "http://127.0.0.1:2",
  prompts: {},
};

describe("input stall settings", () => {
  test("defaults: status after 10 s, end after 300 s; wait means never end", () => {
    assert.deepEqual(DEFAULT_INPUT_STALL_POLICY, { statusAfterSec: 10, endAfterSec: 300 });
    assert.deepEqual(inputStallPolicyFrom({}, names), { statusAfterSec: 10, endAfterSec: 300 });
    assert.deepEqual(inputStallPolicyFrom({ statusAfterSec: 3, policy: "wait" }, names), {
      statusAfterSec: 3,
      endAfterSec: 0,
    });
    assert.deepEqual(inputStallPolicyFrom({ statusAfterSec: 3, endAfterSec: 3 }, names), {
      statusAfterSec: 3,
      endAfterSec: 3,
    });
    const refused: Array<[Parameters<typeof inputStallPolicyFrom>[0], RegExp]> = [
      [{ statusAfterSec: 0 }, /A must be a whole number of seconds from 1 to 3600 \(got 0\)/],
      [{ statusAfterSec: 2.5 }, /A must be a whole number/],
      [{ endAfterSec: 86_401 }, /E must be a whole number of seconds from 1 to 86400/],
      [{ policy: "later" }, /P must be "end" .* or "wait" .* \(got "later"\)/],
      [{ policy: "wait", endAfterSec: 60 }, /E only applies with P end/],
      [{ statusAfterSec: 60, endAfterSec: 30 }, /E \(30\) must be at least A \(60\)/],
    ];
    for (const [settings, message] of refused)
      assert.throws(() => inputStallPolicyFrom(settings, names), message, JSON.stringify(settings));
  });

  test("REST start body: input_stall_sec, input_stall_policy, input_stall_end_sec", () => {
    assert.equal(parseStartRequest(startBody).inputStall, undefined);
    assert.equal(
      buildSessionConfig({ ...parseStartRequest(startBody), id: "s" }).inputStall?.endAfterSec,
      300,
    );
    assert.deepEqual(
      parseStartRequest({ ...startBody, input_stall_sec: 5, input_stall_end_sec: 20 }).inputStall,
      {
        statusAfterSec: 5,
        endAfterSec: 20,
      },
    );
    assert.deepEqual(parseStartRequest({ ...startBody, input_stall_policy: "wait" }).inputStall, {
      statusAfterSec: 10,
      endAfterSec: 0,
    });
    const refused: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ input_stall_sec: "5" }, "input_stall_sec", /input_stall_sec must be a whole number of seconds/],
      [{ input_stall_policy: 1 }, "input_stall_policy", /input_stall_policy must be "end" or "wait"/],
      [{ input_stall_policy: "never" }, "input_stall_policy", /got "never"/],
      [
        { input_stall_policy: "wait", input_stall_end_sec: 9 },
        "input_stall_end_sec",
        /input_stall_end_sec only applies with input_stall_policy end/,
      ],
      [
        { input_stall_sec: 20, input_stall_end_sec: 10 },
        "input_stall_end_sec",
        /must be at least input_stall_sec/,
      ],
    ];
    for (const [fields, field, message] of refused) {
      assert.throws(
        () => parseStartRequest({ ...startBody, ...fields }),
        (err: unknown) =>
          err instanceof RequestValidationError && err.field === field && message.test(err.message),
        JSON.stringify(fields),
      );
    }
  });

  test("RelaySession spec.inputStall: schema defaults and limits, the cross-field check, the relay's config", () => {
    const base: RelaySessionSpecInput = {
      trickle: { inputUrl: "https://gw:7280/live/cam-1" },
      comfystream: { url: "http://comfy:8889" },
    };
    const stored = (spec: RelaySessionSpecInput) =>
      applySchemaDefaults(spec, relaySessionSpecSchema.schema) as RelaySessionSpec;
    assert.deepEqual(stored(base).inputStall, {
      statusAfterSeconds: 10,
      policy: "end",
      endAfterSeconds: 300,
    });
    const schemaProblems = (inputStall: unknown) =>
      validateAgainstSchema({ ...base, inputStall }, relaySessionSpecSchema.schema)
        .map((p) => `${p.path}: ${p.message}`)
        .join("\n");
    assert.equal(schemaProblems({ statusAfterSeconds: 5, policy: "wait" }), "");
    assert.match(schemaProblems({ statusAfterSeconds: 0 }), /inputStall\.statusAfterSeconds/);
    assert.match(schemaProblems({ policy: "never" }), /inputStall\.policy/);
    assert.match(schemaProblems({ endAfterSeconds: 100_000 }), /inputStall\.endAfterSeconds/);
    assert.deepEqual(
      validateRelaySessionSpec(stored({ ...base, inputStall: { policy: "wait", statusAfterSeconds: 900 } })),
      [],
    );
    assert.deepEqual(validateRelaySessionSpec(stored({ ...base, inputStall: { statusAfterSeconds: 900 } })), [
      "spec.inputStall.endAfterSeconds (300) must be at least statusAfterSeconds (900) with policy end",
    ]);

    const config = (inputStall: RelaySessionSpecInput["inputStall"]) => {
      const resource: RelaySession = {
        apiVersion: RELAY_SESSION_API_VERSION,
        kind: RELAY_SESSION_KIND,
        metadata: { namespace: "studio", name: "cam-1" },
        spec: stored({ ...base, inputStall }),
      };
      return sessionConfigFromResource(resource).config.inputStall;
    };
    assert.deepEqual(config(undefined), { statusAfterSec: 10, endAfterSec: 300 });
    assert.deepEqual(config({ statusAfterSeconds: 4, endAfterSeconds: 8 }), {
      statusAfterSec: 4,
      endAfterSec: 8,
    });
    // wait: the schema's default endAfterSeconds is there, and unused.
    assert.deepEqual(config({ policy: "wait" }), { statusAfterSec: 10, endAfterSec: 0 });
    assert.throws(() => config({ statusAfterSeconds: 60, endAfterSeconds: 30 }), SessionSpecError);
  });

  test("`trickle-relay run`: the flags in --help, and contradicting flags refused as usage errors (exit 2)", async () => {
    const help = (await runCli(process.execPath, [CLI, "run", "--help"])).stdout;
    assert.match(help, /--input-stall <seconds>[^]*?default\s+10\)/);
    assert.match(help, /--input-stall-policy <policy>.*choices: "end", "wait"/s);
    assert.match(help, /--input-stall-end <seconds>[^]*?default\s+300\)/);
    const refused: Array<[string[], RegExp]> = [
      [
        ["--input-stall-policy", "wait", "--input-stall-end", "60"],
        /--input-stall-end only applies with --input-stall-policy end/,
      ],
      [
        ["--input-stall", "60", "--input-stall-end", "30"],
        /--input-stall-end \(30\) must be at least --input-stall \(60\)/,
      ],
      [["--input-stall", "0"], /--input-stall must be a whole number of seconds from 1 to 3600/],
      [["--input-stall", "soon"], /expected a whole number of seconds, got "soon"/],
      [["--input-stall-policy", "later"], /Allowed choices are end, wait/],
    ];
    for (const [flags, message] of refused) {
      const result = await runCli(process.execPath, [
        CLI,
        "run",
        "--input",
        "http://127.0.0.1:1/in",
        "--comfystream",
        "http://127.0.0.1:2",
        ...flags,
      ]).then(
        () => ({ code: 0, stderr: "" }),
        (err: { code: number; stderr: string }) => err,
      );
      assert.equal(result.code, 2, flags.join(" "));
      assert.match(result.stderr, message, flags.join(" "));
    }
    const withSession = await runCli(process.execPath, [
      CLI,
      "run",
      "--session",
      "ns/name",
      "--input-stall",
      "5",
    ]).then(
      () => ({ code: 0, stderr: "" }),
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(withSession.code, 2);
    assert.match(withSession.stderr, /--input-stall cannot be combined with --session/);
  });
});
