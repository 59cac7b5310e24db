/**
 * The standalone API's session ids and RelaySession names. Ids may be up to 128 characters of
 * letters, digits, ".", "_" and "-"; a RelaySession name must be a DNS-1123 label of at most 63
 * characters, because it is also the value of the relay pod's `trickle-relay.io/session` label.
 * Ids that already are such names are used as they are; any other id maps to a name
 * deterministically (lowercased, invalid characters replaced, plus a hash of the id), so every
 * route finds a session by its id without a lookup and duplicates still collide in the apiserver.
 */
import { createHash } from "node:crypto";

/** Marks the RelaySessions the gateway created; only these may be deleted or changed through it. */
export const CREATED_BY_LABEL = "app.kubernetes.io/created-by";
export const GATEWAY_CREATED_BY = "trickle-relay-gateway";
/** The caller's session id, verbatim, on sessions whose name had to be derived from it. */
export const SESSION_ID_ANNOTATION = "trickle-relay.io/session-id";

const MAX_NAME_LENGTH = 63;
const HASH_LENGTH = 8;
const DNS_LABEL_PATTERN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function isDnsLabel(value: string): boolean {
  return value.length <= MAX_NAME_LENGTH && DNS_LABEL_PATTERN.test(value);
}

/** The RelaySession name for a standalone session id (the id itself whenever it can be). */
export function sessionNameForId(id: string): string {
  if (isDnsLabel(id)) return id;
  const hash = createHash("sha256").update(id, "utf8").digest("hex").slice(0, HASH_LENGTH);
  const readable = id
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .slice(0, MAX_NAME_LENGTH - HASH_LENGTH - 1)
    .replace(/^-+|-+$/g, "");
  return readable === "" ? `session-${hash}` : `${readable}-${hash}`;
}
