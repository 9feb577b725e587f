/**
 * How much memory a model needs when Blockmesh serves it: the weights as the engine holds them (a GGUF is
 * converted to ONNX by agent/model/gguf/convert.ts; an ONNX export is served in place), the KV cache at the
 * configured context and concurrency, and the runtime around them. Pure arithmetic on the model's shape; the
 * quantization tables and bits per weight are in quant-bits.ts, the runtime figures and constants are
 * documented where they are defined, and the test (test/unit/template-estimate.test.ts) compares the
 * estimate with a real load of SmolLM2.
 */
import { z } from 'zod'
import type { ModelInfo } from '../registry/components.ts'
import { BLOCKS, FILE_TYPES, ONNX_DTYPES, fileBitsOfTable, ggufName, layerBits, layerMatrices, nbitsBits, typeFor, unknownQuantization } from './quant-bits.ts'
import type { GgmlType } from './quant-bits.ts'

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
 * - KV_COPIES: an engine that takes `present.*` back (Hugging Face exports) holds a
 *   sequence's past cache while ONNX Runtime writes the present one, and copies both into JavaScript arrays
 *   (agent/executor/worker.ts), and the batched cache is rebuilt when the set of running sequences changes:
 *   the cache is held about this many times over. An engine that keeps its cache (agent/executor/kv-cache.ts)
 *   holds one buffer with room, at most context × 9/8 + 16 positions, and while it grows the old buffer and
 *   the new one (≈ 2.1× the context); 3 covers both.
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
    return unknownQuantization(o.quantization)
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
