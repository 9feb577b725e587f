/**
 * Quantization formats and their bits per weight: the ggml block layouts of a GGUF's tensor types, llama.cpp's
 * per-tensor mix for each GGUF file type, the MatMulNBits / GatherBlockQuantized forms Blockmesh converts those
 * types to (agent/model/gguf/nbits.ts) and the ONNX export dtypes, with the arithmetic over a layer's matrices.
 * Pure tables and functions; estimate.ts turns them into the memory of a model. QuantizationError for a name
 * that is none of these.
 */

export type GgmlType = 'F32' | 'F16' | 'BF16' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q8_0' | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K'

/**
 * ggml block layouts, [bytes per block, weights per block] (ggml-common.h; QK_K = 256):
 * Q4_0 = f16 d + 16 B nibbles; Q4_1 = d, m + 16 B; Q5_0 = d + 4 B high bits + 16 B; Q5_1 = d, m + 4 + 16;
 * Q8_0 = d + 32 int8; Q2_K = 16 B scales + 64 B codes + d, dmin; Q3_K = 32 B hmask + 64 B + 12 B scales + d;
 * Q4_K = d, dmin + 12 B scales + 128 B; Q5_K = d, dmin + 12 + 32 B high bits + 128; Q6_K = 128 B ql + 64 B
 * qh + 16 B scales + d.
 */
export const BLOCKS: Record<GgmlType, [number, number]> = {
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
export function nbitsBits (t: GgmlType, maxBits: 4 | 8): number | null {
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
export interface FileMix { main: GgmlType, vd?: GgmlType, vdShare?: number, ao?: GgmlType, out: GgmlType }
export const FILE_TYPES: Record<string, FileMix> = {
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
export const typeFor = (t: GgmlType, rowLength: number): GgmlType => BLOCKS[t][1] === 256 && rowLength % 256 !== 0 ? KFALLBACK[t] ?? t : t

/**
 * ONNX export dtypes (agent/model/hf-export.ts ONNX_VARIANTS), served as they are: bits per weight of the
 * layer matrices and of the embedding / LM head. q4 = MatMulNBits 4-bit, block 32, float32 scale and 4-bit
 * zero point per block (4 + 1 + 0.125); q4f16 the same with float16 scales (4.625) and float16 elsewhere;
 * bnb4 = 4-bit, block 64, float32 absmax (4.5); int8/uint8/quantized/q8 = dynamic 8-bit quantization
 * (per-tensor scale), embeddings included; the 4-bit exports keep embeddings in float.
 */
export const ONNX_DTYPES: Record<string, { layer: number, table: number }> = {
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
export function ggufName (q: string): string {
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

/** Throws QuantizationError for `quantization`, listing the known names. */
export function unknownQuantization (quantization: string): never {
  throw new QuantizationError(`unknown quantization "${quantization}"; known: GGUF ${Object.keys(FILE_TYPES).join(', ')}; ONNX ${Object.keys(ONNX_DTYPES).join(', ')}`)
}

/** A layer's matrices: [weights, row length (K), which mix slot]. */
export function layerMatrices (s: { hidden: number, heads: number, kvHeads: number, headDim: number, ffn: number }): Array<[number, number, 'main' | 'vd' | 'ao']> {
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
export function layerBits (mix: FileMix, s: Parameters<typeof layerMatrices>[0], bitsOf: (t: GgmlType) => number, packed?: number): number {
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
    return unknownQuantization(quantization)
  }
  return layerBits(mix, REFERENCE, fileBits)
}

/** Bits per weight of the vocabulary tables as a GGUF of this mix stores them: the LM head's type when tied, the main type otherwise. */
export function fileBitsOfTable (mix: FileMix, hidden: number, tied: boolean): number {
  return fileBits(typeFor(tied ? mix.out : mix.main, hidden))
}
