import type { Logger } from 'pino'
import { schedule } from '../scheduler/schedule.ts'
import type { InstanceNeeds, NodeView, Placement } from '../scheduler/policy.ts'
import { nodeViewsFrom } from '../scheduler/nodes.ts'
import type { AssignResponse } from './assign.ts'
import type { BlockSpec } from '../registry/blocks.ts'
import type { ComponentRegistry, ComponentSpec } from '../registry/components.ts'
import type { AgentMetrics } from '../metrics.ts'
import type { Observed } from './observed.ts'
import type { InstanceLedger } from './ledger.ts'
import type { Outcomes } from './outcomes.ts'
import { peersRunning } from './anti-affinity.ts'

/** What one instance of a component needs of its node, from the component's `resources`. */
export function needsOf (component: ComponentSpec): InstanceNeeds {
  const res = component.resources
  return { gpuMemory: (res.gpuMemory as number | undefined) ?? 0, ram: (res.ram as number | undefined) ?? 0, cpus: res.cpus ?? 0 }
}

/** Orders an instance on a peer; true when the peer accepted it (agent/blocks/assign-client.ts). */
/** Orders an instance on a placement's peer: the peer's answer (agent/blocks/assign-client.ts). */
export type Assign = (block: string, spec: BlockSpec, component: ComponentSpec, p: Placement, term: number) => Promise<AssignResponse>

export interface PlacerInit {
  observed: Observed
  ledger: InstanceLedger
  outcomes: Outcomes
  components: ComponentRegistry
  assign: Assign
  log: Logger
  metrics?: AgentMetrics
  /** whether placement may use GPUs that peers declare as simulated (--allow-simulated-gpus) */
  allowSimulatedGpus?: boolean
}

/**
 * Choosing nodes for a block's new instances: the scheduler (agent/scheduler) over the live nodes, off the
 * peers that refused or failed the block lately and, when it can, off the peers running blocks it avoids;
 * this agent first on a tie, and the cluster the block already runs in. Each chosen peer re-checks and may
 * refuse, so a placement is retried on the others (three rounds at most per pass).
 */
export class Placer {
  private readonly init: PlacerInit

  constructor (init: PlacerInit) {
    this.init = init
  }

  /** Live nodes as the scheduler sees them (a node already holding the block counts one instance). */
  nodeViews (block: string): NodeView[] {
    const holding = new Set(this.init.observed.reported(block).map(r => r.peer))
    for (const p of this.init.ledger.pending.values()) if (p.block === block) holding.add(p.peer)
    return nodeViewsFrom(this.init.observed.records(), { block, holding })
  }

  /** Whether the scheduler finds a node for one more instance off the avoided peers. */
  canPlaceAway (spec: BlockSpec, avoided: Set<string>): boolean {
    const needs = needsOf(this.init.components.get(spec.component).spec)
    const r = schedule({ policy: spec.policy, needs, count: 1, allowSimulatedGpus: this.init.allowSimulatedGpus === true, exclude: [...this.init.ledger.excludedPeers(spec.id), ...avoided] }, this.nodeViews(spec.id))
    return r.ok && r.placements.length > 0
  }

  /** Places `count` more instances of a block (as far as peers accept), recording the scheduler's refusal. */
  async place (spec: BlockSpec, count: number, term: number): Promise<void> {
    const { observed, ledger, outcomes, log, metrics } = this.init
    const id = spec.id
    const component = this.init.components.get(spec.component).spec
    const needs = needsOf(component)
    const existing = observed.reported(id)
    const preferCluster = existing.length > 0 ? existing[0].record?.cluster : undefined
    let remaining = count
    const avoided = peersRunning(spec.avoid ?? [], b => observed.reported(b), ledger.pending.values())
    for (let attempt = 0; attempt < 3 && remaining > 0; attempt++) {
      const base = { policy: spec.policy, needs, count: remaining, preferCluster, preferNode: observed.self, allowSimulatedGpus: this.init.allowSimulatedGpus === true }
      let result = schedule({ ...base, exclude: [...ledger.excludedPeers(id), ...avoided] }, this.nodeViews(id))
      // anti-affinity yields when nothing else fits: a crowded instance beats none
      if (!result.ok && avoided.length > 0) result = schedule({ ...base, exclude: ledger.excludedPeers(id) }, this.nodeViews(id))
      metrics?.schedulingDecisions.inc({ result: result.ok ? 'placed' : 'refused' })
      if (!result.ok) {
        outcomes.refusals.set(id, result.reasons)
        if (attempt === 0) log.info({ block: id, reasons: result.reasons }, 'no placement')
        return
      }
      if (result.placements.length === 0) return
      outcomes.refusals.delete(id)
      for (const p of result.placements) {
        const answer = await this.init.assign(id, { ...spec, id }, component, p, term)
        if (answer.accepted) remaining--
        else {
          ledger.exclude(id, p.peerId)
          outcomes.failures.set(id, `${p.name} refused the instance: ${answer.reason ?? 'no reason given'}`)
        }
      }
    }
  }
}
