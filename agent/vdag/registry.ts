import { z } from 'zod'
import type { DesiredState } from '../state/replica.ts'
import { NotFoundError, ValidationError } from '../errors.ts'
import { ConflictError, GenerationDefaultsSchema, TokenizerSchema } from '../registry/components.ts'
import type { VdagReport } from '../../mesh/capacity/record.ts'

const slug = z.string().min(1).max(64).regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-", starting with a letter or digit')

/**
 * A vDAG (seed 002): blocks as nodes, tensor flow as edges, served under one
 * model name. Pipelines are chains: every node but the first has one edge in,
 * every node but the last one edge out.
 */
export const VdagSpecSchema = z.object({
  name: slug,
  description: z.string().max(2000).optional(),
  nodes: z.array(z.object({ id: slug, block: slug }).strict()).min(1).max(32),
  edges: z.array(z.object({ from: slug, to: slug }).strict()).max(31),
  /** positions the served model supports (default: the first stage's component) */
  contextLength: z.number().int().min(16).max(1_048_576).optional(),
  tokenizer: TokenizerSchema.default({ type: 'byte' }),
  defaults: GenerationDefaultsSchema.default({ maxTokens: 256, temperature: 0.7, topP: 0.95 })
}).strict()
export type VdagSpec = z.output<typeof VdagSpecSchema>
export type VdagSpecInput = z.input<typeof VdagSpecSchema>

/** The stage blocks of a chain vDAG, in order; throws ValidationError when the edges are not one chain over all nodes. */
export function chainOrder (spec: Pick<VdagSpec, 'nodes' | 'edges'>): string[] {
  const ids = spec.nodes.map(n => n.id)
  if (new Set(ids).size !== ids.length) throw new ValidationError('vDAG node ids must be unique', [{ field: 'nodes', message: 'duplicate id' }])
  const next = new Map<string, string>()
  const into = new Map<string, number>()
  for (const e of spec.edges) {
    if (!ids.includes(e.from) || !ids.includes(e.to)) throw new ValidationError(`edge ${e.from} → ${e.to} names an unknown node`, [{ field: 'edges', message: 'unknown node' }])
    if (next.has(e.from)) throw new ValidationError(`node ${e.from} has two outgoing edges; a pipeline is a chain`, [{ field: 'edges', message: 'not a chain' }])
    next.set(e.from, e.to)
    into.set(e.to, (into.get(e.to) ?? 0) + 1)
  }
  const starts = ids.filter(id => !into.has(id))
  if (starts.length !== 1 || [...into.values()].some(n => n > 1)) throw new ValidationError('the edges must chain every node once, from one first node', [{ field: 'edges', message: 'not a chain' }])
  const order: string[] = []
  for (let at: string | undefined = starts[0]; at != null && order.length <= ids.length; at = next.get(at)) order.push(at)
  if (order.length !== ids.length) throw new ValidationError('the edges must chain every node once (a cycle or a gap)', [{ field: 'edges', message: 'not a chain' }])
  const blockOf = new Map(spec.nodes.map(n => [n.id, n.block]))
  return order.map(id => blockOf.get(id) as string)
}

export interface Vdag { name: string, spec: VdagSpec, stages: string[], contextLength: number, createdAt: string }

/**
 * vDAGs, in the mesh's replicated desired state (agent/state): any agent serves a vDAG, whoever created it.
 * Every request asks whether its model is a vDAG (the router reads reports() for each), so the stored
 * specs are parsed with zod once per change of the vDAGs, not per call: list, the by-name index and the
 * reports are kept until the desired state changes a `vdags/` key.
 */
export class VdagStore {
  private readonly state: DesiredState
  private cached: { list: Vdag[], byName: Map<string, Vdag>, reports: VdagReport[] } | null = null
  constructor (state: DesiredState) {
    this.state = state
    state.onChange(keys => { if (keys.some(k => k.startsWith('vdags/'))) this.cached = null })
  }

  async create (spec: VdagSpec, contextLength: number): Promise<Vdag> {
    const stages = chainOrder(spec)
    const e = await this.state.put('vdags', spec.name, { ...spec, contextLength }, current => {
      if (current != null) throw new ConflictError(`vDAG ${spec.name} exists`)
    })
    return { name: spec.name, spec: { ...spec, contextLength }, stages, contextLength, createdAt: new Date(e.created).toISOString() }
  }

  /** Every valid vDAG (a stored one that fails today's schema is skipped), parsed once per change. */
  list (): Vdag[] {
    return this.current().list
  }

  find (name: string): Vdag | undefined {
    return this.current().byName.get(name)
  }

  get (name: string): Vdag {
    const v = this.find(name)
    if (v == null) throw new NotFoundError(`no vDAG ${name}`)
    return v
  }

  async delete (name: string): Promise<void> {
    this.get(name)
    await this.state.remove('vdags', name)
  }

  /** What the capacity record and the router carry of each vDAG (shared arrays: do not change them). */
  reports (): VdagReport[] {
    return this.current().reports
  }

  private current (): NonNullable<VdagStore['cached']> {
    if (this.cached != null) return this.cached
    const list = this.state.list<unknown>('vdags').flatMap(e => {
      const parsed = VdagSpecSchema.safeParse(e.value)
      if (!parsed.success) return []
      try {
        return [{ name: e.id, spec: parsed.data, stages: chainOrder(parsed.data), contextLength: parsed.data.contextLength as number, createdAt: new Date(e.created).toISOString() }]
      } catch { return [] }
    })
    const reports = list.map(v => ({ name: v.name, stages: v.stages, contextLength: v.contextLength, ...(v.spec.tokenizer.type === 'bundle' && v.spec.tokenizer.url.length <= 1024 ? { tokenizer: v.spec.tokenizer } : {}) }))
    this.cached = { list, byName: new Map(list.map(v => [v.name, v])), reports }
    return this.cached
  }
}
