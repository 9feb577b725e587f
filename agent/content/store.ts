/**
 * The content-addressed store of one agent (issue 15): model files under their MD5, complete or partial,
 * with their signed manifests, in a folder and the `content_files` table. This file is the store's face (what
 * it answers, the order of each change); its table is ./store-table.ts, its folder ./store-folder.ts, its
 * files in memory ./store-index.ts (read at open by ./store-open.ts), eviction ./store-evict.ts, and the
 * checks of fetched bytes ./store-verify.ts.
 */
import type { PrivateKey } from '@libp2p/interface'
import { basename } from 'node:path'
import type { Db } from '../db/database.ts'
import { ValidationError } from '../errors.ts'
import { bitmapBytes, fullBitmap, hasBit, setBit } from './bitmap.ts'
import { ContentInUseError, ContentNotFoundError, ManifestError } from './errors.ts'
import { buildManifest, signManifest } from './manifest.ts'
import { evict, makeRoom } from './store-evict.ts'
import { StoreIndex, cmp } from './store-index.ts'
import type { ContentStoreLog } from './store-index.ts'
import { openIndex } from './store-open.ts'
import type { Item } from './store-table.ts'
import { checkChunk, verify } from './store-verify.ts'
import { ManifestSchema } from './types.ts'
import type { ContentEntry, ContentStore, SignedManifest } from './types.ts'

export { chunkLength } from './store-folder.ts'
export type { ContentStoreLog } from './store-index.ts'

export interface ContentStoreOptions {
  db: Db
  /** the store's folder (created when missing); the store owns it: files it does not know are deleted on open */
  dir: string
  /** bytes the store may hold (complete files and partials' full sizes) before it evicts */
  capBytes: number
  /** this agent's key: signs the manifests of imported files */
  privateKey: PrivateKey
  /** this agent's peer ID (the adder of imported files) */
  peerId: string
  log?: ContentStoreLog
  /** called when the set of files or their state changes (added, completed, removed, evicted) */
  onChange?: () => void
  /** clock, ms (tests) */
  now?: () => number
}

/**
 * The content store on SQLite and a folder: `<dir>/<md5>` for a complete file, `<dir>/<md5>.part` for a
 * partial one (preallocated to its full size, chunks written at their offsets, the chunks held recorded in
 * the table's bitmap so a download resumes after a restart). The table is read once at open, reconciled with
 * the folder (rows whose file is gone are dropped, files without a row deleted), and kept in memory; every
 * change is written through. Statements are prepared once. One store per folder and table.
 *
 * Capacity: usage counts complete files and partials at their full size. `evict` removes the least recently
 * used files that are neither pinned nor in use (acquired) until usage is under the cap; it runs before a
 * partial is begun (ContentCapError when there is still no room for it), after a file completes and after
 * an import. Pinned files (added on this agent) count towards usage but are never evicted, and an import is
 * never refused for the cap (the file is on this disk already): pinned files may hold the store above its
 * cap. A partial being downloaded must be acquired by its fetcher, or it may be evicted like any other file.
 *
 * Imported files are hard-linked where the filesystem allows: the store then shares the source's inode, so
 * changing the source in place changes the stored file (receivers still check every chunk; `complete`
 * of a fetch checks the whole file).
 */
export class SqliteContentStore implements ContentStore {
  private readonly privateKey: PrivateKey
  private readonly peerId: string
  private readonly ix: StoreIndex

  constructor (opts: ContentStoreOptions) {
    if (!Number.isSafeInteger(opts.capBytes) || opts.capBytes < 0) throw new ValidationError(`content store cap ${opts.capBytes} is not a byte count`)
    this.privateKey = opts.privateKey
    this.peerId = opts.peerId
    this.ix = new StoreIndex({ db: opts.db, dir: opts.dir, capBytes: opts.capBytes, log: opts.log, onChange: opts.onChange, now: opts.now ?? Date.now })
    openIndex(this.ix)
  }

  // ---- reads

  get (md5: string): ContentEntry | undefined {
    const item = this.ix.items.get(md5)
    return item === undefined ? undefined : this.ix.entry(item)
  }

  /** Every file, most recently used first. */
  list (): ContentEntry[] {
    return [...this.ix.items.values()].sort((a, b) => b.lastUsed - a.lastUsed || b.addedAt - a.addedAt || cmp(a.md5, b.md5)).map(i => this.ix.entry(i))
  }

  pathOf (md5: string): string | undefined {
    const item = this.ix.items.get(md5)
    return item?.state === 'complete' ? this.ix.folder.finalPath(md5) : undefined
  }

  manifest (md5: string): SignedManifest | undefined {
    const item = this.ix.items.get(md5)
    return item === undefined ? undefined : { manifest: item.manifest, bytes: item.manifestBytes }
  }

  bitmap (md5: string): Uint8Array | undefined {
    const item = this.ix.items.get(md5)
    return item === undefined ? undefined : item.bitmap.slice()
  }

  usage (): { bytes: number, capBytes: number } {
    return { bytes: this.ix.bytes, capBytes: this.ix.capBytes }
  }

  /** A chunk held, read from disk (a serve: the file's lastUsed moves). ContentNotFoundError when the file or the chunk is not held. */
  async readChunk (md5: string, index: number, signal?: AbortSignal): Promise<Uint8Array> {
    signal?.throwIfAborted()
    for (let attempt = 0; ; attempt++) {
      const item = this.ix.items.get(md5)
      if (item === undefined) throw new ContentNotFoundError(`${md5} is not held here`)
      if (!Number.isSafeInteger(index) || index < 0 || index >= item.manifest.chunks.length) {
        throw new ContentNotFoundError(`${md5} has no chunk ${index} (it has ${item.manifest.chunks.length})`)
      }
      if (!hasBit(item.bitmap, index)) throw new ContentNotFoundError(`chunk ${index} of ${md5} is not held here`)
      const bytes = await this.ix.folder.readChunk(item, index)
      if (bytes === undefined) {
        // the partial may have become complete (renamed), or the file been removed, meanwhile
        if (attempt === 0) continue
        throw new ContentNotFoundError(`${md5} is not held here`)
      }
      signal?.throwIfAborted()
      this.ix.markUsed(item, false)
      return bytes
    }
  }

  /** Marks a file used now (its lastUsed moves, written through): the serving side calls it when a peer is served. No-op for a file not held. */
  touch (md5: string): void {
    const item = this.ix.items.get(md5)
    if (item !== undefined) this.ix.markUsed(item, true)
  }

  // ---- in use

  acquire (md5: string): () => void {
    const refs = this.ix.refs
    refs.set(md5, (refs.get(md5) ?? 0) + 1)
    const item = this.ix.items.get(md5)
    if (item !== undefined) this.ix.markUsed(item, true)
    let released = false
    return () => {
      if (released) return
      released = true
      const n = (refs.get(md5) ?? 1) - 1
      if (n <= 0) refs.delete(md5)
      else refs.set(md5, n)
    }
  }

  // ---- adding

  /**
   * Adds a local file: hashed once, its manifest signed by this agent, then hard-linked into the store (copied
   * when linking fails, e.g. across filesystems) under a temporary name and renamed. A file already complete
   * here is only looked up (and pinned when `pin`); a partial of it is replaced. `pin` defaults to true.
   */
  async importFile (path: string, opts: { name?: string, pin?: boolean, chunkSize?: number, signal?: AbortSignal } = {}): Promise<ContentEntry> {
    const pin = opts.pin ?? true
    const manifest = await buildManifest(path, { name: opts.name ?? basename(path), adder: this.peerId, chunkSize: opts.chunkSize, signal: opts.signal })
    const held = this.ix.items.get(manifest.md5)
    if (held?.state === 'complete') {
      const now = this.ix.now()
      if (pin && !held.pinned) held.pinned = true
      held.lastUsed = now
      held.savedLastUsed = now
      this.ix.table.setPinned(held.md5, held.pinned, now)
      return this.ix.entry(held)
    }
    const signed = await signManifest(manifest, this.privateKey)
    const linked = await this.ix.folder.linkIn(path, manifest, opts.signal, err => {
      this.ix.log?.info({ path, err: (err as NodeJS.ErrnoException).code ?? (err as Error).message }, 'content store: hard link refused, copying')
    })
    // a complete copy may have arrived (a fetch, another import) while this one hashed and linked: it is the same bytes
    const before = this.ix.items.get(manifest.md5)
    if (before !== undefined) {
      this.ix.bytes -= before.manifest.size
      if (before.state === 'partial') this.ix.folder.removePartial(before.md5)
    }
    const now = this.ix.now()
    const item: Item = {
      md5: manifest.md5,
      manifest,
      manifestBytes: signed.bytes,
      bitmap: fullBitmap(manifest.chunks.length),
      have: manifest.chunks.length,
      state: 'complete',
      name: manifest.name ?? null,
      pinned: pin || before?.pinned === true,
      lastUsed: now,
      savedLastUsed: now,
      addedAt: before?.addedAt ?? now
    }
    this.ix.save(item)
    this.ix.log?.info({ md5: item.md5, size: manifest.size, name: item.name, linked }, 'content store: file added')
    this.ix.changed()
    evict(this.ix)
    return this.ix.entry(item)
  }

  /**
   * Starts a partial file for a verified manifest (evicting first; ContentCapError when there is still no
   * room for it), or returns the file's entry when it is already held. A partial already begun keeps the
   * manifest it was begun with: its entry and `manifest(md5)` say which chunks to fetch.
   */
  begin (signed: SignedManifest): ContentEntry {
    const parsed = ManifestSchema.safeParse(signed.manifest)
    if (!parsed.success) throw new ManifestError(`manifest is not valid: ${parsed.error.issues.map(i => i.message).join('; ')}`)
    const manifest = parsed.data
    const held = this.ix.items.get(manifest.md5)
    if (held !== undefined) return this.ix.entry(held)
    makeRoom(this.ix, manifest)
    this.ix.folder.allocate(manifest.md5, manifest.size)
    const now = this.ix.now()
    const item: Item = {
      md5: manifest.md5,
      manifest,
      manifestBytes: signed.bytes,
      bitmap: new Uint8Array(bitmapBytes(manifest.chunks.length)),
      have: 0,
      state: 'partial',
      name: manifest.name ?? null,
      pinned: false,
      lastUsed: now,
      savedLastUsed: now,
      addedAt: now
    }
    this.ix.save(item)
    this.ix.log?.info({ md5: item.md5, size: manifest.size, chunks: manifest.chunks.length }, 'content store: partial begun')
    this.ix.changed()
    return this.ix.entry(item)
  }

  /**
   * Writes one chunk of a partial at its offset, after checking its length and SHA-256 against the manifest
   * (ChunkHashError otherwise, nothing written); then records it held. A chunk already held (or a file
   * already complete) is a no-op. ContentNotFoundError when the file is not held (or was removed meanwhile).
   */
  async writeChunk (md5: string, index: number, bytes: Uint8Array): Promise<void> {
    const item = this.ix.items.get(md5)
    if (item === undefined) throw new ContentNotFoundError(`${md5} is not held here`)
    const count = item.manifest.chunks.length
    if (!Number.isSafeInteger(index) || index < 0 || index >= count) throw new ValidationError(`${md5} has no chunk ${index} (it has ${count})`)
    if (item.state === 'complete' || hasBit(item.bitmap, index)) return
    checkChunk(item, index, bytes)
    await this.ix.folder.writeChunk(md5, index, item.manifest.chunkSize, bytes)
    const now = this.ix.items.get(md5)
    if (now !== item) {
      if (now?.state === 'complete') return
      throw new ContentNotFoundError(`${md5} was removed while chunk ${index} was written`)
    }
    if (hasBit(item.bitmap, index)) return
    setBit(item.bitmap, index)
    item.have++
    this.ix.table.setBitmap(md5, item.bitmap)
  }

  /**
   * Makes a partial complete once every chunk is held: one pass over it for MD5 and SHA-256; a match renames
   * it to its final name (then evicts), a mismatch discards it (row and file) with ContentDigestError. A file
   * already complete returns its entry; concurrent calls share one check.
   */
  async complete (md5: string, signal?: AbortSignal): Promise<ContentEntry> {
    const item = this.ix.items.get(md5)
    if (item === undefined) throw new ContentNotFoundError(`${md5} is not held here`)
    if (item.state === 'complete') return this.ix.entry(item)
    if (item.have < item.manifest.chunks.length) throw new ContentNotFoundError(`${md5} holds ${item.have} of its ${item.manifest.chunks.length} chunks`)
    const completing = this.ix.completing
    const running = completing.get(md5)
    if (running !== undefined) return await running
    const p = verify(this.ix, item, signal).finally(() => completing.delete(md5))
    completing.set(md5, p)
    return await p
  }

  // ---- removing

  /** Removes a file, complete or partial, pinned or not. ContentInUseError when acquired; ContentNotFoundError when not held. */
  remove (md5: string): void {
    const item = this.ix.items.get(md5)
    if (item === undefined) throw new ContentNotFoundError(`${md5} is not held here`)
    const users = this.ix.refs.get(md5) ?? 0
    if (users > 0) throw new ContentInUseError(md5, users)
    this.ix.drop(item)
    this.ix.log?.info({ md5, size: item.manifest.size }, 'content store: file removed')
    this.ix.changed()
  }

  /** Evicts the least recently used files neither pinned, in use nor being completed until usage is at most the cap; returns their MD5s in eviction order. */
  evict (): string[] {
    return evict(this.ix)
  }
}
