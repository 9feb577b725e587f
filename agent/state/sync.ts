import { z } from 'zod'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { MeshNode } from '../../mesh/node.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { PeerScore } from '../../mesh/peer-score.ts'
import { offenceOf } from '../../mesh/errors.ts'
import { jsonRpcService, requestJson } from '../../mesh/rpc.ts'
import type { JsonRpcService } from '../../mesh/rpc.ts'
import { StateFrameError } from './frame.ts'
import type { DesiredState } from './replica.ts'

/** Gossipsub topic on which every local write is published at once. */
export const STATE_TOPIC = '/blockmesh/state/1'
/** Anti-entropy: a peer asks for the changes it lacks, given what it has of each actor. */
export const STATE_SYNC_PROTOCOL = '/blockmesh/state-sync/1.0.0'

const MAX_ACTORS = 8192
const RESPONSE_BUDGET = 1024 * 1024
const RESPONSE_MAX_CHANGES = 2048

export const SyncRequestSchema = z.object({
  have: z.record(z.string().regex(/^[a-f0-9]{32}$/), z.number().int().min(0).max(2 ** 40))
    .refine(h => Object.keys(h).length <= MAX_ACTORS, `at most ${MAX_ACTORS} actors`)
}).strict()
export const SyncResponseSchema = z.object({
  frames: z.array(z.string().max(Math.ceil(RESPONSE_BUDGET * 4 / 3) + 4)).max(RESPONSE_MAX_CHANGES),
  more: z.boolean()
}).strict()

export interface StateSyncComponents {
  node: MeshNode
  state: DesiredState
  gossip: CapacityGossip
  /** the node's one peer score (mesh/peer-score.ts; the name is from when it was the Penalties table) */
  penalties: PeerScore
  log: Logger
  /** changes applied, by how they came; frames refused, by reason */
  observer?: { applied?: (via: 'gossip' | 'sync' | 'local') => void, rejected?: (reason: string) => void, synced?: (peer: string, changes: number) => void }
}

/**
 * Replicates the desired state (js-libp2p service shape: made from its components, start/stop):
 * - push: each local write is published on STATE_TOPIC; peers check and apply it;
 * - pull (anti-entropy): every capacity record carries the sender's state digest; when a live peer's digest
 *   differs from ours, we ask it (at most once per heartbeat per peer) for the changes we lack, page by page.
 *   The peer does the same towards us, so both converge. A peer back from a partition or a restart catches
 *   up the same way. At rest the cost is the 16-character digest in each heartbeat.
 * A frame that fails its checks (signature, actor bound to signer, allowed operations, bounds) is an offence
 * of the peer that sent it, in the node's one peer score (a forged signature or writer weighs more than an
 * oversized frame); so is a sync request that does not parse.
 */
export class StateSync {
  private readonly c: StateSyncComponents
  private readonly lastPull = new Map<string, number>()
  private readonly pulling = new Set<string>()
  private unsubscribe: Array<() => void> = []
  private running = false
  /** the pull side's server, a libp2p protocol service */
  private rpc: JsonRpcService<typeof SyncRequestSchema> | undefined
  /** aborts the pulls in flight when the service stops */
  private stopping = new AbortController()

  constructor (components: StateSyncComponents) {
    this.c = components
  }

  async start (): Promise<void> {
    const { node, state, gossip } = this.c
    const pubsub = node.libp2p.services.pubsub
    pubsub.topicValidators.set(STATE_TOPIC, async (source, msg) => await this.validate(source, msg))
    pubsub.subscribe(STATE_TOPIC)
    this.stopping = new AbortController()
    this.rpc = jsonRpcService({
      protocol: STATE_SYNC_PROTOCOL,
      schema: SyncRequestSchema,
      handler: async (req) => {
        const { frames, more } = state.missingFor(new Map(Object.entries(req.have)), RESPONSE_BUDGET, RESPONSE_MAX_CHANGES)
        return { frames: frames.map(f => Buffer.from(f).toString('base64')), more }
      },
      maxFrameBytes: 2 * RESPONSE_BUDGET,
      timeoutMs: 30_000,
      maxInboundStreams: 8
    })({ registrar: node.libp2p, score: this.c.penalties })
    await this.rpc.start()
    this.unsubscribe.push(state.onLocalWrite(frame => {
      this.c.observer?.applied?.('local')
      pubsub.publish(STATE_TOPIC, frame).catch((err: Error) => {
        // no subscribed peer yet (a lone agent): peers pull it by anti-entropy when they come
        this.c.log.debug({ err: err.message }, 'state change not published')
      })
    }))
    this.unsubscribe.push(gossip.onChange((peer, view) => {
      if (view.status === 'live' && view.record.state != null && view.record.state !== state.digest()) this.maybePull(peer)
    }))
    this.running = true
  }

  async stop (): Promise<void> {
    this.running = false
    this.stopping.abort()
    for (const u of this.unsubscribe) u()
    this.unsubscribe = []
    const pubsub = this.c.node.libp2p.services.pubsub
    pubsub.topicValidators.delete(STATE_TOPIC)
    try { pubsub.unsubscribe(STATE_TOPIC) } catch { /* stopped */ }
    await this.rpc?.stop().catch(() => {})
    this.rpc = undefined
  }

  /** Pulls from a peer now unless a pull from it ran within the last heartbeat. */
  maybePull (peer: string): void {
    const now = Date.now()
    if (!this.running || this.pulling.has(peer) || now - (this.lastPull.get(peer) ?? 0) < this.c.gossip.heartbeatMs) return
    this.lastPull.set(peer, now)
    void this.pull(peer).catch((err: Error) => {
      this.c.log.debug({ peer, err: err.message }, 'state pull failed')
    })
  }

  /** Fetches every change the peer has and we lack; returns how many were applied. Stopping the service aborts it. */
  async pull (peer: string, signal?: AbortSignal): Promise<number> {
    this.pulling.add(peer)
    let applied = 0
    const aborted = signal != null ? AbortSignal.any([signal, this.stopping.signal]) : this.stopping.signal
    try {
      for (let page = 0; page < 1000; page++) {
        const have = Object.fromEntries(this.c.state.vector())
        const res = await requestJson(this.c.node, peer, STATE_SYNC_PROTOCOL, { have }, SyncResponseSchema, { maxFrameBytes: 2 * RESPONSE_BUDGET, timeoutMs: 30_000, signal: aborted })
        let progressed = false
        for (const b64 of res.frames) {
          const r = await this.receive(Buffer.from(b64, 'base64'), peer, 'sync')
          if (r === 'applied') { applied++; progressed = true }
        }
        if (!res.more || !progressed) break
      }
    } finally {
      this.pulling.delete(peer)
    }
    if (applied > 0) this.c.observer?.synced?.(peer, applied)
    return applied
  }

  private async receive (frame: Uint8Array, from: string, via: 'gossip' | 'sync'): Promise<'applied' | 'known' | 'missing-deps' | 'rejected'> {
    try {
      const r = await this.c.state.receive(frame)
      if (r === 'applied') this.c.observer?.applied?.(via)
      return r
    } catch (err) {
      if (!(err instanceof StateFrameError)) throw err
      this.c.observer?.rejected?.(err.reason)
      this.c.penalties.strike(from, `state frame ${err.reason}: ${err.message}`, offenceOf(err.reason))
      return 'rejected'
    }
  }

  private async validate (source: PeerId, msg: Message): Promise<TopicValidatorResult> {
    const from = source.toString()
    if (msg.type !== 'signed') {
      this.c.penalties.strike(from, 'unsigned state gossip message', 'malformed')
      return TopicValidatorResult.Reject
    }
    const r = await this.receive(msg.data, from, 'gossip')
    if (r === 'rejected') return TopicValidatorResult.Reject
    if (r === 'missing-deps') this.maybePull(from)
    return r === 'applied' ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
  }
}

/** The factory, js-libp2p style. */
export function stateSync (components: StateSyncComponents): StateSync {
  return new StateSync(components)
}
