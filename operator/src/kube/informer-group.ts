/**
 * InformerGroup: one informer per namespace (or one for all namespaces), read and started as one.
 * Separate from SupervisedInformer because it only fans in events and fans out reads; it builds on
 * the informer (createNamespacedInformers makes one per namespace), never the other way round.
 */
import { EventEmitter } from "node:events";
import type { KubernetesObject } from "@kubernetes/client-node";
import {
  SupervisedInformer,
  type SupervisedInformerEvents,
  type SupervisedInformerOptions,
} from "./informer.js";
import type { InformerCache } from "./informer-cache.js";
import { zeroStats, type InformerStats } from "./informer-metrics.js";

/** One informer per namespace (or one for all namespaces), read and started as one. */
export class InformerGroup<T extends KubernetesObject>
  extends EventEmitter<SupervisedInformerEvents<T>>
  implements InformerCache<T>
{
  readonly informers: ReadonlyMap<string | undefined, SupervisedInformer<T>>;

  /** `informers`: namespace → its informer; the key `undefined` for an all-namespaces informer. */
  constructor(informers: Map<string | undefined, SupervisedInformer<T>>) {
    super();
    this.informers = informers;
    for (const informer of informers.values()) {
      informer.on("add", (obj) => this.emit("add", obj));
      informer.on("update", (obj, old) => this.emit("update", obj, old));
      informer.on("delete", (obj) => this.emit("delete", obj));
      informer.on("resync", (obj) => this.emit("resync", obj));
      informer.on("error", (err) => {
        if (this.listenerCount("error") > 0) this.emit("error", err);
      });
    }
  }

  get synced(): boolean {
    return [...this.informers.values()].every((informer) => informer.synced);
  }

  async start(): Promise<void> {
    await Promise.all([...this.informers.values()].map((informer) => informer.start()));
  }

  async stop(): Promise<void> {
    await Promise.all([...this.informers.values()].map((informer) => informer.stop()));
  }

  get(namespace: string, name: string): T | undefined {
    const informer = this.informers.get(namespace) ?? this.informers.get(undefined);
    return informer?.get(namespace, name);
  }

  list(namespace?: string): T[] {
    if (namespace !== undefined) {
      const informer = this.informers.get(namespace) ?? this.informers.get(undefined);
      return informer?.list(namespace) ?? [];
    }
    return [...this.informers.values()].flatMap((informer) => informer.list());
  }

  /** Summed counters of all members. */
  get stats(): InformerStats {
    const total = zeroStats();
    for (const informer of this.informers.values()) {
      for (const key of Object.keys(total) as Array<keyof InformerStats>) total[key] += informer.stats[key];
    }
    return total;
  }
}

/**
 * Watches `namespaces` (none or empty = all namespaces) with one informer each. `options(namespace)`
 * gives each member's options; `namespace` is undefined for the all-namespaces informer. Example:
 *
 *   createNamespacedInformers(flags.namespace, (ns) => ({
 *     kubeConfig, name: `pods/${ns ?? "*"}`, labelSelector: "app.kubernetes.io/managed-by=trickle-relay-operator",
 *     path: ns ? `/api/v1/namespaces/${ns}/pods` : "/api/v1/pods",
 *   })); *
 * It lives with the group, which it makes; informer.ts does not import this module, so the two do
 * not import each other.
 */
export function createNamespacedInformers<T extends KubernetesObject>(
  namespaces: readonly string[] | undefined,
  options: (namespace: string | undefined) => SupervisedInformerOptions<T>,
): InformerGroup<T> {
  const unique = [...new Set(namespaces ?? [])];
  const keys: Array<string | undefined> = unique.length > 0 ? unique : [undefined];
  return new InformerGroup(new Map(keys.map((ns) => [ns, new SupervisedInformer<T>(options(ns))])));
}
