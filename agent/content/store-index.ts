/**
 * The content store's files in memory: each file held (an Item per row of ./store-table.ts), the blocks using
 * each, the checks running, and the bytes held, with the table and folder they are kept in; every change
 * written through (a file dropped loses its row and its files), and the entries the store answers with.
 */
import type { Db } from '../db/database.ts'
import { StoreFolder } from './store-folder.ts'
import { ContentTable } from './store-table.ts'
import type { Item } from './store-table.ts'
import type { ContentEntry } from './types.ts'

/** The store's log: pino's `info` and `warn` fit. */
export interface ContentStoreLog {
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
}

/** lastUsed is written to the table at most this often per file when only reads touch it (acquire always writes). */
const LAST_USED_SAVE_MS = 10_000

/** String order (ties between files broken by MD5). */
export function cmp (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

export interface StoreIndexInit {
  db: Db
  /** the store's folder (created when missing) */
  dir: string
  capBytes: number
  log: ContentStoreLog | undefined
  onChange: (() => void) | undefined
  now: () => number
}

export class StoreIndex {
  readonly table: ContentTable
  readonly folder: StoreFolder
  /** bytes the store may hold before it evicts */
  readonly capBytes: number
  readonly log: ContentStoreLog | undefined
  readonly now: () => number
  readonly items = new Map<string, Item>()
  /** blocks using each file (acquired) */
  readonly refs = new Map<string, number>()
  /** whole-file checks running */
  readonly completing = new Map<string, Promise<ContentEntry>>()
  /** bytes held: complete files and partials at their full size */
  bytes = 0
  private readonly onChange: (() => void) | undefined

  constructor (init: StoreIndexInit) {
    this.folder = new StoreFolder(init.dir)
    this.table = new ContentTable(init.db)
    this.capBytes = init.capBytes
    this.log = init.log
    this.onChange = init.onChange
    this.now = init.now
  }

  /** Records a file (its row written). */
  save (item: Item): void {
    this.table.insert(item)
    this.items.set(item.md5, item)
    this.bytes += item.manifest.size
  }

  /** Forgets a file: its row, its files, its bytes. */
  drop (item: Item): void {
    this.table.delete(item.md5)
    if (this.items.get(item.md5) === item) {
      this.items.delete(item.md5)
      this.bytes -= item.manifest.size
    }
    this.folder.removeFinal(item.md5)
    this.folder.removePartial(item.md5)
  }

  markUsed (item: Item, persist: boolean): void {
    const t = this.now()
    if (t <= item.lastUsed) return
    item.lastUsed = t
    if (!persist && t - item.savedLastUsed < LAST_USED_SAVE_MS) return
    if (this.items.get(item.md5) !== item) return
    item.savedLastUsed = t
    this.table.setLastUsed(item.md5, t)
  }

  changed (): void {
    try {
      this.onChange?.()
    } catch (err) {
      this.log?.warn({ err: (err as Error).message }, 'content store: change listener failed')
    }
  }

  entry (item: Item): ContentEntry {
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
      path: item.state === 'complete' ? this.folder.finalPath(item.md5) : null,
      pinned: item.pinned,
      inUse: this.refs.get(item.md5) ?? 0,
      lastUsed: item.lastUsed,
      addedAt: item.addedAt
    }
  }
}
