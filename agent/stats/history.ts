import type { CapacityRecord } from '../../mesh/capacity/record.ts'

/** One point of a peer's time series, taken from one of its capacity records. */
export interface StatsSample {
  /** receiver's clock, ms since epoch */
  t: number
  /** whole-machine CPU busy % */
  cpu: number
  load1: number
  /** RAM in use (total − available), % */
  ram: number
  /** mean utilisation of the GPUs that report it, %; null without such GPUs */
  gpu: number | null
  /** GPU memory in use over all GPUs that report free memory, %; null without them */
  gpuMem: number | null
  /** tokens per second over the peer's block instances */
  tps: number
}

export interface StatsHistoryInit {
  /** samples kept per peer (oldest dropped first) */
  perPeer?: number
  /** peers kept (the least recently sampled dropped first) */
  maxPeers?: number
}

/** What one capacity record says, as one sample. */
export function sampleOf (record: CapacityRecord, t: number): StatsSample {
  const r = record.readings
  const ram = r.memory.totalBytes > 0 ? 100 * (r.memory.totalBytes - r.memory.availableBytes) / r.memory.totalBytes : 0
  const utils = r.gpus.map(g => g.utilisation).filter((u): u is number => u != null)
  const withFree = r.gpus.filter(g => g.memoryFreeBytes != null && g.memoryTotalBytes > 0)
  const total = withFree.reduce((s, g) => s + g.memoryTotalBytes, 0)
  const used = withFree.reduce((s, g) => s + g.memoryTotalBytes - (g.memoryFreeBytes ?? 0), 0)
  return {
    t,
    cpu: round(r.cpu.utilisation),
    load1: round(r.cpu.load1),
    ram: round(Math.max(0, Math.min(100, ram))),
    gpu: utils.length === 0 ? null : round(utils.reduce((a, b) => a + b, 0) / utils.length),
    gpuMem: total === 0 ? null : round(100 * used / total),
    tps: round(record.instances.reduce((s, i) => s + i.tokensPerSecond, 0))
  }
}

function round (x: number): number { return Math.round(x * 100) / 100 }

/**
 * Short per-peer time series of the capacity records this agent has seen,
 * so a dashboard opened now draws the last minutes at once. One sample per
 * record (a record seen twice, same epoch and seq, is not sampled again).
 */
export class StatsHistory {
  private readonly perPeer: number
  private readonly maxPeers: number
  private readonly series = new Map<string, { key: string, samples: StatsSample[] }>()

  constructor (init: StatsHistoryInit = {}) {
    this.perPeer = init.perPeer ?? 300
    this.maxPeers = init.maxPeers ?? 1024
  }

  /** Adds the record's sample unless it was taken already; returns the new sample, or null. */
  add (record: CapacityRecord, t: number): StatsSample | null {
    const key = `${record.epoch}:${record.seq}`
    let s = this.series.get(record.peerId)
    if (s?.key === key) return null
    if (s == null) {
      s = { key, samples: [] }
    } else {
      s.key = key
      this.series.delete(record.peerId) // re-inserted below: Map order is recency order
    }
    this.series.set(record.peerId, s)
    const sample = sampleOf(record, t)
    s.samples.push(sample)
    if (s.samples.length > this.perPeer) s.samples.splice(0, s.samples.length - this.perPeer)
    while (this.series.size > this.maxPeers) {
      const oldest = this.series.keys().next().value
      if (oldest == null) break
      this.series.delete(oldest)
    }
    return sample
  }

  /** The samples of these peers (all peers when absent), oldest first. */
  all (peers?: string[]): Record<string, StatsSample[]> {
    const want = peers == null ? null : new Set(peers)
    return Object.fromEntries([...this.series].filter(([peer]) => want == null || want.has(peer)).map(([peer, s]) => [peer, [...s.samples]]))
  }
}
