import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { MeshNode } from '../../mesh/node.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import { requestJson } from '../../mesh/rpc.ts'
import type { Placement } from '../scheduler/policy.ts'
import type { BlockSpec } from '../registry/blocks.ts'
import type { ComponentSpec } from '../registry/components.ts'
import type { AgentMetrics } from '../metrics.ts'
import type { InstanceHost } from './host.ts'
import { ASSIGN_PROTOCOL, AssignResponseSchema } from './assign.ts'
import type { AssignRequest, AssignResponse } from './assign.ts'
import { acceptStart, processRefusal } from './assign-service.ts'
import type { InstanceLedger } from './ledger.ts'

export interface AssignClientInit {
  self: string
  mesh: MeshNode
  gossip: CapacityGossip
  host: InstanceHost
  ledger: InstanceLedger
  log: Logger
  metrics?: AgentMetrics
  /** an instance stopped to scale down or to restore anti-affinity may finish its sequences for this long */
  drainMs?: number
  /** this agent's name, in refusals */
  name: string
  /** --accept-remote-processes: run external systems and init processes of components other agents wrote */
  acceptRemoteProcesses: boolean
  /** the checked writer of a component (the replicated state's entry) */
  authorOf: (component: string) => string | undefined
}

/**
 * The reconciler's orders to hosts (/blockmesh/assign/1.0.0, agent/blocks/assign.ts): start an instance on a
 * peer, stop one. An order to this agent itself skips the network but goes through the same acceptance
 * rule a peer's host applies (acceptStart). Every order carries the reconciler's term, and each is written
 * into the ledger (pending, stopping) before it is sent, so the next pass counts it even before the host's
 * gossip shows it.
 */
export class AssignClient {
  private readonly init: AssignClientInit

  constructor (init: AssignClientInit) {
    this.init = init
  }

  /** Orders a new instance of `block` on the placement's peer: the peer's answer (why, when it refused). */
  async start (block: string, spec: BlockSpec, component: ComponentSpec, p: Placement, term: number): Promise<AssignResponse> {
    const { self, ledger, log, metrics } = this.init
    const instance = `${block.slice(0, 48)}-${randomBytes(4).toString('hex')}`
    ledger.pending.set(instance, { block, peer: p.peerId, peerName: p.name, at: Date.now() })
    let answer: AssignResponse
    try {
      if (p.peerId === self) {
        answer = processRefusal(this.init.name, component, this.init.acceptRemoteProcesses, { self, writer: this.init.authorOf(spec.component) }) ??
          acceptStart(this.init.host, { block, instance, spec, component, from: self, term })
      } else {
        const req: AssignRequest = { op: 'start', block, instance, spec, component, term }
        answer = await requestJson(this.init.mesh, p.peerId, ASSIGN_PROTOCOL, req, AssignResponseSchema, { timeoutMs: 15_000 })
      }
    } catch (err) {
      answer = { accepted: false, reason: (err as Error).message }
    }
    metrics?.assignments.inc({ result: answer.accepted ? 'accepted' : 'refused' })
    if (!answer.accepted) {
      ledger.pending.delete(instance)
      log.warn({ block, peer: p.name, reason: answer.reason }, 'peer refused the instance')
      return answer
    }
    log.info({ block, instance, peer: p.name, term }, 'instance assigned')
    return answer
  }

  /**
   * Orders an instance stopped (drained: it finishes its sequences first). It is not counted while it goes;
   * a peer that is gone is not asked (its instances went with it).
   */
  async stop (block: string, peer: string, instance: string, term: number, drain: boolean): Promise<void> {
    const { self, host, ledger, log } = this.init
    const drainMs = drain ? (this.init.drainMs ?? 60_000) : 0
    ledger.stopping.set(instance, Date.now() + drainMs + Math.max(30_000, 10 * this.init.gossip.heartbeatMs))
    for (const [k, p] of ledger.pending) if (k === instance || (p.block === block && p.peer === peer)) ledger.pending.delete(k)
    try {
      if (peer === self) {
        if (host.term(block) <= term) void host.stop(block, instance, { drainMs })
      } else if (this.init.gossip.peer(peer)?.status === 'live') {
        const answer = await requestJson(this.init.mesh, peer, ASSIGN_PROTOCOL, { op: 'stop', block, instance, term, drain } satisfies AssignRequest, AssignResponseSchema, { timeoutMs: 10_000 })
        if (!answer.accepted && answer.reason != null) log.warn({ block, instance, reason: answer.reason }, 'host refused to stop the instance')
      }
    } catch (err) {
      log.warn({ block, instance, err: (err as Error).message }, 'could not stop instance')
    }
    log.info({ block, instance, peer, drain }, 'instance removed')
  }
}
