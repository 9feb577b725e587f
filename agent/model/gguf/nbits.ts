/**
 * ggml quantized rows as ONNX Runtime `MatMulNBits` operands, exactly: every supported block format is
 * written as value = scale · (u − z) + offset per block of `blockSize` elements along K, where u is a 4- or
 * 8-bit code, z is MatMulNBits' default zero point (2^(bits−1)) and `offset` (when the format has a
 * minimum) is added by the graph as Σ_blocks offset · Σ_block x. No value is rounded again: the graph
 * computes what the GGUF holds.
 */
import { GGML_TYPE, halfToFloat, repackQ4ForMatMulNBits } from './quants.ts'

export interface NBitsWeight {
  bits: 4 | 8
  blockSize: number
  /** uint8 [N, K / blockSize, blockSize · bits / 8] in MatMulNBits' layout */
  b: Uint8Array
  /** float32 [N · K / blockSize] */
  scales: Float32Array
  /** float32 [K / blockSize, N] (transposed, for x's block sums · offsets), or null when every offset is 0 */
  offsets: Float32Array | null
}

/** Whether `type` has an exact MatMulNBits form. */
export function hasNBitsForm (type: number): boolean {
  return type === GGML_TYPE.Q4_0 || type === GGML_TYPE.Q4_1
}

/** The exact MatMulNBits form of an N × K ggml tensor (rows quantized along K), or null when there is none. */
export function toMatMulNBits (type: number, data: Uint8Array, rows: number, cols: number): NBitsWeight | null {
  if (!hasNBitsForm(type) || cols % 32 !== 0) return null
  const blocks = cols / 32
  const r = repackQ4ForMatMulNBits(type, data, rows, cols)
  const scales = new Float32Array(rows * blocks)
  if (type === GGML_TYPE.Q4_0) {
    // x = d · (q − 8): MatMulNBits' default zero point
    for (let b = 0; b < rows * blocks; b++) scales[b] = halfToFloat(data[b * 18] | (data[b * 18 + 1] << 8))
    return { bits: 4, blockSize: 32, b: r.b, scales, offsets: null }
  }
  // Q4_1: x = d · q + m = d · (q − 8) + (m + 8d)
  const offsets = new Float32Array(blocks * rows)
  for (let b = 0; b < rows * blocks; b++) {
    const d = halfToFloat(data[b * 20] | (data[b * 20 + 1] << 8))
    const m = halfToFloat(data[b * 20 + 2] | (data[b * 20 + 3] << 8))
    scales[b] = d
    offsets[(b % blocks) * rows + Math.floor(b / blocks)] = m + 8 * d
  }
  return { bits: 4, blockSize: 32, b: r.b, scales, offsets }
}
