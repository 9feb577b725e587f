import type { Statement } from 'better-sqlite3'
import type { Db } from '../db/database.ts'
import { componentUri } from '../registry/components.ts'
import type { ComponentSpec } from '../registry/components.ts'
import type { BlockRuntime, BlockSpec, BlockStatus } from '../registry/blocks.ts'

/** One instance stored on this agent, as the `hosted` table holds it, with its JSON columns parsed once. */
export interface HostedRow {
  block: string
  instance: string
  owner: string
  spec: BlockSpec
  component: ComponentSpec
  /** the component's URI (name:version) */
  uri: string
  status: BlockStatus
  error: string | null
  runtime: BlockRuntime | null
  term: number
  createdAt: number
}

interface SqlRow { block_id: string, instance_id: string, owner: string, spec: string, component: string, status: BlockStatus, error: string | null, runtime: string | null, term: number, created_at: number }

/**
 * The instances this agent runs (table `hosted`), written through to SQLite and read from memory: the
 * router asks for them on every request (InstanceHost.reports, serving), and the table only changes
 * when an instance is assigned, changes status or stops. One writer (this agent), so the copy in
 * memory is the table. Statements are prepared once.
 */
export class HostedStore {
  private readonly rows = new Map<string, HostedRow>()
  private readonly upsertStmt: Statement
  private readonly deleteStmt: Statement
  private readonly statusStmt: Statement

  constructor (db: Db) {
    for (const r of db.prepare('SELECT * FROM hosted ORDER BY created_at').all() as SqlRow[]) this.rows.set(r.block_id, fromSql(r))
    this.upsertStmt = db.prepare(`INSERT INTO hosted (block_id, instance_id, owner, spec, component, status, error, runtime, created_at, updated_at, term)
      VALUES (?, ?, ?, ?, ?, 'pending', NULL, NULL, ?, ?, ?)
      ON CONFLICT(block_id) DO UPDATE SET instance_id = excluded.instance_id, owner = excluded.owner, spec = excluded.spec,
        component = excluded.component, status = 'pending', error = NULL, runtime = NULL, updated_at = excluded.updated_at, term = excluded.term`)
    this.deleteStmt = db.prepare('DELETE FROM hosted WHERE block_id = ? AND instance_id = ?')
    this.statusStmt = db.prepare('UPDATE hosted SET status = ?, error = ?, runtime = COALESCE(?, runtime), updated_at = ? WHERE block_id = ? AND instance_id = ?')
  }

  get (block: string): HostedRow | undefined {
    return this.rows.get(block)
  }

  /** Every stored instance, oldest assignment first. */
  all (): HostedRow[] {
    return [...this.rows.values()].sort((a, b) => a.createdAt - b.createdAt)
  }

  /** Stores an assignment (replacing the block's previous instance here), pending. */
  assign (a: { block: string, instance: string, owner: string, spec: BlockSpec, component: ComponentSpec, term: number }): HostedRow {
    const now = Date.now()
    const before = this.rows.get(a.block)
    this.upsertStmt.run(a.block, a.instance, a.owner, JSON.stringify(a.spec), JSON.stringify(a.component), now, now, a.term)
    // ON CONFLICT keeps created_at
    const row: HostedRow = { block: a.block, instance: a.instance, owner: a.owner, spec: a.spec, component: a.component, uri: componentUri(a.component), status: 'pending', error: null, runtime: null, term: a.term, createdAt: before?.createdAt ?? now }
    this.rows.set(a.block, row)
    return row
  }

  remove (block: string, instance: string): void {
    this.deleteStmt.run(block, instance)
    if (this.rows.get(block)?.instance === instance) this.rows.delete(block)
  }

  setStatus (block: string, instance: string, status: BlockStatus, fields: { error?: string | null, runtime?: BlockRuntime } = {}): void {
    this.statusStmt.run(status, fields.error ?? null, fields.runtime == null ? null : JSON.stringify(fields.runtime), Date.now(), block, instance)
    const row = this.rows.get(block)
    if (row == null || row.instance !== instance) return
    this.rows.set(block, { ...row, status, error: fields.error ?? null, runtime: fields.runtime ?? row.runtime })
  }
}

function fromSql (r: SqlRow): HostedRow {
  const component = JSON.parse(r.component) as ComponentSpec
  return {
    block: r.block_id,
    instance: r.instance_id,
    owner: r.owner,
    spec: JSON.parse(r.spec) as BlockSpec,
    component,
    uri: componentUri(component),
    status: r.status,
    error: r.error,
    runtime: r.runtime == null ? null : JSON.parse(r.runtime) as BlockRuntime,
    term: r.term,
    createdAt: r.created_at
  }
}
