import type { ConnectionGater, PeerId } from '@libp2p/interface'

/**
 * Decides who may connect: an optional allow-list of peer IDs, plus
 * temporary bans for peers that misbehaved (malformed frames and so on).
 * The same object answers the libp2p connection gater's questions.
 */
export class PeerGate {
  private readonly allow: Set<string> | null
  private readonly bans = new Map<string, number>()
  private readonly now: () => number

  constructor (init: { allow?: string[] | null, now?: () => number } = {}) {
    this.allow = init.allow != null && init.allow.length > 0 ? new Set(init.allow) : null
    this.now = init.now ?? Date.now
  }

  get allowList (): string[] | null {
    return this.allow == null ? null : [...this.allow]
  }

  ban (peer: string, ms: number): void {
    this.bans.set(peer, this.now() + ms)
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
