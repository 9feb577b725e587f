import type { ConnectionGater, PeerId } from '@libp2p/interface'

/** Past this many bans held, expired ones are swept at the next ban (a Sybil peer can be banned under many IDs). */
const SWEEP_BANS_ABOVE = 1024

export interface PeerGateInit {
  allow?: string[] | null
  /** closes every connection of a peer just banned (the mesh node's libp2p hang-up) */
  disconnect?: (peer: string) => void | Promise<void>
  now?: () => number
}

/**
 * Decides who may connect: an optional allow-list of peer IDs, plus
 * temporary bans for peers that misbehaved (malformed frames and so on).
 * A ban also disconnects the peer at once. The same object answers the
 * libp2p connection gater's questions, so a banned peer cannot come back.
 */
export class PeerGate {
  private readonly allow: Set<string> | null
  private readonly bans = new Map<string, number>()
  private readonly now: () => number
  private readonly disconnect: ((peer: string) => void | Promise<void>) | undefined

  constructor (init: PeerGateInit = {}) {
    this.allow = init.allow != null && init.allow.length > 0 ? new Set(init.allow) : null
    this.now = init.now ?? Date.now
    this.disconnect = init.disconnect
  }

  get allowList (): string[] | null {
    return this.allow == null ? null : [...this.allow]
  }

  /** Bans `peer` for `ms` and closes its connections. */
  ban (peer: string, ms: number): void {
    if (this.bans.size >= SWEEP_BANS_ABOVE) this.sweep()
    this.bans.set(peer, this.now() + ms)
    try {
      void Promise.resolve(this.disconnect?.(peer)).catch(() => {})
    } catch { /* a peer that cannot be hung up on is still banned */ }
  }

  /** Peers banned now. */
  get banned (): number {
    this.sweep()
    return this.bans.size
  }

  private sweep (): void {
    const now = this.now()
    for (const [peer, until] of this.bans) if (until <= now) this.bans.delete(peer)
  }

  isBanned (peer: string): boolean {
    const until = this.bans.get(peer)
    if (until == null) return false
    if (until <= this.now()) {
      this.bans.delete(peer)
      return false
    }
    return true
  }

  /** True when the peer may hold a connection to us. */
  permits (peer: string): boolean {
    if (this.allow != null && !this.allow.has(peer)) return false
    return !this.isBanned(peer)
  }

  connectionGater (): ConnectionGater {
    const deny = (peerId: PeerId): boolean => !this.permits(peerId.toString())
    return {
      denyDialPeer: deny,
      denyInboundEncryptedConnection: deny,
      denyOutboundEncryptedConnection: deny,
      denyInboundUpgradedConnection: deny,
      denyOutboundUpgradedConnection: deny
    }
  }
}
