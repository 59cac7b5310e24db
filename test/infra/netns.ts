/**
 * True when the suite runs inside the private loopback-only network namespace that
 * test/infra/run-tests.sh creates. Tests that open WebRTC peers require it, because ICE gathers
 * candidates on every interface and tests must never reach beyond loopback.
 */
export const inLoopbackOnlyNamespace = process.env.TRICKLE_RELAY_NETNS === "1";

/** Reason string for `test(..., { skip })` when not isolated. */
export const needsLoopbackNamespace = inLoopbackOnlyNamespace
  ? false
  : "needs the loopback-only network namespace of test/infra/run-tests.sh (run as root via npm test)";
