/**
 * ggml quantized rows as ONNX Runtime `MatMulNBits` operands, exactly: every supported block format is
 * written as value = scale · (u − z) + offset per block of `blockSize` elements along K, where u is a 4- or
 * 8-bit code, z is MatMulNBits' default zero point (2^(bits−1)) and `offset` (when the format has a
 * minimum) is added by the graph as Σ_blocks offset · Σ_block x. No value is rounded again: the graph
 * computes what the GGUF holds.
 *
 * Exactness: every scale is a product of an f16 value and a small integer (exact in float32), every
 * scale · (u − z) is exact in float32 (≤ 24 significant bits), and an offset is used only when it is
 * exact in float32 — so scale · (u − z) + offset equals, as a real number, the value ggml computes
 * before its one float32 rounding, and fl32(scale · (u − z) + offset) is bit-identical to dequantize().
 *
 * Forms (bits, block size along K, offsets):
 *   Q4_0  4, 32, no    u = q                 scale d
 *   Q4_1  4, 32, yes   u = q                 scale d,      offset m + 8d       (8-bit form if not exact)
 *   Q5_0  8, 32, no    u = q5 + 112          scale d
 *   Q5_1  8, 32, yes   u = q5 + 128          scale d,      offset m
 *   Q8_0  8, 32, no    u = q + 128           scale d
 *   Q2_K  4, 16, yes   u = q2 + 8            scale d·sc,   offset −dmin·m
 *   Q3_K  4, 16, no    u = q3 + 8 (q3 ∈ [−4, 3])  scale d·sc
 *   Q4_K  4, 32, yes   u = q4                scale d·sc,   offset 8·d·sc − dmin·m (8-bit form if not exact)
 *   Q5_K  8, 32, yes   u = q5 + 128          scale d·sc,   offset −dmin·m
 *   Q6_K  8, 16, no    u = q6 + 96           scale d·sc
 *   F32, F16, BF16: none (they stay float).
 * The 8-bit fallback of Q4_1 / Q4_K (u = q + 128, offset m resp. −dmin·m, always exact) is used only when
 * some block's 4-bit offset is not a float32 value; no block of the real Q4_1 / Q4_K files checked
 * (SmolLM2-135M Q4_1, Gemma 3 270M Q4_K_M) needs it.
 *
 * ONNX Runtime 1.30 (CPU) runs MatMulNBits for bits 4 and 8, block_size 16 and 32, at any accuracy_level,
 * with correct results, but 8-bit weights are fast only with accuracy_level 4 (int8 activations, not
 * exact): at accuracy_level 0–3 it dequantizes the whole weight to float32 on every call (≈ 15× slower
 * than a float32 MatMul). A float32-exact graph should therefore ask for `maxBits: 4`.
 */
import { GGML_TYPE, halfToFloat, quantInfo, scaleMinK4 } from './quants.ts'

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

export interface NBitsOptions {
  /**
   * Widest code to use (default 8). ONNX Runtime 1.30's CPU MatMulNBits is fast for 8-bit weights only
   * with accuracy_level 4; a graph run at accuracy_level 0 should pass 4 here (8-bit-only types then
   * have no form and stay float32).
   */
  maxBits?: 4 | 8
}

/** The shape of a type's MatMulNBits form: code width, block size along K, whether it has offsets. */
export interface NBitsLayout {
  bits: 4 | 8
  blockSize: 16 | 32
  offsets: boolean
}

/**
 * Fills, for the ggml block at byte `p` of `x`: `u` with its codes (one per element, in element order),
 * `s` and `o` with the scale and offset of each of its sub-blocks (block size of the form).
 */
type Decode = (x: Uint8Array, p: number, u: Uint8Array, s: Float64Array, o: Float64Array) => void

interface Form extends NBitsLayout { decode: Decode }

const half = (x: Uint8Array, p: number): number => halfToFloat(x[p] | (x[p + 1] << 8))
const int8 = (v: number): number => (v << 24) >> 24

/** Q4_0 / Q4_1 nibbles (qs[j]: low = element j, high = element j + 16) plus `add`. */
function nibbles (x: Uint8Array, q: number, u: Uint8Array, add: number): void {
  for (let j = 0; j < 16; j++) {
    const b = x[q + j]
    u[j] = (b & 0x0f) + add
    u[j + 16] = (b >> 4) + add
  }
}

/** Q5_0 / Q5_1 five-bit values (qh bit j = high bit of element j) plus `add`. */
function fiveBits (x: Uint8Array, h: number, q: number, u: Uint8Array, add: number): void {
  const qh = x[h] | (x[h + 1] << 8) | (x[h + 2] << 16) | (x[h + 3] << 24)
  for (let j = 0; j < 16; j++) {
    const b = x[q + j]
    u[j] = ((b & 0x0f) | (((qh >>> j) << 4) & 0x10)) + add
    u[j + 16] = ((b >> 4) | ((qh >>> (j + 12)) & 0x10)) + add
  }
}

const decodeQ4_0: Decode = (x, p, u, s) => {
  s[0] = half(x, p)
  nibbles(x, p + 2, u, 0)
}

const decodeQ4_1 = (wide: boolean): Decode => (x, p, u, s, o) => {
  const d = half(x, p)
  const m = half(x, p + 2)
  s[0] = d
  // d·q + m = d·(q − 8) + (m + 8d)  |  d·((q + 128) − 128) + m
  o[0] = wide ? m : m + 8 * d
  nibbles(x, p + 4, u, wide ? 128 : 0)
}

const decodeQ5_0: Decode = (x, p, u, s) => {
  s[0] = half(x, p)
  fiveBits(x, p + 2, p + 6, u, 128 - 16) // d·(q5 − 16)
}

const decodeQ5_1: Decode = (x, p, u, s, o) => {
  s[0] = half(x, p)
  o[0] = half(x, p + 2) // d·q5 + m
  fiveBits(x, p + 4, p + 8, u, 128)
}

const decodeQ8_0: Decode = (x, p, u, s) => {
  s[0] = half(x, p)
  for (let j = 0; j < 32; j++) u[j] = x[p + 2 + j] ^ 0x80 // int8 q + 128
}

const decodeQ2_K: Decode = (x, p, u, s, o) => {
  const d = half(x, p + 80)
  const dmin = half(x, p + 82)
  let q = p + 16
  let t = 0
  let e = 0
  for (let n = 0; n < 256; n += 128) {
    for (let shift = 0; shift < 8; shift += 2) {
      for (let l0 = 0; l0 < 32; l0 += 16) {
        const sc = x[p + t]
        // (d·(sc & 15))·q2 − dmin·(sc >> 4)
        s[t] = d * (sc & 0xf)
        o[t] = -(dmin * (sc >> 4))
        t++
        for (let l = l0; l < l0 + 16; l++) u[e++] = ((x[q + l] >> shift) & 3) + 8
      }
    }
    q += 32
  }
}

const decodeQ3_K: Decode = (x, p, u, s) => {
  const d = half(x, p + 108)
  const sp = p + 96
  for (let j = 0; j < 16; j++) {
    const lo = j < 8 ? x[sp + j] & 0xf : x[sp + j - 8] >> 4
    const hi = (x[sp + 8 + (j & 3)] >> (2 * (j >> 2))) & 3
    s[j] = d * ((lo | (hi << 4)) - 32)
  }
  let q = p + 32
  let m = 1
  let e = 0
  for (let n = 0; n < 256; n += 128) {
    for (let shift = 0; shift < 8; shift += 2) {
      // (d·sc)·(q2 − (h ? 0 : 4)), q3 ∈ [−4, 3]
      for (let l = 0; l < 32; l++) u[e++] = ((x[q + l] >> shift) & 3) + ((x[p + l] & m) !== 0 ? 8 : 4)
      m <<= 1
    }
    q += 32
  }
}

const decodeQ4_K = (wide: boolean): Decode => (x, p, u, s, o) => {
  const d = half(x, p)
  const dmin = half(x, p + 2)
  const add = wide ? 128 : 0
  let q = p + 16
  for (let t = 0, e = 0; t < 8; t += 2, e += 64, q += 32) {
    for (let k = 0; k < 2; k++) {
      const sm = scaleMinK4(x, p + 4, t + k)
      const sc = d * (sm & 0xff)
      const mn = dmin * (sm >> 8)
      // sc·q4 − mn = sc·(q4 − 8) + (8·sc − mn)  |  sc·((q4 + 128) − 128) − mn
      s[t + k] = sc
      o[t + k] = wide ? -mn : 8 * sc - mn
    }
    for (let l = 0; l < 32; l++) {
      u[e + l] = (x[q + l] & 0xf) + add
      u[e + 32 + l] = (x[q + l] >> 4) + add
    }
  }
}

const decodeQ5_K: Decode = (x, p, u, s, o) => {
  const d = half(x, p)
  const dmin = half(x, p + 2)
  const qh = p + 16
  let ql = p + 48
  let u1 = 1
  let u2 = 2
  for (let t = 0, e = 0; t < 8; t += 2, e += 64, ql += 32, u1 <<= 2, u2 <<= 2) {
    for (let k = 0; k < 2; k++) {
      const sm = scaleMinK4(x, p + 4, t + k)
      s[t + k] = d * (sm & 0xff)
      o[t + k] = -(dmin * (sm >> 8)) // (d·sc)·q5 − dmin·m
    }
    for (let l = 0; l < 32; l++) {
      u[e + l] = (x[ql + l] & 0xf) + ((x[qh + l] & u1) !== 0 ? 16 : 0) + 128
      u[e + 32 + l] = (x[ql + l] >> 4) + ((x[qh + l] & u2) !== 0 ? 16 : 0) + 128
    }
  }
}

const decodeQ6_K: Decode = (x, p, u, s) => {
  const d = half(x, p + 208)
  // sub-block t (16 elements, in element order) uses int8 scale t: (d·sc)·(q6 − 32)
  for (let t = 0; t < 16; t++) s[t] = d * int8(x[p + 192 + t])
  let ql = p
  let qh = p + 128
  for (let e = 0; e < 256; e += 128, ql += 64, qh += 32) {
    for (let l = 0; l < 32; l++) {
      const a = x[ql + l]
      const b = x[ql + l + 32]
      const h = x[qh + l]
      u[e + l] = ((a & 0xf) | ((h & 3) << 4)) + 96
      u[e + l + 32] = ((b & 0xf) | (((h >> 2) & 3) << 4)) + 96
      u[e + l + 64] = ((a >> 4) | (((h >> 4) & 3) << 4)) + 96
      u[e + l + 96] = ((b >> 4) | (((h >> 6) & 3) << 4)) + 96
    }
  }
}

/** Each type's forms, smallest first; a form is taken when its bits are allowed and all its offsets are exact. */
const FORMS = new Map<number, readonly Form[]>([
  [GGML_TYPE.Q4_0, [{ bits: 4, blockSize: 32, offsets: false, decode: decodeQ4_0 }]],
  [GGML_TYPE.Q4_1, [{ bits: 4, blockSize: 32, offsets: true, decode: decodeQ4_1(false) }, { bits: 8, blockSize: 32, offsets: true, decode: decodeQ4_1(true) }]],
  [GGML_TYPE.Q5_0, [{ bits: 8, blockSize: 32, offsets: false, decode: decodeQ5_0 }]],
  [GGML_TYPE.Q5_1, [{ bits: 8, blockSize: 32, offsets: true, decode: decodeQ5_1 }]],
  [GGML_TYPE.Q8_0, [{ bits: 8, blockSize: 32, offsets: false, decode: decodeQ8_0 }]],
  [GGML_TYPE.Q2_K, [{ bits: 4, blockSize: 16, offsets: true, decode: decodeQ2_K }]],
  [GGML_TYPE.Q3_K, [{ bits: 4, blockSize: 16, offsets: false, decode: decodeQ3_K }]],
  [GGML_TYPE.Q4_K, [{ bits: 4, blockSize: 32, offsets: true, decode: decodeQ4_K(false) }, { bits: 8, blockSize: 32, offsets: true, decode: decodeQ4_K(true) }]],
  [GGML_TYPE.Q5_K, [{ bits: 8, blockSize: 32, offsets: true, decode: decodeQ5_K }]],
  [GGML_TYPE.Q6_K, [{ bits: 8, blockSize: 16, offsets: false, decode: decodeQ6_K }]]
])

function formsOf (type: number, opts: NBitsOptions): Form[] {
  const maxBits = opts.maxBits ?? 8
  return (FORMS.get(type) ?? []).filter(f => f.bits <= maxBits)
}

/** Whether `type` has an exact MatMulNBits form (within `opts.maxBits`). */
export function hasNBitsForm (type: number, opts: NBitsOptions = {}): boolean {
  return formsOf(type, opts).length > 0
}

/**
 * The form toMatMulNBits gives `type` (within `opts.maxBits`), or null. Q4_1 / Q4_K can come out 8-bit
 * instead when some offset of the actual data is not a float32 value (see the header).
 */
export function nbitsLayout (type: number, opts: NBitsOptions = {}): NBitsLayout | null {
  const f = formsOf(type, opts)[0]
  return f === undefined ? null : { bits: f.bits, blockSize: f.blockSize, offsets: f.offsets }
}

const exact32 = (v: number): boolean => Math.fround(v) === v || Number.isNaN(v)

/**
 * The exact MatMulNBits form of an N × K ggml tensor (`rows` = N rows of `cols` = K elements, quantized
 * along K), or null when there is none (type without a form, K not a whole number of blocks).
 */
export function toMatMulNBits (type: number, data: Uint8Array, rows: number, cols: number, opts: NBitsOptions = {}): NBitsWeight | null {
  const forms = formsOf(type, opts)
  if (forms.length === 0) return null
  if (!Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) || cols < 0) {
    throw new RangeError(`invalid shape ${String(rows)} x ${String(cols)}`)
  }
  const info = quantInfo(type)
  if (cols % info.blockSize !== 0) return null
  const need = rows * (cols / info.blockSize) * info.typeSize
  if (data.length < need) {
    throw new RangeError(`${info.name} data too short: ${rows} x ${cols} needs ${need} bytes, got ${data.length}`)
  }
  for (const form of forms) {
    const w = build(form, data, rows, cols, info.blockSize, info.typeSize)
    if (w !== null) return w
  }
  return null
}

/** One form of the whole tensor, or null when one of its offsets is not a float32 value. */
function build (form: Form, x: Uint8Array, rows: number, cols: number, qb: number, typeSize: number): NBitsWeight | null {
  const { bits, blockSize: bs } = form
  const nblocks = rows * (cols / qb)
  const subs = qb / bs
  const perRow = cols / bs
  const b = new Uint8Array(rows * cols * bits / 8)
  const scales = new Float32Array(rows * perRow)
  const offsets = form.offsets ? new Float32Array(rows * perRow) : null
  const u = new Uint8Array(qb)
  const s = new Float64Array(subs)
  const o = new Float64Array(subs)
  let nonzero = false
  for (let i = 0, p = 0; i < nblocks; i++, p += typeSize) {
    form.decode(x, p, u, s, o)
    const e = i * qb
    if (bits === 8) {
      b.set(u, e)
    } else {
      for (let j = 0, w = e >> 1; j < qb; j += 2, w++) b[w] = u[j] | (u[j + 1] << 4)
    }
    const g0 = i * subs
    for (let t = 0; t < subs; t++) {
      if (!exact32(s[t])) return null
      scales[g0 + t] = s[t]
      if (offsets !== null) {
        if (!exact32(o[t])) return null
        const g = g0 + t
        const n = Math.floor(g / perRow)
        offsets[(g - n * perRow) * rows + n] = o[t]
        if (o[t] !== 0) nonzero = true
      }
    }
  }
  return { bits, blockSize: bs, b, scales, offsets: nonzero ? offsets : null }
}

/** Operands of ONNX Runtime's `GatherBlockQuantized` (com.microsoft) for a quantized embedding table. */
export interface GatherBlockQuantizedOperands {
  bits: 4 | 8
  blockSize: number
  /** uint8 [rows, cols · bits / 8] (the same bytes as the MatMulNBits `b`; 4-bit: two codes a byte, low nibble first) */
  data: Uint8Array
  dataDims: [number, number]
  /** float32 [rows, cols / blockSize] */
  scales: Float32Array
  scalesDims: [number, number]
  /**
   * float32 [rows, cols / blockSize] (row-major, not transposed), or null when every offset is 0. The graph
   * adds them per block: Gather(offsets, ids) unsqueezed to [.., cols / blockSize, 1] plus the gathered
   * rows reshaped to [.., cols / blockSize, blockSize], reshaped back.
   */
  offsets: Float32Array | null
  /** no zero_points input: the default (2^(bits − 1)) is MatMulNBits' */
  attributes: { gather_axis: 0, quantize_axis: 1, block_size: number, bits: 4 | 8 }
}

/**
 * A `rows` × `cols` ggml table (e.g. token_embd) as GatherBlockQuantized operands whose gathered rows
 * (plus offsets, when any) are bit-identical to dequantize(), or null when the type has no exact form.
 * Data is uint8 with the `bits` attribute; scales are float32 so the op's output is float32.
 */
export function toGatherBlockQuantized (type: number, data: Uint8Array, rows: number, cols: number, opts: NBitsOptions = {}): GatherBlockQuantizedOperands | null {
  const w = toMatMulNBits(type, data, rows, cols, opts)
  if (w === null) return null
  const perRow = cols / w.blockSize
  let offsets: Float32Array | null = null
  if (w.offsets !== null) {
    offsets = new Float32Array(rows * perRow)
    for (let c = 0; c < perRow; c++) for (let n = 0; n < rows; n++) offsets[n * perRow + c] = w.offsets[c * rows + n]
  }
  return {
    bits: w.bits,
    blockSize: w.blockSize,
    data: w.b,
    dataDims: [rows, cols * w.bits / 8],
    scales: w.scales,
    scalesDims: [rows, perRow],
    offsets,
    attributes: { gather_axis: 0, quantize_axis: 1, block_size: w.blockSize, bits: w.bits }
  }
}
