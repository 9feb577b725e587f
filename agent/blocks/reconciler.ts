import type { Logger } from 'pino'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { BlockSpec } from '../registry/blocks.ts'
import type { Entry } from '../state/replica.ts'
import type { AgentMetrics } from '../metrics.ts'
import type { InstanceHost } from './host.ts'
import { targetOf } from './store.ts'
import type { BlockStore, StoredBlock } from './store.ts'
import type { Observed, Reported } from './observed.ts'
import type { InstanceLedger } from './ledger.ts'
import type { Outcomes } from './outcomes.ts'
import type { Placer } from './placement.ts'
import type { AssignClient } from './assign-client.ts'
import { mayStop, peersRunning, stopOrder, surge } from './anti-affinity.ts'
import { Autoscaler, autoscaleMetric } from './autoscaler.ts'
import { reconcilerOf, seenTerms } from './election.ts'
import { MAX_TERM } from '../../mesh/capacity/record.ts'
import { DRAIN_MS } from './assign-service.ts'

export interface ReconcilerInit {
  store: BlockStore
  observed: Observed
  ledger: InstanceLedger
  outcomes: Outcomes
  placer: Placer
  orders: AssignClient
  host: InstanceHost
  gossip: CapacityGossip
  log: Logger
  metrics?: AgentMetrics
  /** an assigned instance that has not shown up in its host's gossip after this long is lost */
  showUpMs?: number
  /** a deleted block's instance here may finish its sequences for this long before it unloads */
  drainMs?: number
}

/**
 * The reconciliation loop: every heartbeat, and at once when a block changes, one pass over every block
 * this agent reconciles (agent/blocks/election.ts says which, and the term it holds). A pass notices lost
 * and failed instances, moves the target (autoscaling), places what is missing (agent/blocks/placement.ts),
 * surges and drains crowded instances (agent/blocks/anti-affinity.ts), stops extras, and settles the
 * block's status. Orders go out through agent/blocks/assign-client.ts.
 */
export class Reconciler {
  private readonly init: ReconcilerInit
  /** the term this agent holds for each block it reconciles */
  private readonly terms = new Map<string, number>()
  /** blocks whose terms a peer used up (logged once) */
  private readonly exhausted = new Set<string>()
  private readonly autoscaler = new Autoscaler()
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | null = null
  private queued: Promise<void> | null = null
  private stopped = true
  private settleUntil = 0
  private readonly unsubscribe: Array<() => void> = []
  /** instances here being drained and stopped because their block was deleted */
  private readonly dropping = new Map<string, Promise<void>>()

  constructor (init: ReconcilerInit) {
    this.init = init
  }

  private get self (): string { return this.init.observed.self }

  /**
   * Starts the loop. After a restart with peers remembered, placement waits until they are back or
   * `settleMs` passed, so a restarted mesh does not crowd every block onto the first agent up.
   */
  start (opts: { settleMs?: number } = {}): void {
    this.stopped = false
    this.settleUntil = Date.now() + (opts.settleMs ?? 0)
    this.unsubscribe.push(this.init.store.onChange((blocks) => {
      for (const b of blocks) if (this.init.store.entry(b) == null) void this.dropHosted(b)
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

  /** The term held for a block this agent reconciles (undefined: it does not). */
  term (block: string): number | undefined {
    return this.terms.get(block)
  }

  /** Blocks this agent reconciles, with their terms. */
  reconciled (): Array<[string, number]> {
    return [...this.terms]
  }

  /** Who reconciles a block now (agent/blocks/election.ts). */
  reconcilerOf (block: string, createdBy: string): string {
    return reconcilerOf(block, createdBy, this.self, this.init.gossip.peers())
  }

  /** Drops everything known of a block (its reconciler is another agent now, or it is gone). */
  forget (id: string): void {
    this.terms.delete(id)
    this.init.outcomes.forget(id)
    this.autoscaler.forget(id)
    this.init.ledger.forget(id)
  }

  /** A hosted instance whose block left the desired state is stopped here. */
  async dropHosted (block: string): Promise<void> {
    const { host, log } = this.init
    if (this.init.store.entry(block) != null || !host.has(block)) return
    const going = this.dropping.get(block)
    if (going != null) return await going
    const drop = (async () => {
      // drained: new requests stop going to it at once, those in flight finish (a service rolled to another version relies on it)
      log.info({ block }, 'block is gone from the desired state; draining and stopping its instance here')
      await host.stop(block, undefined, { drainMs: this.init.drainMs ?? DRAIN_MS }).catch((err: Error) => { log.warn({ block, err: err.message }, 'could not stop instance') })
    })().finally(() => { this.dropping.delete(block) })
    this.dropping.set(block, drop)
    await drop
  }


  /** The block's autoscaling metric now (null without autoscaling or ready instances). */
  metric (b: { spec: BlockSpec }): number | null {
    const metric = b.spec.autoscaling?.metric
    if (metric == null) return null
    return autoscaleMetric(metric, this.init.observed.reported(b.spec.id).filter(x => x.report.status === 'ready'))
  }

  /** One pass over every block at a time; a call while one runs waits for the next pass (shared by all such callers). */
  async reconcileAll (): Promise<void> {
    if (this.queued != null) return await this.queued
    if (this.running != null) {
      this.queued = this.running.then(async () => { this.queued = null; await this.reconcileAll() })
      return await this.queued
    }
    this.running = (async () => {
      const present = new Set<string>()
      for (const e of this.init.store.entries()) {
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
      for (const h of this.init.host.list()) if (!present.has(h.block) && Date.now() - h.assignedAt > grace) void this.dropHosted(h.block)
    })().finally(() => { this.running = null })
    await this.running
  }

  /** Claims (or keeps, or gives up) the block's reconciliation, then reconciles it when it is this agent's. */
  private async reconcileIfMine (e: Entry<StoredBlock>): Promise<void> {
    const { gossip, log } = this.init
    const id = e.id
    const chosen = this.reconcilerOf(id, e.value.createdBy)
    if (chosen !== this.self) {
      if (this.terms.has(id)) log.info({ block: id, to: chosen }, 'handing the block over to its reconciler')
      this.forget(id)
      return
    }
    // after a restart, let remembered peers come back before placing anything
    if (Date.now() < this.settleUntil && gossip.peers().some(p => p.status === 'expired')) return
    const seen = seenTerms(id, this.init.host.term(id), gossip.peers(), { createdBy: e.value.createdBy, self: this.self })
    let term = this.terms.get(id)
    if (term != null && seen.claim > term) {
      // another live agent claims the block with a higher term: it reconciles, this one steps down
      log.info({ block: id, term, theirs: seen.claim }, 'a higher term reconciles the block; stepping down')
      this.forget(id)
      return
    }
    if (term == null || seen.term > term) {
      if (seen.term >= MAX_TERM) {
        // a peer published the last term there is: claiming past it would make this agent's own record
        // unpublishable (its schema bounds terms); the block waits rather than the whole agent going silent
        if (!this.exhausted.has(id)) { this.exhausted.add(id); log.error({ block: id, term: seen.term }, 'no higher term left to claim the block with; not reconciling it') }
        this.forget(id)
        return
      }
      term = Math.max(seen.term, term ?? 0) + 1
      this.terms.set(id, term)
      this.init.metrics?.reconcilerClaims?.inc()
      log.info({ block: id, term }, 'reconciling block')
    }
    await this.reconcile(e, term)
  }

  private async reconcile (e: Entry<StoredBlock>, term: number): Promise<void> {
    const { ledger, observed, orders } = this.init
    const id = e.id
    const b = e.value
    // 1. what runs: the hosts' reports (less instances being stopped); assignments not reported yet are pending until showUp
    const now = Date.now()
    for (const [instance, until] of ledger.stopping) if (until <= now) ledger.stopping.delete(instance)
    const live = (): Reported[] => observed.reported(id).filter(r => !ledger.stopping.has(r.report.instance))
    let reported = live()
    this.noticeLost(id, reported, now)
    // 2. failed instances are stopped (a replacement is placed below)
    for (const r of reported.filter(x => x.report.status === 'failed')) {
      ledger.exclude(id, r.peer)
      this.init.outcomes.failures.set(id, `instance on ${r.name} failed: ${r.report.error ?? 'no reason given'}`)
      this.init.metrics?.instanceReplacements.inc()
      this.init.log.warn({ block: id, instance: r.report.instance, peer: r.name, error: r.report.error }, 'replacing instance')
      await orders.stop(id, r.peer, r.report.instance, term, false)
    }
    reported = live().filter(r => r.report.status !== 'failed')
    // 3. autoscaling moves the target
    if (b.spec.autoscaling != null) await this.autoscale(e)
    const target = targetOf(this.init.store.entry(id)?.value ?? b)
    const unreported = (rs: Reported[]): number => ledger.pendingOf(id).filter(([instance]) => !rs.some(r => r.report.instance === instance)).length
    const pendingHere = unreported(reported)
    const count = reported.length + pendingHere
    // 4. anti-affinity: an instance on a peer that runs a block this one avoids moves once another peer can take it
    const avoided = new Set(peersRunning(b.spec.avoid ?? [], block => observed.reported(block), ledger.pending.values()))
    const crowded = reported.filter(r => avoided.has(r.peer))
    const extraNow = surge(crowded.length, pendingHere, count, target, () => this.init.placer.canPlaceAway(b.spec, avoided))
    if (count < target + extraNow) await this.init.placer.place({ ...b.spec, id }, target + extraNow - count, term)
    // 5. extras stop: crowded ones first (once the rest are ready), then the least loaded
    reported = live().filter(r => r.report.status !== 'failed')
    const total = reported.length + unreported(reported)
    if (total > target) {
      const readyUncrowded = reported.filter(r => r.report.status === 'ready' && !avoided.has(r.peer)).length
      let extra = total - target
      for (const r of stopOrder(reported, avoided, this.self)) {
        if (extra <= 0) break
        if (!mayStop(r, avoided, readyUncrowded, target)) continue
        await orders.stop(id, r.peer, r.report.instance, term, true)
        extra--
      }
    }
    // 6. the block's status follows its instances
    reported = live()
    this.init.outcomes.settle(id, {
      anyReady: reported.some(r => r.report.status === 'ready'),
      loading: reported.some(r => r.report.status === 'pending' || r.report.status === 'loading') || [...ledger.pending.values()].some(p => p.block === id)
    })
  }

  /**
   * Instances seen at the last pass and gone now (with their peer, or no longer reported by their host), and
   * assignments never reported within `showUp` or whose peer is gone: lost, to be replaced; a peer gone is
   * not asked again for the block for a while.
   */
  private noticeLost (id: string, reported: Reported[], now: number): void {
    const { ledger, observed, outcomes, metrics, log } = this.init
    const showUp = this.init.showUpMs ?? Math.max(30_000, 10 * this.init.gossip.heartbeatMs)
    for (const [instance, s] of ledger.seen) {
      if (s.block !== id || reported.some(r => r.report.instance === instance)) continue
      ledger.seen.delete(instance)
      if (ledger.stopping.has(instance)) continue
      const gone = s.peer !== this.self && !observed.isLive(s.peer)
      if (gone) ledger.exclude(id, s.peer)
      outcomes.failures.set(id, `instance on ${s.peerName} was lost: ${gone ? 'its peer is gone' : 'its host no longer reports it'}`)
      metrics?.instanceReplacements.inc()
      log.warn({ block: id, instance, peer: s.peerName }, 'instance lost; replacing it')
    }
    for (const r of reported) ledger.seen.set(r.report.instance, { block: id, peer: r.peer, peerName: r.name })
    for (const [instance, p] of ledger.pending) {
      if (p.block !== id) continue
      if (reported.some(r => r.report.instance === instance)) ledger.pending.delete(instance)
      else if (now - p.at > showUp || (p.peer !== this.self && !observed.isLive(p.peer))) {
        ledger.pending.delete(instance)
        ledger.exclude(id, p.peer)
        outcomes.failures.set(id, `instance on ${p.peerName} was lost: ${p.peer !== this.self && !observed.isLive(p.peer) ? 'its peer is gone' : 'never reported'}`)
        metrics?.instanceReplacements.inc()
      }
    }
  }

  private async autoscale (e: Entry<StoredBlock>): Promise<void> {
    const b = e.value
    const a = b.spec.autoscaling
    if (a == null) return
    const value = this.metric({ spec: { ...b.spec, id: e.id } })
    if (value == null) return
    this.init.metrics?.autoscaleMetric.set({ block: e.id }, value)
    const target = targetOf(b)
    const next = this.autoscaler.decide(e.id, a, value, target, { min: b.spec.minInstances, max: b.spec.maxInstances }, this.init.gossip.heartbeatMs)
    if (next == null) return
    await this.init.store.setTarget(e.id, next)
    this.init.metrics?.autoscaleDecisions.inc({ block: e.id, direction: next > target ? 'up' : 'down' })
    this.init.log.info({ block: e.id, metric: a.metric, value, from: target, to: next }, next > target ? 'autoscale up' : 'autoscale down')
  }
}
