/**
 * Errors raised by the trickle clients (spec trickle-protocol.md §7, §11, §13).
 * Callers branch on the class: a stream that is gone (404, or the server's end-of-stream signal) is
 * terminal and must not be retried; an HTTP error carries the status and body for the log.
 */

/** The channel does not exist (404): never created, deleted, swept, or refused. Terminal. */
export class TrickleStreamNotFoundError extends Error {
  override readonly name = "TrickleStreamNotFoundError";
  /** `hint` says what the user can do about it (e.g. for a publish the server refused). */
  constructor(
    readonly url: string,
    hint?: string,
  ) {
    super(`trickle stream not found: ${url}${hint ? ` (${hint})` : ""}`);
  }
}

/** What to do when a trickle server refuses a publish with 404 (spec §4: it creates channels only with autocreate). */
export const PUBLISH_REFUSED_HINT =
  "the server refused to publish to it: the channel does not exist and the server does not create channels on publish; " +
  "create the channel first (go-livepeer's orchestrator does for -out channels) or run the trickle server with autocreate";

/** A non-success HTTP status other than the ones the protocol gives a meaning to. */
export class TrickleHttpError extends Error {
  override readonly name = "TrickleHttpError";
  constructor(
    readonly url: string,
    readonly status: number,
    readonly body: string,
  ) {
    super(
      `trickle request ${url} failed: HTTP ${status}${body ? ` ${JSON.stringify(body.slice(0, 200))}` : ""}`,
    );
  }
}

/** The server signalled end of stream (`Lp-Trickle-Closed`, spec §5.3) while a segment was being published. */
export class TrickleEndOfStreamError extends Error {
  override readonly name = "TrickleEndOfStreamError";
  constructor(readonly url: string) {
    super(`trickle stream ended by the server: ${url}`);
  }
}

/** A subscriber spent its budget of consecutive failed attempts (spec §11.2, §11.3). */
export class TrickleRetryBudgetError extends Error {
  override readonly name = "TrickleRetryBudgetError";
  constructor(
    readonly url: string,
    readonly attempts: number,
    readonly lastError: Error,
  ) {
    super(
      `trickle subscriber gave up on ${url} after ${attempts} consecutive failed attempts: ${lastError.message}`,
      {
        cause: lastError,
      },
    );
  }
}

/** The client was closed by its owner while an operation was pending. */
export class TrickleClosedError extends Error {
  override readonly name = "TrickleClosedError";
  constructor(readonly url: string) {
    super(`trickle client closed: ${url}`);
  }
}

/**
 * A segment's POST made no progress for too long: the server stopped reading the body, or never
 * answered after it ended. The request is cut (its socket freed); the next segment gets a new POST.
 */
export class TricklePostStalledError extends Error {
  override readonly name = "TricklePostStalledError";
  constructor(
    readonly url: string,
    readonly stalledMs: number,
    readonly phase: "body" | "answer",
  ) {
    super(
      phase === "body"
        ? `trickle POST ${url} stuck: the server read nothing for ${stalledMs} ms`
        : `trickle POST ${url} stuck: no answer ${stalledMs} ms after the body ended`,
    );
  }
}
