import type { Logger } from 'pino'
import type { MeshNode } from '../../mesh/node.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { ReconcileReport } from '../../mesh/capacity/record.ts'
import type { NodeView } from '../scheduler/policy.ts'
import { BlockSpecSchema, newBlockId } from '../registry/blocks.ts'
import type { BlockSpec, BlockSpecInput } from '../registry/blocks.ts'
import type { ComponentRegistry, ComponentSpec } from '../registry/components.ts'
import type { InstanceHost } from './host.ts'
import type { AssignResponse } from './assign.ts'
import { NotFoundError } from '../errors.ts'
import type { AgentMetrics } from '../metrics.ts'
import type { DesiredState, Entry } from '../state/replica.ts'
import { BlockStore, checkScale, targetOf } from './store.ts'
import type { StoredBlock } from './store.ts'
import { Observed } from './observed.ts'
import { InstanceLedger } from './ledger.ts'
import { Outcomes } from './outcomes.ts'
import { Placer } from './placement.ts'
import { AssignClient } from './assign-client.ts'
import { acceptStart } from './assign-service.ts'
import { Reconciler } from './reconciler.ts'
import { blockView } from './views.ts'
import type { BlockView } from './views.ts'

export type { BlockView, InstanceStatus, InstanceView } from './views.ts'

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
  /** an instance stopped to scale down, to restore anti-affinity or because its block was deleted may finish its sequences for this long */
  drainMs?: number
  /** this agent's name, in refusals */
  name: string
  /** --accept-remote-processes: run external systems and init processes of components other agents wrote */
  acceptRemoteProcesses: boolean
}

/**
 * Blocks of the whole mesh and their reconciliation: the facade the API, the vDAG deployer and the daemon
 * use. Each job is a room of its own:
 *
 * - store.ts: the blocks in the replicated desired state (CRUD, validation, target);
 * - observed.ts: what runs, from the hosts' reports and gossip;
 * - election.ts: who reconciles a block, and the terms seen;
 * - reconciler.ts: the loop (lost and failed instances, autoscaling, placement, extras, status);
 * - placement.ts: choosing nodes (agent/scheduler); anti-affinity.ts: surge-then-drain;
 * - assign-client.ts / assign-service.ts: the orders to hosts and their acceptance;
 * - ledger.ts: instances in flight (pending, stopping, seen, excluded peers); outcomes.ts: refusals, status;
 * - views.ts: a block as the API shows it.
 *
 * Every agent holds every block and answers for it. Exactly one live agent reconciles each block: the
 * agent it was created through while that agent is live, otherwise the live agent with the highest
 * rendezvous weight. Every agent computes the same choice from the same gossip, without a central node.
 * The reconciler holds a fence, its term, carried in every order; a host refuses orders from a lower term
 * than the one it holds, so a reconciler that lost its role cannot undo the new one's work.
 */
export class BlockOwner {
  private readonly init: BlockOwnerInit
  private readonly store: BlockStore
  private readonly observed: Observed
  private readonly ledger: InstanceLedger
  private readonly outcomes = new Outcomes()
  private readonly placer: Placer
  private readonly reconciler: Reconciler

  constructor (init: BlockOwnerInit) {
    this.init = init
    const self = init.mesh.peerId.toString()
    this.store = new BlockStore(init.state)
    this.observed = new Observed({ self, gossip: init.gossip, host: init.host })
    this.ledger = new InstanceLedger({ excludeMs: init.excludeMs })
    const orders = new AssignClient({ self, mesh: init.mesh, gossip: init.gossip, host: init.host, ledger: this.ledger, log: init.log, metrics: init.metrics, drainMs: init.drainMs, name: init.name, acceptRemoteProcesses: init.acceptRemoteProcesses, authorOf: uri => init.components.author(uri) })
    this.placer = new Placer({
      observed: this.observed,
      ledger: this.ledger,
      outcomes: this.outcomes,
      components: init.components,
      assign: async (...a) => await orders.start(...a),
      log: init.log,
      metrics: init.metrics,
      allowSimulatedGpus: init.allowSimulatedGpus
    })
    this.reconciler = new Reconciler({
      store: this.store,
      observed: this.observed,
      ledger: this.ledger,
      outcomes: this.outcomes,
      placer: this.placer,
      orders,
      host: init.host,
      gossip: init.gossip,
      log: init.log,
      metrics: init.metrics,
      showUpMs: init.showUpMs,
      drainMs: init.drainMs
    })
  }

  private get self (): string { return this.observed.self }

  /**
   * Starts the reconciliation loop (every heartbeat, and at once when a block changes). After a restart
   * with peers remembered, placement waits until they are back or `settleMs` passed.
   */
  start (opts: { settleMs?: number } = {}): void {
    this.reconciler.start(opts)
  }

  async stop (): Promise<void> {
    await this.reconciler.stop()
  }

  /** Stores a block in the desired state and, when this agent reconciles it, places its first instances. */
  async create (input: BlockSpecInput): Promise<BlockView> {
    const parsed = BlockSpecSchema.parse(input)
    const component = this.init.components.get(parsed.component)
    const spec: BlockSpec = { ...parsed, id: parsed.id ?? newBlockId(component.spec.name) }
    await this.store.add(spec, this.self)
    this.init.log.info({ block: spec.id, component: spec.component }, 'block created')
    await this.reconciler.reconcileAll()
    return this.get(spec.id)
  }

  list (): BlockView[] {
    return this.store.entries().map(e => this.view(e))
  }

  get (id: string): BlockView {
    const e = this.store.entry(id)
    if (e == null) throw new NotFoundError(`no block ${id}`)
    return this.view(e)
  }

  has (id: string): boolean {
    return this.store.entry(id) != null
  }

  /** Removes the block from the desired state; every host drains and stops its instance when it learns of it. */
  async delete (id: string): Promise<void> {
    if (!await this.store.remove(id)) throw new NotFoundError(`no block ${id}`)
    await this.reconciler.dropHosted(id)
    this.reconciler.forget(id)
    this.init.log.info({ block: id }, 'block deleted')
  }

  /** Sets the number of instances (within minInstances..maxInstances); the reconciler follows. */
  async scale (id: string, instances: number): Promise<BlockView> {
    const e = this.store.entry(id)
    if (e == null) throw new NotFoundError(`no block ${id}`)
    checkScale(id, e.value.spec, instances)
    await this.store.setTarget(id, instances)
    this.init.log.info({ block: id, instances }, 'block scaled')
    await this.reconciler.reconcileAll()
    return this.get(id)
  }

  /** Blocks this agent reconciles now, for its capacity record. */
  reports (): ReconcileReport[] {
    const out: ReconcileReport[] = []
    for (const [block, term] of this.reconciler.reconciled()) {
      const e = this.store.entry(block)
      if (e == null) continue
      const s = this.outcomes.statuses.get(block) ?? { status: 'pending' as const, error: null }
      out.push({ block, term, target: targetOf(e.value), status: s.status, error: s.error?.slice(0, 200) ?? null })
    }
    return out
  }

  /** Who reconciles a block now (agent/blocks/election.ts). */
  reconcilerOf (block: string, createdBy: string): string {
    return this.reconciler.reconcilerOf(block, createdBy)
  }

  /** Live nodes as the scheduler sees them (a node already holding the block counts one instance). */
  nodeViews (block: string): NodeView[] {
    return this.placer.nodeViews(block)
  }

  /**
   * The host side of a start order, for this agent's own placements and (through the assign service) peers':
   * refuses a lower term than the one held for the block, and a second instance of a block.
   */
  acceptHere (block: string, instance: string, spec: BlockSpec, component: ComponentSpec, from: string, term: number): AssignResponse {
    return acceptStart(this.init.host, { block, instance, spec, component, from, term })
  }

  /** The block's autoscaling metric now (null without autoscaling or ready instances). */
  metric (b: { spec: BlockSpec }): number | null {
    return this.reconciler.metric(b)
  }

  private view (e: Entry<StoredBlock>): BlockView {
    return blockView(e, {
      self: this.self,
      selfName: () => this.observed.selfName(),
      reported: block => this.observed.reported(block),
      pending: this.ledger.pending,
      term: block => this.reconciler.term(block),
      claimOf: block => this.observed.claimOf(block),
      status: block => this.outcomes.statuses.get(block),
      refusal: block => this.outcomes.refusals.get(block),
      runtime: block => this.init.host.list().find(h => h.block === block)?.runtime,
      target: targetOf
    })
  }
}
