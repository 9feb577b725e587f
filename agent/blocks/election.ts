import { createHash } from 'node:crypto'
import type { PeerView } from '../../mesh/capacity/gossip.ts'

/** Rendezvous weight of a peer for a block: the highest live one reconciles the block when its creator is gone. */
export function rendezvousWeight (block: string, peer: string): string {
  return createHash('sha256').update(block).update('\u0000').update(peer).digest('hex')
}

/**
 * Who reconciles a block: its creator while live, else the live agent of highest rendezvous weight.
 * Every agent computes the same answer from the same view of who is live.
 */
export function reconcilerOf (block: string, createdBy: string, self: string, peers: PeerView[]): string {
  const live = [self, ...peers.filter(p => p.status === 'live').map(p => p.record.peerId)]
  if (live.includes(createdBy)) return createdBy
  let best = self
  let bestW = rendezvousWeight(block, best)
  for (const p of live) {
    const w = rendezvousWeight(block, p)
    if (w > bestW) { best = p; bestW = w }
  }
  return best
}

/**
 * Terms seen for a block: the highest anywhere (live peers' claims and instances, the last records of
 * expired peers, this host's own instance: `hostTerm`), which a new claim must exceed; and the highest a
 * live peer claims as its reconciler, before which a reconciler steps down.
 */
export function seenTerms (block: string, hostTerm: number, peers: PeerView[], who?: { createdBy: string, self: string }): { term: number, claim: number } {
  let term = hostTerm
  let claim = 0
  // with `who`: only a claimant some view could choose makes this agent step down (the creator, or an agent
  // of higher rendezvous weight that this one may not see as live), not any peer that publishes a claim
  const plausible = (peer: string): boolean => who == null || peer === who.createdBy || rendezvousWeight(block, peer) > rendezvousWeight(block, who.self)
  for (const p of peers) {
    for (const r of p.record.reconciles ?? []) {
      if (r.block !== block) continue
      term = Math.max(term, r.term)
      if (p.status === 'live' && plausible(p.record.peerId)) claim = Math.max(claim, r.term)
    }
    for (const r of p.record.instances) if (r.block === block) term = Math.max(term, r.term ?? 0)
  }
  return { term, claim }
}
