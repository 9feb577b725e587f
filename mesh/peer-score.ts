import type { MeshLogger } from './node.ts'
import type { Offence } from './errors.ts'

export type { Offence } from './errors.ts'

/**
 * Points each offence adds to a peer's score. The ban threshold sits between two and three offences of any
 * kind (2 × 12 < 25 ≤ 3 × 9): a burst of three bad frames bans, whatever they were, and two never do — the
 * fuzz and security tests (and every operator reading "three strikes") rely on that. Within it a forgery
 * weighs most: with the decay below, three forged frames evenly spread ban within ~12 minutes, three
 * malformed ones within ~5.5, three oversized ones (which an honest peer of another version may send) within ~2.3.
 */
export const OFFENCE_WEIGHTS: Readonly<Record<Offence, number>> = { oversized: 9, malformed: 10, forged: 12 }
/** A peer whose score reaches this is disconnected and banned through the gate. */
export const BAN_THRESHOLD = 25
/** A score halves every this long without a new offence (Lodestar decays its peer scores the same way). */
export const SCORE_HALF_LIFE_MS = 10 * 60_000
export const BAN_MS = 10 * 60_000
/** Peers with a score kept at most; beyond it the ones whose last offence is oldest are forgotten first. */
export const MAX_SCORED_PEERS = 4096

/** What the score needs of the mesh node: its gate, whose ban also disconnects the peer (mesh/gater.ts). */
export interface ScoredNode {
  gate: { ban: (peer: string, ms: number) => void, isBanned: (peer: string) => boolean }
}

/** Listeners of the score (metrics, tests). A listener that throws is logged and does not stop the others. */
export interface PeerScoreHooks {
  /** after every offence, with the peer's score including it */
  onStrike?: (peer: string, reason: string, offence: Offence, score: number) => void
  /** the peer reached the threshold and was banned */
  onBan?: (peer: string, score: number) => void
}

export interface PeerScoreInit extends PeerScoreHooks {
  weights?: Partial<Record<Offence, number>>
  banThreshold?: number
  halfLifeMs?: number
  banMs?: number
  maxPeers?: number
  log?: MeshLogger
  now?: () => number
}

interface Entry { score: number, at: number }

const silent: MeshLogger = { debug () {}, info () {}, warn () {} }

/**
 * The one score of misbehaving peers, for every protocol of the node (capacity gossip, desired-state gossip and
 * sync, the tensor, generate, RPC and tunnel services): an offence adds its weight, the score decays
 * exponentially, and at BAN_THRESHOLD the peer is banned through the gate, which disconnects it. One table,
 * so offences on different protocols add up: before it, gossip kept a strike table of its own and a peer
 * could send two bad gossip frames and two bad RPCs without a ban.
 */
export class PeerScore {
  private readonly node: ScoredNode
  private readonly weights: Record<Offence, number>
  private readonly threshold: number
  private readonly halfLifeMs: number
  private readonly banMs: number
  private readonly maxPeers: number
  private readonly log: MeshLogger
  private readonly now: () => number
  /** Map order is recency of the last offence, for trimming. */
  private readonly entries = new Map<string, Entry>()
  private readonly hooks = new Set<PeerScoreHooks>()

  constructor (node: ScoredNode, init: PeerScoreInit = {}) {
    this.node = node
    this.weights = { ...OFFENCE_WEIGHTS, ...init.weights }
    this.threshold = init.banThreshold ?? BAN_THRESHOLD
    this.halfLifeMs = init.halfLifeMs ?? SCORE_HALF_LIFE_MS
    this.banMs = init.banMs ?? BAN_MS
    this.maxPeers = init.maxPeers ?? MAX_SCORED_PEERS
    this.log = init.log ?? silent
    this.now = init.now ?? Date.now
    if (init.onStrike != null || init.onBan != null) this.hooks.add({ onStrike: init.onStrike, onBan: init.onBan })
  }

  /** Adds listeners (the agent's metrics); returns the function that removes them. */
  observe (hooks: PeerScoreHooks): () => void {
    this.hooks.add(hooks)
    return () => { this.hooks.delete(hooks) }
  }

  /**
   * Records an offence of `peer` (`reason`: what it sent, for logs and the strike metric's label); returns true
   * when it got the peer banned. The score starts again from 0 after a ban.
   */
  strike (peer: string, reason: string, offence: Offence = 'malformed'): boolean {
    const now = this.now()
    const score = this.score(peer, now) + this.weights[offence]
    this.entries.delete(peer)
    this.entries.set(peer, { score, at: now })
    this.emit('onStrike', h => h.onStrike?.(peer, reason, offence, score))
    this.log.warn({ peer, reason, offence, score: round(score) }, 'peer misbehaved')
    if (score < this.threshold) {
      this.trim()
      return false
    }
    this.entries.delete(peer)
    this.node.gate.ban(peer, this.banMs)
    this.emit('onBan', h => h.onBan?.(peer, score))
    this.log.warn({ peer, score: round(score), banMs: this.banMs }, 'peer banned')
    return true
  }

  /** The peer's score now (0: no offence remembered). */
  score (peer: string, now = this.now()): number {
    const e = this.entries.get(peer)
    if (e == null) return 0
    return e.score * 2 ** (-Math.max(0, now - e.at) / this.halfLifeMs)
  }

  /** Peers with a score, highest first, each rounded to 0.01. */
  scores (): Array<{ peer: string, score: number }> {
    const now = this.now()
    return [...this.entries.keys()].map(peer => ({ peer, score: round(this.score(peer, now)) })).sort((a, b) => b.score - a.score)
  }

  /** Peers with a score kept. */
  get size (): number { return this.entries.size }

  get banThreshold (): number { return this.threshold }

  isBanned (peer: string): boolean {
    return this.node.gate.isBanned(peer)
  }

  /** Forgets the peers offended longest ago, down to 90 % of the bound, so trimming is not done at every offence. */
  private trim (): void {
    if (this.entries.size <= this.maxPeers) return
    const keep = Math.floor(this.maxPeers * 0.9)
    for (const peer of this.entries.keys()) {
      if (this.entries.size <= keep) break
      this.entries.delete(peer)
    }
  }

  private emit (what: string, call: (h: PeerScoreHooks) => void): void {
    for (const h of this.hooks) {
      try { call(h) } catch (err) { this.log.warn({ err: (err as Error).message, hook: what }, 'peer score listener failed') }
    }
  }
}

function round (n: number): number {
  return Math.round(n * 100) / 100
}
