/**
 * RelaySession specs the CRD schema accepts but that may make no sense. For each: the operator's
 * cross-field check (validateRelaySessionSpec) either names the problem, or the relay pod the
 * operator would create is well formed and the relay inside it either gets a session config or a
 * SessionSpecError with a reason (status InvalidSpec), never a crash.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  applySchemaDefaults,
  relaySessionSpecSchema,
  validateAgainstSchema,
  validateRelaySessionSpec,
  type RelaySession,
} from "../../crds/src/index.js";
import { desiredRelayPod } from "../../operator/src/relaysession/desired-pod.js";
import {
  SessionSpecError,
  sessionConfigFromResource,
} from "../../relay-pod/src/kube/config-from-resource.js";
import { readFileSync } from "node:fs";
import path from "node:path";
import { parse } from "yaml";
import { arbitraryFor, mutatedObject } from "./schema-arbitrary.js";
import { CORPUS_DIR, fuzzParameters } from "./fuzz-settings.js";

const specSchema = relaySessionSpecSchema.schema;
const basicSpec = (
  parse(readFileSync(path.join(CORPUS_DIR, "../../../crds/examples/basic.yaml"), "utf8")) as { spec: object }
).spec;

function resource(spec: unknown): RelaySession {
  return {
    apiVersion: "trickle-relay.io/v1alpha1",
    kind: "RelaySession",
    metadata: {
      name: "fuzz",
      namespace: "default",
      uid: "00000000-0000-4000-8000-0000000000ff",
      generation: 1,
    },
    spec: applySchemaDefaults(spec, specSchema) as RelaySession["spec"],
  };
}

describe("RelaySession specs the schema allows", () => {
  it("are refused with named problems, or give a well-formed pod and a config or a stated reason", () => {
    let accepted = 0;
    let refused = 0;
    const refusedByRelay: string[] = [];
    fc.assert(
      // Whole specs from the schema, and the basic example with a few fields changed (more of
      // which pass the schema and reach the code behind it).
      fc.property(fc.oneof(arbitraryFor(specSchema), mutatedObject(basicSpec, specSchema)), (spec) => {
        fc.pre(validateAgainstSchema(spec, specSchema).length === 0);
        const session = resource(spec);
        const problems = validateRelaySessionSpec(session.spec);
        if (problems.length > 0) {
          refused++;
          for (const problem of problems) assert.match(problem, /^spec\.|^spec\b/, problem);
          return;
        }
        accepted++;
        const pod = desiredRelayPod(session, { relayImage: "relay:fuzz", attempt: 0 });
        assert.ok((pod.spec?.containers.length ?? 0) >= 1);
        assert.doesNotThrow(() => JSON.stringify(pod));
        try {
          const { config } = sessionConfigFromResource(session);
          assert.ok(
            config.width >= 64 && config.height >= 64 && config.frameRate > 0,
            JSON.stringify(config),
          );
        } catch (error) {
          assert.ok(
            error instanceof SessionSpecError,
            `${String(error)} for ${JSON.stringify(session.spec)}`,
          );
        }
      }),
      { ...fuzzParameters(10_000), numRuns: Math.max(100, Math.floor(fuzzParameters().numRuns! / 2)) },
    );
    assert.ok(accepted + refused > 20, `only ${accepted + refused} specs passed the schema`);
    console.log(
      `session-spec fuzz: ${accepted} accepted (${refusedByRelay.length} of them then refused by the relay pod), ` +
        `${refused} refused by validateRelaySessionSpec`,
      [...new Set(refusedByRelay)],
    );
  });
});
