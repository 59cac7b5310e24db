/**
 * Signalling with ComfyStream (spec comfystream-webrtc §5): the single `POST {url}/offer` with
 * `{prompts, offer, resolution}`, and checking that the reply is an SDP answer. Apart from the peer
 * because it is ComfyStream's HTTP contract rather than WebRTC: with non-trickle ICE it needs only
 * the finished offer and yields only the answer's SDP.
 */
import type { Logger } from "../common/log.js";
import { postJson } from "./http-post.js";

/** What the offer request is made of (the peer's resolved options satisfy it). */
export interface OfferRequest {
  /** Base URL without a trailing slash; the offer goes to `{comfystreamUrl}/offer`. */
  comfystreamUrl: string;
  prompts: unknown[];
  width: number;
  height: number;
  /** ComfyStream warms the workflow up inside this request, so the limit is generous. */
  offerTimeoutMs: number;
}

/**
 * POSTs the offer and resolves with the answer's SDP. Rejects with the HTTP status and body text on
 * a non-200 answer, or when the 200 body is not a JSON SDP answer.
 */
export async function postOffer(
  request: OfferRequest,
  offer: { sdp: string; type: string },
  signal: AbortSignal,
  logger: Logger,
): Promise<string> {
  const url = `${request.comfystreamUrl}/offer`;
  const body = {
    prompts: request.prompts,
    offer: { sdp: offer.sdp, type: offer.type },
    resolution: { width: request.width, height: request.height },
  };
  logger.info({ url, prompts: request.prompts.length }, "posting offer (ComfyStream warms up inside it)");
  const startedAt = Date.now();
  const answer = await postJson(url, body, request.offerTimeoutMs, signal);
  if (answer.status !== 200) {
    throw new Error(`ComfyStream ${url} answered HTTP ${answer.status}: ${answer.body.trim()}`);
  }
  let parsed: { sdp?: unknown; type?: unknown };
  try {
    parsed = JSON.parse(answer.body) as { sdp?: unknown; type?: unknown };
  } catch {
    throw new Error(
      `ComfyStream ${url} answered 200 with a body that is not JSON: ${answer.body.slice(0, 200)}`,
    );
  }
  if (typeof parsed.sdp !== "string" || parsed.type !== "answer") {
    throw new Error(`ComfyStream ${url} answered 200 without an SDP answer: ${answer.body.slice(0, 200)}`);
  }
  logger.info({ offerMs: Date.now() - startedAt }, "answer received");
  logger.debug({ sdp: parsed.sdp }, "answer");
  return parsed.sdp;
}
