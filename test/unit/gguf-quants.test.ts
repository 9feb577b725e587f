import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { Rng } from '../../agent/model/random.ts'
import {
  GGML_TYPE,
  UnsupportedQuantError,
  bf16ToFloat,
  dequantize,
  halfToFloat,
  quantInfo,
  repackQ4ForMatMulNBits,
  tensorBytes
} from '../../agent/model/gguf/quants.ts'

// ---------------------------------------------------------------------------
// helpers

/** float -> IEEE binary16 bits (round to nearest even); only used to build test blocks from exact values. */
function f16 (v: number): number {
  const f = new Float32Array([v])
  const x = new Uint32Array(f.buffer)[0]
  const sign = (x >>> 16) & 0x8000
  const exp = (x >>> 23) & 0xff
  const mant = x & 0x7fffff
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0)
  const e = exp - 127 + 15
  if (e >= 31) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    const m = mant | 0x800000
    const shift = 14 - e
    let h = m >> shift
    const rem = m & ((1 << shift) - 1)
    const half = 1 << (shift - 1)
    if (rem > half || (rem === half && (h & 1) === 1)) h++
    return sign | h
  }
  let h = (e << 10) | (mant >> 13)
  const rem = mant & 0x1fff
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++
  return sign | h
}

function putHalf (buf: Uint8Array, off: number, v: number): void {
  const h = f16(v)
  assert.equal(halfToFloat(h), v, `test value ${v} must be exactly representable in f16`)
  buf[off] = h & 0xff
  buf[off + 1] = h >> 8
}

/** Deterministic test data from the project's seeded generator. */
function rng (seed: number): () => number {
  const r = new Rng(seed)
  return () => r.next()
}

function bits (a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length)
}

/** Bitwise equality of float32 arrays (distinguishes -0 from +0); any NaN matches any NaN. */
function assertBitwiseEqual (actual: Float32Array, expected: Float32Array, label: string): void {
  assert.equal(actual.length, expected.length, `${label}: length`)
  const ab = bits(actual)
  const eb = bits(expected)
  for (let i = 0; i < actual.length; i++) {
    if (ab[i] === eb[i]) continue
    if (Number.isNaN(actual[i]) && Number.isNaN(expected[i])) continue
    assert.fail(`${label}: element ${i}: got ${actual[i]} (0x${ab[i].toString(16)}), want ${expected[i]} (0x${eb[i].toString(16)})`)
  }
}

/** Copy bytes to a fresh buffer at an odd byte offset, to exercise unaligned input. */
function atOffset (bytes: Uint8Array, offset: number): Uint8Array {
  const buf = new Uint8Array(bytes.length + offset + 3)
  buf.set(bytes, offset)
  return buf.subarray(offset, offset + bytes.length)
}

// ---------------------------------------------------------------------------
// 1. hand-built blocks with known values

test('quantInfo: block geometry matches ggml-common.h', () => {
  const want: Record<string, [number, number]> = {
    F32: [1, 4], F16: [1, 2], BF16: [1, 2],
    Q4_0: [32, 18], Q4_1: [32, 20], Q5_0: [32, 22], Q5_1: [32, 24], Q8_0: [32, 34],
    Q2_K: [256, 84], Q3_K: [256, 110], Q4_K: [256, 144], Q5_K: [256, 176], Q6_K: [256, 210]
  }
  for (const [name, type] of Object.entries(GGML_TYPE)) {
    const info = quantInfo(type)
    assert.equal(info.name, name)
    assert.deepEqual([info.blockSize, info.typeSize], want[name], name)
  }
  assert.equal(tensorBytes(GGML_TYPE.Q4_K, 4096), 16 * 144)
  assert.equal(tensorBytes(GGML_TYPE.F16, 3), 6)
  assert.equal(tensorBytes(GGML_TYPE.Q8_0, 0), 0)
})

test('Q4_0: hand-built block, d = 0.5, ggml nibble order (low = j, high = j+16)', () => {
  const blk = new Uint8Array(18)
  putHalf(blk, 0, 0.5)
  for (let j = 0; j < 16; j++) blk[2 + j] = j | ((15 - j) << 4)
  const y = dequantize(GGML_TYPE.Q4_0, blk, 32)
  for (let j = 0; j < 16; j++) {
    assert.equal(y[j], (j - 8) * 0.5)
    assert.equal(y[j + 16], (15 - j - 8) * 0.5)
  }
  // (8 - 8) * d with negative d is -0 in C float math
  putHalf(blk, 0, -2)
  const z = dequantize(GGML_TYPE.Q4_0, blk, 32)
  assert.ok(Object.is(z[8], -0))
  assert.equal(z[0], 16)
})

test('Q4_1: hand-built block, d = 0.25, m = -1', () => {
  const blk = new Uint8Array(20)
  putHalf(blk, 0, 0.25)
  putHalf(blk, 2, -1)
  for (let j = 0; j < 16; j++) blk[4 + j] = (15 - j) | (j << 4)
  const y = dequantize(GGML_TYPE.Q4_1, blk, 32)
  for (let j = 0; j < 16; j++) {
    assert.equal(y[j], (15 - j) * 0.25 - 1)
    assert.equal(y[j + 16], j * 0.25 - 1)
  }
})

test('Q5_0 / Q5_1: hand-built blocks with high bits from qh', () => {
  const qh = 0b10100000_00000001_10000000_00000011 // elements 0,1,15,16,29,31 have the 5th bit
  const want5 = (j: number, lo: number): number => lo | (((qh >>> j) & 1) << 4)
  const b0 = new Uint8Array(22)
  putHalf(b0, 0, 1)
  new DataView(b0.buffer).setUint32(2, qh, true)
  for (let j = 0; j < 16; j++) b0[6 + j] = (j & 0xf) | (((j * 3) & 0xf) << 4)
  const y0 = dequantize(GGML_TYPE.Q5_0, b0, 32)
  for (let j = 0; j < 16; j++) {
    assert.equal(y0[j], want5(j, j & 0xf) - 16, `el ${j}`)
    assert.equal(y0[j + 16], want5(j + 16, (j * 3) & 0xf) - 16, `el ${j + 16}`)
  }
  const b1 = new Uint8Array(24)
  putHalf(b1, 0, 0.5)
  putHalf(b1, 2, 2)
  new DataView(b1.buffer).setUint32(4, qh, true)
  b1.set(b0.subarray(6), 8)
  const y1 = dequantize(GGML_TYPE.Q5_1, b1, 32)
  for (let j = 0; j < 16; j++) {
    assert.equal(y1[j], want5(j, j & 0xf) * 0.5 + 2)
    assert.equal(y1[j + 16], want5(j + 16, (j * 3) & 0xf) * 0.5 + 2)
  }
})

test('Q8_0: hand-built blocks, signed quants, d = 0.125', () => {
  const blk = new Uint8Array(2 * 34)
  putHalf(blk, 0, 0.125)
  putHalf(blk, 34, -3)
  const q = new Int8Array(blk.buffer)
  for (let j = 0; j < 32; j++) { q[2 + j] = -128 + j * 8 + (j === 31 ? 7 : 0); q[36 + j] = j - 16 }
  const y = dequantize(GGML_TYPE.Q8_0, blk, 64)
  for (let j = 0; j < 32; j++) {
    assert.equal(y[j], q[2 + j] * 0.125)
    assert.equal(y[32 + j], (j - 16) * -3)
  }
  assert.equal(y[0], -16)
  assert.equal(y[31], 127 * 0.125)
})

test('F16: special values (signed zero, subnormals, max, inf, nan) and exhaustive check of all 65536 patterns', () => {
  const cases: Array<[number, number]> = [
    [0x0000, 0], [0x8000, -0], [0x0001, 2 ** -24], [0x8001, -(2 ** -24)], [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14], [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x7bff, 65504],
    [0xfbff, -65504], [0x7c00, Infinity], [0xfc00, -Infinity], [0x7e00, NaN], [0x7c01, NaN], [0xfe00, NaN]
  ]
  const raw = new Uint8Array(cases.length * 2)
  cases.forEach(([h], i) => { raw[2 * i] = h & 0xff; raw[2 * i + 1] = h >> 8 })
  for (const data of [raw, atOffset(raw, 1)]) {
    const y = dequantize(GGML_TYPE.F16, data, cases.length)
    cases.forEach(([h, v], i) => assert.ok(Object.is(y[i], v), `0x${h.toString(16)}: got ${y[i]}, want ${v}`))
  }
  // independent formula over every bit pattern
  const all = new Uint8Array(65536 * 2)
  for (let h = 0; h < 65536; h++) { all[2 * h] = h & 0xff; all[2 * h + 1] = h >> 8 }
  const y = dequantize(GGML_TYPE.F16, all, 65536)
  for (let h = 0; h < 65536; h++) {
    const s = (h & 0x8000) !== 0 ? -1 : 1
    const e = (h >> 10) & 0x1f
    const m = h & 0x3ff
    const v = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m === 0 ? s * Infinity : NaN) : s * (1 + m / 1024) * 2 ** (e - 15)
    if (!Object.is(y[h], v)) assert.fail(`f16 0x${h.toString(16)}: got ${y[h]}, want ${v}`)
    if (!Object.is(halfToFloat(h), v)) assert.fail(`halfToFloat 0x${h.toString(16)}`)
  }
})

test('BF16: known values (top 16 bits of float32)', () => {
  const cases: Array<[number, number]> = [
    [0x3f80, 1], [0xc040, -3], [0x4049, 3.140625], [0x0000, 0], [0x8000, -0], [0x0001, 2 ** -133],
    [0x7f80, Infinity], [0xff80, -Infinity], [0x7fc0, NaN], [0x7f7f, 3.3895313892515355e38]
  ]
  const raw = new Uint8Array(cases.length * 2)
  cases.forEach(([h], i) => { raw[2 * i] = h & 0xff; raw[2 * i + 1] = h >> 8 })
  for (const data of [raw, atOffset(raw, 3)]) {
    const y = dequantize(GGML_TYPE.BF16, data, cases.length)
    cases.forEach(([h, v], i) => {
      assert.ok(Object.is(y[i], v), `0x${h.toString(16)}: got ${y[i]}, want ${v}`)
      assert.ok(Object.is(bf16ToFloat(h), v))
    })
  }
})

test('F32: passthrough keeps bit patterns, including from an unaligned subarray', () => {
  const src = new Float32Array([1.5, -0, NaN, Infinity, 1e-45, -3.25])
  const y = dequantize(GGML_TYPE.F32, atOffset(new Uint8Array(src.buffer), 1), src.length)
  assertBitwiseEqual(y, src, 'F32')
})

test('Q4_K: hand-built super-block exercising get_scale_min_k4 (6-bit scales/mins split across bytes)', () => {
  const blk = new Uint8Array(144)
  putHalf(blk, 0, 0.5) // d
  putHalf(blk, 2, 0.25) // dmin
  const sc = [1, 2, 3, 4, 33, 47, 60, 63]
  const mn = [5, 6, 7, 8, 17, 38, 51, 62]
  const s = blk.subarray(4, 16)
  for (let j = 0; j < 8; j++) {
    if (j < 4) { s[j] = sc[j]; s[j + 4] = mn[j] } else {
      s[j + 4] = (sc[j] & 0xf) | ((mn[j] & 0xf) << 4)
      s[j - 4] |= (sc[j] >> 4) << 6
      s[j] |= (mn[j] >> 4) << 6
    }
  }
  for (let l = 0; l < 128; l++) blk[16 + l] = (l * 7) & 0xff
  const y = dequantize(GGML_TYPE.Q4_K, blk, 256)
  for (let k = 0; k < 256; k++) {
    const sub = k >> 5 // 32-element sub-block
    const chunk = k >> 6
    const l = k & 31
    const byte = blk[16 + chunk * 32 + l]
    const q = (sub & 1) === 0 ? byte & 0xf : byte >> 4
    assert.equal(y[k], 0.5 * sc[sub] * q - 0.25 * mn[sub], `el ${k}`)
  }
})

test('Q6_K: hand-built super-block (ql/qh split, int8 scales)', () => {
  const blk = new Uint8Array(210)
  const L = new Int32Array(256) // wanted 6-bit quants 0..63
  for (let k = 0; k < 256; k++) L[k] = (k * 37 + 11) & 63
  // pack exactly as ggml's quantize_row_q6_K_ref does
  for (let n = 0; n < 2; n++) {
    for (let l = 0; l < 32; l++) {
      const j = n * 128
      blk[n * 64 + l] = (L[j + l] & 0xf) | ((L[j + l + 64] & 0xf) << 4)
      blk[n * 64 + l + 32] = (L[j + l + 32] & 0xf) | ((L[j + l + 96] & 0xf) << 4)
      blk[128 + n * 32 + l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6)
    }
  }
  const scales = new Int8Array(blk.buffer, 192, 16)
  for (let i = 0; i < 16; i++) scales[i] = i % 2 === 0 ? -128 + i * 9 : 127 - i * 5
  putHalf(blk, 208, 0.0078125)
  const y = dequantize(GGML_TYPE.Q6_K, blk, 256)
  for (let k = 0; k < 256; k++) assert.equal(y[k], 0.0078125 * scales[k >> 4] * (L[k] - 32), `el ${k}`)
})

test('dequantize writes into a caller-provided output and returns it', () => {
  const blk = new Uint8Array(34)
  putHalf(blk, 0, 1)
  for (let j = 0; j < 32; j++) blk[2 + j] = j
  const big = new Float32Array(100).fill(-7)
  const view = big.subarray(10, 50)
  const r = dequantize(GGML_TYPE.Q8_0, blk, 32, view)
  assert.equal(r, view)
  assert.equal(big[9], -7)
  assert.equal(big[10], 0)
  assert.equal(big[41], 31)
  assert.equal(big[42], -7)
})

// ---------------------------------------------------------------------------
// 2. cross-check against the Python gguf package

interface FixtureCase { type: number, name: string, elements: number, note: string, raw: string, expected: string }
interface Fixture { generator: string, gguf_version: string, numpy_version: string, seed: number, cases: FixtureCase[] }

const fixture = JSON.parse(readFileSync(new URL('../fixtures/gguf-quants.json', import.meta.url), 'utf8')) as Fixture

// The fixture test/fixtures/gguf-quants.json was generated by scripts/golden/gguf-quants.py with the
// Python `gguf` package 0.19.0 (numpy 2.4.6): gguf.quants.quantize of seeded data where gguf can
// quantize (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), seeded random raw super-blocks for the K-quants,
// and gguf.quants.dequantize for the expected float32 output. We require BITWISE equality (no ulp
// tolerance; -0 and +0 are distinguished, NaNs match any NaN): every ggml dequant output is either
// exact or a single float32 rounding of an exact product +/- a float32, so there is no operation-order
// freedom between ggml, numpy and this implementation.
test(`matches the Python gguf package ${fixture.gguf_version} (fixture from scripts/golden/gguf-quants.py), bitwise`, () => {
  assert.equal(fixture.gguf_version, '0.19.0')
  const seen = new Set<string>()
  for (const c of fixture.cases) {
    const raw = new Uint8Array(Buffer.from(c.raw, 'base64'))
    const expectedBytes = Buffer.from(c.expected, 'base64')
    const expected = new Float32Array(new Uint8Array(expectedBytes).buffer)
    assert.equal(expected.length, c.elements, `${c.name}: fixture length`)
    assert.equal(quantInfo(c.type).name, c.name)
    assert.equal(raw.length, tensorBytes(c.type, c.elements), `${c.name}: raw size`)
    for (const offset of [0, 1, 3]) {
      const data = offset === 0 ? raw : atOffset(raw, offset)
      assertBitwiseEqual(dequantize(c.type, data, c.elements), expected, `${c.name} @+${offset}`)
    }
    seen.add(c.name)
  }
  assert.deepEqual([...seen].sort(), Object.keys(GGML_TYPE).sort(), 'fixture covers every supported type')
})

// ---------------------------------------------------------------------------
// 3. MatMulNBits repacking

function randomQ4Blocks (type: number, nblocks: number, seed: number): Uint8Array {
  const r = rng(seed)
  const ts = quantInfo(type).typeSize
  const out = new Uint8Array(nblocks * ts)
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(r() * 256)
  for (let i = 0; i < nblocks; i++) {
    const p = i * ts
    const mag = 10 ** (r() * 4 - 3)
    putHalf(out, p, halfToFloat(f16((r() * 2 - 1) * mag)))
    if (type === GGML_TYPE.Q4_1) putHalf(out, p + 2, halfToFloat(f16((r() * 2 - 1) * mag * 8)))
  }
  // edge blocks: d == 0 with m != 0, and d == 0 with m == 0
  putHalf(out, 0, 0)
  if (type === GGML_TYPE.Q4_1) {
    putHalf(out, 2, -1.5)
    putHalf(out, ts, 0)
    putHalf(out, ts + 2, 0)
  }
  return out
}

for (const [name, type] of [['Q4_0', GGML_TYPE.Q4_0], ['Q4_1', GGML_TYPE.Q4_1]] as const) {
  test(`repackQ4ForMatMulNBits ${name}: scale*(q - zp) reproduces dequantize (1e-6 of block magnitude)`, () => {
    const rows = 5
    const cols = 7 * 32 // odd number of blocks per row exercises the packed zero-point padding
    const kb = cols / 32
    const data = atOffset(randomQ4Blocks(type, rows * kb, 42 + type), 1)
    const ref = dequantize(type, data, rows * cols)
    const { b, scales, zeroPoints, floatZeroPoints } = repackQ4ForMatMulNBits(type, data, rows, cols)
    assert.equal(b.length, rows * kb * 16)
    assert.equal(scales.length, rows * kb)
    assert.equal(floatZeroPoints, type === GGML_TYPE.Q4_1)
    if (type === GGML_TYPE.Q4_0) {
      assert.equal(zeroPoints, undefined)
      const explicit = repackQ4ForMatMulNBits(type, data, rows, cols, { explicitZeroPoints: true }).zeroPoints
      assert.ok(explicit instanceof Uint8Array)
      assert.equal(explicit.length, rows * Math.ceil(kb / 2))
      assert.ok(explicit.every(v => v === 0x88))
    } else {
      assert.ok(zeroPoints instanceof Float32Array)
      assert.equal(zeroPoints.length, rows * kb)
    }
    for (let n = 0; n < rows; n++) {
      for (let blk = 0; blk < kb; blk++) {
        const bi = n * kb + blk
        const scale = scales[bi]
        const zp = type === GGML_TYPE.Q4_0 ? 8 : (zeroPoints as Float32Array)[bi]
        // block magnitude: |d| * 15 + |m| (from the ggml block)
        const raw = type === GGML_TYPE.Q4_0 ? 18 : 20
        const d = halfToFloat(data[bi * raw] | (data[bi * raw + 1] << 8))
        const m = type === GGML_TYPE.Q4_1 ? halfToFloat(data[bi * raw + 2] | (data[bi * raw + 3] << 8)) : 0
        const tol = 1e-6 * (Math.abs(d) * 15 + Math.abs(m))
        for (let k = 0; k < 32; k++) {
          const byte = b[bi * 16 + (k >> 1)]
          const q = (k & 1) === 0 ? byte & 0xf : byte >> 4
          // ORT computes in float32: fround(fround(q - zp) * scale)
          const v = Math.fround(Math.fround(q - zp) * scale)
          const want = ref[n * cols + blk * 32 + k]
          if (type === GGML_TYPE.Q4_0) assert.equal(v, want, `row ${n} block ${blk} el ${k}`)
          else assert.ok(Math.abs(v - want) <= tol, `row ${n} block ${blk} el ${k}: ${v} vs ${want} (tol ${tol})`)
        }
      }
    }
    if (type === GGML_TYPE.Q4_1) {
      // d == 0 blocks reproduce m exactly
      for (let k = 0; k < 32; k++) { assert.equal(ref[k], -1.5); assert.ok(Object.is(ref[32 + k], 0)) }
      assert.equal(scales[0], -1.5)
      assert.equal((zeroPoints as Float32Array)[0], 0)
      assert.equal(scales[1], 0)
      assert.equal((zeroPoints as Float32Array)[1], 0)
    }
  })
}

test('repackQ4ForMatMulNBits: byte i holds elements 2i (low) and 2i+1 (high)', () => {
  const blk = new Uint8Array(18)
  putHalf(blk, 0, 1)
  for (let j = 0; j < 16; j++) blk[2 + j] = j | ((15 - j) << 4) // element j = j, element j+16 = 15-j
  const { b } = repackQ4ForMatMulNBits(GGML_TYPE.Q4_0, blk, 1, 32)
  const el = (k: number): number => (k < 16 ? k : 31 - k)
  for (let i = 0; i < 16; i++) assert.equal(b[i], el(2 * i) | (el(2 * i + 1) << 4), `byte ${i}`)
})

// ---------------------------------------------------------------------------
// 4. errors

test('errors: unknown / unsupported types throw UnsupportedQuantError naming the type', () => {
  const check = (type: number, text: string): void => {
    for (const fn of [() => quantInfo(type), () => tensorBytes(type, 256), () => dequantize(type, new Uint8Array(1024), 256)]) {
      assert.throws(fn, (err: unknown) => {
        assert.ok(err instanceof UnsupportedQuantError)
        assert.equal(err.name, 'UnsupportedQuantError')
        assert.equal(err.code, 'unsupported_quant')
        assert.equal(err.type, type)
        assert.ok(err.message.includes(text), err.message)
        return true
      })
    }
  }
  check(16, 'IQ2_XXS (16)')
  check(23, 'IQ4_XS (23)')
  check(9, 'Q8_1 (9)')
  check(99, 'unknown (99)')
  check(-1, 'unknown (-1)')
  assert.throws(() => repackQ4ForMatMulNBits(GGML_TYPE.Q8_0, new Uint8Array(34), 1, 32), UnsupportedQuantError)
})

test('errors: element count not a multiple of the block size, or data too short', () => {
  assert.throws(() => tensorBytes(GGML_TYPE.Q4_0, 33), /not a multiple of the Q4_0 block size 32/)
  assert.throws(() => dequantize(GGML_TYPE.Q6_K, new Uint8Array(210 * 2), 300), /not a multiple of the Q6_K block size 256/)
  assert.throws(() => tensorBytes(GGML_TYPE.F16, -2), RangeError)
  assert.throws(() => tensorBytes(GGML_TYPE.F16, 1.5), RangeError)
  assert.throws(() => dequantize(GGML_TYPE.Q8_0, new Uint8Array(67), 64), /too short: 64 elements need 68 bytes, got 67/)
  assert.throws(() => dequantize(GGML_TYPE.F32, new Uint8Array(8), 3), /too short/)
  assert.throws(() => dequantize(GGML_TYPE.Q8_0, new Uint8Array(34), 32, new Float32Array(31)), /output too short/)
  assert.throws(() => repackQ4ForMatMulNBits(GGML_TYPE.Q4_1, new Uint8Array(20 * 3), 2, 64), /too short/)
  assert.throws(() => repackQ4ForMatMulNBits(GGML_TYPE.Q4_0, new Uint8Array(18 * 3), 1, 48), /not a multiple/)
})
