import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { Db } from '../db/database.ts'
import type { MeshNode } from '../../mesh/node.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { CapacityRecord, InstanceReport } from '../../mesh/capacity/record.ts'
import { requestJson } from '../../mesh/rpc.ts'
import { schedule } from '../scheduler/schedule.ts'
import type { NodeView, Placement } from '../scheduler/policy.ts'
import { BlockSpecSchema, BlockStore, newBlockId } from '../registry/blocks.ts'
import type { BlockRecord, BlockSpec, BlockSpecInput, BlockStatus } from '../registry/blocks.ts'
import { ConflictError } from '../registry/components.ts'
import type { ComponentRegistry } from '../registry/components.ts'
import type { InstanceHost } from './host.ts'
import { ASSIGN_PROTOCOL, AssignResponseSchema } from './assign.ts'
import type { AssignRequest, AssignResponse } from './assign.ts'
import { ValidationError } from '../errors.ts'
import type { AgentMetrics } from '../metrics.ts'

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

/** A block as its owner sees it: the stored spec and status, its target, its instances. */
export interface BlockView extends BlockRecord {
  owner: string
  target: number
  instances: InstanceView[]
  /** the scheduler's last refusal, per filter, while the block lacks instances */
  refusal: Array<{ filter: string, message: string }> | null
  activeSequences: number
  queuedSequences: number
}

interface InstanceRow { instance_id: string, block_id: string, peer_id: string, peer_name: string, status: InstanceStatus, error: string | null, created_at: number, updated_at: number }

export interface BlockOwnerInit {
  db: Db
  mesh: MeshNode
  gossip: CapacityGossip
  host: InstanceHost
  components: ComponentRegistry
  log: Logger
  metrics?: AgentMetrics
  /** an assigned instance that has not shown up in its host's gossip after this long is lost */
  showUpMs?: number
  /** a peer that refused or failed a block is not asked again for it for this long */
  excludeMs?: number
}

/**
 * The blocks this agent owns (created through its API): places their
 * instances on peers chosen by the scheduler, asks each peer over libp2p
 * (it re-checks its own capacity and may refuse), and reconciles desired
 * against actual state every heartbeat — instances on vanished peers, and
 * failed ones, are replaced; extra ones are stopped. Autoscaling moves the
 * target between minInstances and maxInstances on the chosen metric.
 */
export class BlockOwner {
  private readonly init: BlockOwnerInit
  private readonly store: BlockStore
  private readonly excluded = new Map<string, Map<string, number>>()
  private readonly refusals = new Map<string, Array<{ filter: string, message: string }>>()
  /** the last instance failure of each block, shown while it has no ready instance */
  private readonly failures = new Map<string, string>()
  private readonly samples = new Map<string, Array<[number, number]>>()
  private readonly lastScale = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | null = null
  private stopped = false

  constructor (init: BlockOwnerInit) {
    this.init = init
    this.store = new BlockStore(init.db)
  }

  private get self (): string { return this.init.mesh.peerId.toString() }

  start (): void {
    this.stopped = false
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
    await this.running
  }

  /** Stores a block and places its first instances; returns once the first placement was tried. */
  async create (input: BlockSpecInput): Promise<BlockView> {
    const parsed = BlockSpecSchema.parse(input)
    const component = this.init.components.get(parsed.component)
    const spec: BlockSpec = { ...parsed, id: parsed.id ?? newBlockId(component.spec.name) }
    const other = this.init.gossip.peers().find(p => p.status === 'live' && p.record.instances.some(i => i.block === spec.id && i.owner !== this.self))
    if (other != null) throw new ConflictError(`block ${spec.id} already exists in the mesh (owned through ${other.record.name}); block ids are model names, pick another`)
    this.store.insert(spec)
    this.init.log.info({ block: spec.id, component: spec.component }, 'block created')
    await this.reconcileAll()
    return this.get(spec.id)
  }

  list (): BlockView[] {
    return this.store.list().map(b => this.view(b))
  }

  get (id: string): BlockView {
    return this.view(this.store.get(id))
  }

  has (id: string): boolean {
    return this.store.find(id) != null
  }

  async delete (id: string): Promise<void> {
    this.store.get(id)
    for (const row of this.rows(id)) await this.stopInstance(row, 'block deleted')
    this.store.delete(id)
    this.refusals.delete(id)
    this.failures.delete(id)
    this.samples.delete(id)
    this.init.log.info({ block: id }, 'block deleted')
  }

  /** Sets the number of instances (within minInstances..maxInstances) and reconciles. */
  async scale (id: string, instances: number): Promise<BlockView> {
    const b = this.store.get(id)
    if (instances < b.spec.minInstances || instances > b.spec.maxInstances) {
      throw new ValidationError(`instances must be between minInstances (${b.spec.minInstances}) and maxInstances (${b.spec.maxInstances}) of block ${id}`, [{ field: 'instances', message: `${b.spec.minInstances}-${b.spec.maxInstances}` }])
    }
    this.setTarget(id, instances)
    this.init.log.info({ block: id, instances }, 'block scaled')
    await this.reconcileAll()
    return this.get(id)
  }

  // ---- state

  private rows (block: string): InstanceRow[] {
    return this.init.db.prepare('SELECT * FROM block_instances WHERE block_id = ? ORDER BY created_at, instance_id').all(block) as InstanceRow[]
  }

  private target (b: BlockRecord): number {
    const t = this.init.db.prepare('SELECT target FROM blocks WHERE id = ?').pluck().get(b.id) as number | null
    return Math.min(b.spec.maxInstances, Math.max(b.spec.minInstances, t ?? b.spec.minInstances))
  }

  private setTarget (id: string, n: number): void {
    this.init.db.prepare('UPDATE blocks SET target = ? WHERE id = ?').run(n, id)
  }

  private setInstance (instance: string, status: InstanceStatus, error: string | null = null): void {
    this.init.db.prepare('UPDATE block_instances SET status = ?, error = ?, updated_at = ? WHERE instance_id = ?').run(status, error, Date.now(), instance)
  }

  /** The report of an instance by its host: this agent's own instances directly, peers' through gossip. */
  private report (row: InstanceRow): { report: InstanceReport | null, peerLive: boolean, record?: CapacityRecord } {
    if (row.peer_id === this.self) {
      const r = this.init.host.reports().find(x => x.block === row.block_id && x.instance === row.instance_id) ?? null
      return { report: r, peerLive: true, record: this.init.gossip.localRecord() }
    }
    const peer = this.init.gossip.peer(row.peer_id)
    if (peer == null || peer.status !== 'live') return { report: null, peerLive: false }
    const r = peer.record.instances.find(x => x.block === row.block_id && x.instance === row.instance_id) ?? null
    return { report: r, peerLive: true, record: peer.record }
  }

  private view (b: BlockRecord): BlockView {
    const instances = this.rows(b.id).map(row => {
      const { report } = this.report(row)
      return {
        instance: row.instance_id,
        peerId: row.peer_id,
        peerName: row.peer_name,
        status: row.status,
        error: row.error,
        provider: report?.provider ?? null,
        active: report?.active ?? 0,
        queued: report?.queued ?? 0
      }
    })
    // the runtime of this agent's own instance, if it runs one
    const local = this.init.host.list().find(h => h.block === b.id && instances.some(i => i.instance === h.instance))
    return {
      ...b,
      runtime: local?.runtime ?? b.runtime,
      owner: this.self,
      target: this.target(b),
      instances,
      refusal: this.refusals.get(b.id) ?? null,
      activeSequences: instances.reduce((s, i) => s + i.active, 0),
      queuedSequences: instances.reduce((s, i) => s + i.queued, 0)
    }
  }

  // ---- reconciliation

  private async reconcileAll (): Promise<void> {
    while (this.running != null) await this.running
    this.running = (async () => {
      for (const b of this.store.list()) {
        try {
          await this.reconcile(b)
        } catch (err) {
          this.init.log.warn({ block: b.id, err: (err as Error).message }, 'reconcile failed')
        }
      }
    })().finally(() => { this.running = null })
    await this.running
  }

  private async reconcile (b: BlockRecord): Promise<void> {
    const showUp = this.init.showUpMs ?? Math.max(30_000, 10 * this.init.gossip.heartbeatMs)
    const now = Date.now()
    // 1. refresh each instance's status from its host
    for (const row of this.rows(b.id)) {
      const { report, peerLive } = this.report(row)
      if (!peerLive) {
        this.setInstance(row.instance_id, 'lost', `peer ${row.peer_name} is gone`)
      } else if (report == null) {
        if (now - row.created_at > showUp) this.setInstance(row.instance_id, 'lost', `not reported by ${row.peer_name}`)
      } else if (report.status === 'ready' || report.status === 'loading' || report.status === 'failed') {
        this.setInstance(row.instance_id, report.status, report.status === 'failed' ? (report.error ?? 'failed on its host') : null)
      }
    }
    // 2. drop lost and failed instances (a replacement is placed below)
    for (const row of this.rows(b.id).filter(r => r.status === 'lost' || r.status === 'failed')) {
      this.exclude(b.id, row.peer_id)
      this.failures.set(b.id, `instance on ${row.peer_name} ${row.status === 'lost' ? 'was lost' : 'failed'}: ${row.error ?? 'no reason given'}`)
      this.init.metrics?.instanceReplacements.inc()
      this.init.log.warn({ block: b.id, instance: row.instance_id, peer: row.peer_name, status: row.status, error: row.error }, 'replacing instance')
      await this.stopInstance(row, row.status)
    }
    // 3. autoscaling moves the target
    if (b.spec.autoscaling != null) this.autoscale(b)
    // 4. place missing instances, stop extra ones
    const target = this.target(b)
    let rows = this.rows(b.id)
    if (rows.length < target) await this.place(b, target - rows.length)
    rows = this.rows(b.id)
    if (rows.length > target) {
      const extra = [...rows].sort((x, y) => this.load(x) - this.load(y) || (x.peer_id === this.self ? 1 : 0) - (y.peer_id === this.self ? 1 : 0)).slice(0, rows.length - target)
      for (const row of extra) await this.stopInstance(row, 'scaled down')
    }
    // 5. the block's status follows its instances
    rows = this.rows(b.id)
    if (rows.some(r => r.status === 'ready')) this.failures.delete(b.id)
    const status: BlockStatus = rows.some(r => r.status === 'ready')
      ? 'ready'
      : rows.some(r => r.status === 'assigned' || r.status === 'loading')
        ? 'loading'
        : rows.length === 0 && (this.refusals.has(b.id) || this.failures.has(b.id)) ? 'failed' : 'pending'
    const refusal = (this.refusals.get(b.id) ?? []).map(r => r.message).join('; ')
    const error = status === 'ready' ? null : this.failures.get(b.id) ?? (refusal !== '' ? refusal : null)
    this.store.setStatus(b.id, status, { error })
  }

  private load (row: InstanceRow): number {
    const { report } = this.report(row)
    return (report?.active ?? 0) + (report?.queued ?? 0)
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

  /** Peers (this agent included) running an instance of any of `blocks`. */
  private peersRunning (blocks: string[]): string[] {
    if (blocks.length === 0) return []
    const set = new Set<string>()
    const wanted = new Set(blocks)
    for (const r of this.init.host.reports()) if (wanted.has(r.block)) set.add(this.self)
    for (const p of this.init.gossip.peers()) {
      if (p.status === 'live' && p.record.instances.some(i => wanted.has(i.block))) set.add(p.record.peerId)
    }
    for (const blockId of blocks) for (const row of this.rows(blockId)) set.add(row.peer_id)
    return [...set]
  }

  /** Live nodes as the scheduler sees them: every peer's latest record, and this agent's own. */
  nodeViews (block: string): NodeView[] {
    const records: CapacityRecord[] = []
    const own = this.init.gossip.localRecord()
    if (own != null) records.push(own)
    for (const p of this.init.gossip.peers()) if (p.status === 'live') records.push(p.record)
    const holding = new Set(this.rows(block).map(r => r.peer_id))
    return records.map(r => ({
      peerId: r.peerId,
      name: r.name,
      cluster: r.cluster,
      vendor: r.vendor,
      cpus: r.readings.cpu.count,
      load15: r.readings.cpu.load15,
      ramAvailable: r.readings.memory.availableBytes,
      gpus: r.readings.gpus.map(g => ({ memoryFreeBytes: g.memoryFreeBytes, memoryTotalBytes: g.memoryTotalBytes, utilisation: g.utilisation })),
      instances: holding.has(r.peerId) || r.instances.some(i => i.block === block) ? 1 : 0
    }))
  }

  private async place (b: BlockRecord, count: number): Promise<void> {
    const component = this.init.components.get(b.spec.component)
    const res = component.spec.resources
    const needs = { gpuMemory: (res.gpuMemory as number | undefined) ?? 0, ram: (res.ram as number | undefined) ?? 0, cpus: res.cpus ?? 0 }
    const existing = this.rows(b.id)
    const preferCluster = existing.length > 0 ? this.nodeViews(b.id).find(n => n.peerId === existing[0].peer_id)?.cluster : undefined
    let remaining = count
    // anti-affinity: the nodes running blocks this one avoids (while other nodes can take it)
    const avoided = this.peersRunning(b.spec.avoid ?? [])
    for (let attempt = 0; attempt < 3 && remaining > 0; attempt++) {
      const base = { policy: b.spec.policy, needs, count: remaining, preferCluster, preferNode: this.self }
      let result = schedule({ ...base, exclude: [...this.excludedPeers(b.id), ...avoided] }, this.nodeViews(b.id))
      if (!result.ok && avoided.length > 0) result = schedule({ ...base, exclude: this.excludedPeers(b.id) }, this.nodeViews(b.id))
      this.init.metrics?.schedulingDecisions.inc({ result: result.ok ? 'placed' : 'refused' })
      if (!result.ok) {
        this.refusals.set(b.id, result.reasons)
        if (attempt === 0) this.init.log.info({ block: b.id, reasons: result.reasons }, 'no placement')
        return
      }
      if (result.placements.length === 0) return
      this.refusals.delete(b.id)
      for (const p of result.placements) {
        if (await this.assign(b, component.spec, p)) remaining--
        else this.exclude(b.id, p.peerId)
      }
    }
  }

  private async assign (b: BlockRecord, component: ReturnType<ComponentRegistry['get']>['spec'], p: Placement): Promise<boolean> {
    const instance = `${b.id.slice(0, 48)}-${randomBytes(4).toString('hex')}`
    const now = Date.now()
    this.init.db.prepare('INSERT INTO block_instances (instance_id, block_id, peer_id, peer_name, status, error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, NULL, ?, ?)')
      .run(instance, b.id, p.peerId, p.name, 'assigned', now, now)
    let answer: AssignResponse
    try {
      if (p.peerId === this.self) {
        this.init.host.accept({ block: b.id, instance, owner: this.self, spec: b.spec, component })
        answer = { accepted: true, status: 'pending' }
      } else {
        const req: AssignRequest = { op: 'start', block: b.id, instance, spec: b.spec, component }
        answer = await requestJson(this.init.mesh, p.peerId, ASSIGN_PROTOCOL, req, AssignResponseSchema, { timeoutMs: 15_000 })
      }
    } catch (err) {
      answer = { accepted: false, reason: (err as Error).message }
    }
    this.init.metrics?.assignments.inc({ result: answer.accepted ? 'accepted' : 'refused' })
    if (!answer.accepted) {
      this.init.db.prepare('DELETE FROM block_instances WHERE instance_id = ?').run(instance)
      this.init.log.warn({ block: b.id, peer: p.name, reason: answer.reason }, 'peer refused the instance')
      return false
    }
    this.init.log.info({ block: b.id, instance, peer: p.name }, 'instance assigned')
    return true
  }

  private async stopInstance (row: InstanceRow, why: string): Promise<void> {
    this.init.db.prepare('DELETE FROM block_instances WHERE instance_id = ?').run(row.instance_id)
    try {
      if (row.peer_id === this.self) await this.init.host.stop(row.block_id, row.instance_id)
      else if (this.init.gossip.peer(row.peer_id)?.status === 'live') {
        await requestJson(this.init.mesh, row.peer_id, ASSIGN_PROTOCOL, { op: 'stop', block: row.block_id, instance: row.instance_id } satisfies AssignRequest, AssignResponseSchema, { timeoutMs: 10_000 })
      }
    } catch (err) {
      this.init.log.warn({ block: row.block_id, instance: row.instance_id, err: (err as Error).message }, 'could not stop instance')
    }
    this.init.log.info({ block: row.block_id, instance: row.instance_id, peer: row.peer_name, why }, 'instance removed')
  }

  // ---- autoscaling

  /** The block's metric now: per ready instance (queue depth, tokens/s) or per CPU of their nodes (load). */
  metric (b: BlockRecord): number | null {
    const metric = b.spec.autoscaling?.metric
    const ready = this.rows(b.id).map(r => ({ row: r, ...this.report(r) })).filter(x => x.report?.status === 'ready')
    if (metric == null || ready.length === 0) return null
    const values = ready.map(x => metric === 'queueDepth'
      ? (x.report as InstanceReport).queued
      : metric === 'tokensPerSecond'
        ? (x.report as InstanceReport).tokensPerSecond
        : (x.record?.readings.cpu.load1 ?? 0) / Math.max(1, x.record?.readings.cpu.count ?? 1))
    return values.reduce((a, v) => a + v, 0) / values.length
  }

  private autoscale (b: BlockRecord): void {
    const a = b.spec.autoscaling
    if (a == null) return
    const value = this.metric(b)
    if (value == null) return
    const now = Date.now()
    const window = a.window * 1000
    const hb = this.init.gossip.heartbeatMs
    // keep a little more than the window, so it can be seen to be covered end to end
    const s = (this.samples.get(b.id) ?? []).filter(([t]) => t >= now - window - 2 * hb)
    s.push([now, value])
    this.samples.set(b.id, s)
    this.init.metrics?.autoscaleMetric.set({ block: b.id }, value)
    const covered = s[0][0] <= now - window + hb / 2
    const inWindow = s.filter(([t]) => t >= now - window - hb / 2)
    if (!covered || now - (this.lastScale.get(b.id) ?? 0) < a.cooldown * 1000) return
    const target = this.target(b)
    let next = target
    if (inWindow.every(([, v]) => v > a.scaleUpAbove) && target < b.spec.maxInstances) next = target + 1
    else if (inWindow.every(([, v]) => v < a.scaleDownBelow) && target > b.spec.minInstances) next = target - 1
    if (next === target) return
    this.setTarget(b.id, next)
    this.lastScale.set(b.id, now)
    this.samples.set(b.id, [])
    this.init.metrics?.autoscaleDecisions.inc({ block: b.id, direction: next > target ? 'up' : 'down' })
    this.init.log.info({ block: b.id, metric: a.metric, value, from: target, to: next }, next > target ? 'autoscale up' : 'autoscale down')
  }
}
