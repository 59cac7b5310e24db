/**
 * The gateway's bearer token: read once from a file (a mounted Secret) and compared in constant
 * time, so neither the token's content nor its length leaks through response timing.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

/** Shorter tokens are guessable; `openssl rand -hex 32` gives 64 characters. */
export const MIN_GATEWAY_TOKEN_LENGTH = 16;

/**
 * The token in `path`, without surrounding whitespace (files written by `echo` or
 * `kubectl create secret --from-file` end in a newline). Throws an Error that names the file and
 * says what to do when it is missing, unreadable, empty, too short, or holds more than one word.
 */
export function readGatewayToken(path: string): string {
  let content: string;
  try {
    content = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT"
        ? "does not exist"
        : code === "EACCES"
          ? "is not readable by this process"
          : code === "EISDIR"
            ? "is a directory, not a file"
            : `cannot be read (${(err as Error).message})`;
    throw new Error(`--gateway-token-file ${path} ${why}; put the bearer token the gateway accepts in it`);
  }
  const token = content.trim();
  if (token === "") {
    throw new Error(
      `--gateway-token-file ${path} is empty; put the bearer token the gateway accepts in it (e.g. openssl rand -hex 32)`,
    );
  }
  if (/\s/.test(token)) {
    throw new Error(
      `--gateway-token-file ${path} holds more than one word; a bearer token cannot contain whitespace`,
    );
  }
  if (token.length < MIN_GATEWAY_TOKEN_LENGTH) {
    throw new Error(
      `--gateway-token-file ${path} holds a token of ${token.length} characters; use at least ${MIN_GATEWAY_TOKEN_LENGTH} (e.g. openssl rand -hex 32)`,
    );
  }
  return token;
}

/** A check of `Authorization` headers against `token`. */
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
