import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import type { Db } from '../db/database.ts'
import { NotFoundError } from '../errors.ts'
import { ConflictError } from './components.ts'
import { AutoscalingSchema, LoadBalancingSchema, PolicySchema } from '../scheduler/policy.ts'

export const BLOCK_STATUSES = ['pending', 'loading', 'ready', 'failed'] as const
export type BlockStatus = typeof BLOCK_STATUSES[number]

/**
 * A block: a running instance of a component (seed 000). Its id is also the
 * model name clients use on the OpenAI-compatible API.
 */
export const BlockSpecSchema = z.object({
  id: z.string().min(1).max(64).regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-", starting with a letter or digit').optional(),
  /** component URI, name:version */
  component: z.string().min(3).max(130).regex(/^[^:\s]+:[^:\s]+$/, 'name:version'),
  /** where instances may run: cluster and node filters (absent: anywhere, this agent first) */
  policy: PolicySchema.default({ cluster: {}, node: {} }),
  /** blocks whose nodes this block's instances stay off (the stages of one vDAG on different peers) */
  avoid: z.array(z.string().min(1).max(64)).max(32).default([]),
  minInstances: z.number().int().min(0).max(1024).default(1),
  maxInstances: z.number().int().min(1).max(1024).default(1),
  autoscaling: AutoscalingSchema.optional(),
  loadBalancing: LoadBalancingSchema.default({ strategy: 'round-robin', sessionAffinity: true, sessionTtl: 600 }),
  executionProvider: z.enum(['auto', 'cpu', 'cuda', 'webgpu']).default('auto'),
  /** sequences decoded together in one step */
  maxBatch: z.number().int().min(1).max(256).default(8),
  /** ONNX Runtime intra-op threads; 0 = auto (see autoThreads) */
  threads: z.number().int().min(0).max(1024).default(0),
  /** handed to the block as it starts (seed 000: blockInitData) */
  blockInitData: z.record(z.string().max(128), z.unknown()).default({})
}).strict().refine(b => b.minInstances <= b.maxInstances, { message: 'minInstances must not exceed maxInstances', path: ['minInstances'] })
export type BlockSpec = z.output<typeof BlockSpecSchema> & { id: string }
export type BlockSpecInput = z.input<typeof BlockSpecSchema>

/** What ran the block, once loaded: the execution provider and why. */
export interface BlockRuntime {
  provider: string
  providerTried: Array<{ name: string, error: string }>
  modelPath: string
  modelBytes: number
  loadMs: number
  /** ONNX Runtime intra-op threads the session uses (0: ONNX Runtime's default, all cores) */
  threads: number
}

export interface BlockRecord {
  id: string
  component: string
  spec: BlockSpec
  status: BlockStatus
  error: string | null
  runtime: BlockRuntime | null
  createdAt: string
  updatedAt: string
}

interface Row { id: string, component_uri: string, spec: string, status: BlockStatus, error: string | null, runtime: string | null, created_at: number, updated_at: number }

/** A stored spec with today's defaults filled in (a spec stored by an older agent may lack newer fields). */
function specOf (r: Row): BlockSpec {
  const raw = JSON.parse(r.spec) as Record<string, unknown>
  const parsed = BlockSpecSchema.safeParse(raw)
  return (parsed.success ? { ...parsed.data, id: r.id } : raw) as BlockSpec
}

function toRecord (r: Row): BlockRecord {
  return {
    id: r.id,
    component: r.component_uri,
    spec: specOf(r),
    status: r.status,
    error: r.error,
    runtime: r.runtime == null ? null : JSON.parse(r.runtime) as BlockRuntime,
    createdAt: new Date(r.created_at).toISOString(),
    updatedAt: new Date(r.updated_at).toISOString()
  }
}

export function newBlockId (componentName: string): string {
  return `${componentName.slice(0, 55)}-${randomBytes(3).toString('hex')}`
}

/** Blocks of this agent in SQLite (table blocks): desired state plus last known status. */
export class BlockStore {
  private readonly db: Db
  constructor (db: Db) { this.db = db }

  insert (spec: BlockSpec): BlockRecord {
    const now = Date.now()
    try {
      this.db.prepare('INSERT INTO blocks (id, component_uri, spec, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)')
        .run(spec.id, spec.component, JSON.stringify(spec), 'pending', now, now)
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new ConflictError(`block ${spec.id} exists`)
      throw err
    }
    return this.get(spec.id)
  }

  get (id: string): BlockRecord {
    const row = this.db.prepare('SELECT * FROM blocks WHERE id = ?').get(id) as Row | undefined
    if (row == null) throw new NotFoundError(`no block ${id}`)
    return toRecord(row)
  }

  find (id: string): BlockRecord | undefined {
    const row = this.db.prepare('SELECT * FROM blocks WHERE id = ?').get(id) as Row | undefined
    return row == null ? undefined : toRecord(row)
  }

  list (): BlockRecord[] {
    return (this.db.prepare('SELECT * FROM blocks ORDER BY created_at, id').all() as Row[]).map(toRecord)
  }

  setStatus (id: string, status: BlockStatus, fields: { error?: string | null, runtime?: BlockRuntime | null } = {}): void {
    this.db.prepare(`UPDATE blocks SET status = ?, error = ?, runtime = COALESCE(?, runtime), updated_at = ? WHERE id = ?`)
      .run(status, fields.error ?? null, fields.runtime === undefined ? null : JSON.stringify(fields.runtime), Date.now(), id)
  }

  delete (id: string): void {
    this.db.prepare('DELETE FROM blocks WHERE id = ?').run(id)
  }
}
