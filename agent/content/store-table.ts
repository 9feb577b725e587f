/**
 * The content store's table, `content_files`: one row per file held, complete or partial, with its bitmap of
 * chunks held and its signed manifest. The only SQL of the store; its statements are prepared once.
 */
import type { Statement } from 'better-sqlite3'
import type { Db } from '../db/database.ts'
import type { Manifest } from './types.ts'

export interface SqlRow {
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
export interface Item {
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

export class ContentTable {
  private readonly db: Db
  private readonly insertStmt: Statement
  private readonly deleteStmt: Statement
  private readonly bitmapStmt: Statement
  private readonly completeStmt: Statement
  private readonly pinStmt: Statement
  private readonly lastUsedStmt: Statement

  constructor (db: Db) {
    this.db = db
    this.insertStmt = db.prepare(`INSERT OR REPLACE INTO content_files (md5, sha256, size, chunk_size, chunks, bitmap, manifest, name, state, pinned, last_used, added_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
    this.deleteStmt = db.prepare('DELETE FROM content_files WHERE md5 = ?')
    this.bitmapStmt = db.prepare('UPDATE content_files SET bitmap = ? WHERE md5 = ?')
    this.completeStmt = db.prepare("UPDATE content_files SET state = 'complete', bitmap = ?, last_used = ? WHERE md5 = ?")
    this.pinStmt = db.prepare('UPDATE content_files SET pinned = ?, last_used = ? WHERE md5 = ?')
    this.lastUsedStmt = db.prepare('UPDATE content_files SET last_used = ? WHERE md5 = ?')
  }

  /** Every row (read once, at open). */
  rows (): SqlRow[] {
    return this.db.prepare('SELECT * FROM content_files').all() as SqlRow[]
  }

  /** Writes a file's row, replacing the one it had. */
  insert (item: Item): void {
    const m = item.manifest
    this.insertStmt.run(item.md5, m.sha256, m.size, m.chunkSize, m.chunks.length, item.bitmap, item.manifestBytes, item.name, item.state,
      item.pinned ? 1 : 0, item.lastUsed, item.addedAt)
  }

  delete (md5: string): void {
    this.deleteStmt.run(md5)
  }

  setBitmap (md5: string, bitmap: Uint8Array): void {
    this.bitmapStmt.run(bitmap, md5)
  }

  /** A file made complete: its state, its (full) bitmap, its lastUsed. */
  setComplete (md5: string, bitmap: Uint8Array, lastUsed: number): void {
    this.completeStmt.run(bitmap, lastUsed, md5)
  }

  setPinned (md5: string, pinned: boolean, lastUsed: number): void {
    this.pinStmt.run(pinned ? 1 : 0, lastUsed, md5)
  }

  setLastUsed (md5: string, lastUsed: number): void {
    this.lastUsedStmt.run(lastUsed, md5)
  }
}
