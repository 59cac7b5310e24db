/**
 * Bearer tokens for the REST API: read once from a file (a mounted Secret, or a file only the
 * service's user can read) and compared in constant time, so neither the token's content nor its
 * length leaks through response timing. Light on purpose (node:crypto and node:fs only) so that
 * relay-pod's entry can export it to the operator's gateway, which has the same needs.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

/** Shorter tokens are guessable; `openssl rand -hex 32` gives 64 characters. */
export const MIN_BEARER_TOKEN_LENGTH = 16;

/**
 * The token in `path`, without surrounding whitespace (files written by `echo` or
 * `kubectl create secret --from-file` end in a newline). Throws an Error that starts with `flag`
 * and the path and says what to do when the file is missing, unreadable, empty, too short, or holds
 * more than one word.
 */
export function readBearerTokenFile(path: string, flag: string): string {
  let content: string;
  try {
    content = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(
      `${flag} ${path} ${describeReadError(err)}; put the bearer token callers must send in it`,
    );
  }
  const token = content.trim();
  if (token === "") {
    throw new Error(
      `${flag} ${path} is empty; put the bearer token callers must send in it (e.g. openssl rand -hex 32)`,
    );
  }
  if (/\s/.test(token)) {
    throw new Error(`${flag} ${path} holds more than one word; a bearer token cannot contain whitespace`);
  }
  if (token.length < MIN_BEARER_TOKEN_LENGTH) {
    throw new Error(
      `${flag} ${path} holds a token of ${token.length} characters; use at least ${MIN_BEARER_TOKEN_LENGTH} (e.g. openssl rand -hex 32)`,
    );
  }
  return token;
}

/** Why a file could not be read, as the end of a sentence that starts with its path. */
export function describeReadError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT"
    ? "does not exist"
    : code === "EACCES"
      ? "is not readable by this process"
      : code === "EISDIR"
        ? "is a directory, not a file"
        : `cannot be read (${(err as Error).message})`;
}

/** A check of `Authorization` headers against `token`: true only for `Bearer <token>`. */
export function bearerTokenChecker(token: string): (authorizationHeader: string | undefined) => boolean {
  // Comparing digests keeps timingSafeEqual's inputs the same length whatever the caller sends.
  const expected = digest(token);
  return (authorizationHeader) => {
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorizationHeader ?? "");
    if (!match) return false;
    return timingSafeEqual(digest(match[1]!), expected);
  };
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}
