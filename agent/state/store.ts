import type { Db } from '../db/database.ts'

export interface StoredChange { hash: string, actor: string, seq: number, writer: string, frame: Uint8Array }

/** The signed changes of the desired state in SQLite (table state_changes), in the order they were applied here. */
export class ChangeStore {
  private readonly db: Db
  private readonly insertStmt
  private readonly allStmt
  private readonly countStmt
  constructor (db: Db) {
    this.db = db
    this.insertStmt = db.prepare('INSERT OR IGNORE INTO state_changes (hash, actor, seq, writer, frame, received_at) VALUES (?, ?, ?, ?, ?, ?)')
    this.allStmt = db.prepare('SELECT hash, actor, seq, writer, frame FROM state_changes ORDER BY rowid')
    this.countStmt = db.prepare('SELECT COUNT(*) FROM state_changes').pluck()
  }

  /** Stores a change (once: a hash already stored is ignored); returns whether it was new. */
  add (c: StoredChange): boolean {
    return this.insertStmt.run(c.hash, c.actor, c.seq, c.writer, Buffer.from(c.frame), Date.now()).changes === 1
  }

  /** Every change in application order (causal: a change is stored only after its dependencies). */
  all (): StoredChange[] {
    return (this.allStmt.all() as Array<{ hash: string, actor: string, seq: number, writer: string, frame: Buffer }>)
      .map(r => ({ hash: r.hash, actor: r.actor, seq: r.seq, writer: r.writer, frame: new Uint8Array(r.frame) }))
  }

  count (): number {
    return this.countStmt.get() as number
  }

  /** Changes a peer lacks, given what it has of each actor (highest seq), in application order, within a byte budget. */
  missing (have: ReadonlyMap<string, number>, budgetBytes: number, maxCount: number): { frames: Uint8Array[], more: boolean } {
    const frames: Uint8Array[] = []
    let bytes = 0
    for (const r of this.allStmt.iterate() as Iterable<{ actor: string, seq: number, frame: Buffer }>) {
      if (r.seq <= (have.get(r.actor) ?? 0)) continue
      if (frames.length >= maxCount || (frames.length > 0 && bytes + r.frame.length > budgetBytes)) return { frames, more: true }
      frames.push(new Uint8Array(r.frame))
      bytes += r.frame.length
    }
    return { frames, more: false }
  }

  /** Runs fn in one transaction. */
  transaction<T> (fn: () => T): T {
    return this.db.transaction(fn)()
  }
}
