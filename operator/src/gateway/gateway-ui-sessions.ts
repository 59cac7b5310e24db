/**
 * Which RelaySessions the gateway's session pages show, and how a page names one.
 *
 * The pages list the sessions of every namespace the operator watches (all of them when it watches
 * the whole cluster), read with the operator's own credentials: its RBAC already grants get/list on
 * relaysessions there. A namespace it may not read is left out and named in the answer, never an
 * error for the whole list. Changes stay where the REST API allows them: the gateway's namespace.
 *
 * A page's key is the REST API's session id for sessions in the gateway's namespace (so the page's
 * edit and stop go to POST /session/{id}/prompts and DELETE /session/{id}), and "namespace/name"
 * elsewhere (session ids cannot contain "/"); those are read-only on the page (`rest_id: null`).
 */
import type { CustomObjectsApi } from "@kubernetes/client-node";
import type { RelaySession } from "../../../crds/src/index.js";
import { sessionNameForId } from "./session-names.js";
import { sessionIdOf } from "./session-view.js";

export interface UiResource {
  group: string;
  version: string;
  plural: string;
  /** The gateway's namespace. */
  namespace: string;
}

export interface SessionList {
  sessions: RelaySession[];
  /** Namespaces whose sessions could not be read (RBAC, or gone), with the apiserver's reason. */
  unreadable: { namespace: string; reason: string }[];
}

export class UiSessions {
  /** undefined: every namespace (the operator watches the whole cluster). */
  private readonly namespaces: string[] | undefined;

  constructor(
    private readonly customObjects: CustomObjectsApi,
    private readonly resource: UiResource,
    /** The operator's watched namespaces; [] means all. */
    watched: readonly string[],
  ) {
    this.namespaces = watched.length ? [...new Set([resource.namespace, ...watched])] : undefined;
  }

  async list(): Promise<SessionList> {
    const { group, version, plural } = this.resource;
    if (!this.namespaces) {
      const all = (await this.customObjects.listClusterCustomObject({ group, version, plural })) as {
        items: RelaySession[];
      };
      return { sessions: all.items, unreadable: [] };
    }
    const result: SessionList = { sessions: [], unreadable: [] };
    const lists = await Promise.allSettled(
      this.namespaces.map(
        (namespace) =>
          this.customObjects.listNamespacedCustomObject({ group, version, plural, namespace }) as Promise<{
            items: RelaySession[];
          }>,
      ),
    );
    lists.forEach((list, i) => {
      if (list.status === "fulfilled") result.sessions.push(...list.value.items);
      else
        result.unreadable.push({
          namespace: this.namespaces![i]!,
          reason: reasonOf(list.reason),
        });
    });
    return result;
  }

  /** The page key of a session (see the file comment). */
  keyOf(session: RelaySession): string {
    const namespace = session.metadata.namespace ?? this.resource.namespace;
    return namespace === this.resource.namespace
      ? sessionIdOf(session)
      : `${namespace}/${session.metadata.name ?? ""}`;
  }

  /** The REST API's id of a session, when the REST API (hence the page's edit and stop) reaches it. */
  restIdOf(session: RelaySession): string | null {
    return (session.metadata.namespace ?? this.resource.namespace) === this.resource.namespace
      ? sessionIdOf(session)
      : null;
  }

  /** The session a page key names, if it is one the pages may show. */
  async read(key: string): Promise<RelaySession | undefined> {
    const slash = key.indexOf("/");
    const namespace = slash < 0 ? this.resource.namespace : key.slice(0, slash);
    const name = slash < 0 ? sessionNameForId(key) : key.slice(slash + 1);
    if (!name || name.includes("/")) return undefined;
    if (this.namespaces && !this.namespaces.includes(namespace)) return undefined;
    const { group, version, plural } = this.resource;
    try {
      return (await this.customObjects.getNamespacedCustomObject({
        group,
        version,
        plural,
        namespace,
        name,
      })) as RelaySession;
    } catch {
      return undefined;
    }
  }
}

function reasonOf(error: unknown): string {
  const code = (error as { code?: number }).code;
  const message = error instanceof Error ? error.message.split("\n")[0]! : String(error);
  return code ? `HTTP ${code}` : message;
}
