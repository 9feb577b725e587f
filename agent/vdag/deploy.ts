import type { BlockOwner } from '../blocks/owner.ts'
import type { Router } from '../blocks/router.ts'
import type { ComponentRegistry } from '../registry/components.ts'
import { ComponentSpecSchema, ConflictError, componentUri } from '../registry/components.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { InstanceHost } from '../blocks/host.ts'
import { VdagSpecSchema } from './registry.ts'
import { BlockSpecSchema } from '../registry/blocks.ts'
import type { Vdag, VdagStore } from './registry.ts'
import type { ModelPlan } from '../splitter/plan.ts'
import { ValidationError } from '../errors.ts'

export interface BlockMatch { block: string, component: string, peerId: string, status: string, owner: string }

/**
 * Blocks in the mesh running component `uri` (seed: Blocks.query). The
 * component's version is the stage file's MD5 prefix, and its model MD5 is
 * checked where this agent knows the component; `hash` must match it.
 */
export function queryBlocks (deps: { gossip: CapacityGossip, host: InstanceHost, components: ComponentRegistry }, uri?: string, hash?: string): BlockMatch[] {
  const out: BlockMatch[] = []
  const matches = (component: string): boolean => {
    if (uri != null && component !== uri) return false
    if (hash == null) return true
    try {
      return deps.components.get(component).spec.model?.md5 === hash.toLowerCase()
    } catch {
      return component.split(':')[1] != null && hash.toLowerCase().startsWith(component.split(':')[1])
    }
  }
  const self = deps.gossip.localRecord()
  for (const r of deps.host.reports()) if (matches(r.component)) out.push({ block: r.block, component: r.component, peerId: self?.peerId ?? '', status: r.status, owner: r.owner })
  for (const p of deps.gossip.peers()) {
    if (p.status !== 'live') continue
    for (const r of p.record.instances) if (matches(r.component)) out.push({ block: r.block, component: r.component, peerId: p.record.peerId, status: r.status, owner: r.owner })
  }
  return out
}

export interface DeployResult { vdag: Vdag, blocks: Array<{ id: string, reused: boolean }> }

/**
 * Deploys a model plan: registers the stage components, places one block
 * per stage (each avoiding the others' hosts) — or reuses a block already
 * running the same stage file (same component, same MD5) — and creates the
 * vDAG that chains them.
 */
export async function deployPlan (plan: ModelPlan, deps: { owner: BlockOwner, components: ComponentRegistry, vdags: VdagStore, router: Router, gossip: CapacityGossip, host: InstanceHost }, opts: { vdagName?: string } = {}): Promise<DeployResult> {
  if (!Array.isArray(plan.components) || !Array.isArray(plan.blocks) || plan.vdag == null) throw new ValidationError('not a model plan: components, blocks and vdag are required')
  if (plan.blocks.length !== plan.components.length) throw new ValidationError(`not a model plan: ${plan.components.length} components but ${plan.blocks.length} blocks`)
  // everything is checked before anything is written: a bad stage must not leave the good ones behind
  const issues = (e: { issues: Array<{ path: PropertyKey[], message: string }> }): string => e.issues.map(x => `${x.path.map(String).join('.')}: ${x.message}`).join('; ')
  const stages = plan.components.map((raw, i) => {
    const parsed = ComponentSpecSchema.safeParse(raw)
    if (!parsed.success) throw new ValidationError(`plan component ${i}: ${issues(parsed.error)}`)
    const uri = componentUri(parsed.data)
    const block = BlockSpecSchema.safeParse({ ...(plan.blocks[i] as object), component: uri })
    if (!block.success) throw new ValidationError(`plan block ${i}: ${issues(block.error)}`)
    return { spec: parsed.data, uri, block: block.data }
  })
  const vdagOf = (ids: string[]): ReturnType<typeof VdagSpecSchema.safeParse> => VdagSpecSchema.safeParse({
    name: opts.vdagName ?? plan.vdag.name,
    nodes: ids.map((block, i) => ({ id: `s${i}`, block })),
    edges: ids.slice(1).map((_, i) => ({ from: `s${i}`, to: `s${i + 1}` })),
    contextLength: plan.vdag.contextLength,
    tokenizer: plan.vdag.tokenizer
  })
  const planned = vdagOf(stages.map((st, i) => st.block.id ?? `stage-${i}`))
  if (!planned.success) throw new ValidationError(`plan vdag: ${issues(planned.error)}`)
  const ids: string[] = []
  const blocks: DeployResult['blocks'] = []
  for (const [i, { spec, uri, block }] of stages.entries()) {
    try {
      await deps.components.create(spec)
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err
      if (deps.components.get(uri).spec.model?.md5 !== spec.model?.md5) throw new ConflictError(`component ${uri} exists with another model file`)
    }
    const running = queryBlocks(deps, uri, spec.model?.md5).find(b => b.status === 'ready' || b.status === 'loading')
    if (running != null) {
      ids.push(running.block)
      blocks.push({ id: running.block, reused: true })
      continue
    }
    if (block.id != null && deps.owner.has(block.id)) {
      ids.push(block.id)
      blocks.push({ id: block.id, reused: true })
      continue
    }
    const b = await deps.owner.create({ ...(plan.blocks[i] as object), component: uri } as Parameters<BlockOwner['create']>[0])
    ids.push(b.id)
    blocks.push({ id: b.id, reused: false })
  }
  const final = vdagOf(ids)
  if (!final.success) throw new ValidationError(`plan vdag: ${issues(final.error)}`)
  return { vdag: await deps.vdags.create(final.data, final.data.contextLength as number), blocks }
}
