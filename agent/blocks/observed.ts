import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { CapacityRecord, InstanceReport, ReconcileReport } from '../../mesh/capacity/record.ts'
import type { InstanceHost } from './host.ts'

/** An instance of a block as a host reports it, with the peer that runs it. */
export interface Reported { peer: string, name: string, report: InstanceReport, record?: CapacityRecord }

/**
 * What runs in the mesh, read from the hosts' own reports: this agent's host (fresh) and live peers'
 * capacity records (their last heartbeat). The truth the reconciler works from, so a new reconciler adopts
 * what is running without any hand-over message.
 */
export class Observed {
  readonly self: string
  private readonly gossip: CapacityGossip
  private readonly host: InstanceHost

  constructor (init: { self: string, gossip: CapacityGossip, host: InstanceHost }) {
    this.self = init.self
    this.gossip = init.gossip
    this.host = init.host
  }

  /** This agent's name as its record says (before the first record: "self"). */
  selfName (): string {
    return this.gossip.localRecord()?.name ?? 'self'
  }

  /** Every live record, this agent's own first. */
  records (): CapacityRecord[] {
    const out: CapacityRecord[] = []
    const own = this.gossip.localRecord()
    if (own != null) out.push(own)
    for (const p of this.gossip.peers()) if (p.status === 'live') out.push(p.record)
    return out
  }

  /** Instances of a block reported in the mesh: this agent's own (fresh) and live peers' (last heartbeat). */
  reported (block: string): Reported[] {
    const out: Reported[] = []
    const own = this.gossip.localRecord()
    for (const r of this.host.reports()) if (r.block === block) out.push({ peer: this.self, name: own?.name ?? 'self', report: r, record: own })
    for (const p of this.gossip.peers()) {
      if (p.status !== 'live') continue
      for (const r of p.record.instances) if (r.block === block) out.push({ peer: p.record.peerId, name: p.record.name, report: r, record: p.record })
    }
    return out
  }

  /** The live peer that claims to reconcile a block with the highest term, from its record. */
  claimOf (block: string): { peerId: string, name: string, report: ReconcileReport } | undefined {
    let best: { peerId: string, name: string, report: ReconcileReport } | undefined
    for (const p of this.gossip.peers()) {
      if (p.status !== 'live') continue
      const r = (p.record.reconciles ?? []).find(x => x.block === block)
      if (r != null && (best == null || r.term > best.report.term)) best = { peerId: p.record.peerId, name: p.record.name, report: r }
    }
    return best
  }

  /** Whether a peer other than this agent is live now. */
  isLive (peer: string): boolean {
    return this.gossip.peer(peer)?.status === 'live'
  }
}
