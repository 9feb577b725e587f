import type { Statement } from 'better-sqlite3'
import { CapacityRecordSchema } from '../../mesh/capacity/record.ts'
import type { CapacityRecord } from '../../mesh/capacity/record.ts'
import type { Db } from './database.ts'

/** Persists the last record heard from each peer, so a restarted agent can find the mesh again. */
export class PeerStore {
  private readonly db: Db
  private readonly upsert: Statement
  private readonly prune: Statement
  /** rows kept: the most recently seen peers (identities cost nothing to make) */
  readonly maxRows: number
  constructor (db: Db, maxRows = 4096) {
    this.maxRows = maxRows
    this.db = db
    // prepared once: the agent writes peers every few seconds
    this.upsert = db.prepare(`INSERT INTO peers (peer_id, name, cluster, record, last_seen) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT(peer_id) DO UPDATE SET name = excluded.name, cluster = excluded.cluster, record = excluded.record, last_seen = excluded.last_seen
      WHERE excluded.last_seen >= peers.last_seen`)
    this.prune = db.prepare('DELETE FROM peers WHERE peer_id NOT IN (SELECT peer_id FROM peers ORDER BY last_seen DESC LIMIT ?)')
  }

  saveAll (entries: Array<{ record: CapacityRecord, lastSeen: number }>): void {
    this.db.transaction(() => {
      for (const { record, lastSeen } of entries) {
        this.upsert.run(record.peerId, record.name, record.cluster, JSON.stringify(record), lastSeen)
      }
      this.prune.run(this.maxRows)
    })()
  }

  /** Peers seen since `since` (ms), newest first; rows that no longer parse are skipped. */
  load (since = 0, limit = 1024): Array<{ record: CapacityRecord, lastSeen: number }> {
    const rows = this.db.prepare('SELECT record, last_seen AS lastSeen FROM peers WHERE last_seen >= ? ORDER BY last_seen DESC LIMIT ?')
      .all(since, limit) as Array<{ record: string, lastSeen: number }>
    const out: Array<{ record: CapacityRecord, lastSeen: number }> = []
    for (const row of rows) {
      try {
        const parsed = CapacityRecordSchema.safeParse(JSON.parse(row.record))
        if (parsed.success) out.push({ record: parsed.data, lastSeen: row.lastSeen })
      } catch { /* a damaged row is ignored, never fatal */ }
    }
    return out
  }
}
