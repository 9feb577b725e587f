/**
 * ML services (seed 004's MLService) in the replicated desired state (collection `mlservices`): a template
 * version deployed under a name, and where that name is served now.
 *
 * A service's name is what clients ask for (`model` on /v1). The deployment behind it, its *unit*, is a
 * block (a whole model) or a vDAG (a split one). The first deployment's unit has the service's own name; a
 * rollout to another version deploys a new unit (`NAME-vN`) beside it, and once that is ready the service's
 * `target` moves to it: every agent's router sends the name there from then on (ServiceStore.targets, kept in
 * memory and renewed when the collection changes, never read from SQLite per request). The old unit is then
 * deleted; its hosts drain it (requests in flight finish, new ones go to the new unit) before it unloads.
 */
import { z } from 'zod'
import type { DesiredState, Entry } from '../state/replica.ts'
import { NotFoundError } from '../errors.ts'

const UNIT = z.string().min(1).max(64).regex(/^[a-z0-9][a-z0-9._-]*$/)

export const RolloutPhaseSchema = z.enum(['starting', 'draining', 'done', 'failed'])
export type RolloutPhase = z.infer<typeof RolloutPhaseSchema>

/** One rollout of a service from a version to another: what ran where, and how far it got. */
export const RolloutSchema = z.object({
  from: z.object({ version: z.string().max(200), unit: UNIT }),
  to: z.object({ version: z.string().max(200), unit: UNIT }),
  /**
   * starting: the new unit is being deployed and loaded, the service still answers from the old one;
   * draining: the service answers from the new unit, the old one finishes its requests in flight, then stops;
   * done; failed: the new unit never became ready (removed again), the service stayed on the old one.
   */
  phase: RolloutPhaseSchema,
  /** peer ID of the agent that runs the rollout */
  by: z.string().max(100),
  startedAt: z.string(),
  switchedAt: z.string().nullable().default(null),
  finishedAt: z.string().nullable().default(null),
  error: z.string().max(2000).nullable().default(null),
  /** a split deployment's split task */
  task: z.string().max(100).nullable().default(null)
})
export type Rollout = z.infer<typeof RolloutSchema>

export const ServiceRecordSchema = z.object({
  name: UNIT,
  namespace: z.string().max(253).default('default'),
  modelTemplateVersionRef: z.object({ name: z.string().max(200), namespace: z.string().max(253).optional() }),
  /** NAME-vN the service runs (during a rollout: until the switch, the old one) */
  version: z.string().max(200),
  deployed: z.boolean(),
  decision: z.enum(['whole', 'split', 'refused']).nullable(),
  /** the seed's MLService manifest it was made from (null: `template deploy`) */
  manifest: z.unknown().default(null),
  explanation: z.array(z.object({ field: z.string(), status: z.enum(['honoured', 'recorded', 'ignored', 'unsupported']), note: z.string() })).default([]),
  /** instances of each new version's unit (the service's scale; absent: the version's deploymentConfig) */
  replicas: z.number().int().min(1).max(1024).optional(),
  maxReplicas: z.number().int().min(1).max(1024).optional(),
  /** the unit (block or vDAG) that serves the name now; records written before rollouts existed: the name itself */
  target: UNIT.optional(),
  rollout: RolloutSchema.nullable().default(null)
})
export type ServiceRecord = z.output<typeof ServiceRecordSchema> & { target: string }
export type ServiceRecordInput = z.input<typeof ServiceRecordSchema>

/** A stored service with when it was created. */
export interface ServiceEntry { record: ServiceRecord, createdAt: string }

function parse (e: Entry<unknown>): ServiceRecord | null {
  const r = ServiceRecordSchema.safeParse(e.value)
  if (!r.success) return null
  return { ...r.data, target: r.data.target ?? r.data.name }
}

/** The `mlservices` collection, and the names it routes (service name → unit) for the request path. */
export class ServiceStore {
  private readonly state: DesiredState
  private routes: Map<string, string> | null = null
  private switchedFrom: Map<string, string> | null = null
  private readonly unsubscribe: () => void

  constructor (state: DesiredState) {
    this.state = state
    this.unsubscribe = state.onChange(keys => {
      if (keys.some(k => k.startsWith('mlservices/'))) { this.routes = null; this.switchedFrom = null }
    })
  }

  close (): void {
    this.unsubscribe()
  }

  list (): ServiceEntry[] {
    return this.state.list<unknown>('mlservices').flatMap(e => {
      const record = parse(e)
      return record == null ? [] : [{ record, createdAt: new Date(e.created).toISOString() }]
    })
  }

  find (name: string): ServiceRecord | undefined {
    return this.entry(name)?.record
  }

  /** A stored service with when it was created (undefined: none, or not a valid record). */
  entry (name: string): ServiceEntry | undefined {
    const e = this.state.get<unknown>('mlservices', name)
    const record = e == null ? null : parse(e)
    return record == null || e == null ? undefined : { record, createdAt: new Date(e.created).toISOString() }
  }

  get (name: string): ServiceRecord {
    const s = this.find(name)
    if (s == null) throw new NotFoundError(`no service ${name}`)
    return s
  }

  has (name: string): boolean {
    return this.state.get('mlservices', name) != null
  }

  /** Writes a service (validated); `check` runs against the current record inside the write lock. */
  async put (input: ServiceRecordInput, check?: (current: ServiceRecord | undefined) => void): Promise<ServiceRecord> {
    const value = ServiceRecordSchema.parse(input)
    await this.state.put('mlservices', value.name, value, current => { check?.(current == null ? undefined : parse(current as Entry<unknown>) ?? undefined) })
    return { ...value, target: value.target ?? value.name }
  }

  /** Changes a stored service: `change` gets the current record and returns the next (one writer per service: its rollout). */
  async update (name: string, change: (current: ServiceRecord) => ServiceRecordInput): Promise<ServiceRecord> {
    return await this.put(change(this.get(name)))
  }

  async remove (name: string): Promise<boolean> {
    return await this.state.remove('mlservices', name)
  }

  /** Service names whose unit is not the name itself (the router's aliases), renewed when the collection changes. */
  targets (): ReadonlyMap<string, string> {
    if (this.routes == null) {
      const m = new Map<string, string>()
      for (const { record } of this.list()) if (record.target !== record.name) m.set(record.name, record.target)
      this.routes = m
    }
    return this.routes
  }

  /**
   * Services switched to a new unit whose old unit is still being drained (rollout phase `draining`): name →
   * the old unit. An agent that has not yet seen an instance of the new unit ready (capacity records travel
   * on their own) sends the name there meanwhile (Router.resolve).
   */
  previousUnits (): ReadonlyMap<string, string> {
    if (this.switchedFrom == null) {
      const m = new Map<string, string>()
      for (const { record } of this.list()) {
        const r = record.rollout
        if (r != null && r.phase === 'draining' && r.from.unit !== record.target) m.set(record.name, r.from.unit)
      }
      this.switchedFrom = m
    }
    return this.switchedFrom
  }
}
