import { MetaStore } from '../db/database.ts'
import type { Db } from '../db/database.ts'
import type { DesiredState } from './replica.ts'

/**
 * Once, on the first start of an agent whose SQLite file predates the replicated desired state: its
 * components, blocks and vDAGs (the tables that held them on this agent only) are written into the
 * desired state, so an upgraded agent keeps them and the mesh learns of them. Returns how many.
 */
export async function importLegacyTables (db: Db, state: DesiredState, self: string): Promise<number> {
  if (state.changes() > 0) return 0
  let n = 0
  const components = db.prepare('SELECT uri, spec FROM components ORDER BY created_at').all() as Array<{ uri: string, spec: string }>
  for (const c of components) { await state.put('components', c.uri, JSON.parse(c.spec)); n++ }
  const blocks = db.prepare('SELECT id, spec, target FROM blocks ORDER BY created_at').all() as Array<{ id: string, spec: string, target: number | null }>
  for (const b of blocks) { await state.put('blocks', b.id, { spec: { ...JSON.parse(b.spec), id: b.id }, target: b.target, createdBy: self }); n++ }
  const vdags = db.prepare('SELECT name, spec FROM vdags ORDER BY created_at').all() as Array<{ name: string, spec: string }>
  for (const v of vdags) { await state.put('vdags', v.name, JSON.parse(v.spec)); n++ }
  if (n > 0) {
    // the old tables stay as they were (a downgrade still finds them); the desired state is the truth from now on
    new MetaStore(db).set('legacy_imported', String(Date.now()))
  }
  return n
}
