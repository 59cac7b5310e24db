/**
 * The gateway's bearer token: the standalone service's (relay-pod's bearer auth, through relay-pod's
 * entry), read from `--gateway-token-file` and compared in constant time.
 */
import { bearerTokenChecker, readBearerTokenFile } from "../../../relay-pod/src/index.js";

export { bearerTokenChecker };

/** The token in `path` (see readBearerTokenFile); errors name `--gateway-token-file`. */
export function readGatewayToken(path: string): string {
  return readBearerTokenFile(path, "--gateway-token-file");
}
