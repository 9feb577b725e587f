import type { FastifyInstance } from 'fastify'
import type { ApiContext } from '../context.ts'
import { CSP } from '../csp.ts'
import { eventStream } from '../sse.ts'
import type { SseWriter } from '../../http/sse.ts'
import { AgentError } from '../../errors.ts'
import { StatsHistory } from '../../stats/history.ts'
import type { StatsSample } from '../../stats/history.ts'
import { peersJson } from './mesh.ts'

export interface EventsOptions {
  /** event streams open at once; a new one beyond this closes the oldest */
  maxClients?: number
  /** samples kept per peer for charts */
  historyPerPeer?: number
}

/**
 * GET /api/events: a Server-Sent Events stream for dashboards (read-only, no
 * token). First `hello` ({ self, heartbeatMs, history }: every peer's recent
 * samples), then every heartbeat `peers` ({ peers: as GET /api/peers, samples:
 * the new sample of each peer that sent a record since }).
 */
export function registerEventRoutes (app: FastifyInstance, ctx: ApiContext, opts: EventsOptions = {}): void {
  const maxClients = opts.maxClients ?? 32
  const history = new StatsHistory({ perPeer: opts.historyPerPeer ?? 300 })
  const clients = new Set<SseWriter>()

  const sampleAll = (): Record<string, StatsSample> => {
    const fresh: Record<string, StatsSample> = {}
    const own = ctx.gossip.localRecord()
    if (own != null) {
      const s = history.add(own, Date.now())
      if (s != null) fresh[own.peerId] = s
    }
    for (const p of ctx.gossip.peers()) {
      if (p.status !== 'live') continue
      const s = history.add(p.record, p.lastSeen)
      if (s != null) fresh[p.record.peerId] = s
    }
    return fresh
  }

  const send = (sse: SseWriter, event: string, data: unknown): void => {
    // one write per event, not waited on; a client that does not read is dropped rather than buffered without bound
    if (!sse.post(data, event, 4 * 1024 * 1024)) clients.delete(sse)
  }

  /** Samples what is new and sends it to every open stream. */
  const tick = (): void => {
    const samples = sampleAll()
    if (clients.size === 0 || Object.keys(samples).length === 0) return
    const body = { ...peersJson(ctx, 'live'), samples }
    for (const sse of clients) send(sse, 'peers', body)
  }
  const timer = setInterval(tick, ctx.gossip.heartbeatMs)
  timer.unref()

  app.addHook('preClose', async () => {
    clearInterval(timer)
    for (const sse of clients) sse.end()
    clients.clear()
  })

  app.get('/api/events', async (req, reply) => {
    // a page of another site may not hold streams open here (its requests still say Host: 127.0.0.1)
    const site = req.headers['sec-fetch-site']
    const origin = req.headers.origin
    if (site === 'cross-site' || (origin != null && origin !== `http://${req.headers.host ?? ''}` && origin !== `https://${req.headers.host ?? ''}`)) {
      throw new AgentError('event streams are for pages of this agent only', 'forbidden_origin', 403)
    }
    // full: the oldest stream makes room (its EventSource reconnects), so no one can lock dashboards out
    if (clients.size >= maxClients) {
      const oldest = clients.values().next().value
      if (oldest != null) { clients.delete(oldest); oldest.end() }
    }
    // records that came since the last tick: into the history (for this client's hello) and to the open streams
    tick()
    const sse = eventStream(reply, {
      headers: { 'cache-control': 'no-cache, no-transform', 'content-security-policy': CSP, 'x-content-type-options': 'nosniff' }
    })
    clients.add(sse)
    // the response's 'close' fires when the client goes away (or the stream is ended here)
    sse.onClose(() => { clients.delete(sse) })
    sse.retry(Math.max(1000, ctx.gossip.heartbeatMs))
    const now = peersJson(ctx, 'live')
    send(sse, 'hello', { ...now, history: history.all(now.peers.map(p => p.peerId)) })
  })
}
