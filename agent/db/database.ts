import Database from 'better-sqlite3'
import type { Database as Db } from 'better-sqlite3'
import { MIGRATIONS } from './migrations.ts'
import type { Migration } from './migrations.ts'

export type { Db }

/** Opens (creating if needed) the agent's SQLite file in WAL mode and applies pending migrations. */
export function openDatabase (path: string, migrations: Migration[] = MIGRATIONS): Db {
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = NORMAL')
  db.pragma('foreign_keys = ON')
  db.pragma('busy_timeout = 5000')
  migrate(db, migrations)
  return db
}

export function migrate (db: Db, migrations: Migration[]): number[] {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`)
  const applied = new Set(db.prepare('SELECT version FROM schema_migrations').pluck().all() as number[])
  const done: number[] = []
  const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)')
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (applied.has(m.version)) continue
    db.transaction(() => {
      db.exec(m.sql)
      record.run(m.version, m.name, Date.now())
    })()
    done.push(m.version)
  }
  return done
}

export function schemaVersion (db: Db): number {
  return (db.prepare('SELECT MAX(version) FROM schema_migrations').pluck().get() as number | null) ?? 0
}

export class MetaStore {
  private readonly db: Db
  constructor (db: Db) { this.db = db }

  get (key: string): string | undefined {
    return this.db.prepare('SELECT value FROM meta WHERE key = ?').pluck().get(key) as string | undefined
  }

  set (key: string, value: string): void {
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value)
  }

  /** Increments and returns a persisted counter (e.g. the boot epoch). */
  increment (key: string): number {
    return this.db.transaction(() => {
      const next = Number(this.get(key) ?? '0') + 1
      this.set(key, String(next))
      return next
    })()
  }
}
