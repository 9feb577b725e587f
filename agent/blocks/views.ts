import type { InstanceReport, ReconcileReport } from '../../mesh/capacity/record.ts'
import type { BlockRecord, BlockRuntime, BlockSpec, BlockStatus } from '../registry/blocks.ts'
import type { Pending } from './ledger.ts'
import type { Refusal } from './outcomes.ts'
import type { StoredBlock } from './store.ts'

export type InstanceStatus = 'assigned' | 'loading' | 'ready' | 'failed' | 'lost'

export interface InstanceView {
  instance: string
  peerId: string
  peerName: string
  status: InstanceStatus
  error: string | null
  provider: string | null
  active: number
  queued: number
}

/** A block as any agent sees it: its spec from the desired state, its instances from the hosts' gossip. */
export interface BlockView extends BlockRecord {
  /** peer ID of the agent reconciling the block now (null while none is known) */
  owner: string | null
  /** who reconciles it, with the fence (term) it holds */
  reconciler: { peerId: string, name: string, term: number } | null
  /** peer ID of the agent it was created through */
  createdBy: string
  target: number
  instances: InstanceView[]
  /** the scheduler's last refusal, per filter, while the block lacks instances (known to its reconciler) */
  refusal: Refusal[] | null
  activeSequences: number
  queuedSequences: number
}

/** What a view is built from; structural, so this room depends on no other room's classes. */
export interface ViewSources {
  self: string
  selfName: () => string
  /** instances of the block the hosts report */
  reported: (block: string) => Array<{ peer: string, name: string, report: InstanceReport }>
  /** instances ordered and not reported yet */
  pending: Iterable<[string, Pending]>
  /** the term this agent holds as the block's reconciler (undefined: it does not reconcile it) */
  term: (block: string) => number | undefined
  /** the live peer claiming the block with the highest term */
  claimOf: (block: string) => { peerId: string, name: string, report: ReconcileReport } | undefined
  /** this agent's last word as reconciler */
  status: (block: string) => { status: BlockStatus, error: string | null } | undefined
  refusal: (block: string) => Refusal[] | undefined
  /** what ran the block's instance here, when one runs here */
  runtime: (block: string) => BlockRuntime | null | undefined
  target: (b: StoredBlock) => number
}

/**
 * A block's view for the API: its spec from the desired state; its instances from the hosts' reports plus
 * the ones assigned and not reported yet; who reconciles it (this agent, or the live agent that claims it
 * with the highest term); and its status: ready as soon as one instance is, else the reconciler's last word
 * (it knows refusals), else what the instances say.
 */
export function blockView (e: { id: string, value: StoredBlock, created: number, at: number }, s: ViewSources): BlockView {
  const b = e.value
  const id = e.id
  const instances: InstanceView[] = s.reported(id).map(({ peer, name, report }) => ({
    instance: report.instance,
    peerId: peer,
    peerName: name,
    status: report.status === 'pending' ? 'assigned' : report.status,
    error: report.error,
    provider: report.provider,
    active: report.active,
    queued: report.queued
  }))
  for (const [instance, p] of s.pending) {
    if (p.block === id && !instances.some(i => i.instance === instance)) {
      instances.push({ instance, peerId: p.peer, peerName: p.peerName, status: 'assigned', error: null, provider: null, active: 0, queued: 0 })
    }
  }
  let reconciler: BlockView['reconciler'] = null
  let remote: ReconcileReport | undefined
  const mine = s.term(id)
  if (mine != null) reconciler = { peerId: s.self, name: s.selfName(), term: mine }
  else {
    const claim = s.claimOf(id)
    if (claim != null) { reconciler = { peerId: claim.peerId, name: claim.name, term: claim.report.term }; remote = claim.report }
  }
  const own = s.status(id)
  const derived: BlockStatus = instances.some(i => i.status === 'ready') ? 'ready' : instances.some(i => i.status === 'assigned' || i.status === 'loading') ? 'loading' : 'pending'
  // a ready instance makes the block ready at once; otherwise the reconciler's last word (it knows refusals)
  const status = derived === 'ready' ? 'ready' : own?.status ?? remote?.status ?? derived
  const error = status === 'ready' ? null : own != null ? own.error : remote?.error ?? null
  const spec: BlockSpec = { ...b.spec, id }
  return {
    id,
    component: b.spec.component,
    spec,
    status,
    error,
    runtime: s.runtime(id) ?? null,
    createdAt: new Date(e.created).toISOString(),
    updatedAt: new Date(e.at).toISOString(),
    owner: reconciler?.peerId ?? null,
    reconciler,
    createdBy: b.createdBy,
    target: remote?.target ?? s.target(b),
    instances,
    refusal: s.refusal(id) ?? null,
    activeSequences: instances.reduce((sum, i) => sum + i.active, 0),
    queuedSequences: instances.reduce((sum, i) => sum + i.queued, 0)
  }
}
