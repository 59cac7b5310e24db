/** Exit codes of `trickle-relay run`; the operator reads 0 as Succeeded and anything else as a failed attempt. */
export const EXIT_CODES = {
  /** The input ended and the output was closed, or the session was stopped (signal, RelaySession deleted). */
  ended: 0,
  /** The session failed; its last error says why (status.relay.lastError with --session). */
  failed: 1,
  /** Nothing ran: bad options, no kube config, RelaySession missing or unreadable, or its spec unusable. */
  configError: 2,
} as const;
