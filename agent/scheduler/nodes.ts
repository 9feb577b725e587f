/**
 * Capacity records (gossiped, and this agent's own) as the scheduler sees
 * them. Pure: no I/O, no clock; the caller picks the records (live peers and
 * its own) and says which peers already hold the block.
 */
import type { CapacityRecord } from '../../mesh/capacity/record.ts'
import type { NodeView } from './policy.ts'

export interface NodeViewsOptions {
  /** the block being placed: a node whose record reports an instance of it holds one */
  block: string
  /** peers that hold an instance of the block by the caller's own bookkeeping (e.g. the owner's instance rows) */
  holding?: ReadonlySet<string> | readonly string[] | ((peerId: string) => boolean)
}

/**
 * One NodeView per record, in the records' order. Every GPU keeps its place in
 * the record's list (a placement's gpuIndexes index it) and its `simulated`
 * flag: schedule() leaves simulated GPUs out unless the request sets
 * allowSimulatedGpus. `instances` is 1 when the node holds the block (its
 * record reports an instance of it, or `holding` says so), else 0.
 */
export function nodeViewsFrom (records: Iterable<CapacityRecord>, opts: NodeViewsOptions): NodeView[] {
  const holds = holdingTest(opts.holding)
  const views: NodeView[] = []
  for (const r of records) {
    views.push({
      peerId: r.peerId,
      name: r.name,
      cluster: r.cluster,
      vendor: r.vendor,
      cpus: r.readings.cpu.count,
      load15: r.readings.cpu.load15,
      ramAvailable: r.readings.memory.availableBytes,
      gpus: r.readings.gpus.map(g => ({ memoryFreeBytes: g.memoryFreeBytes, memoryTotalBytes: g.memoryTotalBytes, utilisation: g.utilisation, simulated: g.simulated })),
      instances: holds(r.peerId) || r.instances.some(i => i.block === opts.block) ? 1 : 0
    })
  }
  return views
}

function holdingTest (holding: NodeViewsOptions['holding']): (peerId: string) => boolean {
  if (holding == null) return () => false
  if (typeof holding === 'function') return holding
  const set: ReadonlySet<string> = holding instanceof Set ? holding : new Set(holding as readonly string[])
  return peerId => set.has(peerId)
}
