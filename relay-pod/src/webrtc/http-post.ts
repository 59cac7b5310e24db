import http from "node:http";
import https from "node:https";

export interface PostResult {
  status: number;
  body: string;
}

/**
 * POSTs JSON and returns the status and body text. node:http rather than fetch because ComfyStream
 * warms up inside `/offer` (minutes on a real GPU) and undici's fetch gives up on headers after
 * 300 s by default; here the only limit is `timeoutMs`.
 */
export function postJson(
  url: string,
  body: unknown,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<PostResult> {
  const target = new URL(url);
  const transport = target.protocol === "https:" ? https : target.protocol === "http:" ? http : undefined;
  if (!transport) return Promise.reject(new Error(`unsupported URL scheme in ${url}`));
  const payload = Buffer.from(JSON.stringify(body));
  // Aborted before it began (a session that failed while its offer was being prepared): no request
  // at all, since one destroyed before its error listener is attached throws "socket hang up".
  if (signal?.aborted) return Promise.reject(new Error(`POST ${url} aborted`));
  return new Promise<PostResult>((resolve, reject) => {
    let settled = false;
    const finish = (error: Error | undefined, result?: PostResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (error) reject(error);
      else resolve(result!);
    };
    const request = transport.request(
      target,
      {
        method: "POST",
        headers: { "content-type": "application/json", "content-length": payload.length },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () =>
          finish(undefined, {
            status: response.statusCode ?? 0,
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
        response.on("error", (error) => finish(error));
      },
    );
    const timer = setTimeout(() => {
      finish(new Error(`POST ${url} timed out after ${timeoutMs} ms`));
      request.destroy();
    }, timeoutMs);
    const onAbort = (): void => {
      finish(new Error(`POST ${url} aborted`));
      request.destroy();
    };
    request.on("error", (error) => finish(new Error(`POST ${url} failed: ${error.message}`)));
    signal?.addEventListener("abort", onAbort, { once: true });
    request.end(payload);
  });
}
