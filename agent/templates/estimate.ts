/**
 * How much memory a model needs when Blockmesh serves it: the weights as the engine holds them (a GGUF is
 * converted to ONNX by agent/model/gguf/convert.ts; an ONNX export is served in place), the KV cache at the
 * configured context and concurrency, and the runtime around them. Pure arithmetic on the model's shape;
 * the figures and constants are documented where they are defined, and the test
 * (test/unit/template-estimate.test.ts) compares the estimate with a real load of SmolLM2.
 */
import { z } from 'zod'
import type { ModelInfo } from '../registry/components.ts'

const count = z.number().int().min(1)

/** What a decoder is, as far as its memory goes. */
export const ModelShapeSchema = z.object({
  /** all weights, embeddings included */
  parameters: count,
  layers: count,
  hidden: count,
  heads: count,
  kvHeads: count,
  headDim: count,
  vocab: count,
  /** the model's maximum context (the converted graph's rotary tables have this many positions) */
  contextLength: count,
  /** the LM head is the embedding table (default false) */
  tiedEmbeddings: z.boolean().optional(),
  /** feed-forward width; absent: derived from `parameters` */
  ffn: count.optional(),
  /** rotary cos/sin tables in the converted graph (gemma3: 2, global and sliding-window; default 1) */
  ropeTables: z.number().int().min(0).max(4).optional()
}).strict()
export type ModelShape = z.output<typeof ModelShapeSchema>

/** Blockmesh's GGUF → ONNX conversion modes (agent/model/gguf/decoder-graph.ts `BuildOptions.weights`). */
export type ConversionMode = 'q8' | 'int8' | 'q4' | 'f32'

export const EstimateOptionsSchema = z.object({
  /** GGUF file type (Q4_K_M, Q8_0, F16, …) or ONNX export dtype (fp32, q4, int8, …) */
  quantization: z.string().min(1).max(64),
  /** how a GGUF is converted (default q8, as `blockmesh model add`); ignored for ONNX exports */
  weights: z.enum(['q8', 'int8', 'q4', 'f32']).optional(),
  /** positions per sequence the engine is configured for (prompt + completion) */
  contextLength: count,
  /** sequences decoded together (the engine's maxBatch) */
  concurrency: count
}).strict()
export type EstimateOptions = z.input<typeof EstimateOptionsSchema>

// ------------------------------------------------------------------ ggml formats

type GgmlType = 'F32' | 'F16' | 'BF16' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q8_0' | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K'

/**
 * ggml block layouts, [bytes per block, weights per block] (ggml-common.h; QK_K = 256):
 * Q4_0 = f16 d + 16 B nibbles; Q4_1 = d, m + 16 B; Q5_0 = d + 4 B high bits + 16 B; Q5_1 = d, m + 4 + 16;
 * Q8_0 = d + 32 int8; Q2_K = 16 B scales + 64 B codes + d, dmin; Q3_K = 32 B hmask + 64 B + 12 B scales + d;
 * Q4_K = d, dmin + 12 B scales + 128 B; Q5_K = d, dmin + 12 + 32 B high bits + 128; Q6_K = 128 B ql + 64 B
 * qh + 16 B scales + d.
 */
const BLOCKS: Record<GgmlType, [number, number]> = {
  F32: [4, 1], F16: [2, 1], BF16: [2, 1],
  Q4_0: [18, 32], Q4_1: [20, 32], Q5_0: [22, 32], Q5_1: [24, 32], Q8_0: [34, 32],
  Q2_K: [84, 256], Q3_K: [110, 256], Q4_K: [144, 256], Q5_K: [176, 256], Q6_K: [210, 256]
}
const fileBits = (t: GgmlType): number => BLOCKS[t][0] * 8 / BLOCKS[t][1]

/**
 * The exact MatMulNBits / GatherBlockQuantized form each type is converted to (agent/model/gguf/nbits.ts):
 * code bits, block size along K, whether a float32 offset per block is kept. Scales are float32 per block.
 * F32/F16/BF16 have none (they become float32).
 */
const NBITS: Partial<Record<GgmlType, { bits: 4 | 8, block: number, offsets: boolean }>> = {
  Q4_0: { bits: 4, block: 32, offsets: false },
  Q4_1: { bits: 4, block: 32, offsets: true },
  Q5_0: { bits: 8, block: 32, offsets: false },
  Q5_1: { bits: 8, block: 32, offsets: true },
  Q8_0: { bits: 8, block: 32, offsets: false },
  Q2_K: { bits: 4, block: 16, offsets: true },
  Q3_K: { bits: 4, block: 16, offsets: false },
  Q4_K: { bits: 4, block: 32, offsets: true },
  Q5_K: { bits: 8, block: 32, offsets: true },
  Q6_K: { bits: 8, block: 16, offsets: false }
}

/** Bits per weight a converted tensor of type `t` keeps in memory, or null when it becomes float32. */
function nbitsBits (t: GgmlType, maxBits: 4 | 8): number | null {
  const f = NBITS[t]
  if (f == null || f.bits > maxBits) return null
  return f.bits + 32 / f.block + (f.offsets ? 32 / f.block : 0)
}

/**
 * Which tensor gets which type in a GGUF of a given file type: llama.cpp's llama_tensor_get_type,
 * simplified. `vd` is attn_v and ffn_down on `vdShare` of the layers ("use_more_bits": the first and last
 * eighth and every third layer between, about half), `ao` is attn_output, `out` the LM head (and the
 * embedding table of a tied model), everything else `main`. A K-quant tensor whose rows are not a multiple of
 * 256 falls back as llama.cpp does (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → 4.5 bits; see KFALLBACK).
 */
interface FileMix { main: GgmlType, vd?: GgmlType, vdShare?: number, ao?: GgmlType, out: GgmlType }
const FILE_TYPES: Record<string, FileMix> = {
  F32: { main: 'F32', out: 'F32' },
  F16: { main: 'F16', out: 'F16' },
  BF16: { main: 'BF16', out: 'BF16' },
  Q8_0: { main: 'Q8_0', out: 'Q8_0' },
  Q6_K: { main: 'Q6_K', out: 'Q6_K' },
  Q5_1: { main: 'Q5_1', out: 'Q6_K' },
  Q5_0: { main: 'Q5_0', out: 'Q6_K' },
  Q4_1: { main: 'Q4_1', out: 'Q6_K' },
  Q4_0: { main: 'Q4_0', out: 'Q6_K' },
  Q5_K_M: { main: 'Q5_K', vd: 'Q6_K', vdShare: 0.5, out: 'Q6_K' },
  Q5_K_S: { main: 'Q5_K', out: 'Q6_K' },
  Q4_K_M: { main: 'Q4_K', vd: 'Q6_K', vdShare: 0.5, out: 'Q6_K' },
  Q4_K_S: { main: 'Q4_K', vd: 'Q5_K', vdShare: 0.125, out: 'Q6_K' },
  Q3_K_L: { main: 'Q3_K', vd: 'Q5_K', vdShare: 1, ao: 'Q5_K', out: 'Q6_K' },
  Q3_K_M: { main: 'Q3_K', vd: 'Q4_K', vdShare: 1, ao: 'Q4_K', out: 'Q6_K' },
  Q3_K_S: { main: 'Q3_K', out: 'Q6_K' },
  Q2_K: { main: 'Q2_K', vd: 'Q3_K', vdShare: 1, ao: 'Q3_K', out: 'Q6_K' }
}
/** llama.cpp's fallback for K-quant rows that are not a multiple of 256 (Q2_K/Q3_K go to IQ4_NL: 4.5 bits, counted as Q4_0). */
const KFALLBACK: Partial<Record<GgmlType, GgmlType>> = { Q2_K: 'Q4_0', Q3_K: 'Q4_0', Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0' }
const typeFor = (t: GgmlType, rowLength: number): GgmlType => BLOCKS[t][1] === 256 && rowLength % 256 !== 0 ? KFALLBACK[t] ?? t : t

/**
 * ONNX export dtypes (agent/model/hf-export.ts ONNX_VARIANTS), served as they are: bits per weight of the
 * layer matrices and of the embedding / LM head. q4 = MatMulNBits 4-bit, block 32, float32 scale and 4-bit
 * zero point per block (4 + 1 + 0.125); q4f16 the same with float16 scales (4.625) and float16 elsewhere;
 * bnb4 = 4-bit, block 64, float32 absmax (4.5); int8/uint8/quantized/q8 = dynamic 8-bit quantization
 * (per-tensor scale), embeddings included; the 4-bit exports keep embeddings in float.
 */
const ONNX_DTYPES: Record<string, { layer: number, table: number }> = {
  fp32: { layer: 32, table: 32 },
  fp16: { layer: 16, table: 16 },
  q4: { layer: 5.125, table: 32 },
  q4f16: { layer: 4.625, table: 16 },
  bnb4: { layer: 4.5, table: 32 },
  int8: { layer: 8, table: 8 },
  uint8: { layer: 8, table: 8 },
  quantized: { layer: 8, table: 8 },
  q8: { layer: 8, table: 8 }
}

/** Upper-case, without llama.cpp's MOSTLY_ prefix and any extension-like suffix: "mostly_q4_k_m" → "Q4_K_M". */
function ggufName (q: string): string {
  return q.trim().toUpperCase().replace(/^(LLAMA_FTYPE_)?MOSTLY_/, '')
}

/** The reference layer bitsPerWeight averages a file type's mix over: Llama-2-7B (4096 wide, FFN 11008, MHA). */
const REFERENCE = { hidden: 4096, ffn: 11008, heads: 32, kvHeads: 32, headDim: 128 }

export class QuantizationError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'QuantizationError'
  }
}

/** The quantization names bitsPerWeight and estimateMemory know. */
export function knownQuantizations (): string[] {
  return [...Object.keys(FILE_TYPES), ...Object.keys(ONNX_DTYPES)]
}

function unknown (quantization: string): never {
  throw new QuantizationError(`unknown quantization "${quantization}"; known: GGUF ${Object.keys(FILE_TYPES).join(', ')}; ONNX ${Object.keys(ONNX_DTYPES).join(', ')}`)
}

/** A layer's matrices: [weights, row length (K), which mix slot]. */
function layerMatrices (s: { hidden: number, heads: number, kvHeads: number, headDim: number, ffn: number }): Array<[number, number, 'main' | 'vd' | 'ao']> {
  const q = s.heads * s.headDim
  const kv = s.kvHeads * s.headDim
  return [
    [s.hidden * q, s.hidden, 'main'], // attn_q
    [s.hidden * kv, s.hidden, 'main'], // attn_k
    [s.hidden * kv, s.hidden, 'vd'], // attn_v
    [q * s.hidden, q, 'ao'], // attn_output
    [s.hidden * s.ffn, s.hidden, 'main'], // ffn_gate
    [s.hidden * s.ffn, s.hidden, 'main'], // ffn_up
    [s.ffn * s.hidden, s.ffn, 'vd'] // ffn_down
  ]
}

/**
 * Average over a layer's matrices of `bitsOf(type)` under a file type's mix. With `packed`, q/k/v are one
 * matrix as the converter builds them (decoder-graph.ts `linear`): in layers where attn_v has another type
 * than attn_q/attn_k they cannot share a quantized form and the packed matrix is float32 (`packed` bits).
 */
function layerBits (mix: FileMix, s: Parameters<typeof layerMatrices>[0], bitsOf: (t: GgmlType) => number, packed?: number): number {
  let bits = 0
  let n = 0
  const main = typeFor(mix.main, s.hidden)
  const vOther = mix.vd != null && typeFor(mix.vd, s.hidden) !== main ? mix.vdShare ?? 1 : 0
  for (const [w, k, slot] of layerMatrices(s)) {
    const base = typeFor(mix.main, k)
    const t = slot === 'ao' ? typeFor(mix.ao ?? mix.main, k) : base
    if (slot === 'vd' && mix.vd != null) {
      const share = mix.vdShare ?? 1
      bits += w * (share * bitsOf(typeFor(mix.vd, k)) + (1 - share) * bitsOf(base))
    } else {
      bits += w * bitsOf(t)
    }
    n += w
  }
  if (packed != null && vOther > 0) {
    // q, k, v of the layers whose v differs: float32 instead of their own forms
    const [q, kk, v] = layerMatrices(s)
    const vdT = typeFor(mix.vd as GgmlType, s.hidden)
    bits += vOther * ((q[0] + kk[0]) * (packed - bitsOf(main)) + v[0] * (packed - bitsOf(vdT)))
  }
  return bits / n
}

/**
 * Bits per weight of a GGUF file type (its layer matrices, as stored: ggml block bytes × 8 / weights per
 * block, averaged over llama.cpp's per-tensor mix on a Llama-2-7B layer for the _S/_M/_L/Q2_K mixes) or of
 * an ONNX export dtype. F32 32, F16/BF16 16, Q8_0 8.5, Q6_K 6.5625, Q5_K_M ≈ 5.66, Q5_1 6, Q5_0 5.5,
 * Q4_K_M ≈ 4.82, Q4_1 5, Q4_0 4.5, Q3_K_M ≈ 3.85, Q2_K ≈ 2.94; ONNX q4 5.125, int8 8, fp16 16, fp32 32.
 * Throws QuantizationError, listing the known names, for anything else.
 */
export function bitsPerWeight (quantization: string): number {
  const onnx = ONNX_DTYPES[quantization.trim().toLowerCase()]
  if (onnx != null && !/^[A-Z]/.test(quantization.trim())) return onnx.layer
  const mix = FILE_TYPES[ggufName(quantization)]
  if (mix == null) {
    if (onnx != null) return onnx.layer
    return unknown(quantization)
  }
  return layerBits(mix, REFERENCE, fileBits)
}

// ------------------------------------------------------------------ the estimate

/**
 * Runtime constants, fitted to process RSS growth (what an out-of-memory killer sees) while loading a model
 * in a ModelEngine and prefilling/decoding with it on CPU (ONNX Runtime, Node 22): SmolLM2-135M Q4_1 as
 * q8 (512×1, 512×2, 512×4, 2048×4 context × concurrency), q4 (512×1) and f32 (2048×1), and Gemma 3 270M
 * Q4_K_M as q8 (512×1, 1024×2). Estimate vs measured peak: −9% to +14% on SmolLM2, +20% on Gemma 3; the
 * weights alone within 1% of the converted ONNX file. test/unit/template-estimate.test.ts re-measures one.
 * - RUNTIME_FIXED_BYTES: the engine's worker thread, ONNX Runtime's library and session, the first arena
 *   chunks — what a model of no size would still take.
 * - LOAD_OVERHEAD: while loading, ONNX Runtime holds the file's protobuf and the session's own copies of
 *   the initializers (prepacked for MatMulNBits); RSS after a load is ≈ 1.75–1.9× the weights, and the
 *   allocator keeps that memory. Counted with the weights (per layer, embedding, head).
 * - KV_COPIES: the engine holds a sequence's past cache while ONNX Runtime writes the present one, and
 *   copies both into JavaScript arrays (agent/executor/worker.ts), and the batched cache is rebuilt when
 *   the set of running sequences changes: the cache is held about this many times over.
 * - Activations: one prefill at a time (worker.ts prefills sequences one by one, whole), whose largest
 *   buffers are the attention scores [heads, S, S] and the MLP's [S, 3·ffn] in float32 at S = context.
 */
export const RUNTIME_FIXED_BYTES = 96 * 2 ** 20
export const LOAD_OVERHEAD = 0.85
export const KV_COPIES = 3
const FLOAT = 4

/** The memory estimate; every figure in bytes. */
export interface MemoryEstimate {
  /** the weights as the engine holds them (≈ the converted ONNX file) */
  weightsBytes: number
  /** what loading adds on top of the weights (LOAD_OVERHEAD × weights) */
  loadOverheadBytes: number
  /** the float32 KV cache: 2 × layers × kvHeads × headDim × context × concurrency × 4, times KV_COPIES */
  kvCacheBytes: number
  /** RUNTIME_FIXED_BYTES + rotary tables + prefill activations */
  runtimeBytes: number
  /** weights + load overhead + KV cache + runtime */
  totalBytes: number
  layers: number
  /** one layer's weights (with load overhead) and KV cache: what each layer adds to a pipeline stage */
  perLayerBytes: number
  perLayerWeightsBytes: number
  perLayerKvBytes: number
  /** what the first stage of a split holds for the token embedding (with load overhead) */
  embeddingBytes: number
  /** what the last stage of a split holds for the final norm and LM head (with load overhead) */
  headBytes: number
  /**
   * bytes counted in both embeddingBytes and headBytes that the whole model holds once (a tied float32
   * table): totalBytes = runtimeBytes + layers × perLayerBytes + embeddingBytes + headBytes − sharedBytes
   */
  sharedBytes: number
  /** the source file's size, approximately (parameters × its bits per weight) */
  fileBytes: number
  /** how the weights are held, in words */
  form: string
}

/** ffn width from the parameter count: (parameters − embeddings − attention) / (layers × 3 × hidden). */
function ffnOf (s: ModelShape): number {
  if (s.ffn != null) return s.ffn
  const tables = s.vocab * s.hidden * (s.tiedEmbeddings === true ? 1 : 2)
  const attention = s.hidden * s.heads * s.headDim * 2 + s.hidden * s.kvHeads * s.headDim * 2
  const perLayer = (s.parameters - tables) / s.layers
  return Math.max(1, Math.round((perLayer - attention) / (3 * s.hidden)))
}

/**
 * Memory to serve `shape` at `opts.contextLength` × `opts.concurrency`: weights in the form the engine holds
 * them (a GGUF's converted form by conversion mode — q8/int8: every type with an exact 4- or 8-bit
 * MatMulNBits form stays quantized, code + float32 scale (+ offset) per block; q4: only 4-bit forms, the
 * rest float32; f32: all float32; the embedding table as GatherBlockQuantized, a tied quantized head as a
 * second copy; q/k/v of mixed types float32), float32 KV cache, runtime. Throws QuantizationError for an unknown quantization, a
 * ZodError for a malformed shape or options.
 */
export function estimateMemory (shapeIn: ModelShape, optsIn: EstimateOptions): MemoryEstimate {
  const s = ModelShapeSchema.parse(shapeIn)
  const o = EstimateOptionsSchema.parse(optsIn)
  const ffn = ffnOf(s)
  const dims = { hidden: s.hidden, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, ffn }
  const layerWeights = layerMatrices(dims).reduce((a, [w]) => a + w, 0)
  const table = s.vocab * s.hidden
  const tied = s.tiedEmbeddings === true
  const q = o.quantization.trim()
  const onnx = /^[A-Z]/.test(q) ? undefined : ONNX_DTYPES[q.toLowerCase()]
  const mix = onnx == null ? FILE_TYPES[ggufName(q)] : undefined
  let layerBytes: number
  let embeddingBytes: number
  let headBytes: number
  let sharedBytes = 0
  let fileBits: number
  let form: string
  if (mix != null) {
    const mode = o.weights ?? 'q8'
    const maxBits = mode === 'q4' ? 4 : 8
    const resident = (t: GgmlType, max: 4 | 8 = maxBits): number => mode === 'f32' ? 32 : nbitsBits(t, max) ?? 32
    const residentBits = layerBits(mix, dims, t => resident(t), 32)
    layerBytes = layerWeights * residentBits / 8
    fileBits = layerBits(mix, dims, t => BLOCKS[t][0] * 8 / BLOCKS[t][1])
    const outType = typeFor(mix.out, s.hidden)
    const embType = tied ? outType : typeFor(mix.main, s.hidden)
    const headQuantized = mode !== 'f32' && nbitsBits(outType, maxBits) != null
    // decoder-graph.ts: the table is gathered quantized (up to 8 bits) unless a tied head needs a float32 copy anyway
    const gatherQuantized = mode !== 'f32' && (!tied || headQuantized) && nbitsBits(embType, 8) != null
    embeddingBytes = table * (gatherQuantized ? resident(embType, 8) : 32) / 8
    headBytes = table * (headQuantized ? resident(outType) : 32) / 8
    if (tied && !headQuantized) sharedBytes = embeddingBytes // one float32 table serves both
    form = `GGUF ${ggufName(q)} converted with --weights ${mode}: layers ${residentBits.toFixed(2)} bits/weight, ` +
      `embedding ${gatherQuantized ? `${embType} quantized` : 'float32'}, head ${headQuantized ? `${outType} quantized` : tied ? 'the float32 embedding table' : 'float32'}`
  } else if (onnx != null) {
    layerBytes = layerWeights * onnx.layer / 8
    embeddingBytes = table * onnx.table / 8
    headBytes = table * onnx.table / 8
    fileBits = onnx.layer
    form = `ONNX export ${q.toLowerCase()}: layers ${onnx.layer} bits/weight, embedding and head ${onnx.table} bits/weight`
  } else {
    return unknown(o.quantization)
  }
  const overhead = 1 + LOAD_OVERHEAD
  const perLayerWeightsBytes = Math.ceil(layerBytes * overhead)
  const perLayerKvBytes = 2 * s.kvHeads * s.headDim * o.contextLength * o.concurrency * FLOAT * KV_COPIES
  embeddingBytes = Math.ceil(embeddingBytes * overhead)
  headBytes = Math.ceil(headBytes * overhead)
  sharedBytes = Math.ceil(sharedBytes * overhead)
  const rope = (s.ropeTables ?? 1) * s.contextLength * s.headDim * FLOAT
  const S = o.contextLength
  const activations = (s.heads * S * S + S * (3 * ffn + 4 * s.hidden)) * FLOAT
  const runtimeBytes = RUNTIME_FIXED_BYTES + rope + activations
  const perLayerBytes = perLayerWeightsBytes + perLayerKvBytes
  const weightsWithOverhead = s.layers * perLayerWeightsBytes + embeddingBytes + headBytes - sharedBytes
  const weightsBytes = Math.round(weightsWithOverhead / overhead)
  const kvCacheBytes = s.layers * perLayerKvBytes
  return {
    weightsBytes,
    loadOverheadBytes: weightsWithOverhead - weightsBytes,
    kvCacheBytes,
    runtimeBytes,
    totalBytes: runtimeBytes + s.layers * perLayerBytes + embeddingBytes + headBytes - sharedBytes,
    layers: s.layers,
    perLayerBytes,
    perLayerWeightsBytes,
    perLayerKvBytes,
    embeddingBytes,
    headBytes,
    sharedBytes,
    fileBytes: Math.round((s.layers * layerWeights * fileBits + table * (tied ? 1 : 2) * (mix != null ? fileBitsOfTable(mix, s.hidden, tied) : onnx?.table ?? 32)) / 8),
    form
  }
}

function fileBitsOfTable (mix: FileMix, hidden: number, tied: boolean): number {
  return fileBits(typeFor(tied ? mix.out : mix.main, hidden))
}

// ------------------------------------------------------------------ shapes from model info

/** A shape and the fields that were not known and were assumed (in words). */
export interface ShapeFromInfo { shape: ModelShape, assumed: string[] }

/**
 * A ModelShape from a component's ModelInfo (agent/registry/components.ts). What the info lacks is assumed,
 * and `assumed` says what: 32 layers when neither layers nor hidden is known, layers from the parameter count (a Llama-like 12·hidden² per layer) when absent,
 * hidden from the parameters and layers, heads = hidden / 64, headDim = hidden / heads, kvHeads = heads (no
 * grouped-query attention: the larger KV cache), tied embeddings when the vocabulary table is over 10% of the
 * parameters… ONNX exports record parameters 0: they are then computed from the dimensions with an FFN of
 * 8/3·hidden (Llama's SwiGLU ratio). Throws when neither parameters nor layers and hidden are known.
 */
export function shapeFromModelInfo (info: Pick<ModelInfo, 'parameters' | 'contextLength' | 'vocabSize'> & Partial<Pick<ModelInfo, 'layers' | 'hidden' | 'heads' | 'kvHeads' | 'architecture'>> & { headDim?: number, tiedEmbeddings?: boolean, ffn?: number }): ShapeFromInfo {
  const assumed: string[] = []
  const vocab = info.vocabSize
  let { layers, hidden, heads } = info
  let parameters = info.parameters
  if (hidden == null) {
    if (parameters <= 0) throw new Error('cannot estimate a model without its parameter count or its layers and hidden size')
    if (layers == null) {
      layers = 32
      assumed.push('layers 32 (neither layers nor hidden size recorded: a Llama-7B-like depth)')
    }
    // parameters ≈ layers · 12 · hidden² + vocab · hidden
    const a = 12 * layers
    hidden = Math.max(64, Math.round(((-vocab + Math.sqrt(vocab * vocab + 4 * a * parameters)) / (2 * a)) / 64) * 64)
    assumed.push(`hidden ${hidden} (from ${parameters} parameters and ${layers} layers, 12·hidden² per layer)`)
  }
  if (layers == null) {
    if (parameters <= 0) throw new Error('cannot estimate a model without its parameter count or its layers')
    layers = Math.max(1, Math.round((parameters - vocab * hidden) / (12 * hidden * hidden)))
    assumed.push(`layers ${layers} (from ${parameters} parameters, 12·hidden² per layer)`)
  }
  if (heads == null) {
    heads = Math.max(1, Math.round(hidden / 64))
    assumed.push(`heads ${heads} (hidden / 64)`)
  }
  const headDim = info.headDim ?? (info.architecture === 'gemma3' && hidden / heads < 256 ? 256 : Math.round(hidden / heads))
  if (info.headDim == null) assumed.push(`headDim ${headDim} (${info.architecture === 'gemma3' ? 'gemma3\'s 256' : 'hidden / heads'})`)
  let kvHeads = info.kvHeads
  if (kvHeads == null) {
    kvHeads = heads
    assumed.push(`kvHeads ${kvHeads} (= heads: no grouped-query attention, the largest KV cache)`)
  }
  let ffn = info.ffn
  if (parameters <= 0) {
    ffn = ffn ?? Math.round(hidden * 8 / 3)
    const tables = vocab * hidden * (info.tiedEmbeddings === true ? 1 : 2)
    parameters = layers * (2 * hidden * heads * headDim + 2 * hidden * kvHeads * headDim + 3 * hidden * ffn) + tables
    assumed.push(`parameters ${parameters} (not recorded: from the dimensions with FFN ${ffn} = 8/3·hidden)`)
  }
  let tiedEmbeddings = info.tiedEmbeddings
  if (tiedEmbeddings == null) {
    tiedEmbeddings = vocab * hidden > 0.1 * parameters
    assumed.push(`tiedEmbeddings ${tiedEmbeddings} (${tiedEmbeddings ? 'the vocabulary table is over 10% of the parameters, as in the small tied models' : 'a model this size usually has its own LM head'})`)
  }
  const shape: ModelShape = {
    parameters, layers, hidden, heads, kvHeads, headDim, vocab, contextLength: info.contextLength, tiedEmbeddings,
    ...(ffn != null ? { ffn } : {}),
    ...(info.architecture === 'gemma3' ? { ropeTables: 2 } : {})
  }
  return { shape, assumed }
}
