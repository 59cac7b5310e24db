// The relay's ICE agents talk to no STUN server unless one is configured. werift 0.25 gives every
// agent whose configuration names none its own default, stun.l.google.com:19302 (found tracing the
// relay's start-up: each session looked the name up, and gathering waited for the answer).
import assert from "node:assert/strict";
import { test } from "node:test";
import { RTCPeerConnection, MediaStreamTrack, useH264 } from "werift";
import { iceConfig, withoutDefaultStunServer } from "../../relay-pod/src/webrtc/ice-config.js";

function stunServers(pc: RTCPeerConnection): unknown[] {
  return pc.iceTransports.map((t) => (t.connection as unknown as { stunServer?: unknown }).stunServer);
}

function peerWithVideo(iceServers: Parameters<typeof iceConfig>[1] = []): RTCPeerConnection {
  const pc = new RTCPeerConnection({
    codecs: { video: [useH264()] },
    bundlePolicy: "max-bundle",
    ...iceConfig(["127.0.0.2"], iceServers),
  });
  pc.addTransceiver(new MediaStreamTrack({ kind: "video" }), { direction: "sendrecv" });
  pc.createDataChannel("control");
  return pc;
}

test("werift on its own puts Google's STUN server in an agent configured with none", async () => {
  const pc = peerWithVideo();
  try {
    assert.deepEqual(stunServers(pc), [["stun.l.google.com", 19302]]);
  } finally {
    await pc.close();
  }
});

test("withoutDefaultStunServer leaves the agents with no STUN server", async () => {
  const pc = peerWithVideo();
  try {
    withoutDefaultStunServer(pc);
    assert.ok(pc.iceTransports.length > 0);
    assert.deepEqual(
      stunServers(pc),
      pc.iceTransports.map(() => undefined),
    );
  } finally {
    await pc.close();
  }
});

test("a STUN server configured on purpose is kept", async () => {
  const iceServers = [{ urls: "stun:127.0.0.1:3478" }];
  const pc = peerWithVideo(iceServers);
  try {
    withoutDefaultStunServer(pc, iceServers);
    assert.deepEqual(stunServers(pc), [["127.0.0.1", 3478]]);
  } finally {
    await pc.close();
  }
});
