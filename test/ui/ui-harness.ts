// The standalone service with a real session behind it, for the session-page tests and the bench:
// the REST API (buildApiServer, session pages included) over real HTTP on loopback, a real
// RelaySession reading test-pattern H.264 from a real trickle server, and the TypeScript stand-in
// ComfyStream peer over real WebRTC.
import { setTimeout as sleep } from "node:timers/promises";
import { buildApiServer, type ApiServer } from "../../relay-pod/src/server/api.js";
import { SessionManager } from "../../relay-pod/src/server/session-manager.js";
import { RelaySession } from "../../relay-pod/src/session/relay-session.js";
import { createRelayMetrics } from "../../relay-pod/src/report/metrics.js";
import { startTsStandin, type TsStandin } from "../../relay-pod/src/demo/standin-peer/standin.js";
import { PASSTHROUGH_WORKFLOW } from "../../relay-pod/src/session/default-workflow.js";
import {
  ICE_ADDRESSES,
  makeInputSegments,
  publishPaced,
  startTrickle,
  waitFor,
} from "../session/relay-harness.js";

export interface UiScenario {
  /** http://127.0.0.1:PORT (no trailing slash). */
  baseUrl: string;
  sessionId: string;
  app: ApiServer;
  sessions: SessionManager;
  peer: TsStandin;
  stop(): Promise<void>;
}

/**
 * Starts the service and one session whose input runs for `seconds` (one 1 s segment a second),
 * and resolves once that session's WebRTC link is connected and its first output frame is out.
 */
export async function startUiScenario(options: {
  seconds: number;
  apiToken?: string;
  /** The stand-in's mode: "filter" changes the picture (negate), so input and output differ. */
  peerMode?: "passthrough" | "filter";
  sessionId?: string;
  /** An audio track in the input (passed through to the output by default). */
  audio?: "aac" | "opus";
}): Promise<UiScenario> {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  const stop = async () => {
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  };
  try {
    const { segments } = await makeInputSegments({
      seconds: options.seconds,
      size: "320x240",
      bFrames: 0,
      ...(options.audio ? { audio: options.audio } : {}),
    });
    const { server: trickle, base } = await startTrickle(["in", "in-out"]);
    cleanups.push(() => trickle.close());
    const peer = await startTsStandin({
      host: "127.0.0.1",
      iceAddresses: ICE_ADDRESSES,
      mode: options.peerMode ?? "passthrough",
    });
    cleanups.push(() => peer.close());
    const sessions = new SessionManager({
      createSession: (config) =>
        new RelaySession(config, { reconnectBackoffMs: [300, 3000], drainTimeoutMs: 2000 }),
      defaults: { iceAddresses: ICE_ADDRESSES, width: 320, height: 240 },
    });
    const app = buildApiServer({
      sessions,
      metricsRegistry: createRelayMetrics(() => sessions.statuses()),
      ...(options.apiToken !== undefined ? { apiToken: options.apiToken } : {}),
    });
    cleanups.push(() => sessions.close());
    cleanups.push(() => app.close());
    const address = await app.listen({ host: "127.0.0.1", port: 0 });
    const sessionId = options.sessionId ?? "watched";
    const started = await app.inject({
      method: "POST",
      url: "/session/start",
      headers: options.apiToken ? { authorization: `Bearer ${options.apiToken}` } : {},
      payload: {
        session_id: sessionId,
        input_stream_url: `${base}in`,
        comfystream_url: peer.url,
        prompts: [PASSTHROUGH_WORKFLOW],
      },
    });
    if (started.statusCode !== 200) throw new Error(`start: ${started.statusCode} ${started.body}`);
    const session = sessions.get(sessionId)!;
    await waitFor(() => session.status().webrtcState === "connected", 20_000, "WebRTC connected");
    const publisher = new AbortController();
    const publishing = publishPaced(`${base}in`, segments, { signal: publisher.signal }).catch(
      () => undefined,
    );
    cleanups.push(() => Promise.race([publishing, sleep(3000)]));
    cleanups.push(() => publisher.abort());
    await waitFor(() => session.status().frames.out > 0, 20_000, "first output frame");
    return { baseUrl: address.replace(/\/$/, ""), sessionId, app, sessions, peer, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
