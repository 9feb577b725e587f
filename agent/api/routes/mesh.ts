import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import type { ApiContext } from '../context.ts'
import type { PeerView } from '../../../mesh/capacity/gossip.ts'
import type { CapacityRecord } from '../../../mesh/capacity/record.ts'
import type { NodeAnswer, PeerJson, PeersAnswer, StateAnswer } from '../../../contracts/api.ts'
import { parseWith } from '../validate.ts'
import { NotFoundError } from '../../errors.ts'
import { COLLECTIONS } from '../../state/frame.ts'

export function peerJson (ctx: ApiContext, record: CapacityRecord, lastSeen: number, status: PeerView['status'], self: boolean): PeerJson {
  const { v: _v, ts: _ts, ...rest } = record
  return {
    ...rest,
    self,
    status,
    connected: self || ctx.mesh.isConnected(record.peerId),
    lastSeen: new Date(lastSeen).toISOString(),
    lastSeenAgoMs: Math.max(0, Date.now() - lastSeen),
    score: self ? 0 : Math.round(ctx.mesh.score.score(record.peerId) * 100) / 100
  }
}

export function selfJson (ctx: ApiContext): PeerJson | null {
  const own = ctx.gossip.localRecord()
  return own == null ? null : peerJson(ctx, own, own.ts, 'live', true)
}

/** This node first, then the peers it knows, by cluster and name (what GET /api/peers answers). */
export function peersJson (ctx: ApiContext, include: 'live' | 'all'): PeersAnswer {
  const self = selfJson(ctx)
  const peers = ctx.gossip.peers()
    .filter(p => include === 'all' || p.status === 'live')
    .map(p => peerJson(ctx, p.record, p.lastSeen, p.status, false))
    .sort((a, b) => a.cluster.localeCompare(b.cluster) || a.name.localeCompare(b.name) || a.peerId.localeCompare(b.peerId))
  return { self: ctx.mesh.peerId.toString(), heartbeatMs: ctx.gossip.heartbeatMs, peers: self == null ? peers : [self, ...peers] }
}

const PeersQuery = z.object({
  include: z.enum(['live', 'all']).default('live')
}).strict()

export function registerMeshRoutes (app: FastifyInstance, ctx: ApiContext): void {
  app.get('/api/node', async (): Promise<NodeAnswer> => {
    const self = selfJson(ctx)
    if (self == null) throw new NotFoundError('no capacity record published yet')
    return { ...self, heartbeatMs: ctx.gossip.heartbeatMs, nextSeq: ctx.gossip.nextSeq(), allowList: ctx.mesh.gate.allowList }
  })

  /** The replicated desired state held here: its digest (equal digests, equal states), changes, writers, objects per collection. */
  app.get('/api/state', async (): Promise<StateAnswer> => ({
    digest: ctx.state.digest(),
    changes: ctx.state.changes(),
    actors: ctx.state.vector().size,
    objects: Object.fromEntries(COLLECTIONS.map(c => [c, ctx.state.list(c).length]))
  }))
  app.get('/api/peers', async (req): Promise<PeersAnswer> => {
    const q = parseWith(PeersQuery, req.query, 'query')
    return peersJson(ctx, q.include)
  })

  app.get<{ Params: { id: string } }>('/api/peers/:id', async (req): Promise<PeerJson> => {
    if (req.params.id === ctx.mesh.peerId.toString()) {
      const self = selfJson(ctx)
      if (self != null) return self
    }
    const p = ctx.gossip.peer(req.params.id)
    if (p == null) throw new NotFoundError(`unknown peer ${req.params.id}`)
    return peerJson(ctx, p.record, p.lastSeen, p.status, false)
  })
}
