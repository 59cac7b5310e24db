/**
 * An index of an informer's cache by owner uid, kept current from the informer's own events. Every
 * reconcile asks for a session's pods; filtering the namespace's whole pod cache made that
 * O(sessions) per reconcile and O(sessions²) per resync. Lookups here cost O(pods owned).
 *
 * The index holds keys, not objects: `byOwner` reads the objects from the cache, so it never returns
 * a stale copy. The informer mutates its cache and emits the event synchronously, so between awaits
 * the index and the cache agree.
 */
import type { EventEmitter } from "node:events";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { InformerCache, SupervisedInformerEvents } from "./informer.js";

type IndexedCache<T extends KubernetesObject> = InformerCache<T> &
  Pick<EventEmitter<SupervisedInformerEvents<T>>, "on">;

export class OwnerIndex<T extends KubernetesObject> {
  private readonly keysByOwner = new Map<string, Set<string>>();
  private readonly ownerByKey = new Map<string, string>();

  /** `ownerOf` gives the uid an object is filed under (undefined: not indexed). */
  constructor(
    private readonly cache: IndexedCache<T>,
    private readonly ownerOf: (obj: T) => string | undefined,
  ) {
    cache.on("add", (obj) => this.file(obj));
    cache.on("update", (obj) => this.file(obj));
    cache.on("delete", (obj) => this.unfile(keyOf(obj)));
    for (const obj of cache.list()) this.file(obj);
  }

  /** The cached objects filed under `uid`. */
  byOwner(uid: string): T[] {
    const owned: T[] = [];
    for (const key of this.keysByOwner.get(uid) ?? []) {
      const slash = key.indexOf("/");
      const obj = this.cache.get(key.slice(0, slash), key.slice(slash + 1));
      if (obj) owned.push(obj);
    }
    return owned;
  }

  /** Number of owners with at least one object (for tests and metrics). */
  get owners(): number {
    return this.keysByOwner.size;
  }

  private file(obj: T): void {
    const key = keyOf(obj);
    const owner = this.ownerOf(obj);
    if (this.ownerByKey.get(key) === owner) return;
    this.unfile(key);
    if (owner === undefined) return;
    this.ownerByKey.set(key, owner);
    let keys = this.keysByOwner.get(owner);
    if (!keys) this.keysByOwner.set(owner, (keys = new Set()));
    keys.add(key);
  }

  private unfile(key: string): void {
    const owner = this.ownerByKey.get(key);
    if (owner === undefined) return;
    this.ownerByKey.delete(key);
    const keys = this.keysByOwner.get(owner);
    keys?.delete(key);
    if (keys?.size === 0) this.keysByOwner.delete(owner);
  }
}

function keyOf(obj: KubernetesObject): string {
  return `${obj.metadata?.namespace ?? ""}/${obj.metadata?.name ?? ""}`;
}
