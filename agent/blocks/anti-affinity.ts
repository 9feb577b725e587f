import type { Reported } from './observed.ts'
import type { Pending } from './ledger.ts'

/**
 * Anti-affinity (a block's `avoid`: e.g. the stages of one vDAG kept on different peers). A crowded
 * instance (on a peer running a block this one avoids) is moved surge-then-drain: one replacement is placed
 * off the avoided peers first, and the crowded instance stops only once enough uncrowded ones are ready to
 * carry the block, so the block never drops to no instance while it moves. Pure decisions; the reconciler
 * acts on them.
 */

/** Peers (this agent included) running or about to run an instance of any of `blocks`. */
export function peersRunning (blocks: string[], reported: (block: string) => Reported[], pending: Iterable<Pending>): string[] {
  if (blocks.length === 0) return []
  const set = new Set<string>()
  for (const block of blocks) for (const r of reported(block)) set.add(r.peer)
  for (const p of pending) if (blocks.includes(p.block)) set.add(p.peer)
  return [...set]
}

/**
 * Instances to place beyond the target now: one while an instance is crowded, nothing is in flight, the
 * block is not above its target, and the scheduler finds a node off the avoided peers (`canPlaceAway`,
 * asked last: it runs the scheduler).
 */
export function surge (crowded: number, pendingHere: number, count: number, target: number, canPlaceAway: () => boolean): number {
  return crowded > 0 && pendingHere === 0 && count <= target && canPlaceAway() ? 1 : 0
}

/** The order in which extra instances stop: crowded ones first, then the least loaded, this agent's own last. */
export function stopOrder (reported: Reported[], avoided: Set<string>, self: string): Reported[] {
  return [...reported].sort((x, y) =>
    (avoided.has(y.peer) ? 1 : 0) - (avoided.has(x.peer) ? 1 : 0) ||
    (x.report.active + x.report.queued) - (y.report.active + y.report.queued) ||
    (x.peer === self ? 1 : 0) - (y.peer === self ? 1 : 0))
}

/** A crowded instance may stop only once enough uncrowded ones are ready to carry the block. */
export function mayStop (r: Reported, avoided: Set<string>, readyUncrowded: number, target: number): boolean {
  return !avoided.has(r.peer) || readyUncrowded >= Math.min(target, 1)
}
