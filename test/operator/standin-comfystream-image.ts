/**
 * A stand-in ComfyStream image for the sidecar mode on the real test node: the relay image with its
 * entrypoint swapped for the TypeScript ComfyStream stand-in it already contains
 * (dist/relay-pod/src/demo/standin-peer/main.js: ComfyStream's /offer, /prompt and control channel
 * over WebRTC). Made with `docker commit` in the node's own engine (nothing to pull, no build
 * context); the real ComfyStream image needs a GPU and models this machine does not have.
 */
import type { RealNode } from "../infra/real-node/real-node.js";
import { RELAY_IMAGE } from "./e2e-node.js";

export const STANDIN_COMFYSTREAM_IMAGE = "trickle-relay/comfystream-standin:test";

export async function buildStandinComfyStreamImage(node: RealNode): Promise<void> {
  // Made again only when the relay image changed (the engine's data root persists between runs).
  const relayId = await node.engine.imageId(RELAY_IMAGE);
  const label = await node.docker([
    "image",
    "inspect",
    "-f",
    '{{index .Config.Labels "trickle-relay.base"}}',
    STANDIN_COMFYSTREAM_IMAGE,
  ]);
  if (relayId && label.code === 0 && label.stdout.trim() === relayId) return;
  const created = await node.docker(["create", RELAY_IMAGE]);
  if (created.code !== 0) throw new Error(`docker create ${RELAY_IMAGE}: ${created.stderr}`);
  const id = created.stdout.trim();
  try {
    const committed = await node.docker(
      [
        "commit",
        "--change",
        'ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/relay-pod/src/demo/standin-peer/main.js"]',
        "--change",
        "CMD []",
        "--change",
        `LABEL trickle-relay.base=${relayId}`,
        id,
        STANDIN_COMFYSTREAM_IMAGE,
      ],
      { timeoutMs: 300_000 },
    );
    if (committed.code !== 0) throw new Error(`docker commit: ${committed.stderr}`);
  } finally {
    await node.docker(["rm", "-f", id]);
  }
  await node.docker(["image", "prune", "-f"]); // the previous stand-in, now untagged
}
