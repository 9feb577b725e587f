import type { MeshNode, MeshLogger } from './node.ts'
import { parsePeerId, silentLogger } from './node.ts'

export interface PenaltyInit {
  /** strikes within windowMs before a peer is disconnected and banned */
  maxStrikes?: number
  windowMs?: number
  banMs?: number
  log?: MeshLogger
  onBan?: (peer: string) => void
  onStrike?: (peer: string, reason: string) => void
  now?: () => number
}

/**
 * Counts a peer's offences (malformed or oversized frames, on any protocol);
 * past the limit the peer is disconnected and banned through the gate.
 */
export class Penalties {
  private readonly node: MeshNode
  private readonly init: Required<Omit<PenaltyInit, 'onBan' | 'onStrike' | 'log' | 'now'>> & Pick<PenaltyInit, 'onBan' | 'onStrike'>
  private readonly log: MeshLogger
  private readonly now: () => number
  private readonly strikes = new Map<string, { count: number, since: number }>()

  constructor (node: MeshNode, init: PenaltyInit = {}) {
    this.node = node
    this.init = { maxStrikes: 3, windowMs: 60_000, banMs: 10 * 60_000, ...init }
    this.log = init.log ?? silentLogger
    this.now = init.now ?? Date.now
  }

  /** Records an offence; returns true when it got the peer banned. */
  strike (peer: string, reason: string): boolean {
    const now = this.now()
    let s = this.strikes.get(peer)
    if (s == null || now - s.since > this.init.windowMs) s = { count: 0, since: now }
    s.count++
    this.strikes.set(peer, s)
    this.init.onStrike?.(peer, reason)
    this.log.warn({ peer, reason, strikes: s.count }, 'peer misbehaved')
    if (s.count < this.init.maxStrikes) return false
    this.strikes.delete(peer)
    this.node.gate.ban(peer, this.init.banMs)
    this.init.onBan?.(peer)
    this.log.warn({ peer, banMs: this.init.banMs }, 'peer banned')
    void this.node.libp2p.hangUp(parsePeerId(peer)).catch(() => {})
    return true
  }
}
