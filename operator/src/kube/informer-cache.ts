/**
 * An informer's store: namespace → name → object, and the add/update/delete changes that a full
 * list or a single watch event makes to it. Separate from the list/watch loop, which decides when
 * to list and what to do on failure; this file only decides what changed.
 *
 * Each change is reported synchronously, right after the store is updated and before the next
 * change is applied, so a listener (e.g. OwnerIndex) always sees the store agree with the event.
 */
import type { KubernetesObject } from "@kubernetes/client-node";

/** What a controller needs from an informer or a group of them. */
export interface InformerCache<T extends KubernetesObject> {
  get(namespace: string, name: string): T | undefined;
  list(namespace?: string): T[];
  readonly synced: boolean;
}

/** The changes a store reports, shaped like the informer's events of the same names. */
export interface StoreChanges<T> {
  add: [obj: T];
  update: [obj: T, old: T];
  delete: [obj: T];
}

export type StoreListener<T> = <K extends keyof StoreChanges<T>>(
  event: K,
  ...args: StoreChanges<T>[K]
) => void;

export class InformerStore<T extends KubernetesObject> {
  /** namespace ("" for cluster-scoped) → name → object */
  private readonly cache = new Map<string, Map<string, T>>();
  private readonly onChange: StoreListener<T>;

  constructor(onChange: StoreListener<T>) {
    this.onChange = onChange;
  }

  get(namespace: string, name: string): T | undefined {
    return this.cache.get(namespace)?.get(name);
  }

  list(namespace?: string): T[] {
    if (namespace !== undefined) return [...(this.cache.get(namespace)?.values() ?? [])];
    return [...this.cache.values()].flatMap((objects) => [...objects.values()]);
  }

  get size(): number {
    let total = 0;
    for (const objects of this.cache.values()) total += objects.size;
    return total;
  }

  /** Makes the store hold exactly `items` (a fresh list), reporting the difference. */
  replace(items: readonly T[]): void {
    const fresh = new Map<string, Map<string, T>>();
    for (const item of items) {
      const namespace = item.metadata?.namespace ?? "";
      let objects = fresh.get(namespace);
      if (!objects) fresh.set(namespace, (objects = new Map()));
      objects.set(item.metadata?.name ?? "", item);
    }
    // Deletions first, so a listener never sees an object twice under one name.
    for (const [namespace, objects] of this.cache) {
      for (const [name, old] of objects) {
        if (!fresh.get(namespace)?.has(name)) {
          objects.delete(name);
          this.onChange("delete", old);
        }
      }
      if (objects.size === 0) this.cache.delete(namespace);
    }
    for (const objects of fresh.values()) for (const obj of objects.values()) this.upsert(obj);
  }

  /** Adds or replaces `obj`; an unchanged resourceVersion is no update. */
  upsert(obj: T): void {
    const namespace = obj.metadata?.namespace ?? "";
    const name = obj.metadata?.name ?? "";
    let objects = this.cache.get(namespace);
    if (!objects) this.cache.set(namespace, (objects = new Map()));
    const old = objects.get(name);
    objects.set(name, obj);
    if (!old) this.onChange("add", obj);
    else if (old.metadata?.resourceVersion !== obj.metadata?.resourceVersion)
      this.onChange("update", obj, old);
  }

  /** Removes `obj` by namespace and name; reports the deletion (with `obj`) only if it was there. */
  remove(obj: T): void {
    const namespace = obj.metadata?.namespace ?? "";
    const objects = this.cache.get(namespace);
    if (objects?.delete(obj.metadata?.name ?? "")) {
      if (objects.size === 0) this.cache.delete(namespace);
      this.onChange("delete", obj);
    }
  }
}
