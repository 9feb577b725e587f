/**
 * /blockmesh/assign/1.0.0, the host side: a peer reconciling a block orders this agent to start or stop
 * one of its instances (agent/blocks/assign.ts: the frames; agent/blocks/assign-client.ts: the sender).
 *
 * A start is refused when this agent does not run peers' processes (external systems, init processes)
 * without --accept-remote-processes, when its own readings now no longer pass the block's node filter (the
 * reconciler saw them a heartbeat ago), when the order's term is below the one held for the block (a
 * reconciler that lost its role), and when it already runs another instance of the block. A stop from a
 * lower term is refused too, so a stale reconciler cannot undo the new one's work.
 *
 * Shaped like js-libp2p's protocol services (ping), as agent/serving/generate-service.ts:
 * `assignService(init)` returns a factory taking the components; the service has start/stop.
 */
import type { z } from 'zod'
import type { MeshNode } from '../../mesh/node.ts'
import { jsonRpcService } from '../../mesh/rpc.ts'
import type { JsonRpcService, RpcOptions } from '../../mesh/rpc.ts'
import { schedule } from '../scheduler/schedule.ts'
import type { NodeView } from '../scheduler/policy.ts'
import type { BlockSpec } from '../registry/blocks.ts'
import type { ComponentSpec } from '../registry/components.ts'
import type { InstanceHost } from './host.ts'
import { ASSIGN_PROTOCOL, AssignRequestSchema } from './assign.ts'
import type { AssignResponse } from './assign.ts'
import { needsOf } from './placement.ts'

type Order = z.output<typeof AssignRequestSchema>

/** How long a drained stop lets the instance finish its sequences. */
export const DRAIN_MS = 60_000

export interface AssignServiceInit {
  /** this agent's name, in refusals */
  name: string
  /** run external systems and init processes that peers order (--accept-remote-processes) */
  acceptRemoteProcesses: boolean
  maxFrameBytes?: number
}

export interface AssignComponents {
  /** where the protocol is handled: the mesh node (its peer score takes the offences unless onInvalid is given) */
  node: MeshNode
  host: InstanceHost
  /** live nodes as the scheduler sees them for a block (BlockOwner.nodeViews): this node's own readings */
  nodeViews: (block: string) => NodeView[]
  /** told about peers that sent an order that does not parse, with what it costs them */
  onInvalid?: RpcOptions['onInvalid']
}

export interface AssignService {
  readonly protocol: string
  start: () => Promise<void>
  stop: () => Promise<void>
  isStarted: () => boolean
}

/**
 * Whether this agent may run what a component starts besides a model: an external system or an init
 * process. Peers' orders need --accept-remote-processes; so do this agent's own reconciler's orders for a
 * component another agent wrote (a block anyone may create can name this agent as its reconciler), unless
 * this agent wrote the component itself (`author`: the checked writer in the replicated state).
 */
export function processRefusal (name: string, component: ComponentSpec, accept: boolean, author?: { self: string, writer: string | undefined }): AssignResponse | null {
  if (component.runtime !== 'external' && component.init == null) return null
  if (accept || (author != null && author.writer === author.self)) return null
  return { accepted: false, reason: `${name} does not run external systems or init processes for peers (start it with --accept-remote-processes)` }
}

/** An order to start an instance here, from a peer or from this agent's own reconciler. */
export interface StartOrder { block: string, instance: string, spec: BlockSpec, component: ComponentSpec, from: string, term: number }

/**
 * The acceptance rule every start order meets here, a peer's or this agent's own: a lower term than the one
 * held for the block is stale, and a host runs one instance of a block.
 */
export function acceptStart (host: InstanceHost, o: StartOrder): AssignResponse {
  const held = host.list().find(h => h.block === o.block)
  if (held != null && host.term(o.block) > o.term) return { accepted: false, reason: `stale reconciler: term ${o.term} < ${host.term(o.block)} held for block ${o.block}` }
  if (held != null && held.instance !== o.instance) return { accepted: false, reason: `already runs instance ${held.instance} of block ${o.block}` }
  host.accept({ block: o.block, instance: o.instance, owner: o.from, spec: { ...o.spec, id: o.block }, component: o.component, term: o.term })
  return { accepted: true, status: 'pending' }
}

class Assign implements AssignService {
  readonly protocol = ASSIGN_PROTOCOL
  private readonly init: AssignServiceInit
  private readonly components: AssignComponents
  private rpc: JsonRpcService<typeof AssignRequestSchema> | undefined
  private started = false

  constructor (components: AssignComponents, init: AssignServiceInit) {
    this.components = components
    this.init = init
  }

  readonly [Symbol.toStringTag] = '@blockmesh/assign'

  async start (): Promise<void> {
    const { node, onInvalid } = this.components
    this.rpc = jsonRpcService({
      protocol: this.protocol,
      schema: AssignRequestSchema,
      handler: async (req, { peer }): Promise<AssignResponse> => req.op === 'stop' ? await this.stopOrder(req) : this.startOrder(req, peer),
      onInvalid,
      maxFrameBytes: this.init.maxFrameBytes ?? 256 * 1024
    })({ registrar: node.libp2p, score: node.score })
    await this.rpc.start()
    this.started = true
  }

  /** Unhandles the protocol and aborts the orders in flight. */
  async stop (): Promise<void> {
    this.started = false
    await this.rpc?.stop()
  }

  isStarted (): boolean { return this.started }

  private async stopOrder (req: Extract<Order, { op: 'stop' }>): Promise<AssignResponse> {
    const { host } = this.components
    const held = host.term(req.block)
    if (held > req.term) return { accepted: false, reason: `stale reconciler: term ${req.term} < ${held} held for block ${req.block}` }
    const hosted = host.list().find(h => h.block === req.block && h.instance === req.instance)
    if (hosted == null) return { accepted: false, reason: `no instance ${req.instance} here` }
    // a drained stop answers at once; the instance finishes its sequences, then unloads
    const stopping = host.stop(req.block, req.instance, { drainMs: req.drain ? DRAIN_MS : 0 })
    if (req.drain) { void stopping.catch(() => {}); return { accepted: true } }
    return { accepted: await stopping }
  }

  private startOrder (req: Extract<Order, { op: 'start' }>, peer: string): AssignResponse {
    const { host, node } = this.components
    const { name } = this.init
    const refused = processRefusal(name, req.component, this.init.acceptRemoteProcesses)
    if (refused != null) return refused
    const hosted = host.list().find(h => h.block === req.block)
    // re-check the node filter against this node's own readings now (the owner saw them a heartbeat ago);
    // whether simulated GPUs may be used is the placer's decision (it refuses them unless allowed there)
    const own = this.components.nodeViews(req.block).find(n => n.peerId === node.peerId.toString())
    const check = own == null
      ? { ok: false as const, reasons: [{ filter: 'node', message: 'no readings yet' }] }
      : schedule({ policy: { cluster: {}, node: req.spec.policy.node }, needs: needsOf(req.component), count: 1, allowSimulatedGpus: true }, [{ ...own, instances: hosted != null ? 0 : own.instances }])
    if (!check.ok || check.placements.length === 0) {
      return { accepted: false, reason: check.ok ? `${name} no longer fits the node filter` : check.reasons.map(r => r.message).join('; ') }
    }
    return acceptStart(host, { block: req.block, instance: req.instance, spec: { ...req.spec, id: req.block }, component: req.component, from: peer, term: req.term })
  }
}

export function assignService (init: AssignServiceInit): (components: AssignComponents) => AssignService {
  return (components) => new Assign(components, init)
}
