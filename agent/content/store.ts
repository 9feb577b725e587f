/**
 * The content-addressed store of one agent (issue 15): model files under their MD5, complete or partial,
 * with their signed manifests, in a folder and the `content_files` table.
 */
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, ftruncateSync, mkdirSync, openSync, readdirSync, rmSync, statSync } from 'node:fs'
import type { Stats } from 'node:fs'
import * as fsp from 'node:fs/promises'
import { basename, join } from 'node:path'
import type { Statement } from 'better-sqlite3'
import type { PrivateKey } from '@libp2p/interface'
import type { Db } from '../db/database.ts'
import { ValidationError } from '../errors.ts'
import { ChunkHashError, ContentCapError, ContentDigestError, ContentInUseError, ContentNotFoundError, ManifestError } from './errors.ts'
import { buildManifest, hashFile, signManifest, storedManifest } from './manifest.ts'
import type { FileDigests } from './manifest.ts'
import { ManifestSchema } from './types.ts'
import type { ContentEntry, ContentStore, Manifest, SignedManifest } from './types.ts'

/** The store's log: pino's `info` and `warn` fit. */
export interface ContentStoreLog {
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
}

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

interface SqlRow {
  md5: string
  sha256: string
  size: number
  chunk_size: number
  chunks: number
  bitmap: Buffer
  manifest: Buffer
  name: string | null
  state: 'complete' | 'partial'
  pinned: number
  last_used: number
  added_at: number
}

/** One file as the store keeps it in memory (the table's row, its manifest parsed). Replaced, not mutated, when a file is removed and added again. */
interface Item {
  md5: string
  manifest: Manifest
  manifestBytes: Uint8Array
  bitmap: Uint8Array
  have: number
  state: 'complete' | 'partial'
  name: string | null
  pinned: boolean
  lastUsed: number
  /** the last lastUsed written to the table */
  savedLastUsed: number
  addedAt: number
}

/** lastUsed is written to the table at most this often per file when only reads touch it (acquire always writes). */
const LAST_USED_SAVE_MS = 10_000

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
  private readonly dir: string
  private readonly capBytes: number
  private readonly privateKey: PrivateKey
  private readonly peerId: string
  private readonly log: ContentStoreLog | undefined
  private readonly onChange: (() => void) | undefined
  private readonly now: () => number
  private readonly items = new Map<string, Item>()
  private readonly refs = new Map<string, number>()
  private readonly completing = new Map<string, Promise<ContentEntry>>()
  private bytes = 0
  private readonly insertStmt: Statement
  private readonly deleteStmt: Statement
  private readonly bitmapStmt: Statement
  private readonly completeStmt: Statement
  private readonly pinStmt: Statement
  private readonly lastUsedStmt: Statement

  constructor (opts: ContentStoreOptions) {
    if (!Number.isSafeInteger(opts.capBytes) || opts.capBytes < 0) throw new ValidationError(`content store cap ${opts.capBytes} is not a byte count`)
    this.dir = opts.dir
    this.capBytes = opts.capBytes
    this.privateKey = opts.privateKey
    this.peerId = opts.peerId
    this.log = opts.log
    this.onChange = opts.onChange
    this.now = opts.now ?? Date.now
    mkdirSync(this.dir, { recursive: true })
    const db = opts.db
    this.insertStmt = db.prepare(`INSERT OR REPLACE INTO content_files (md5, sha256, size, chunk_size, chunks, bitmap, manifest, name, state, pinned, last_used, added_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
    this.deleteStmt = db.prepare('DELETE FROM content_files WHERE md5 = ?')
    this.bitmapStmt = db.prepare('UPDATE content_files SET bitmap = ? WHERE md5 = ?')
    this.completeStmt = db.prepare("UPDATE content_files SET state = 'complete', bitmap = ?, last_used = ? WHERE md5 = ?")
    this.pinStmt = db.prepare('UPDATE content_files SET pinned = ?, last_used = ? WHERE md5 = ?')
    this.lastUsedStmt = db.prepare('UPDATE content_files SET last_used = ? WHERE md5 = ?')
    this.load(db.prepare('SELECT * FROM content_files').all() as SqlRow[])
  }

  // ---- open: the table and the folder reconciled

  private load (rows: SqlRow[]): void {
    for (const r of rows) {
      const item = this.fromRow(r)
      if (item === undefined) {
        this.deleteStmt.run(r.md5)
        continue
      }
      this.items.set(item.md5, item)
      this.bytes += item.manifest.size
    }
    const known = new Set<string>()
    for (const item of this.items.values()) known.add(item.state === 'complete' ? item.md5 : `${item.md5}.part`)
    for (const name of readdirSync(this.dir)) {
      if (known.has(name)) continue
      const path = join(this.dir, name)
      try {
        if (!statSync(path).isFile()) {
          this.log?.warn({ path }, 'content store: not a file, left alone')
          continue
        }
        rmSync(path, { force: true })
        this.log?.warn({ path }, 'content store: stray file deleted')
      } catch (err) {
        this.log?.warn({ path, err: (err as Error).message }, 'content store: stray file could not be deleted')
      }
    }
  }

  /** The item of a row whose file is there (size checked), else undefined (the row is dropped). */
  private fromRow (r: SqlRow): Item | undefined {
    let manifest: Manifest
    try {
      manifest = storedManifest(r.manifest)
    } catch (err) {
      this.log?.warn({ md5: r.md5, err: (err as Error).message }, 'content store: row with a bad manifest dropped')
      return undefined
    }
    const chunks = manifest.chunks.length
    if (manifest.md5 !== r.md5 || r.bitmap.length !== bitmapBytes(chunks)) {
      this.log?.warn({ md5: r.md5 }, 'content store: row that does not match its manifest dropped')
      return undefined
    }
    let state = r.state
    let bitmap: Uint8Array = new Uint8Array(r.bitmap)
    if (chunks % 8 !== 0) bitmap[bitmap.length - 1] &= (1 << (chunks % 8)) - 1
    const finalSize = fileSize(join(this.dir, r.md5))
    if (state === 'partial' && fileSize(this.partPath(r.md5)) !== manifest.size) {
      // a crash between the rename of a verified partial and the table's update leaves the complete file
      if (finalSize === manifest.size) {
        state = 'complete'
        bitmap = fullBitmap(chunks)
        this.completeStmt.run(bitmap, r.last_used, r.md5)
      } else {
        this.log?.warn({ md5: r.md5 }, 'content store: partial file gone, row dropped')
        return undefined
      }
    } else if (state === 'complete' && finalSize !== manifest.size) {
      this.log?.warn({ md5: r.md5, size: finalSize }, 'content store: file gone or changed size, row dropped')
      return undefined
    }
    return {
      md5: r.md5,
      manifest,
      manifestBytes: new Uint8Array(r.manifest),
      bitmap,
      have: state === 'complete' ? chunks : popcount(bitmap),
      state,
      name: r.name,
      pinned: r.pinned === 1,
      lastUsed: r.last_used,
      savedLastUsed: r.last_used,
      addedAt: r.added_at
    }
  }

  // ---- reads

  get (md5: string): ContentEntry | undefined {
    const item = this.items.get(md5)
    return item === undefined ? undefined : this.entry(item)
  }

  /** Every file, most recently used first. */
  list (): ContentEntry[] {
    return [...this.items.values()].sort((a, b) => b.lastUsed - a.lastUsed || b.addedAt - a.addedAt || cmp(a.md5, b.md5)).map(i => this.entry(i))
  }

  pathOf (md5: string): string | undefined {
    const item = this.items.get(md5)
    return item?.state === 'complete' ? this.finalPath(md5) : undefined
  }

  manifest (md5: string): SignedManifest | undefined {
    const item = this.items.get(md5)
    return item === undefined ? undefined : { manifest: item.manifest, bytes: item.manifestBytes }
  }

  bitmap (md5: string): Uint8Array | undefined {
    const item = this.items.get(md5)
    return item === undefined ? undefined : item.bitmap.slice()
  }

  usage (): { bytes: number, capBytes: number } {
    return { bytes: this.bytes, capBytes: this.capBytes }
  }

  /** A chunk held, read from disk (a serve: the file's lastUsed moves). ContentNotFoundError when the file or the chunk is not held. */
  async readChunk (md5: string, index: number, signal?: AbortSignal): Promise<Uint8Array> {
    signal?.throwIfAborted()
    for (let attempt = 0; ; attempt++) {
      const item = this.items.get(md5)
      if (item === undefined) throw new ContentNotFoundError(`${md5} is not held here`)
      if (!Number.isSafeInteger(index) || index < 0 || index >= item.manifest.chunks.length) {
        throw new ContentNotFoundError(`${md5} has no chunk ${index} (it has ${item.manifest.chunks.length})`)
      }
      if (!hasBit(item.bitmap, index)) throw new ContentNotFoundError(`chunk ${index} of ${md5} is not held here`)
      const path = item.state === 'complete' ? this.finalPath(md5) : this.partPath(md5)
      let fh: fsp.FileHandle
      try {
        fh = await fsp.open(path, 'r')
      } catch (err) {
        // the partial may have become complete (renamed), or the file been removed, meanwhile
        if (isMissing(err) && attempt === 0) continue
        if (isMissing(err)) throw new ContentNotFoundError(`${md5} is not held here`)
        throw err
      }
      try {
        const length = chunkLength(item.manifest, index)
        const buf = Buffer.alloc(length)
        let got = 0
        while (got < length) {
          const { bytesRead } = await fh.read(buf, got, length - got, index * item.manifest.chunkSize + got)
          if (bytesRead === 0) throw new ContentNotFoundError(`chunk ${index} of ${md5} could not be read whole (the file is shorter than its manifest)`)
          got += bytesRead
        }
        signal?.throwIfAborted()
        this.markUsed(item, false)
        return new Uint8Array(buf.buffer, buf.byteOffset, buf.length)
      } finally {
        await fh.close()
      }
    }
  }

  /** Marks a file used now (its lastUsed moves, written through): the serving side calls it when a peer is served. No-op for a file not held. */
  touch (md5: string): void {
    const item = this.items.get(md5)
    if (item !== undefined) this.markUsed(item, true)
  }

  // ---- in use

  acquire (md5: string): () => void {
    this.refs.set(md5, (this.refs.get(md5) ?? 0) + 1)
    const item = this.items.get(md5)
    if (item !== undefined) this.markUsed(item, true)
    let released = false
    return () => {
      if (released) return
      released = true
      const n = (this.refs.get(md5) ?? 1) - 1
      if (n <= 0) this.refs.delete(md5)
      else this.refs.set(md5, n)
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
    const held = this.items.get(manifest.md5)
    if (held?.state === 'complete') {
      const now = this.now()
      if (pin && !held.pinned) held.pinned = true
      held.lastUsed = now
      held.savedLastUsed = now
      this.pinStmt.run(held.pinned ? 1 : 0, now, held.md5)
      return this.entry(held)
    }
    const signed = await signManifest(manifest, this.privateKey)
    const tmp = join(this.dir, `.import-${randomBytes(8).toString('hex')}.tmp`)
    let linked = true
    try {
      try {
        await fsp.link(path, tmp)
      } catch (err) {
        linked = false
        this.log?.info({ path, err: (err as NodeJS.ErrnoException).code ?? (err as Error).message }, 'content store: hard link refused, copying')
        await fsp.copyFile(path, tmp)
      }
      const size = (await fsp.stat(tmp)).size
      if (size !== manifest.size) throw new ValidationError(`${path} changed while it was added (${manifest.size} bytes hashed, ${size} stored)`)
      opts.signal?.throwIfAborted()
      await fsp.rename(tmp, this.finalPath(manifest.md5))
    } catch (err) {
      await fsp.rm(tmp, { force: true })
      throw err
    }
    // a complete copy may have arrived (a fetch, another import) while this one hashed and linked: it is the same bytes
    const before = this.items.get(manifest.md5)
    if (before !== undefined) {
      this.bytes -= before.manifest.size
      if (before.state === 'partial') rmSync(this.partPath(before.md5), { force: true })
    }
    const now = this.now()
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
    this.save(item)
    this.log?.info({ md5: item.md5, size: manifest.size, name: item.name, linked }, 'content store: file added')
    this.changed()
    this.evict()
    return this.entry(item)
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
    const held = this.items.get(manifest.md5)
    if (held !== undefined) return this.entry(held)
    const evictable = this.evictable().reduce((n, i) => n + i.manifest.size, 0)
    if (this.bytes - evictable + manifest.size > this.capBytes) {
      // refused before anything is evicted: evicting would not make room
      throw new ContentCapError(`no room for ${manifest.md5} (${manifest.size} bytes): the store holds ${this.bytes} of ${this.capBytes} bytes, of which ${evictable} may be evicted`,
        { md5: manifest.md5, needed: manifest.size, bytes: this.bytes, evictable, capBytes: this.capBytes })
    }
    this.evictDownTo(this.capBytes - manifest.size)
    const part = this.partPath(manifest.md5)
    const fd = openSync(part, 'w')
    try {
      ftruncateSync(fd, manifest.size)
    } finally {
      closeSync(fd)
    }
    const now = this.now()
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
    this.save(item)
    this.log?.info({ md5: item.md5, size: manifest.size, chunks: manifest.chunks.length }, 'content store: partial begun')
    this.changed()
    return this.entry(item)
  }

  /**
   * Writes one chunk of a partial at its offset, after checking its length and SHA-256 against the manifest
   * (ChunkHashError otherwise, nothing written); then records it held. A chunk already held (or a file
   * already complete) is a no-op. ContentNotFoundError when the file is not held (or was removed meanwhile).
   */
  async writeChunk (md5: string, index: number, bytes: Uint8Array): Promise<void> {
    const item = this.items.get(md5)
    if (item === undefined) throw new ContentNotFoundError(`${md5} is not held here`)
    const count = item.manifest.chunks.length
    if (!Number.isSafeInteger(index) || index < 0 || index >= count) throw new ValidationError(`${md5} has no chunk ${index} (it has ${count})`)
    if (item.state === 'complete' || hasBit(item.bitmap, index)) return
    const length = chunkLength(item.manifest, index)
    if (bytes.length !== length) throw new ChunkHashError(md5, index, `chunk ${index} of ${md5} is ${bytes.length} bytes, not ${length}`)
    if (createHash('sha256').update(bytes).digest('base64') !== item.manifest.chunks[index]) throw new ChunkHashError(md5, index)
    const fh = await fsp.open(this.partPath(md5), 'r+')
    try {
      let done = 0
      while (done < length) {
        const { bytesWritten } = await fh.write(bytes, done, length - done, index * item.manifest.chunkSize + done)
        done += bytesWritten
      }
    } finally {
      await fh.close()
    }
    const now = this.items.get(md5)
    if (now !== item) {
      if (now?.state === 'complete') return
      throw new ContentNotFoundError(`${md5} was removed while chunk ${index} was written`)
    }
    if (hasBit(item.bitmap, index)) return
    setBit(item.bitmap, index)
    item.have++
    this.bitmapStmt.run(item.bitmap, md5)
  }

  /**
   * Makes a partial complete once every chunk is held: one pass over it for MD5 and SHA-256; a match renames
   * it to its final name (then evicts), a mismatch discards it (row and file) with ContentDigestError. A file
   * already complete returns its entry; concurrent calls share one check.
   */
  async complete (md5: string, signal?: AbortSignal): Promise<ContentEntry> {
    const item = this.items.get(md5)
    if (item === undefined) throw new ContentNotFoundError(`${md5} is not held here`)
    if (item.state === 'complete') return this.entry(item)
    if (item.have < item.manifest.chunks.length) throw new ContentNotFoundError(`${md5} holds ${item.have} of its ${item.manifest.chunks.length} chunks`)
    const running = this.completing.get(md5)
    if (running !== undefined) return await running
    const p = this.verify(item, signal).finally(() => this.completing.delete(md5))
    this.completing.set(md5, p)
    return await p
  }

  private async verify (item: Item, signal?: AbortSignal): Promise<ContentEntry> {
    const md5 = item.md5
    let d: FileDigests
    try {
      d = await hashFile(this.partPath(md5), { signal })
    } catch (err) {
      const now = this.items.get(md5)
      if (now?.state === 'complete') return this.entry(now)
      if (now !== item) throw new ContentNotFoundError(`${md5} was removed while it was checked`)
      throw err
    }
    const now = this.items.get(md5)
    if (now !== item) {
      if (now?.state === 'complete') return this.entry(now)
      throw new ContentNotFoundError(`${md5} was removed while it was checked`)
    }
    if (d.md5 !== md5 || d.sha256 !== item.manifest.sha256 || d.size !== item.manifest.size) {
      this.drop(item)
      this.log?.warn({ md5, got: { md5: d.md5, sha256: d.sha256, size: d.size }, adder: item.manifest.adder }, 'content store: fetched file does not match its manifest, discarded')
      this.changed()
      throw new ContentDigestError(`the file fetched for ${md5} does not match its manifest (MD5 ${d.md5}, SHA-256 ${d.sha256}): discarded`,
        { md5, sha256: item.manifest.sha256, got: { md5: d.md5, sha256: d.sha256, size: d.size }, adder: item.manifest.adder })
    }
    await fsp.rename(this.partPath(md5), this.finalPath(md5))
    const after = this.items.get(md5)
    if (after !== item) {
      // removed while it was renamed (an import's complete copy has the same bytes and stays)
      if (after?.state === 'complete') return this.entry(after)
      rmSync(this.finalPath(md5), { force: true })
      throw new ContentNotFoundError(`${md5} was removed while it was completed`)
    }
    const t = this.now()
    item.state = 'complete'
    item.bitmap = fullBitmap(item.manifest.chunks.length)
    item.have = item.manifest.chunks.length
    item.lastUsed = t
    item.savedLastUsed = t
    this.completeStmt.run(item.bitmap, t, md5)
    this.log?.info({ md5, size: item.manifest.size }, 'content store: file complete')
    this.changed()
    this.evict()
    return this.entry(item)
  }

  // ---- removing

  /** Removes a file, complete or partial, pinned or not. ContentInUseError when acquired; ContentNotFoundError when not held. */
  remove (md5: string): void {
    const item = this.items.get(md5)
    if (item === undefined) throw new ContentNotFoundError(`${md5} is not held here`)
    const users = this.refs.get(md5) ?? 0
    if (users > 0) throw new ContentInUseError(md5, users)
    this.drop(item)
    this.log?.info({ md5, size: item.manifest.size }, 'content store: file removed')
    this.changed()
  }

  /** Evicts the least recently used files neither pinned, in use nor being completed until usage is at most the cap; returns their MD5s in eviction order. */
  evict (): string[] {
    return this.evictDownTo(this.capBytes)
  }

  private evictDownTo (limit: number): string[] {
    const evicted: string[] = []
    if (this.bytes <= limit) return evicted
    for (const item of this.evictable()) {
      if (this.bytes <= limit) break
      this.drop(item)
      evicted.push(item.md5)
      this.log?.info({ md5: item.md5, size: item.manifest.size, state: item.state }, 'content store: file evicted')
    }
    if (evicted.length > 0) this.changed()
    return evicted
  }

  /** Files that may be evicted, least recently used first. */
  private evictable (): Item[] {
    return [...this.items.values()]
      .filter(i => !i.pinned && (this.refs.get(i.md5) ?? 0) === 0 && !this.completing.has(i.md5))
      .sort((a, b) => a.lastUsed - b.lastUsed || a.addedAt - b.addedAt || cmp(a.md5, b.md5))
  }

  // ---- helpers

  private finalPath (md5: string): string { return join(this.dir, md5) }
  private partPath (md5: string): string { return join(this.dir, `${md5}.part`) }

  private save (item: Item): void {
    const m = item.manifest
    this.insertStmt.run(item.md5, m.sha256, m.size, m.chunkSize, m.chunks.length, item.bitmap, item.manifestBytes, item.name, item.state,
      item.pinned ? 1 : 0, item.lastUsed, item.addedAt)
    this.items.set(item.md5, item)
    this.bytes += m.size
  }

  /** Forgets a file: its row, its files, its bytes. */
  private drop (item: Item): void {
    this.deleteStmt.run(item.md5)
    if (this.items.get(item.md5) === item) {
      this.items.delete(item.md5)
      this.bytes -= item.manifest.size
    }
    rmSync(this.finalPath(item.md5), { force: true })
    rmSync(this.partPath(item.md5), { force: true })
  }

  private markUsed (item: Item, persist: boolean): void {
    const t = this.now()
    if (t <= item.lastUsed) return
    item.lastUsed = t
    if (!persist && t - item.savedLastUsed < LAST_USED_SAVE_MS) return
    if (this.items.get(item.md5) !== item) return
    item.savedLastUsed = t
    this.lastUsedStmt.run(t, item.md5)
  }

  private changed (): void {
    try {
      this.onChange?.()
    } catch (err) {
      this.log?.warn({ err: (err as Error).message }, 'content store: change listener failed')
    }
  }

  private entry (item: Item): ContentEntry {
    const m = item.manifest
    return {
      md5: item.md5,
      sha256: m.sha256,
      size: m.size,
      chunkSize: m.chunkSize,
      chunks: m.chunks.length,
      have: item.have,
      state: item.state,
      name: item.name,
      path: item.state === 'complete' ? this.finalPath(item.md5) : null,
      pinned: item.pinned,
      inUse: this.refs.get(item.md5) ?? 0,
      lastUsed: item.lastUsed,
      addedAt: item.addedAt
    }
  }
}

/** Bytes of a chunk: the chunk size, or the remainder for the last chunk. */
export function chunkLength (m: Manifest, index: number): number {
  return Math.min(m.chunkSize, m.size - index * m.chunkSize)
}

function bitmapBytes (chunks: number): number {
  return Math.ceil(chunks / 8)
}

function hasBit (bitmap: Uint8Array, i: number): boolean {
  return (bitmap[i >> 3] & (1 << (i & 7))) !== 0
}

function setBit (bitmap: Uint8Array, i: number): void {
  bitmap[i >> 3] |= 1 << (i & 7)
}

/** A bitmap with bits 0..chunks-1 set (the bits past the last chunk clear). */
function fullBitmap (chunks: number): Uint8Array {
  const b = new Uint8Array(bitmapBytes(chunks)).fill(0xff)
  if (chunks % 8 !== 0) b[b.length - 1] = (1 << (chunks % 8)) - 1
  return b
}

function popcount (bitmap: Uint8Array): number {
  let n = 0
  for (let v of bitmap) {
    while (v !== 0) { v &= v - 1; n++ }
  }
  return n
}

function fileSize (path: string): number | undefined {
  let st: Stats
  try {
    st = statSync(path)
  } catch {
    return undefined
  }
  return st.isFile() ? st.size : undefined
}

function isMissing (err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

function cmp (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
