// RelaySession spec → relay session configuration: defaults, the sidecar URL, video modes, prompts,
// and clear errors for specs the relay cannot run.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  RELAY_SESSION_API_VERSION,
  RELAY_SESSION_KIND,
  type RelaySession,
  type RelaySessionSpec,
} from "../../crds/src/index.js";
import {
  comfystreamUrlFromSpec,
  promptsFromSpec,
  relayModeFromSpec,
  sessionConfigFromResource,
  SessionSpecError,
} from "../../relay-pod/src/kube/config-from-resource.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import { forwardEncoderSettings } from "../../relay-pod/src/session/config.js";
import { parseSessionRef, SessionResourceError } from "../../relay-pod/src/kube/session-resource.js";

const workflow = { "1": { class_type: "LoadTensor", inputs: {} } };

/** A RelaySession as the apiserver returns it: schema defaults applied. */
function resource(spec: Partial<RelaySessionSpec> = {}): RelaySession {
  return {
    apiVersion: RELAY_SESSION_API_VERSION,
    kind: RELAY_SESSION_KIND,
    metadata: { namespace: "studio", name: "cam-1", generation: 1 },
    spec: {
      trickle: { inputUrl: "https://gw:7280/live/cam-1?token=t" },
      comfystream: { url: "http://comfy:8889", offerTimeoutSeconds: 300 },
      prompts: [workflow],
      width: 512,
      height: 512,
      frameRate: 30,
      video: { mode: "Transcode", bitrateKbps: 2000, keyframeIntervalSeconds: 1, segmentDurationSeconds: 1 },
      lifetime: { startupTimeoutSeconds: 600, maxRestarts: 3 },
      ...spec,
    } as RelaySessionSpec,
  };
}

describe("sessionConfigFromResource", () => {
  test("spec.video.encoder reaches the session (auto when absent); passthrough says it encodes nothing", () => {
    const video = {
      mode: "Transcode",
      bitrateKbps: 2000,
      keyframeIntervalSeconds: 1,
      segmentDurationSeconds: 1,
    };
    assert.equal(sessionConfigFromResource(resource()).config.encoder, "auto");
    for (const encoder of ["auto", "nvenc", "x264"] as const) {
      const { config, notes } = sessionConfigFromResource(
        resource({ video: { ...video, encoder } as RelaySessionSpec["video"] }),
      );
      assert.equal(config.encoder, encoder);
      assert.deepEqual(notes, []);
    }
    const passthrough = sessionConfigFromResource(
      resource({ video: { ...video, mode: "Passthrough", encoder: "nvenc" } as RelaySessionSpec["video"] }),
    );
    assert.match(passthrough.notes.join(), /spec\.video\.encoder nvenc applies to transcoding only/);
    assert.throws(
      () =>
        sessionConfigFromResource(
          resource({ video: { ...video, encoder: "cuda" } as unknown as RelaySessionSpec["video"] }),
        ),
      (err: unknown) =>
        err instanceof SessionSpecError &&
        /spec\.video\.encoder: expected auto, nvenc or x264/.test(err.message),
    );
  });

  test("maps the spec: id NS/NAME, default output URL (query kept), sizes, offer timeout", () => {
    const { config, offerTimeoutMs, notes } = sessionConfigFromResource(
      resource({
        width: 640,
        height: 384,
        frameRate: 24,
        comfystream: { url: "http://comfy:8889", offerTimeoutSeconds: 45 },
      }),
      { iceAddresses: ["10.0.0.7"], queueCapacities: { decodedFrames: 20 } },
    );
    assert.equal(config.id, "studio/cam-1");
    assert.equal(config.inputUrl, "https://gw:7280/live/cam-1?token=t");
    assert.equal(config.outputUrl, "https://gw:7280/live/cam-1-out?token=t");
    assert.equal(config.controlUrl, undefined);
    assert.equal(config.eventsUrl, undefined);
    assert.equal(config.comfystreamUrl, "http://comfy:8889");
    assert.deepEqual([config.width, config.height, config.frameRate], [640, 384, 24]);
    assert.equal(config.mode, "transcode");
    assert.equal(config.segmentDurationSec, 1);
    assert.deepEqual(config.prompts, [workflow]);
    assert.deepEqual(config.iceAddresses, ["10.0.0.7"]);
    assert.equal(config.queueCapacities.decodedFrames, 20);
    assert.equal(config.queueCapacities.outputSegments, 50);
    assert.equal(offerTimeoutMs, 45_000);
    assert.deepEqual(notes, []);
  });

  test("explicit output, control and events channels and segment duration are used as given", () => {
    const { config } = sessionConfigFromResource(
      resource({
        trickle: {
          inputUrl: "http://gw/live/a",
          outputUrl: "http://gw/live/b",
          controlUrl: "http://gw/live/a-control",
          eventsUrl: "http://gw/live/a-events",
        },
        video: {
          mode: "Passthrough",
          bitrateKbps: 2000,
          keyframeIntervalSeconds: 1,
          segmentDurationSeconds: 2.5,
          peerWindowFrames: 6,
          encoder: "auto",
        },
      }),
    );
    assert.equal(config.outputUrl, "http://gw/live/b");
    assert.equal(config.controlUrl, "http://gw/live/a-control");
    assert.equal(config.eventsUrl, "http://gw/live/a-events");
    assert.equal(config.mode, "passthrough");
    assert.equal(config.segmentDurationSec, 2.5);
    assert.equal(config.peerWindowFrames, 6);
  });

  test("a sidecar is reached on loopback at its port (default 8889)", () => {
    const sidecar = { image: "livepeer/comfystream:0.1.8" };
    assert.equal(
      comfystreamUrlFromSpec({
        comfystream: { sidecar: { ...sidecar, port: 9000 }, offerTimeoutSeconds: 300 },
      }),
      "http://127.0.0.1:9000",
    );
    assert.equal(
      comfystreamUrlFromSpec({ comfystream: { sidecar: sidecar as never, offerTimeoutSeconds: 300 } }),
      "http://127.0.0.1:8889",
    );
  });

  test("Auto transcodes and says so; bitrate and keyframe interval reach the transcoder", () => {
    const { config, notes } = sessionConfigFromResource(
      resource({
        frameRate: 24,
        video: {
          mode: "Auto",
          bitrateKbps: 4000,
          keyframeIntervalSeconds: 0.5,
          segmentDurationSeconds: 1,
          peerWindowFrames: 4,
          encoder: "auto",
        },
      }),
    );
    assert.equal(config.mode, "transcode");
    assert.deepEqual(notes.length, 1);
    assert.match(notes[0]!, /Auto/);
    assert.equal(config.bitrateKbps, 4000);
    assert.equal(config.keyframeIntervalSec, 0.5);
    assert.deepEqual(forwardEncoderSettings(config), { bitrate: "4000k", gopFrames: 12 });
    // The CRD's defaults (2000 kbit/s, 1 s) are ComfyStream's own and the transcoder's.
    assert.deepEqual(forwardEncoderSettings(sessionConfigFromResource(resource()).config), {
      bitrate: "2000k",
      gopFrames: 30,
    });
  });

  test("passthrough with encoder settings other than the defaults says they do not apply", () => {
    const video = {
      mode: "Passthrough",
      keyframeIntervalSeconds: 1,
      segmentDurationSeconds: 1,
      peerWindowFrames: 4,
      encoder: "auto",
    } as const;
    const asked = sessionConfigFromResource(resource({ video: { ...video, bitrateKbps: 800 } }));
    assert.equal(asked.config.mode, "passthrough");
    assert.equal(asked.notes.length, 1);
    assert.match(asked.notes[0]!, /bitrateKbps and keyframeIntervalSeconds apply to transcoding only/);
    const defaults = sessionConfigFromResource(resource({ video: { ...video, bitrateKbps: 2000 } }));
    assert.deepEqual(defaults.notes, []);
  });

  test("empty prompts become ComfyStream's pass-through workflow", () => {
    assert.deepEqual(promptsFromSpec([]), [PASSTHROUGH_WORKFLOW]);
    assert.deepEqual(promptsFromSpec(undefined), [PASSTHROUGH_WORKFLOW]);
    assert.deepEqual(promptsFromSpec([workflow, workflow]), [workflow, workflow]);
  });

  test("specs the relay cannot run are SessionSpecErrors naming the field", () => {
    const both = resource({
      comfystream: { url: "http://c", sidecar: { image: "x", port: 8889 }, offerTimeoutSeconds: 300 },
    });
    assert.throws(
      () => sessionConfigFromResource(both),
      (err: Error) => {
        assert.ok(err instanceof SessionSpecError);
        assert.match(err.message, /spec\.comfystream/);
        return true;
      },
    );
    const neither = resource({ comfystream: { offerTimeoutSeconds: 300 } });
    assert.throws(() => sessionConfigFromResource(neither), SessionSpecError);
    const badPrompt = resource({ prompts: ["not a workflow" as never] });
    assert.throws(() => sessionConfigFromResource(badPrompt), /spec\.prompts/);
    const noChannel = resource({ trickle: { inputUrl: "http://gw" } });
    assert.throws(() => sessionConfigFromResource(noChannel), /spec\.trickle\.outputUrl/);
    assert.throws(() => relayModeFromSpec("Fast"), /spec\.video\.mode/);
  });
});

describe("parseSessionRef", () => {
  test("NAMESPACE/NAME", () => {
    assert.deepEqual(parseSessionRef("studio/cam-1.a"), { namespace: "studio", name: "cam-1.a" });
  });
  test("anything else is refused with the expected form", () => {
    for (const bad of ["cam-1", "studio/", "/cam-1", "a/b/c", "Studio/cam", "studio/Cam", ""]) {
      assert.throws(() => parseSessionRef(bad), SessionResourceError, bad);
    }
  });
});

describe("a pooled session (spec.poolRef) in a warm pool pod", () => {
  test("takes the pod's ComfyStream and offer timeout; without them it is refused", () => {
    const pooled = resource();
    delete (pooled.spec as Partial<RelaySessionSpec>).comfystream;
    pooled.spec.poolRef = { name: "gpu", onExhausted: "wait" };
    const built = sessionConfigFromResource(pooled, {
      comfystreamUrl: "http://127.0.0.1:8889",
      offerTimeoutSeconds: 900,
    });
    assert.equal(built.config.comfystreamUrl, "http://127.0.0.1:8889");
    assert.equal(built.offerTimeoutMs, 900_000);
    assert.throws(() => sessionConfigFromResource(pooled), SessionSpecError);
  });

  test("a session's own comfystream wins over the pod's", () => {
    const built = sessionConfigFromResource(resource(), { comfystreamUrl: "http://127.0.0.1:8889" });
    assert.equal(built.config.comfystreamUrl, "http://comfy:8889");
  });
});
