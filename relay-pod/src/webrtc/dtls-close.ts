import type { RTCDtlsTransport } from "werift";

const CONTENT_TYPE_ALERT = 21;
const ALERT_LEVEL_WARNING = 1;
const ALERT_CLOSE_NOTIFY = 0;

/** The parts of werift 0.25.2's internal DtlsSocket this relies on. */
interface DtlsSocketInternals {
  cipher: { encryptPacket(packet: { recordLayerHeader: { contentType: number } }): unknown };
  send(data: Buffer): Promise<void>;
}

/**
 * Sends a DTLS close_notify alert on an established DTLS transport.
 *
 * Why: werift's `RTCPeerConnection.close()` only sends an SCTP ABORT and closes its socket; it
 * sends no close_notify, so the remote DTLS stack cannot tell a deliberate close from a vanished
 * peer. Peers that act on close_notify (werift-based ones such as the TS stand-in, browsers) then
 * end the session at once. aiortc — ComfyStream — marks its DTLS transport closed but keeps its
 * connectionState, so there only ICE consent expiry (~30 s) ends the peer (spec §1.5 hazard; see
 * COMFYSTREAM_STALE_PEER_TIMEOUT_MS); the alert still stops its DTLS/SRTP processing at once.
 *
 * werift has no API for it: its socket's `send()` always builds an application-data record, so we
 * swap in a cipher wrapper for that one synchronous call that relabels the record as an alert
 * before encryption (the record type is authenticated, so it must be set before encrypting).
 * Returns false, without throwing, if the werift internals are not what this expects.
 */
export async function sendDtlsCloseNotify(transport: RTCDtlsTransport | undefined): Promise<boolean> {
  const socket = (transport as unknown as { dtls?: Partial<DtlsSocketInternals> } | undefined)?.dtls;
  if (!socket || transport?.state !== "connected") return false;
  const cipher = socket.cipher;
  const send = socket.send;
  if (!cipher || typeof cipher.encryptPacket !== "function" || typeof send !== "function") return false;
  const relabelling: DtlsSocketInternals["cipher"] = {
    encryptPacket(packet) {
      packet.recordLayerHeader.contentType = CONTENT_TYPE_ALERT;
      return cipher.encryptPacket(packet);
    },
  };
  let sending: Promise<void>;
  socket.cipher = relabelling;
  try {
    sending = send.call(socket, Buffer.from([ALERT_LEVEL_WARNING, ALERT_CLOSE_NOTIFY]));
  } finally {
    socket.cipher = cipher; // encryptPacket ran synchronously inside send()
  }
  try {
    await sending;
    return true;
  } catch {
    return false;
  }
}
