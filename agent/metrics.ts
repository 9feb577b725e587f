import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { CapacityObserver } from '../mesh/capacity/gossip.ts'

/** The agent's Prometheus metrics, in a registry of its own (one per agent). */
export class AgentMetrics {
  readonly registry = new Registry()
  readonly peersKnown: Gauge
  readonly gossipMessages: Counter<'direction'>
  readonly gossipRejected: Counter<'reason'>
  readonly gossipIgnored: Counter<'reason'>
  readonly peersBanned: Counter
  readonly peersExpired: Counter
  readonly heartbeatLag: Histogram

  constructor (livePeers: () => number) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'blockmesh_' })
    this.peersKnown = new Gauge({
      name: 'blockmesh_peers_known', help: 'Peers with a live (unexpired) capacity record', registers,
      collect () { this.set(livePeers()) }
    })
    this.gossipMessages = new Counter({
      name: 'blockmesh_gossip_messages_total', help: 'Capacity records published (out) and accepted (in)', labelNames: ['direction'], registers
    })
    this.gossipRejected = new Counter({
      name: 'blockmesh_gossip_messages_rejected_total', help: 'Inbound capacity frames rejected, by reason', labelNames: ['reason'], registers
    })
    this.gossipIgnored = new Counter({
      name: 'blockmesh_gossip_messages_ignored_total', help: 'Inbound capacity records ignored (stale or our own)', labelNames: ['reason'], registers
    })
    this.peersBanned = new Counter({ name: 'blockmesh_peers_banned_total', help: 'Peers disconnected and banned for bad frames', registers })
    this.peersExpired = new Counter({ name: 'blockmesh_peers_expired_total', help: 'Peers expired after missed heartbeats', registers })
    this.heartbeatLag = new Histogram({
      name: 'blockmesh_heartbeat_lag_seconds',
      help: 'How late each heartbeat fired against its schedule',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers
    })
  }

  gossipObserver (): CapacityObserver {
    return {
      published: () => { this.gossipMessages.inc({ direction: 'out' }) },
      accepted: () => { this.gossipMessages.inc({ direction: 'in' }) },
      rejected: (reason) => { this.gossipRejected.inc({ reason }) },
      ignored: (reason) => { this.gossipIgnored.inc({ reason }) },
      banned: () => { this.peersBanned.inc() },
      expired: () => { this.peersExpired.inc() },
      heartbeatLag: (ms) => { this.heartbeatLag.observe(ms / 1000) }
    }
  }
}
