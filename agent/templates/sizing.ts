/**
 * Memory needed by a template version, and whole vs split vs refused from the peers' free memory: the version's
 * facts mapped onto estimate.ts (memory per shape, quantization and conversion mode, checked against a real
 * SmolLM2 load) and decide.ts (the placement decision). What the version does not record of the model's shape
 * is assumed (shapeFromModelInfo) and the estimate says what.
 */
import type { CapacityRecord } from '../../mesh/capacity/record.ts'
import type { VersionSpec } from './schemas.ts'
import { estimateMemory, shapeFromModelInfo } from './estimate.ts'
import { QuantizationError } from './quant-bits.ts'
import { decidePlacement, formatBytes } from './decide.ts'
import type { Candidate, Decision } from './decide.ts'

export type { Candidate, Decision, FreeByPeer, Stage } from './decide.ts'

export const ESTIMATOR = 'agent/templates/estimate.ts'

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

/** The quantization a version deploys: its source's, else the first file listed, else Q4_K_M (model add's preference). */
export function quantizationOf (spec: VersionSpec): string {
  const s = spec.source
  if (s?.kind === 'hub' && s.quantization != null) return s.quantization.toUpperCase()
  const m = s?.kind === 'hub' && s.file != null ? /(I?Q\d[A-Z0-9_]*|F16|BF16|F32)(?=\.gguf$)/i.exec(s.file)?.[1] : undefined
  return (m ?? spec.model.files?.[0]?.quantization ?? 'Q4_K_M').toUpperCase()
}

/** The estimate for a version at its context length and concurrency; null when too little of the model is known (no parameter count, or a quantization the estimate does not know). */
export function estimateVersion (spec: VersionSpec, quantization = quantizationOf(spec)): VersionEstimate | null {
  const m = spec.model
  if (m.parameters == null) return null
  let shaped
  try {
    shaped = shapeFromModelInfo({
      parameters: m.parameters,
      contextLength: Math.max(m.contextLength ?? spec.contextLength, spec.contextLength),
      vocabSize: m.vocab ?? 32_000,
      ...(m.layers != null ? { layers: m.layers } : {}),
      ...(m.hidden != null ? { hidden: m.hidden } : {}),
      ...(m.heads != null ? { heads: m.heads } : {}),
      ...(m.kvHeads != null ? { kvHeads: m.kvHeads } : {}),
      ...(m.headDim != null ? { headDim: m.headDim } : {}),
      ...(m.architecture != null ? { architecture: m.architecture } : {})
    })
  } catch {
    return null
  }
  const assumed = [...(m.vocab == null ? ['vocabulary 32000 (not recorded)'] : []), ...shaped.assumed]
  let e
  try {
    e = estimateMemory(shaped.shape, { quantization, weights: spec.weights, contextLength: spec.contextLength, concurrency: spec.maxConcurrentSequences })
  } catch (err) {
    if (err instanceof QuantizationError) return null
    throw err
  }
  return {
    quantization,
    totalBytes: e.totalBytes,
    weightsBytes: e.weightsBytes,
    kvCacheBytes: e.kvCacheBytes,
    runtimeBytes: e.runtimeBytes,
    layers: e.layers,
    perLayerBytes: e.perLayerBytes,
    embeddingBytes: e.embeddingBytes,
    headBytes: e.headBytes,
    assumed,
    estimator: ESTIMATOR
  }
}

/** A peer's free memory for a model: its largest GPU's free memory when it reports GPUs, else available RAM. */
export function candidateOf (r: CapacityRecord): Candidate {
  const gpus = r.readings.gpus.filter(g => g.memoryFreeBytes != null)
  if (gpus.length > 0) return { peerId: r.peerId, name: r.name, freeBytes: Math.max(...gpus.map(g => g.memoryFreeBytes as number)), kind: 'gpu' }
  return { peerId: r.peerId, name: r.name, freeBytes: r.readings.memory.availableBytes, kind: 'ram' }
}

export function gib (n: number): string {
  return formatBytes(n)
}

/** Whole, split or refused for an estimate and the live peers' free memory (decide.ts). */
export function decideDeployment (need: VersionEstimate, candidates: Candidate[]): Decision {
  return decidePlacement(need, candidates)
}
