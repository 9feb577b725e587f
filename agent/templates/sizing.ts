/**
 * Memory needed by a template version, and whole vs split vs refused from the peers' free memory.
 *
 * estimate.ts (memory per shape and quantization) and decide.ts (the placement decision) are written in
 * parallel by another change; until they are in, this file holds a simple stand-in for each with the same
 * shapes (DecisionNeed, Decision), so the routes call only estimateVersion() and decideDeployment() and the
 * switch is made here alone. The stand-ins: weights = parameters × bits per weight of the quantization
 * (float32 for F16/BF16/F32 files and for --weights f32), ×1.85 for loading; float32 KV cache
 * 2 × layers × kvHeads × headDim × context × concurrency × 4 B, ×3 copies; 96 MiB runtime. Whole on the peer
 * with the most free memory (10% kept free) when it fits; else the fewest stages (≤ 8, layers cut evenly)
 * whose every stage fits a distinct peer; else refused with the numbers.
 */
import type { CapacityRecord } from '../../mesh/capacity/record.ts'
import type { VersionSpec } from './schemas.ts'

export const ESTIMATOR = 'stand-in (agent/templates/sizing.ts)'

export interface VersionEstimate {
  quantization: string
  totalBytes: number
  weightsBytes: number
  kvCacheBytes: number
  runtimeBytes: number
  layers: number
  perLayerBytes: number
  embeddingBytes: number
  headBytes: number
  /** what the estimate assumed (a missing shape field, say) */
  assumed: string[]
  estimator: string
}

const BITS: Record<string, number> = {
  Q2_K: 2.63, Q3_K_S: 3.5, Q3_K_M: 3.91, Q3_K_L: 4.27, Q4_0: 4.5, Q4_1: 5, Q4_K_S: 4.58, Q4_K_M: 4.85, Q5_0: 5.5, Q5_1: 6, Q5_K_S: 5.54, Q5_K_M: 5.69, Q6_K: 6.56, Q8_0: 8.5
}
const MiB = 2 ** 20
const LOAD = 1.85
const KV_COPIES = 3
const RUNTIME = 96 * MiB

function bitsOf (quantization: string, weights: VersionSpec['weights']): number {
  if (weights === 'f32') return 32
  return BITS[quantization.toUpperCase()] ?? 32
}

/** The quantization a version deploys: its source's, else the first file listed, else Q4_K_M (model add's preference). */
export function quantizationOf (spec: VersionSpec): string {
  const s = spec.source
  if (s?.kind === 'hub' && s.quantization != null) return s.quantization.toUpperCase()
  const m = s?.kind === 'hub' && s.file != null ? /(I?Q\d[A-Z0-9_]*|F16|BF16|F32)(?=\.gguf$)/i.exec(s.file)?.[1] : undefined
  return (m ?? spec.model.files?.[0]?.quantization ?? 'Q4_K_M').toUpperCase()
}

/** The estimate for a version at its context length and concurrency; null when the shape is too unknown (no parameter count). */
export function estimateVersion (spec: VersionSpec, quantization = quantizationOf(spec)): VersionEstimate | null {
  const m = spec.model
  if (m.parameters == null) return null
  const assumed: string[] = []
  const hidden = m.hidden ?? Math.round(Math.sqrt(m.parameters / 12 / 24) * 1)
  if (m.hidden == null) assumed.push(`hidden ${hidden} (from the parameter count)`)
  const layers = m.layers ?? 24
  if (m.layers == null) assumed.push('24 layers')
  const heads = m.heads ?? Math.max(1, Math.round(hidden / 64))
  const kvHeads = m.kvHeads ?? heads
  if (m.kvHeads == null) assumed.push('no grouped-query attention (kvHeads = heads)')
  const headDim = m.headDim ?? Math.round(hidden / heads)
  const vocab = m.vocab ?? 32_000
  if (m.vocab == null) assumed.push('a 32000-token vocabulary')
  const bits = bitsOf(quantization, spec.weights)
  const weightsBytes = m.parameters * bits / 8
  const embeddingBytes = vocab * hidden * bits / 8 * LOAD
  const kvCacheBytes = 2 * layers * kvHeads * headDim * spec.contextLength * spec.maxConcurrentSequences * 4 * KV_COPIES
  const layersWeights = Math.max(0, weightsBytes * LOAD - 2 * embeddingBytes)
  const perLayerBytes = layersWeights / layers + kvCacheBytes / layers
  const totalBytes = weightsBytes * LOAD + kvCacheBytes + RUNTIME
  return { quantization, totalBytes: Math.ceil(totalBytes), weightsBytes: Math.ceil(weightsBytes), kvCacheBytes, runtimeBytes: RUNTIME, layers, perLayerBytes: Math.ceil(perLayerBytes), embeddingBytes: Math.ceil(embeddingBytes), headBytes: Math.ceil(embeddingBytes), assumed, estimator: ESTIMATOR }
}

export interface Candidate { peerId: string, name: string, freeBytes: number, kind: 'gpu' | 'ram' }
export type FreeByPeer = Record<string, number>
export interface Stage { peer: Candidate, layers: [number, number], bytes: number }
export type Decision =
  | { kind: 'whole', peer: Candidate, needBytes: number, freeBytes: FreeByPeer, reason: string }
  | { kind: 'split', stages: Stage[], needBytes: number, freeBytes: FreeByPeer, reason: string }
  | { kind: 'refused', needBytes: number, freeBytes: FreeByPeer, reason: string }

/** A peer's free memory for a model: its largest GPU's free memory when it reports GPUs, else available RAM. */
export function candidateOf (r: CapacityRecord): Candidate {
  const gpus = r.readings.gpus.filter(g => g.memoryFreeBytes != null)
  if (gpus.length > 0) return { peerId: r.peerId, name: r.name, freeBytes: Math.max(...gpus.map(g => g.memoryFreeBytes as number)), kind: 'gpu' }
  return { peerId: r.peerId, name: r.name, freeBytes: r.readings.memory.availableBytes, kind: 'ram' }
}

export function gib (n: number): string {
  return `${(n / 2 ** 30).toFixed(2)} GiB`
}

const HEADROOM = 0.1
const MAX_STAGES = 8

/** Whole, split or refused for an estimate and the live peers' free memory. */
export function decideDeployment (need: VersionEstimate, candidates: Candidate[]): Decision {
  const freeBytes: FreeByPeer = Object.fromEntries(candidates.map(c => [c.name, c.freeBytes]))
  const byFree = [...candidates].sort((a, b) => b.freeBytes - a.freeBytes)
  const usable = (c: Candidate): number => c.freeBytes * (1 - HEADROOM)
  if (byFree.length === 0) return { kind: 'refused', needBytes: need.totalBytes, freeBytes, reason: 'no live peer reports its memory' }
  if (usable(byFree[0]) >= need.totalBytes) {
    return { kind: 'whole', peer: byFree[0], needBytes: need.totalBytes, freeBytes, reason: `the whole model (${gib(need.totalBytes)}) fits on ${byFree[0].name} (${gib(byFree[0].freeBytes)} free, ${HEADROOM * 100}% kept free)` }
  }
  for (let k = 2; k <= Math.min(MAX_STAGES, byFree.length, need.layers); k++) {
    const stages: Stage[] = []
    for (let i = 0; i < k; i++) {
      const from = Math.floor(i * need.layers / k)
      const to = Math.floor((i + 1) * need.layers / k)
      const bytes = need.runtimeBytes + (to - from) * need.perLayerBytes + (i === 0 ? need.embeddingBytes : 0) + (i === k - 1 ? need.headBytes : 0)
      stages.push({ peer: byFree[i], layers: [from, to], bytes: Math.ceil(bytes) })
    }
    // the largest stages to the peers with the most free memory
    const order = [...stages].sort((a, b) => b.bytes - a.bytes)
    order.forEach((s, i) => { s.peer = byFree[i] })
    if (order.every(s => usable(s.peer) >= s.bytes)) {
      return { kind: 'split', stages, needBytes: need.totalBytes, freeBytes, reason: `no peer has ${gib(need.totalBytes)} free (the most is ${gib(byFree[0].freeBytes)} on ${byFree[0].name}); ${k} stages fit: ${stages.map(s => `${s.peer.name} layers ${s.layers[0]}–${s.layers[1] - 1} ${gib(s.bytes)}`).join(', ')}` }
    }
  }
  const total = byFree.reduce((n, c) => n + usable(c), 0)
  return { kind: 'refused', needBytes: need.totalBytes, freeBytes, reason: `needs ${gib(need.totalBytes)}; the most free on one peer is ${gib(byFree[0].freeBytes)} (${byFree[0].name}), and no split into at most ${Math.min(MAX_STAGES, byFree.length)} stages fits (${gib(total)} usable on all ${byFree.length} peer${byFree.length === 1 ? '' : 's'})` }
}
