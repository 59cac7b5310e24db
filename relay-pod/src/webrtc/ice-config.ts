import { isIP } from "node:net";
import type { PeerConfig, RTCIceServer, RTCPeerConnection } from "werift";

/** Environment variable holding comma-separated local addresses to gather ICE host candidates on. */
export const ICE_ADDRESSES_ENV = "TRICKLE_RELAY_ICE_ADDRESSES";

/** Parses `TRICKLE_RELAY_ICE_ADDRESSES` (e.g. "127.0.0.2"); empty when unset. */
export function iceAddressesFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  return parseIceAddresses(env[ICE_ADDRESSES_ENV] ?? "");
}

export function parseIceAddresses(list: string): string[] {
  const addresses = list
    .split(",")
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
  for (const address of addresses) {
    if (isIP(address) === 0) throw new Error(`ICE address "${address}" is not an IP address`);
  }
  return addresses;
}

/**
 * The ICE part of a werift PeerConfig.
 *
 * With `iceAddresses` set, host candidates are gathered on exactly those addresses and nothing
 * else: werift's interface scan is switched off (`iceUseIpv4/6: false` — it only feeds the scan),
 * the addresses come in through `iceAdditionalHostAddresses` (the only way to get loopback, which
 * werift otherwise skips), sockets are bound to the address when there is one per family
 * (`iceInterfaceAddresses`, otherwise werift binds the wildcard), and `iceFilterCandidatePair`
 * refuses any pair whose local side is something else. No STUN/TURN server unless given: the
 * relay reaches ComfyStream on a LAN, a pod network or a sidecar, and a default public STUN server
 * would make the peer talk to the internet.
 */
export function iceConfig(
  iceAddresses: readonly string[],
  iceServers: RTCIceServer[] = [],
): Partial<PeerConfig> {
  if (iceAddresses.length === 0) {
    return { iceServers, iceUseTcp: false };
  }
  const allowed = new Set(iceAddresses);
  const ipv4 = iceAddresses.filter((address) => isIP(address) === 4);
  const ipv6 = iceAddresses.filter((address) => isIP(address) === 6);
  const bind: { udp4?: string; udp6?: string } = {};
  if (ipv4.length === 1) bind.udp4 = ipv4[0]!;
  if (ipv6.length === 1) bind.udp6 = ipv6[0]!;
  return {
    iceServers,
    iceUseTcp: false,
    iceUseIpv4: false,
    iceUseIpv6: false,
    iceAdditionalHostAddresses: [...iceAddresses],
    iceInterfaceAddresses: Object.keys(bind).length > 0 ? bind : undefined,
    iceFilterCandidatePair: (pair) => allowed.has(pair.localCandidate.host),
  };
}

/**
 * Takes werift's built-in STUN server back out of the peer's ICE agents. werift 0.25 puts
 * stun.l.google.com:19302 in every ICE agent whose configuration names no STUN server (its
 * `iceServers: []` is not "none"), so each session looked up that name and sent it a binding
 * request, and in a pod without internet access ICE gathering, hence the offer, waited up to 5 s
 * for the answer. With a STUN server configured on purpose, nothing changes. Call it after the
 * transceivers and data channel exist (they create the agents) and before the offer.
 */
export function withoutDefaultStunServer(pc: RTCPeerConnection, iceServers: RTCIceServer[] = []): void {
  const configured = iceServers.some((server) =>
    (Array.isArray(server.urls) ? server.urls : [server.urls]).some((url) => /^stuns?:/i.test(url)),
  );
  if (configured) return;
  for (const transport of pc.iceTransports) {
    (transport.connection as { stunServer?: unknown }).stunServer = undefined;
  }
}
