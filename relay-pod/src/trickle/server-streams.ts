/**
 * The trickle server's data path: a POST's body streamed into a segment (§4.1, §4.3, §5.1) and a
 * segment streamed out to a GET as a chunked response (§5.2). Both are long-lived and event
 * driven; they are kept apart from server.ts, which routes, validates and answers the short
 * requests, and hands a request over here only once it knows the channel and the seq.
 */
import type http from "node:http";
import type net from "node:net";
import type { Logger } from "../common/log.js";
import type { Channel, Segment } from "./server-segment.js";
import { CLOSED_VALUE, respondAndClose, sendEmpty, sendTextError } from "./server-responses.js";

/**
 * Streams a segment from its first byte. No headers go out before the first data byte or the
 * close; then chunked, one chunk per stored write, respecting back-pressure (§5.2). `onDone` runs
 * once, when the segment has been sent or the response closed.
 */
export function streamSegment(
  res: http.ServerResponse,
  channel: Channel,
  segment: Segment,
  latestHeader: number | undefined,
  onDone: () => void,
): void {
  let cursor = 0;
  let finished = false;
  let awaitingDrain = false;

  const finish = (): void => {
    if (finished) return;
    finished = true;
    unsubscribe();
    onDone();
  };

  const pump = (): void => {
    if (finished || awaitingDrain) return;
    while (cursor < segment.chunkCount) {
      const chunk = segment.chunkAt(cursor++);
      if (!res.headersSent) {
        const headers: Record<string, string> = {
          "Content-Type": channel.mimeType,
          "Lp-Trickle-Seq": String(segment.seq),
        };
        if (latestHeader !== undefined) headers["Lp-Trickle-Latest"] = String(latestHeader);
        res.writeHead(200, headers);
      }
      if (!res.write(chunk)) {
        awaitingDrain = true;
        res.once("drain", () => {
          awaitingDrain = false;
          pump();
        });
        return;
      }
    }
    if (!segment.closed) return;
    finish();
    if (res.headersSent) {
      res.end();
      return;
    }
    // Closed with no data at all: empty 200 with fresh Latest, Closed iff the channel is gone (§5.2).
    const headers: Record<string, string> = {
      "Lp-Trickle-Seq": String(segment.seq),
      "Lp-Trickle-Latest": String(channel.nextWrite),
    };
    if (channel.closed) headers["Lp-Trickle-Closed"] = CLOSED_VALUE;
    sendEmpty(res, 200, headers);
  };

  const unsubscribe = segment.onChange(pump);
  res.on("close", finish);
  pump();
}

export interface ReceiveSegmentOptions {
  maxSegmentBytes: number;
  keepAliveIntervalMs: number;
  log: Logger;
  /** POSTs still reading their body, by socket: the server's clientError handler calls the entry. */
  publishesBySocket: WeakMap<net.Socket, () => void>;
}

/**
 * Receives the body of POST {ch}/{seq} into segment `seq` of `channel` (already resolved from -1)
 * and sends the final answer. See server.ts's header comment for the choices made here.
 */
export function receiveSegment(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  channel: Channel,
  seq: number,
  options: ReceiveSegmentOptions,
): void {
  const { maxSegmentBytes, log, publishesBySocket } = options;
  const segment = channel.getForWrite(seq);
  const socket = req.socket;

  const completeWithoutBytes = (): void => {
    // "Avoids clients erroring out on next seq" (§4.3). Not once the channel is closed: waiters
    // woken by the same DELETE must still report the pre-close Latest (S13).
    if (!channel.closed) channel.nextWrite = seq + 1;
    const headers: Record<string, string | number> = { "Lp-Trickle-Seq": String(seq) };
    if (channel.closed) headers["Lp-Trickle-Closed"] = CLOSED_VALUE;
    respondAndClose(req, res, () => sendEmpty(res, 200, headers));
  };

  if (segment.closed) {
    // Re-POST of a completed seq: see server.ts's header comment.
    log.debug("POST to a completed segment; body discarded");
    completeWithoutBytes();
    return;
  }

  let received = 0;
  let done = false;
  const keepAlive = setInterval(() => res.writeContinue(), options.keepAliveIntervalMs);
  keepAlive.unref();
  // Until the first byte, a close of the segment (DELETE, reset, eviction) ends this POST early.
  let stopWatchingClose = segment.onChange(() => {
    if (segment.closed && received === 0 && !done) {
      finishUp();
      completeWithoutBytes();
    }
  });
  const finishUp = (): void => {
    done = true;
    if (publishesBySocket.get(socket) === failMidBody) publishesBySocket.delete(socket);
    clearInterval(keepAlive);
    stopWatchingClose();
  };

  req.on("data", (chunk: Buffer) => {
    if (done || chunk.length === 0) return;
    if (received === 0) {
      clearInterval(keepAlive);
      stopWatchingClose();
      stopWatchingClose = () => {};
      channel.nextWrite = seq + 1;
      channel.writeTime = Date.now();
    }
    const room = maxSegmentBytes - segment.size;
    if (chunk.length > room) {
      if (room > 0) segment.append(chunk.subarray(0, room));
      received += Math.max(room, 0);
      finishUp();
      segment.close();
      log.warn({ limit: maxSegmentBytes }, "trickle segment exceeds the size cap; closed at the cap");
      respondAndClose(req, res, () =>
        sendTextError(res, 413, `Segment too large: limit is ${maxSegmentBytes} bytes`),
      );
      return;
    }
    received += chunk.length;
    segment.append(chunk);
  });
  req.on("end", () => {
    if (done) return;
    finishUp();
    if (received === 0) {
      segment.close();
      completeWithoutBytes();
      return;
    }
    segment.close();
    sendEmpty(res, 200, { "Lp-Trickle-Seq": String(seq) });
  });
  // A body that breaks off (socket closed, or malformed chunking reported as clientError) leaves
  // the segment open (§5.1): readers wait for DELETE {ch}/{seq}, a reset, or eviction.
  const failMidBody = (): void => {
    if (done) return;
    finishUp();
    log.warn({ bytes: received }, "trickle publisher aborted mid-segment; segment left open");
    if (received > 0 && !res.destroyed)
      respondAndClose(req, res, () => sendTextError(res, 500, "Server error"));
    else req.socket.destroy();
  };
  publishesBySocket.set(socket, failMidBody);
  req.on("close", failMidBody);
}
