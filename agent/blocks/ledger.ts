/** An instance ordered on a peer that has not shown up in its host's reports yet. */
export interface Pending { block: string, peer: string, peerName: string, at: number }

/**
 * The reconciler's memory of instances between what it ordered and what the hosts report. The hosts'
 * gossip lags the orders by up to a heartbeat, so without it a reconciler would place twice (an assigned
 * instance not yet reported), count an instance it is draining, or not notice an instance that vanished
 * with its host:
 *
 * - pending: assigned, not reported yet (counted as running until it shows up or `showUp` passes);
 * - stopping: asked to stop (draining), not counted while it goes, until the time given;
 * - seen: reported running at the last pass, to notice the ones that vanish;
 * - excluded: peers that refused or failed a block, not asked again for it for `excludeMs`.
 */
export class InstanceLedger {
  readonly pending = new Map<string, Pending>()
  readonly stopping = new Map<string, number>()
  readonly seen = new Map<string, { block: string, peer: string, peerName: string }>()
  private readonly excluded = new Map<string, Map<string, number>>()
  private readonly excludeMs: number

  constructor (opts: { excludeMs?: number } = {}) {
    this.excludeMs = opts.excludeMs ?? 60_000
  }

  /** Pending instances of a block, by instance id. */
  pendingOf (block: string): Array<[string, Pending]> {
    return [...this.pending].filter(([, p]) => p.block === block)
  }

  exclude (block: string, peer: string): void {
    let m = this.excluded.get(block)
    if (m == null) { m = new Map(); this.excluded.set(block, m) }
    m.set(peer, Date.now() + this.excludeMs)
  }

  excludedPeers (block: string): string[] {
    const m = this.excluded.get(block)
    if (m == null) return []
    const now = Date.now()
    for (const [p, until] of m) if (until <= now) m.delete(p)
    return [...m.keys()]
  }

  /** Drops what is known of a block's instances in flight (its reconciler is another agent now, or it is gone). */
  forget (block: string): void {
    for (const [k, p] of this.pending) if (p.block === block) this.pending.delete(k)
    for (const [k, s] of this.seen) if (s.block === block) this.seen.delete(k)
  }
}
