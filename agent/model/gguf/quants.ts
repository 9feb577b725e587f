// Dequantization of GGUF tensor data, bit-exact with ggml's reference
// `dequantize_row_*` functions (llama.cpp ggml/src/ggml-quants.c, block layouts
// from ggml-common.h).
//
// Exactness: in every supported format each output is either an exact product
// of small integers and f16-derived float32 values (no rounding at all), or
// such an exact product plus/minus one float32 value (a single rounding). We
// compute in float64 and round once on the Float32Array store; for a single
// +,-,* of float32 operands, float64 evaluation followed by rounding to float32
// is correctly rounded (53 >= 2*24+2), so the results are bit-identical to the
// C float code — and independent of FMA contraction, since the product that
// would be fused is exact.
//
// Block layouts (little-endian, `half` = IEEE binary16):
//   Q4_0 (32 el, 18 B): half d; u8 qs[16]                 x = ((q) - 8) * d
//   Q4_1 (32 el, 20 B): half d; half m; u8 qs[16]         x = q * d + m
//   Q5_0 (32 el, 22 B): half d; u8 qh[4]; u8 qs[16]       x = ((q|h<<4) - 16) * d
//   Q5_1 (32 el, 24 B): half d; half m; u8 qh[4]; qs[16]  x = (q|h<<4) * d + m
//   Q8_0 (32 el, 34 B): half d; i8 qs[32]                 x = q * d
//   in Q4_x/Q5_x, qs[j] low nibble is element j, high nibble is element j+16.
//   Q2_K (256 el, 84 B):  u8 scales[16]; u8 qs[64]; half d; half dmin
//   Q3_K (256 el, 110 B): u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d
//   Q4_K (256 el, 144 B): half d; half dmin; u8 scales[12]; u8 qs[128]
//   Q5_K (256 el, 176 B): half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
//   Q6_K (256 el, 210 B): u8 ql[128]; u8 qh[64]; i8 scales[16]; half d

/** ggml tensor type numbers (enum ggml_type) for the formats this module knows. */
export const GGML_TYPE = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  BF16: 30
} as const

export type GgmlTypeName = keyof typeof GGML_TYPE
export type GgmlType = typeof GGML_TYPE[GgmlTypeName]

/** Names of all ggml_type values (including ones this module cannot decode), for messages. */
const GGML_TYPE_NAMES: readonly (string | undefined)[] = [
  'F32', 'F16', 'Q4_0', 'Q4_1', 'Q4_2', 'Q4_3', 'Q5_0', 'Q5_1', 'Q8_0', 'Q8_1',
  'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q8_K', 'IQ2_XXS', 'IQ2_XS', 'IQ3_XXS', 'IQ1_S',
  'IQ4_NL', 'IQ3_S', 'IQ2_S', 'IQ4_XS', 'I8', 'I16', 'I32', 'I64', 'F64', 'IQ1_M',
  'BF16', 'Q4_0_4_4', 'Q4_0_4_8', 'Q4_0_8_8', 'TQ1_0', 'TQ2_0', 'IQ4_NL_4_4', 'IQ4_NL_4_8', 'IQ4_NL_8_8', 'MXFP4',
  'NVFP4', 'Q1_0'
]

/** The ggml name of a type number, or undefined when the number is not a known ggml_type. */
export function ggmlTypeName (type: number): string | undefined {
  return Number.isInteger(type) && type >= 0 ? GGML_TYPE_NAMES[type] : undefined
}

function describeType (type: number): string {
  return `${ggmlTypeName(type) ?? 'unknown'} (${String(type)})`
}

export class UnsupportedQuantError extends Error {
  readonly code = 'unsupported_quant'
  readonly type: number

  constructor (type: number, what = 'tensor type') {
    super(`unsupported GGML ${what}: ${describeType(type)}`)
    this.name = 'UnsupportedQuantError'
    this.type = type
  }
}

export interface QuantInfo {
  /** ggml name, e.g. "Q4_K" */
  name: string
  /** elements per block */
  blockSize: number
  /** bytes per block */
  typeSize: number
}

const QK = 32
const QK_K = 256

const INFO = new Map<number, QuantInfo>()
function def (name: GgmlTypeName, blockSize: number, typeSize: number): void {
  INFO.set(GGML_TYPE[name], Object.freeze({ name, blockSize, typeSize }))
}
def('F32', 1, 4)
def('F16', 1, 2)
def('BF16', 1, 2)
def('Q4_0', QK, 2 + QK / 2)
def('Q4_1', QK, 2 + 2 + QK / 2)
def('Q5_0', QK, 2 + 4 + QK / 2)
def('Q5_1', QK, 2 + 2 + 4 + QK / 2)
def('Q8_0', QK, 2 + QK)
def('Q2_K', QK_K, QK_K / 16 + QK_K / 4 + 2 + 2) // 84
def('Q3_K', QK_K, QK_K / 8 + QK_K / 4 + 12 + 2) // 110
def('Q4_K', QK_K, 2 + 2 + 12 + QK_K / 2) // 144
def('Q5_K', QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2) // 176
def('Q6_K', QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2) // 210

/** Block geometry of a type; throws UnsupportedQuantError for types outside GGML_TYPE. */
export function quantInfo (type: number): QuantInfo {
  const info = INFO.get(type)
  if (info === undefined) throw new UnsupportedQuantError(type)
  return info
}

/** Bytes occupied by `elements` elements of `type`; throws if elements is not a whole number of blocks. */
export function tensorBytes (type: number, elements: number): number {
  const info = quantInfo(type)
  if (!Number.isSafeInteger(elements) || elements < 0) {
    throw new RangeError(`invalid element count ${String(elements)} for ${info.name}`)
  }
  if (elements % info.blockSize !== 0) {
    throw new RangeError(`${elements} elements is not a multiple of the ${info.name} block size ${info.blockSize}`)
  }
  return (elements / info.blockSize) * info.typeSize
}

// ---------------------------------------------------------------------------
// half / bfloat16

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

let halfBits: Uint32Array | undefined
let halfFloats: Float32Array | undefined

/** float32 bit pattern of every binary16 value (exact; NaN payloads kept, as numpy does). */
function halfBitsTable (): Uint32Array {
  if (halfBits !== undefined) return halfBits
  const t = new Uint32Array(65536)
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16
    const exp = (h >> 10) & 0x1f
    const mant = h & 0x3ff
    let bits: number
    if (exp === 0) {
      if (mant === 0) {
        bits = sign
      } else {
        // subnormal: mant * 2^-24, renormalise
        let e = 113
        let m = mant
        while ((m & 0x400) === 0) { m <<= 1; e-- }
        bits = sign | (e << 23) | ((m & 0x3ff) << 13)
      }
    } else if (exp === 31) {
      bits = sign | 0x7f800000 | (mant << 13)
    } else {
      bits = sign | ((exp + 112) << 23) | (mant << 13)
    }
    t[h] = bits
  }
  halfBits = t
  return t
}

function halfTable (): Float32Array {
  if (halfFloats === undefined) halfFloats = new Float32Array(halfBitsTable().buffer)
  return halfFloats
}

/** IEEE binary16 bit pattern -> number (exact). */
export function halfToFloat (h: number): number {
  return halfTable()[h & 0xffff]
}

/** bfloat16 bit pattern -> number (exact). */
export function bf16ToFloat (h: number): number {
  BF_SCRATCH_U32[0] = (h & 0xffff) << 16
  return BF_SCRATCH_F32[0]
}
const BF_SCRATCH_F32 = new Float32Array(1)
const BF_SCRATCH_U32 = new Uint32Array(BF_SCRATCH_F32.buffer)

// ---------------------------------------------------------------------------
// dequantize

/**
 * Dequantize `elements` values of ggml `type` from `data` (which may be any
 * subarray, at any byte offset) into `out` (allocated when omitted; when given
 * it must hold at least `elements` floats, only the first `elements` are
 * written) and return `out`. Output is bit-identical to ggml's dequantize_row_*.
 */
export function dequantize (type: number, data: Uint8Array, elements: number, out?: Float32Array): Float32Array {
  const info = quantInfo(type)
  const nbytes = tensorBytes(type, elements)
  if (data.length < nbytes) {
    throw new RangeError(`${info.name} data too short: ${elements} elements need ${nbytes} bytes, got ${data.length}`)
  }
  if (out === undefined) {
    out = new Float32Array(elements)
  } else if (out.length < elements) {
    throw new RangeError(`output too short: ${out.length} < ${elements} elements`)
  }
  if (elements === 0) return out
  const nb = elements / info.blockSize
  switch (type) {
    case GGML_TYPE.F32: deqF32(data, out, elements); break
    case GGML_TYPE.F16: deqF16(data, out, elements); break
    case GGML_TYPE.BF16: deqBF16(data, out, elements); break
    case GGML_TYPE.Q4_0: deqQ4_0(data, out, nb); break
    case GGML_TYPE.Q4_1: deqQ4_1(data, out, nb); break
    case GGML_TYPE.Q5_0: deqQ5_0(data, out, nb); break
    case GGML_TYPE.Q5_1: deqQ5_1(data, out, nb); break
    case GGML_TYPE.Q8_0: deqQ8_0(data, out, nb); break
    case GGML_TYPE.Q2_K: deqQ2_K(data, out, nb); break
    case GGML_TYPE.Q3_K: deqQ3_K(data, out, nb); break
    case GGML_TYPE.Q4_K: deqQ4_K(data, out, nb); break
    case GGML_TYPE.Q5_K: deqQ5_K(data, out, nb); break
    case GGML_TYPE.Q6_K: deqQ6_K(data, out, nb); break
    default: throw new UnsupportedQuantError(type)
  }
  return out
}

function u32View (out: Float32Array, n: number): Uint32Array {
  return new Uint32Array(out.buffer, out.byteOffset, n)
}

function u16ViewIfAligned (src: Uint8Array, n: number): Uint16Array | undefined {
  return LITTLE_ENDIAN && (src.byteOffset & 1) === 0 ? new Uint16Array(src.buffer, src.byteOffset, n) : undefined
}

function deqF32 (src: Uint8Array, y: Float32Array, n: number): void {
  if (LITTLE_ENDIAN) {
    // byte copy keeps every bit pattern (NaN payloads included)
    new Uint8Array(y.buffer, y.byteOffset, n * 4).set(src.subarray(0, n * 4))
    return
  }
  const dv = new DataView(src.buffer, src.byteOffset, n * 4)
  for (let i = 0; i < n; i++) y[i] = dv.getFloat32(i * 4, true)
}

function deqF16 (src: Uint8Array, y: Float32Array, n: number): void {
  const T = halfBitsTable()
  const o = u32View(y, n)
  const h = u16ViewIfAligned(src, n)
  if (h !== undefined) {
    for (let i = 0; i < n; i++) o[i] = T[h[i]]
  } else {
    for (let i = 0, p = 0; i < n; i++, p += 2) o[i] = T[src[p] | (src[p + 1] << 8)]
  }
}

function deqBF16 (src: Uint8Array, y: Float32Array, n: number): void {
  const o = u32View(y, n)
  const h = u16ViewIfAligned(src, n)
  if (h !== undefined) {
    for (let i = 0; i < n; i++) o[i] = h[i] << 16
  } else {
    for (let i = 0, p = 0; i < n; i++, p += 2) o[i] = (src[p] | (src[p + 1] << 8)) << 16
  }
}

function deqQ4_0 (x: Uint8Array, y: Float32Array, nb: number): void {
  const H = halfTable()
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 18, o += 32) {
    const d = H[x[p] | (x[p + 1] << 8)]
    const q = p + 2
    for (let j = 0; j < 16; j++) {
      const b = x[q + j]
      y[o + j] = ((b & 0x0f) - 8) * d
      y[o + j + 16] = ((b >> 4) - 8) * d
    }
  }
}

function deqQ4_1 (x: Uint8Array, y: Float32Array, nb: number): void {
  const H = halfTable()
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 20, o += 32) {
    const d = H[x[p] | (x[p + 1] << 8)]
    const m = H[x[p + 2] | (x[p + 3] << 8)]
    const q = p + 4
    for (let j = 0; j < 16; j++) {
      const b = x[q + j]
      y[o + j] = (b & 0x0f) * d + m
      y[o + j + 16] = (b >> 4) * d + m
    }
  }
}

function deqQ5_0 (x: Uint8Array, y: Float32Array, nb: number): void {
  const H = halfTable()
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 22, o += 32) {
    const d = H[x[p] | (x[p + 1] << 8)]
    const qh = x[p + 2] | (x[p + 3] << 8) | (x[p + 4] << 16) | (x[p + 5] << 24)
    const q = p + 6
    for (let j = 0; j < 16; j++) {
      const b = x[q + j]
      y[o + j] = (((b & 0x0f) | (((qh >>> j) << 4) & 0x10)) - 16) * d
      y[o + j + 16] = (((b >> 4) | ((qh >>> (j + 12)) & 0x10)) - 16) * d
    }
  }
}

function deqQ5_1 (x: Uint8Array, y: Float32Array, nb: number): void {
  const H = halfTable()
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 24, o += 32) {
    const d = H[x[p] | (x[p + 1] << 8)]
    const m = H[x[p + 2] | (x[p + 3] << 8)]
    const qh = x[p + 4] | (x[p + 5] << 8) | (x[p + 6] << 16) | (x[p + 7] << 24)
    const q = p + 8
    for (let j = 0; j < 16; j++) {
      const b = x[q + j]
      y[o + j] = ((b & 0x0f) | (((qh >>> j) << 4) & 0x10)) * d + m
      y[o + j + 16] = ((b >> 4) | ((qh >>> (j + 12)) & 0x10)) * d + m
    }
  }
}

function deqQ8_0 (x: Uint8Array, y: Float32Array, nb: number): void {
  const H = halfTable()
  const s = new Int8Array(x.buffer, x.byteOffset, x.length)
  for (let i = 0, p = 0, o = 0; i < nb; i++, p += 34, o += 32) {
    const d = H[x[p] | (x[p + 1] << 8)]
    const q = p + 2
    for (let j = 0; j < 32; j++) y[o + j] = s[q + j] * d
  }
}

function deqQ2_K (x: Uint8Array, y: Float32Array, nb: number): void {
  const H = halfTable()
  let o = 0
  for (let i = 0, p = 0; i < nb; i++, p += 84) {
    const d = H[x[p + 80] | (x[p + 81] << 8)]
    const min = H[x[p + 82] | (x[p + 83] << 8)]
    let q = p + 16
    let is = p
    for (let n = 0; n < QK_K; n += 128) {
      for (let shift = 0; shift < 8; shift += 2) {
        let sc = x[is++]
        let dl = d * (sc & 0xf)
        let ml = min * (sc >> 4)
        for (let l = 0; l < 16; l++) y[o++] = dl * ((x[q + l] >> shift) & 3) - ml
        sc = x[is++]
        dl = d * (sc & 0xf)
        ml = min * (sc >> 4)
        for (let l = 16; l < 32; l++) y[o++] = dl * ((x[q + l] >> shift) & 3) - ml
      }
      q += 32
    }
  }
}

function deqQ3_K (x: Uint8Array, y: Float32Array, nb: number): void {
  const H = halfTable()
  const scales = new Int32Array(16)
  let o = 0
  for (let i = 0, p = 0; i < nb; i++, p += 110) {
    const dAll = H[x[p + 108] | (x[p + 109] << 8)]
    const s = p + 96
    // 16 six-bit scales: low 4 bits from scales[0..7] (nibbles), high 2 bits from scales[8..11]
    for (let j = 0; j < 16; j++) {
      const lo = j < 8 ? x[s + j] & 0xf : x[s + j - 8] >> 4
      const hi = (x[s + 8 + (j & 3)] >> (2 * (j >> 2))) & 3
      scales[j] = (lo | (hi << 4)) - 32
    }
    const hm = p
    let q = p + 32
    let m = 1
    let is = 0
    for (let n = 0; n < QK_K; n += 128) {
      for (let shift = 0; shift < 8; shift += 2) {
        let dl = dAll * scales[is++]
        for (let l = 0; l < 16; l++) {
          y[o++] = dl * (((x[q + l] >> shift) & 3) - ((x[hm + l] & m) !== 0 ? 0 : 4))
        }
        dl = dAll * scales[is++]
        for (let l = 16; l < 32; l++) {
          y[o++] = dl * (((x[q + l] >> shift) & 3) - ((x[hm + l] & m) !== 0 ? 0 : 4))
        }
        m <<= 1
      }
      q += 32
    }
  }
}

/** ggml get_scale_min_k4, packed as (sc | m << 8). */
export function scaleMinK4 (x: Uint8Array, s: number, j: number): number {
  if (j < 4) return (x[s + j] & 63) | ((x[s + j + 4] & 63) << 8)
  const sc = (x[s + j + 4] & 0xf) | ((x[s + j - 4] >> 6) << 4)
  const m = (x[s + j + 4] >> 4) | ((x[s + j] >> 6) << 4)
  return sc | (m << 8)
}

function deqQ4_K (x: Uint8Array, y: Float32Array, nb: number): void {
  const H = halfTable()
  let o = 0
  for (let i = 0, p = 0; i < nb; i++, p += 144) {
    const d = H[x[p] | (x[p + 1] << 8)]
    const min = H[x[p + 2] | (x[p + 3] << 8)]
    const s = p + 4
    let q = p + 16
    for (let is = 0; is < 8; is += 2) {
      let sm = scaleMinK4(x, s, is)
      const d1 = d * (sm & 0xff)
      const m1 = min * (sm >> 8)
      sm = scaleMinK4(x, s, is + 1)
      const d2 = d * (sm & 0xff)
      const m2 = min * (sm >> 8)
      for (let l = 0; l < 32; l++) y[o + l] = d1 * (x[q + l] & 0xf) - m1
      for (let l = 0; l < 32; l++) y[o + 32 + l] = d2 * (x[q + l] >> 4) - m2
      q += 32
      o += 64
    }
  }
}

function deqQ5_K (x: Uint8Array, y: Float32Array, nb: number): void {
  const H = halfTable()
  let o = 0
  for (let i = 0, p = 0; i < nb; i++, p += 176) {
    const d = H[x[p] | (x[p + 1] << 8)]
    const min = H[x[p + 2] | (x[p + 3] << 8)]
    const s = p + 4
    const qh = p + 16
    let ql = p + 48
    let u1 = 1
    let u2 = 2
    for (let is = 0; is < 8; is += 2) {
      let sm = scaleMinK4(x, s, is)
      const d1 = d * (sm & 0xff)
      const m1 = min * (sm >> 8)
      sm = scaleMinK4(x, s, is + 1)
      const d2 = d * (sm & 0xff)
      const m2 = min * (sm >> 8)
      for (let l = 0; l < 32; l++) y[o + l] = d1 * ((x[ql + l] & 0xf) + ((x[qh + l] & u1) !== 0 ? 16 : 0)) - m1
      for (let l = 0; l < 32; l++) y[o + 32 + l] = d2 * ((x[ql + l] >> 4) + ((x[qh + l] & u2) !== 0 ? 16 : 0)) - m2
      ql += 32
      o += 64
      u1 <<= 2
      u2 <<= 2
    }
  }
}

function deqQ6_K (x: Uint8Array, y: Float32Array, nb: number): void {
  const H = halfTable()
  const s8 = new Int8Array(x.buffer, x.byteOffset, x.length)
  let o = 0
  for (let i = 0, p = 0; i < nb; i++, p += 210) {
    const d = H[x[p + 208] | (x[p + 209] << 8)]
    let ql = p
    let qh = p + 128
    let sc = p + 192
    for (let n = 0; n < QK_K; n += 128) {
      for (let l = 0; l < 32; l++) {
        const is = sc + (l >> 4)
        const a = x[ql + l]
        const b = x[ql + l + 32]
        const h = x[qh + l]
        // (d * sc) * q: both products are exact in float32, as in ggml's `d * sc[is] * q`
        y[o + l] = d * s8[is] * (((a & 0xf) | ((h & 3) << 4)) - 32)
        y[o + l + 32] = d * s8[is + 2] * (((b & 0xf) | (((h >> 2) & 3) << 4)) - 32)
        y[o + l + 64] = d * s8[is + 4] * (((a >> 4) | (((h >> 4) & 3) << 4)) - 32)
        y[o + l + 96] = d * s8[is + 6] * (((b >> 4) | (((h >> 6) & 3) << 4)) - 32)
      }
      o += 128
      ql += 64
      qh += 32
      sc += 8
    }
  }
}

// ---------------------------------------------------------------------------
// ONNX Runtime MatMulNBits (com.microsoft, bits=4, block_size=32) repacking

export interface MatMulNBitsQ4 {
  /** uint8 [N, K/32, 16]: byte i of a block = element 2i (low nibble) | element 2i+1 (high nibble) */
  b: Uint8Array
  /** float32 [N * K/32] */
  scales: Float32Array
  /**
   * Q4_0: undefined (MatMulNBits' default zero point 8) unless explicit zero points were
   * requested, then uint8 [N, ceil((K/32)/2)] packed nibbles all 8 (0x88).
   * Q4_1: float32 [N * K/32] (same type/shape as scales).
   */
  zeroPoints?: Uint8Array | Float32Array
  /** true when zeroPoints is float32 (Q4_1) */
  floatZeroPoints: boolean
}

export interface RepackOptions {
  /** Q4_0 only: return explicit packed uint8 zero points (all 8) instead of undefined. */
  explicitZeroPoints?: boolean
}

/**
 * Q4_0 / Q4_1 rows repacked for MatMulNBits(bits=4, block_size=32). The tensor is
 * N = `rows` rows of K = `cols` elements (ggml ne0 = K contiguous, ne1 = N), each row
 * quantized along K. Dequantized value = scale * (q - zp):
 *  - Q4_0: scale = d, zp = 8, exact.
 *  - Q4_1: scale = d, zp = -m/d (float32), reproducing d*q + m up to float32 rounding of
 *    zp and of (q - zp); a block with d == 0 (all values == m) is re-coded exactly as
 *    q = 1, scale = m, zp = 0 (or scale 0 when m is 0 too).
 */
export function repackQ4ForMatMulNBits (type: number, data: Uint8Array, rows: number, cols: number, options: RepackOptions = {}): MatMulNBitsQ4 {
  if (type !== GGML_TYPE.Q4_0 && type !== GGML_TYPE.Q4_1) {
    throw new UnsupportedQuantError(type, 'type for MatMulNBits 4-bit repacking (only Q4_0, Q4_1)')
  }
  if (!Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) || cols < 0) {
    throw new RangeError(`invalid shape ${String(rows)} x ${String(cols)}`)
  }
  if (cols % QK !== 0) throw new RangeError(`row length ${cols} is not a multiple of the block size ${QK}`)
  const info = quantInfo(type)
  const kb = cols / QK
  const nblocks = rows * kb
  const need = nblocks * info.typeSize
  if (data.length < need) {
    throw new RangeError(`${info.name} data too short: ${rows} x ${cols} needs ${need} bytes, got ${data.length}`)
  }
  const H = halfTable()
  const b = new Uint8Array(nblocks * 16)
  const scales = new Float32Array(nblocks)

  if (type === GGML_TYPE.Q4_0) {
    for (let i = 0, p = 0, w = 0; i < nblocks; i++, p += 18, w += 16) {
      scales[i] = H[data[p] | (data[p + 1] << 8)]
      repackNibbles(data, p + 2, b, w)
    }
    let zeroPoints: Uint8Array | undefined
    if (options.explicitZeroPoints === true) zeroPoints = new Uint8Array(rows * Math.ceil(kb / 2)).fill(0x88)
    return { b, scales, zeroPoints, floatZeroPoints: false }
  }

  const zp = new Float32Array(nblocks)
  for (let i = 0, p = 0, w = 0; i < nblocks; i++, p += 20, w += 16) {
    const d = H[data[p] | (data[p + 1] << 8)]
    const m = H[data[p + 2] | (data[p + 3] << 8)]
    if (d === 0) {
      // every element equals m: q = 1, scale = m, zp = 0 gives m * (1 - 0) = m exactly
      b.fill(0x11, w, w + 16)
      scales[i] = m
      zp[i] = 0
    } else {
      scales[i] = d
      zp[i] = -m / d
      repackNibbles(data, p + 4, b, w)
    }
  }
  return { b, scales, zeroPoints: zp, floatZeroPoints: true }
}

/** ggml order (qs[j]: lo = el j, hi = el j+16) -> sequential pairs (byte i: lo = el 2i, hi = el 2i+1). */
function repackNibbles (x: Uint8Array, q: number, b: Uint8Array, w: number): void {
  for (let i = 0; i < 8; i++) {
    b[w + i] = (x[q + 2 * i] & 0x0f) | ((x[q + 2 * i + 1] & 0x0f) << 4)
    b[w + 8 + i] = (x[q + 2 * i] >> 4) | (x[q + 2 * i + 1] & 0xf0)
  }
}
