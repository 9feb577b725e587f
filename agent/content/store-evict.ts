/**
 * The content store's eviction: the least recently used files neither pinned, in use nor being checked go
 * first, until usage is under the cap; and the room a new partial needs, made before it is begun (or
 * ContentCapError, nothing evicted, when evicting would not make it).
 */
import { ContentCapError } from './errors.ts'
import { cmp } from './store-index.ts'
import type { StoreIndex } from './store-index.ts'
import type { Item } from './store-table.ts'
import type { Manifest } from './types.ts'

/** Files that may be evicted, least recently used first. */
function candidates (ix: StoreIndex): Item[] {
  return [...ix.items.values()]
    .filter(i => !i.pinned && (ix.refs.get(i.md5) ?? 0) === 0 && !ix.completing.has(i.md5))
    .sort((a, b) => a.lastUsed - b.lastUsed || a.addedAt - b.addedAt || cmp(a.md5, b.md5))
}

/** Evicts until usage is at most `limit`; returns the MD5s evicted, in eviction order. */
function evictDownTo (ix: StoreIndex, limit: number): string[] {
  const evicted: string[] = []
  if (ix.bytes <= limit) return evicted
  for (const item of candidates(ix)) {
    if (ix.bytes <= limit) break
    ix.drop(item)
    evicted.push(item.md5)
    ix.log?.info({ md5: item.md5, size: item.manifest.size, state: item.state }, 'content store: file evicted')
  }
  if (evicted.length > 0) ix.changed()
  return evicted
}

/** Evicts until usage is at most the cap; returns the MD5s evicted, in eviction order. */
export function evict (ix: StoreIndex): string[] {
  return evictDownTo(ix, ix.capBytes)
}

/** Evicts until a file of `manifest`'s size fits under the cap: ContentCapError, before anything is evicted, when it cannot. */
export function makeRoom (ix: StoreIndex, manifest: Manifest): void {
  const evictable = candidates(ix).reduce((n, i) => n + i.manifest.size, 0)
  if (ix.bytes - evictable + manifest.size > ix.capBytes) {
    // refused before anything is evicted: evicting would not make room
    throw new ContentCapError(`no room for ${manifest.md5} (${manifest.size} bytes): the store holds ${ix.bytes} of ${ix.capBytes} bytes, of which ${evictable} may be evicted`,
      { md5: manifest.md5, needed: manifest.size, bytes: ix.bytes, evictable, capBytes: ix.capBytes })
  }
  evictDownTo(ix, ix.capBytes - manifest.size)
}
