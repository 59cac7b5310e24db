/**
 * The informer's default list: a paged GET of a collection that returns plain JSON. Separate from
 * the informer because it is plain HTTP (credentials, paging, error bodies), not list/watch control.
 *
 * Plain JSON rather than a typed client-node list: the typed lists turn timestamps into `Date`
 * objects while watch events carry strings, and an informer's cache must hold one shape.
 */
import { request as httpRequest } from "node:http";
import { request as httpsRequest, type RequestOptions } from "node:https";
import type { KubeConfig, KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";

const LIST_PAGE_SIZE = 500;
const MAX_LIST_PAGES = 10_000;

export interface PagedListOptions {
  kubeConfig: KubeConfig;
  /** Collection path, e.g. `/api/v1/namespaces/ns/pods`. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
}

/** Lists `path` 500 objects a page and returns the last page's body with every page's items. */
export async function listPaged<T extends KubernetesObject>(
  options: PagedListOptions,
  signal: AbortSignal,
): Promise<KubernetesListObject<T>> {
  const server = options.kubeConfig.getCurrentCluster()?.server;
  if (!server) throw new Error("kubeconfig has no current cluster");
  const items: T[] = [];
  let continueToken: string | undefined;
  for (let page = 0; page < MAX_LIST_PAGES; page++) {
    const url = new URL(server + options.path);
    if (options.labelSelector) url.searchParams.set("labelSelector", options.labelSelector);
    if (options.fieldSelector) url.searchParams.set("fieldSelector", options.fieldSelector);
    url.searchParams.set("limit", String(LIST_PAGE_SIZE));
    if (continueToken) url.searchParams.set("continue", continueToken);
    const body = (await getJson(options.kubeConfig, url, signal)) as KubernetesListObject<T>;
    items.push(...(body.items ?? []));
    // Plain JSON, so the wire name `continue` (client-node's typed V1ListMeta calls it `_continue`).
    continueToken = (body.metadata as { continue?: string } | undefined)?.continue;
    if (!continueToken) return { ...body, items };
  }
  throw new Error(`list of ${options.path} has more than ${MAX_LIST_PAGES} pages`);
}

/** GET a URL with the kubeconfig's credentials; rejects with `statusCode` set on a non-200 answer. */
async function getJson(kubeConfig: KubeConfig, url: URL, signal: AbortSignal): Promise<unknown> {
  const options: RequestOptions = { method: "GET" };
  await kubeConfig.applyToHTTPSOptions(options);
  options.headers = { ...options.headers, Accept: "application/json" };
  options.signal = signal;
  const request = url.protocol === "http:" ? httpRequest : httpsRequest;
  return new Promise((resolve, reject) => {
    const req = request(url, options, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        if (res.statusCode === 200) {
          try {
            resolve(JSON.parse(text));
          } catch (err) {
            reject(new Error(`GET ${url.pathname}: invalid JSON`, { cause: err }));
          }
          return;
        }
        let message = text.slice(0, 300);
        try {
          message = (JSON.parse(text) as { message?: string }).message ?? message;
        } catch {
          // not a Status object; keep the raw text
        }
        reject(
          Object.assign(new Error(`GET ${url.pathname}: HTTP ${res.statusCode} ${message}`), {
            statusCode: res.statusCode,
          }),
        );
      });
    });
    req.on("error", reject);
    req.end();
  });
}
