import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { MeshNode } from '../../mesh/node.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { CapacityRecord, InstanceReport, ReconcileReport } from '../../mesh/capacity/record.ts'
import { requestJson } from '../../mesh/rpc.ts'
import { schedule } from '../scheduler/schedule.ts'
import type { NodeView, Placement } from '../scheduler/policy.ts'
import { nodeViewsFrom } from '../scheduler/nodes.ts'
import { BlockSpecSchema, newBlockId } from '../registry/blocks.ts'
import type { BlockRecord, BlockSpec, BlockSpecInput, BlockStatus } from '../registry/blocks.ts'
import { ConflictError } from '../registry/components.ts'
import type { ComponentRegistry, ComponentSpec } from '../registry/components.ts'
import type { InstanceHost } from './host.ts'
import { ASSIGN_PROTOCOL, AssignResponseSchema } from './assign.ts'
import type { AssignRequest, AssignResponse } from './assign.ts'
import { NotFoundError, ValidationError } from '../errors.ts'
import type { AgentMetrics } from '../metrics.ts'
import { Autoscaler, autoscaleMetric } from './autoscaler.ts'
import { reconcilerOf, seenTerms } from './election.ts'
import type { DesiredState, Entry } from '../state/replica.ts'

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
  refusal: Array<{ filter: string, message: string }> | null
  activeSequences: number
  queuedSequences: number
}

/** A block in the replicated desired state. */
interface StoredBlock { spec: BlockSpec, target: number | null, createdBy: string }

interface Pending { block: string, peer: string, peerName: string, at: number }

export interface BlockOwnerInit {
  state: DesiredState
  mesh: MeshNode
  gossip: CapacityGossip
  host: InstanceHost
  components: ComponentRegistry
  log: Logger
  metrics?: AgentMetrics
  /** whether placement may use GPUs that peers declare as simulated (--allow-simulated-gpus: demos and tests) */
  allowSimulatedGpus?: boolean
  /** an assigned instance that has not shown up in its host's gossip after this long is lost */
  showUpMs?: number
  /** a peer that refused or failed a block is not asked again for it for this long */
  excludeMs?: number
  /** an instance stopped to scale down or to restore anti-affinity may finish its sequences for this long */
  drainMs?: number
}

/**
 * Blocks of the whole mesh and their reconciliation.
 *
 * Every agent holds every block (the replicated desired state) and answers for it. Exactly one live agent
 * reconciles each block: the agent it was created through while that agent is live, otherwise the live
 * agent with the highest rendezvous weight (sha256 of block and peer ID). Every agent computes the same
 * choice from the same gossip, without a central node. The reconciler holds a fence, its term: one more
 * than any term seen for the block in gossip, carried in every order it sends; a host refuses orders from
 * a lower term than the one it holds, so a reconciler that lost its role (a partition, a slow view) cannot
 * undo the new one's work. A reconciler steps down as soon as it sees another live agent claim the block
 * with a higher term.
 *
 * The reconciler places missing instances on peers chosen by the scheduler (each peer re-checks and may
 * refuse), replaces lost and failed ones, stops extras (draining their sequences first), restores
 * anti-affinity by placing a replacement before stopping a crowded instance, and autoscales the target.
 * Instances are read from the hosts' gossip (the truth of what runs), so a new reconciler adopts what is
 * running without any hand-over message.
 */
export class BlockOwner {
  private readonly init: BlockOwnerInit
  private readonly state: DesiredState
  private readonly terms = new Map<string, number>()
  private readonly pending = new Map<string, Pending>()
  /** instances asked to stop (draining), not counted while they go, until the time given */
  private readonly stopping = new Map<string, number>()
  /** instances seen running at the last pass, to notice the ones that vanish with their host */
  private readonly seen = new Map<string, { block: string, peer: string, peerName: string }>()
  private readonly excluded = new Map<string, Map<string, number>>()
  private readonly refusals = new Map<string, Array<{ filter: string, message: string }>>()
  private readonly failures = new Map<string, string>()
  private readonly statuses = new Map<string, { status: BlockStatus, error: string | null }>()
  private readonly autoscaler = new Autoscaler()
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | null = null
  private queued: Promise<void> | null = null
  private stopped = true
  private settleUntil = 0
  private readonly unsubscribe: Array<() => void> = []

  constructor (init: BlockOwnerInit) {
    this.init = init
    this.state = init.state
  }

  private get self (): string { return this.init.mesh.peerId.toString() }

  /**
   * Starts the reconciliation loop (every heartbeat, and at once when a block changes). After a restart
   * with peers remembered, placement waits until they are back or `settleMs` passed, so a restarted mesh
   * does not crowd every block onto the first agent up.
   */
  start (opts: { settleMs?: number } = {}): void {
    this.stopped = false
    this.settleUntil = Date.now() + (opts.settleMs ?? 0)
    this.unsubscribe.push(this.state.onChange((keys) => {
      const blocks = keys.filter(k => k.startsWith('blocks/')).map(k => k.slice('blocks/'.length))
      if (blocks.length === 0) return
      for (const b of blocks) if (this.blockEntry(b) == null) void this.dropHosted(b)
      this.kick()
    }))
    const tick = (): void => {
      if (this.stopped) return
      void this.reconcileAll().finally(() => {
        if (!this.stopped) this.timer = setTimeout(tick, this.init.gossip.heartbeatMs)
      })
    }
    tick()
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    for (const u of this.unsubscribe.splice(0)) u()
    await this.running
  }

  private kick (): void {
    if (this.stopped) return
    setImmediate(() => { void this.reconcileAll() })
  }

  /** Stores a block in the desired state and, when this agent reconciles it, places its first instances. */
  async create (input: BlockSpecInput): Promise<BlockView> {
    const parsed = BlockSpecSchema.parse(input)
    const component = this.init.components.get(parsed.component)
    const spec: BlockSpec = { ...parsed, id: parsed.id ?? newBlockId(component.spec.name) }
    await this.state.put<StoredBlock>('blocks', spec.id, { spec, target: null, createdBy: this.self }, current => {
      if (current != null) throw new ConflictError(`block ${spec.id} already exists in the mesh; block ids are model names, pick another`)
    })
    this.init.log.info({ block: spec.id, component: spec.component }, 'block created')
    await this.reconcileAll()
    return this.get(spec.id)
  }

  list (): BlockView[] {
    return this.entries().map(e => this.view(e))
  }

  get (id: string): BlockView {
    const e = this.blockEntry(id)
    if (e == null) throw new NotFoundError(`no block ${id}`)
    return this.view(e)
  }

  has (id: string): boolean {
    return this.blockEntry(id) != null
  }

  /** Removes the block from the desired state; every host stops its instance when it learns of it. */
  async delete (id: string): Promise<void> {
    if (!await this.state.remove('blocks', id)) throw new NotFoundError(`no block ${id}`)
    await this.dropHosted(id)
    this.forget(id)
    this.init.log.info({ block: id }, 'block deleted')
  }

  /** Sets the number of instances (within minInstances..maxInstances); the reconciler follows. */
  async scale (id: string, instances: number): Promise<BlockView> {
    const e = this.blockEntry(id)
    if (e == null) throw new NotFoundError(`no block ${id}`)
    const { spec } = e.value
    if (instances < spec.minInstances || instances > spec.maxInstances) {
      throw new ValidationError(`instances must be between minInstances (${spec.minInstances}) and maxInstances (${spec.maxInstances}) of block ${id}`, [{ field: 'instances', message: `${spec.minInstances}-${spec.maxInstances}` }])
    }
    await this.setTarget(id, instances)
    this.init.log.info({ block: id, instances }, 'block scaled')
    await this.reconcileAll()
    return this.get(id)
  }

  /** Blocks this agent reconciles now, for its capacity record. */
  reports (): ReconcileReport[] {
    const out: ReconcileReport[] = []
    for (const [block, term] of this.terms) {
      const e = this.blockEntry(block)
      if (e == null) continue
      const s = this.statuses.get(block) ?? { status: 'pending' as const, error: null }
      out.push({ block, term, target: this.target(e.value), status: s.status, error: s.error?.slice(0, 200) ?? null })
    }
    return out
  }

  // ---- state

  private entries (): Array<Entry<StoredBlock>> {
    return this.state.list<StoredBlock>('blocks').filter(e => BlockSpecSchema.safeParse(e.value?.spec).success)
  }

  private blockEntry (id: string): Entry<StoredBlock> | undefined {
    const e = this.state.get<StoredBlock>('blocks', id)
    return e != null && BlockSpecSchema.safeParse(e.value?.spec).success ? e : undefined
  }

  private target (b: StoredBlock): number {
    return Math.min(b.spec.maxInstances, Math.max(b.spec.minInstances, b.target ?? b.spec.minInstances))
  }

  private async setTarget (id: string, n: number): Promise<void> {
    await this.state.put<StoredBlock>('blocks', id, { ...(this.blockEntry(id) as Entry<StoredBlock>).value, target: n }, current => {
      if (current == null) throw new NotFoundError(`no block ${id}`)
    })
  }

  private forget (id: string): void {
    this.terms.delete(id)
    this.refusals.delete(id)
    this.failures.delete(id)
    this.statuses.delete(id)
    this.autoscaler.forget(id)
    for (const [k, p] of this.pending) if (p.block === id) this.pending.delete(k)
    for (const [k, s] of this.seen) if (s.block === id) this.seen.delete(k)
  }

  /** A hosted instance whose block left the desired state is stopped here. */
  private async dropHosted (block: string): Promise<void> {
    if (this.blockEntry(block) != null || !this.init.host.has(block)) return
    this.init.log.info({ block }, 'block is gone from the desired state; stopping its instance here')
    await this.init.host.stop(block).catch((err: Error) => { this.init.log.warn({ block, err: err.message }, 'could not stop instance') })
  }

  /** Every live record, this agent's own first. */
  private records (): CapacityRecord[] {
    const out: CapacityRecord[] = []
    const own = this.init.gossip.localRecord()
    if (own != null) out.push(own)
    for (const p of this.init.gossip.peers()) if (p.status === 'live') out.push(p.record)
    return out
  }

  /** Instances of a block reported in the mesh: this agent's own (fresh) and live peers' (last heartbeat). */
  private reported (block: string): Array<{ peer: string, name: string, report: InstanceReport, record?: CapacityRecord }> {
    const out: Array<{ peer: string, name: string, report: InstanceReport, record?: CapacityRecord }> = []
    const own = this.init.gossip.localRecord()
    for (const r of this.init.host.reports()) if (r.block === block) out.push({ peer: this.self, name: own?.name ?? 'self', report: r, record: own })
    for (const p of this.init.gossip.peers()) {
      if (p.status !== 'live') continue
      for (const r of p.record.instances) if (r.block === block) out.push({ peer: p.record.peerId, name: p.record.name, report: r, record: p.record })
    }
    return out
  }

  /** Who reconciles a block now (agent/blocks/election.ts). */
  reconcilerOf (block: string, createdBy: string): string {
    return reconcilerOf(block, createdBy, this.self, this.init.gossip.peers())
  }

  private seenTerm (block: string): { term: number, claim: number } {
    return seenTerms(block, this.init.host.term(block), this.init.gossip.peers())
  }

  private view (e: Entry<StoredBlock>): BlockView {
    const b = e.value
    const id = e.id
    const instances: InstanceView[] = this.reported(id).map(({ peer, name, report }) => ({
      instance: report.instance,
      peerId: peer,
      peerName: name,
      status: report.status === 'pending' ? 'assigned' : report.status,
      error: report.error,
      provider: report.provider,
      active: report.active,
      queued: report.queued
    }))
    for (const [instance, p] of this.pending) {
      if (p.block === id && !instances.some(i => i.instance === instance)) {
        instances.push({ instance, peerId: p.peer, peerName: p.peerName, status: 'assigned', error: null, provider: null, active: 0, queued: 0 })
      }
    }
    // who reconciles it: this agent, or the live agent that claims it with the highest term
    let reconciler: BlockView['reconciler'] = null
    let remote: ReconcileReport | undefined
    const mine = this.terms.get(id)
    if (mine != null) reconciler = { peerId: this.self, name: this.init.gossip.localRecord()?.name ?? 'self', term: mine }
    else {
      for (const p of this.init.gossip.peers()) {
        if (p.status !== 'live') continue
        const r = (p.record.reconciles ?? []).find(x => x.block === id)
        if (r != null && (reconciler == null || r.term > reconciler.term)) { reconciler = { peerId: p.record.peerId, name: p.record.name, term: r.term }; remote = r }
      }
    }
    const own = this.statuses.get(id)
    const derived: BlockStatus = instances.some(i => i.status === 'ready') ? 'ready' : instances.some(i => i.status === 'assigned' || i.status === 'loading') ? 'loading' : 'pending'
    // a ready instance makes the block ready at once; otherwise the reconciler's last word (it knows refusals)
    const status = derived === 'ready' ? 'ready' : own?.status ?? remote?.status ?? derived
    const error = status === 'ready' ? null : own != null ? own.error : remote?.error ?? null
    const local = this.init.host.list().find(h => h.block === id)
    return {
      id,
      component: b.spec.component,
      spec: { ...b.spec, id },
      status,
      error,
      runtime: local?.runtime ?? null,
      createdAt: new Date(e.created).toISOString(),
      updatedAt: new Date(e.at).toISOString(),
      owner: reconciler?.peerId ?? null,
      reconciler,
      createdBy: b.createdBy,
      target: remote?.target ?? this.target(b),
      instances,
      refusal: this.refusals.get(id) ?? null,
      activeSequences: instances.reduce((s, i) => s + i.active, 0),
      queuedSequences: instances.reduce((s, i) => s + i.queued, 0)
    }
  }

  // ---- reconciliation

  /** One pass over every block at a time; a call while one runs waits for the next pass (shared by all such callers). */
  private async reconcileAll (): Promise<void> {
    if (this.queued != null) return await this.queued
    if (this.running != null) {
      this.queued = this.running.then(async () => { this.queued = null; await this.reconcileAll() })
      return await this.queued
    }
    this.running = (async () => {
      const present = new Set<string>()
      for (const e of this.entries()) {
        present.add(e.id)
        try {
          await this.reconcileIfMine(e)
        } catch (err) {
          this.init.log.warn({ block: e.id, err: (err as Error).message }, 'reconcile failed')
        }
      }
      for (const id of [...this.terms.keys()]) if (!present.has(id)) this.forget(id)
      // an instance here whose block is not in the desired state (deleted while this agent was down, and the
      // delete already applied before it restarted) is stopped; a young one may be waiting for its block's
      // create to arrive (the order can outrun the gossip), so only after a grace
      const grace = Math.max(30_000, 10 * this.init.gossip.heartbeatMs)
      for (const h of this.init.host.list()) if (!present.has(h.block) && Date.now() - h.assignedAt > grace) await this.dropHosted(h.block)
    })().finally(() => { this.running = null })
    await this.running
  }

  private async reconcileIfMine (e: Entry<StoredBlock>): Promise<void> {
    const id = e.id
    const chosen = this.reconcilerOf(id, e.value.createdBy)
    if (chosen !== this.self) {
      if (this.terms.has(id)) this.init.log.info({ block: id, to: chosen }, 'handing the block over to its reconciler')
      this.forget(id)
      return
    }
    // after a restart, let remembered peers come back before placing anything
    if (Date.now() < this.settleUntil && this.init.gossip.peers().some(p => p.status === 'expired')) return
    const seen = this.seenTerm(id)
    let term = this.terms.get(id)
    if (term != null && seen.claim > term) {
      // another live agent claims the block with a higher term: it reconciles, this one steps down
      this.init.log.info({ block: id, term, theirs: seen.claim }, 'a higher term reconciles the block; stepping down')
      this.forget(id)
      return
    }
    if (term == null || seen.term > term) {
      term = Math.max(seen.term, term ?? 0) + 1
      this.terms.set(id, term)
      this.init.metrics?.reconcilerClaims?.inc()
      this.init.log.info({ block: id, term }, 'reconciling block')
    }
    await this.reconcile(e, term)
  }

  private async reconcile (e: Entry<StoredBlock>, term: number): Promise<void> {
    const id = e.id
    const b = e.value
    const showUp = this.init.showUpMs ?? Math.max(30_000, 10 * this.init.gossip.heartbeatMs)
    const now = Date.now()
    // 1. what runs: the hosts' reports (less instances being stopped); assignments not reported yet are pending until showUp
    for (const [instance, until] of this.stopping) if (until <= now) this.stopping.delete(instance)
    const live = (): ReturnType<BlockOwner['reported']> => this.reported(id).filter(r => !this.stopping.has(r.report.instance))
    let reported = live()
    for (const [instance, s] of this.seen) {
      if (s.block !== id || reported.some(r => r.report.instance === instance)) continue
      this.seen.delete(instance)
      if (this.stopping.has(instance)) continue
      const gone = s.peer !== this.self && this.init.gossip.peer(s.peer)?.status !== 'live'
      if (gone) this.exclude(id, s.peer)
      this.failures.set(id, `instance on ${s.peerName} was lost: ${gone ? 'its peer is gone' : 'its host no longer reports it'}`)
      this.init.metrics?.instanceReplacements.inc()
      this.init.log.warn({ block: id, instance, peer: s.peerName }, 'instance lost; replacing it')
    }
    for (const r of reported) this.seen.set(r.report.instance, { block: id, peer: r.peer, peerName: r.name })
    for (const [instance, p] of this.pending) {
      if (p.block !== id) continue
      if (reported.some(r => r.report.instance === instance)) this.pending.delete(instance)
      else if (now - p.at > showUp || (p.peer !== this.self && this.init.gossip.peer(p.peer)?.status !== 'live')) {
        this.pending.delete(instance)
        this.exclude(id, p.peer)
        this.failures.set(id, `instance on ${p.peerName} was lost: ${p.peer !== this.self && this.init.gossip.peer(p.peer)?.status !== 'live' ? 'its peer is gone' : 'never reported'}`)
        this.init.metrics?.instanceReplacements.inc()
      }
    }
    // 2. failed instances are stopped (a replacement is placed below)
    for (const r of reported.filter(x => x.report.status === 'failed')) {
      this.exclude(id, r.peer)
      this.failures.set(id, `instance on ${r.name} failed: ${r.report.error ?? 'no reason given'}`)
      this.init.metrics?.instanceReplacements.inc()
      this.init.log.warn({ block: id, instance: r.report.instance, peer: r.name, error: r.report.error }, 'replacing instance')
      await this.stopInstance(id, r.peer, r.report.instance, term, false)
    }
    reported = live().filter(r => r.report.status !== 'failed')
    // 3. autoscaling moves the target
    if (b.spec.autoscaling != null) await this.autoscale(e)
    const target = this.target(this.blockEntry(id)?.value ?? b)
    const unreported = (rs: ReturnType<BlockOwner['reported']>): number => [...this.pending].filter(([instance, p]) => p.block === id && !rs.some(r => r.report.instance === instance)).length
    const pendingHere = unreported(reported)
    const count = reported.length + pendingHere
    // 4. anti-affinity: an instance on a peer that runs a block this one avoids moves once another peer can take it
    const avoided = new Set(this.peersRunning(b.spec.avoid ?? []))
    const crowded = reported.filter(r => avoided.has(r.peer))
    let surge = 0
    if (crowded.length > 0 && pendingHere === 0 && count <= target && this.canPlaceAway(b, avoided)) surge = 1
    if (count < target + surge) await this.place(e, target + surge - count, term)
    // 5. extras stop: crowded ones first (once the rest are ready), then the least loaded
    reported = live().filter(r => r.report.status !== 'failed')
    const total = reported.length + unreported(reported)
    if (total > target) {
      const readyUncrowded = reported.filter(r => r.report.status === 'ready' && !avoided.has(r.peer)).length
      const order = [...reported].sort((x, y) =>
        (avoided.has(y.peer) ? 1 : 0) - (avoided.has(x.peer) ? 1 : 0) ||
        (x.report.active + x.report.queued) - (y.report.active + y.report.queued) ||
        (x.peer === this.self ? 1 : 0) - (y.peer === this.self ? 1 : 0))
      let extra = total - target
      for (const r of order) {
        if (extra <= 0) break
        // a crowded instance goes only once enough uncrowded ones are ready to carry the block
        if (avoided.has(r.peer) && readyUncrowded < Math.min(target, 1)) continue
        await this.stopInstance(id, r.peer, r.report.instance, term, true)
        extra--
      }
    }
    // 6. the block's status follows its instances
    reported = live()
    const anyReady = reported.some(r => r.report.status === 'ready')
    if (anyReady) this.failures.delete(id)
    const loading = reported.some(r => r.report.status === 'pending' || r.report.status === 'loading') || [...this.pending.values()].some(p => p.block === id)
    const status: BlockStatus = anyReady ? 'ready' : loading ? 'loading' : (this.refusals.has(id) || this.failures.has(id)) ? 'failed' : 'pending'
    const refusal = (this.refusals.get(id) ?? []).map(r => r.message).join('; ')
    this.statuses.set(id, { status, error: status === 'ready' ? null : this.failures.get(id) ?? (refusal !== '' ? refusal : null) })
  }

  private exclude (block: string, peer: string): void {
    let m = this.excluded.get(block)
    if (m == null) { m = new Map(); this.excluded.set(block, m) }
    m.set(peer, Date.now() + (this.init.excludeMs ?? 60_000))
  }

  private excludedPeers (block: string): string[] {
    const m = this.excluded.get(block)
    if (m == null) return []
    const now = Date.now()
    for (const [p, until] of m) if (until <= now) m.delete(p)
    return [...m.keys()]
  }

  /** Peers (this agent included) running or about to run an instance of any of `blocks`. */
  private peersRunning (blocks: string[]): string[] {
    if (blocks.length === 0) return []
    const set = new Set<string>()
    for (const block of blocks) for (const r of this.reported(block)) set.add(r.peer)
    for (const p of this.pending.values()) if (blocks.includes(p.block)) set.add(p.peer)
    return [...set]
  }

  private needs (b: StoredBlock): { component: ComponentSpec, needs: { gpuMemory: number, ram: number, cpus: number } } {
    const component = this.init.components.get(b.spec.component).spec
    const res = component.resources
    return { component, needs: { gpuMemory: (res.gpuMemory as number | undefined) ?? 0, ram: (res.ram as number | undefined) ?? 0, cpus: res.cpus ?? 0 } }
  }

  /** Live nodes as the scheduler sees them (a node already holding the block counts one instance). */
  nodeViews (block: string): NodeView[] {
    const holding = new Set(this.reported(block).map(r => r.peer))
    for (const p of this.pending.values()) if (p.block === block) holding.add(p.peer)
    return nodeViewsFrom(this.records(), { block, holding })
  }

  /** Whether the scheduler finds a node for one more instance off the avoided peers. */
  private canPlaceAway (b: StoredBlock, avoided: Set<string>): boolean {
    const { needs } = this.needs(b)
    const r = schedule({ policy: b.spec.policy, needs, count: 1, allowSimulatedGpus: this.init.allowSimulatedGpus === true, exclude: [...this.excludedPeers(b.spec.id), ...avoided] }, this.nodeViews(b.spec.id))
    return r.ok && r.placements.length > 0
  }

  private async place (e: Entry<StoredBlock>, count: number, term: number): Promise<void> {
    const b = e.value
    const id = e.id
    const { component, needs } = this.needs(b)
    const existing = this.reported(id)
    const preferCluster = existing.length > 0 ? existing[0].record?.cluster : undefined
    let remaining = count
    const avoided = this.peersRunning(b.spec.avoid ?? [])
    for (let attempt = 0; attempt < 3 && remaining > 0; attempt++) {
      const base = { policy: b.spec.policy, needs, count: remaining, preferCluster, preferNode: this.self, allowSimulatedGpus: this.init.allowSimulatedGpus === true }
      let result = schedule({ ...base, exclude: [...this.excludedPeers(id), ...avoided] }, this.nodeViews(id))
      if (!result.ok && avoided.length > 0) result = schedule({ ...base, exclude: this.excludedPeers(id) }, this.nodeViews(id))
      this.init.metrics?.schedulingDecisions.inc({ result: result.ok ? 'placed' : 'refused' })
      if (!result.ok) {
        this.refusals.set(id, result.reasons)
        if (attempt === 0) this.init.log.info({ block: id, reasons: result.reasons }, 'no placement')
        return
      }
      if (result.placements.length === 0) return
      this.refusals.delete(id)
      for (const p of result.placements) {
        if (await this.assign(id, { ...b.spec, id }, component, p, term)) remaining--
        else this.exclude(id, p.peerId)
      }
    }
  }

  private async assign (block: string, spec: BlockSpec, component: ComponentSpec, p: Placement, term: number): Promise<boolean> {
    const instance = `${block.slice(0, 48)}-${randomBytes(4).toString('hex')}`
    this.pending.set(instance, { block, peer: p.peerId, peerName: p.name, at: Date.now() })
    let answer: AssignResponse
    try {
      if (p.peerId === this.self) {
        answer = this.acceptHere(block, instance, spec, component, this.self, term)
      } else {
        const req: AssignRequest = { op: 'start', block, instance, spec, component, term }
        answer = await requestJson(this.init.mesh, p.peerId, ASSIGN_PROTOCOL, req, AssignResponseSchema, { timeoutMs: 15_000 })
      }
    } catch (err) {
      answer = { accepted: false, reason: (err as Error).message }
    }
    this.init.metrics?.assignments.inc({ result: answer.accepted ? 'accepted' : 'refused' })
    if (!answer.accepted) {
      this.pending.delete(instance)
      this.init.log.warn({ block, peer: p.name, reason: answer.reason }, 'peer refused the instance')
      return false
    }
    this.init.log.info({ block, instance, peer: p.name, term }, 'instance assigned')
    return true
  }

  /**
   * The host side of an order, for this agent's own placements and (through the daemon) peers': refuses a
   * lower term than the one held for the block, and a second instance of a block.
   */
  acceptHere (block: string, instance: string, spec: BlockSpec, component: ComponentSpec, from: string, term: number): AssignResponse {
    const held = this.init.host.list().find(h => h.block === block)
    if (held != null && this.init.host.term(block) > term) return { accepted: false, reason: `stale reconciler: term ${term} < ${this.init.host.term(block)} held for block ${block}` }
    if (held != null && held.instance !== instance) return { accepted: false, reason: `already runs instance ${held.instance} of block ${block}` }
    this.init.host.accept({ block, instance, owner: from, spec: { ...spec, id: block }, component, term })
    return { accepted: true, status: 'pending' }
  }

  private async stopInstance (block: string, peer: string, instance: string, term: number, drain: boolean): Promise<void> {
    this.stopping.set(instance, Date.now() + (drain ? (this.init.drainMs ?? 60_000) : 0) + Math.max(30_000, 10 * this.init.gossip.heartbeatMs))
    for (const [k, p] of this.pending) if (k === instance || (p.block === block && p.peer === peer)) this.pending.delete(k)
    try {
      if (peer === this.self) {
        if (this.init.host.term(block) <= term) void this.init.host.stop(block, instance, { drainMs: drain ? (this.init.drainMs ?? 60_000) : 0 })
      } else if (this.init.gossip.peer(peer)?.status === 'live') {
        const answer = await requestJson(this.init.mesh, peer, ASSIGN_PROTOCOL, { op: 'stop', block, instance, term, drain } satisfies AssignRequest, AssignResponseSchema, { timeoutMs: 10_000 })
        if (!answer.accepted && answer.reason != null) this.init.log.warn({ block, instance, reason: answer.reason }, 'host refused to stop the instance')
      }
    } catch (err) {
      this.init.log.warn({ block, instance, err: (err as Error).message }, 'could not stop instance')
    }
    this.init.log.info({ block, instance, peer, drain }, 'instance removed')
  }

  // ---- autoscaling

  /** The block's autoscaling metric now (null without autoscaling or ready instances). */
  metric (b: { spec: BlockSpec }): number | null {
    const metric = b.spec.autoscaling?.metric
    if (metric == null) return null
    return autoscaleMetric(metric, this.reported(b.spec.id).filter(x => x.report.status === 'ready'))
  }

  private async autoscale (e: Entry<StoredBlock>): Promise<void> {
    const b = e.value
    const a = b.spec.autoscaling
    if (a == null) return
    const value = this.metric({ spec: { ...b.spec, id: e.id } })
    if (value == null) return
    this.init.metrics?.autoscaleMetric.set({ block: e.id }, value)
    const target = this.target(b)
    const next = this.autoscaler.decide(e.id, a, value, target, { min: b.spec.minInstances, max: b.spec.maxInstances }, this.init.gossip.heartbeatMs)
    if (next == null) return
    await this.setTarget(e.id, next)
    this.init.metrics?.autoscaleDecisions.inc({ block: e.id, direction: next > target ? 'up' : 'down' })
    this.init.log.info({ block: e.id, metric: a.metric, value, from: target, to: next }, next > target ? 'autoscale up' : 'autoscale down')
  }
}
