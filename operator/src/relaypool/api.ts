// How the pool controller reads API failures (the same rule as the session controller's).
import { ApiException } from "@kubernetes/client-node";

export function apiCode(error: unknown): number | undefined {
  return error instanceof ApiException ? error.code : undefined;
}
