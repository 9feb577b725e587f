// Exact MatMulNBits / GatherBlockQuantized forms of ggml block formats (agent/model/gguf/nbits.ts):
// the codes, scales and offsets reproduce dequantize() bit for bit, and ONNX Runtime's ops computed
// on them agree with x · dequantize(W)ᵀ evaluated in float64.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import ort from 'onnxruntime-node'
import { GGML_TYPE, dequantize, quantInfo, repackQ4ForMatMulNBits } from '../../agent/model/gguf/quants.ts'
import { hasNBitsForm, nbitsLayout, toGatherBlockQuantized, toMatMulNBits } from '../../agent/model/gguf/nbits.ts'
import type { NBitsLayout, NBitsWeight } from '../../agent/model/gguf/nbits.ts'
import { DT, encodeModel, floatTensor, int64Tensor, node, valueInfo } from '../../agent/model/onnx.ts'
import type { INodeProto, ITensorProto } from '../../agent/model/onnx.ts'
import { Rng } from '../../agent/model/random.ts'

// ---------------------------------------------------------------------------
// data

/** Deterministic test data from the project's seeded generator. */
function rng (seed: number): () => number {
  const r = new Rng(seed)
  return () => r.next()
}

/** Byte offsets of each format's f16 fields (d, and m / dmin where the format has one). */
const HALF_FIELDS: Record<number, number[]> = {
  [GGML_TYPE.Q4_0]: [0],
  [GGML_TYPE.Q4_1]: [0, 2],
  [GGML_TYPE.Q5_0]: [0],
  [GGML_TYPE.Q5_1]: [0, 2],
  [GGML_TYPE.Q8_0]: [0],
  [GGML_TYPE.Q2_K]: [80, 82],
  [GGML_TYPE.Q3_K]: [108],
  [GGML_TYPE.Q4_K]: [0, 2],
  [GGML_TYPE.Q5_K]: [0, 2],
  [GGML_TYPE.Q6_K]: [208]
}

/**
 * `nblocks` random valid blocks: random code / scale bytes, and f16 fields that are small finite values
 * (|v| in [2^-10, 2^-4), either sign; one in 16 is 0).
 */
function randomBlocks (type: number, nblocks: number, seed: number): Uint8Array {
  const r = rng(seed)
  const { typeSize } = quantInfo(type)
  const x = new Uint8Array(nblocks * typeSize)
  for (let i = 0; i < x.length; i++) x[i] = Math.floor(r() * 256)
  for (let b = 0; b < nblocks; b++) {
    for (const f of HALF_FIELDS[type]) {
      const h = r() < 1 / 16 ? 0 : ((r() < 0.5 ? 0x8000 : 0) | ((5 + Math.floor(r() * 6)) << 10) | Math.floor(r() * 1024))
      x[b * typeSize + f] = h & 0xff
      x[b * typeSize + f + 1] = h >> 8
    }
  }
  return x
}

interface FixtureCase { type: number, name: string, elements: number, raw: string }
const fixture = JSON.parse(readFileSync(new URL('../fixtures/gguf-quants.json', import.meta.url), 'utf8')) as { cases: FixtureCase[] }

/** The forms nbits.ts promises (ggml's value = scale · (u − 2^(bits−1)) + offset per block along K). */
const LAYOUTS: Array<[keyof typeof GGML_TYPE, NBitsLayout | null]> = [
  ['F32', null],
  ['F16', null],
  ['BF16', null],
  ['Q4_0', { bits: 4, blockSize: 32, offsets: false }],
  ['Q4_1', { bits: 4, blockSize: 32, offsets: true }],
  ['Q5_0', { bits: 8, blockSize: 32, offsets: false }],
  ['Q5_1', { bits: 8, blockSize: 32, offsets: true }],
  ['Q8_0', { bits: 8, blockSize: 32, offsets: false }],
  ['Q2_K', { bits: 4, blockSize: 16, offsets: true }],
  ['Q3_K', { bits: 4, blockSize: 16, offsets: false }],
  ['Q4_K', { bits: 4, blockSize: 32, offsets: true }],
  ['Q5_K', { bits: 8, blockSize: 32, offsets: true }],
  ['Q6_K', { bits: 8, blockSize: 16, offsets: false }]
]
const QUANTIZED = LAYOUTS.filter(([, l]) => l !== null).map(([name]) => name)

interface Source { label: string, raw: Uint8Array, rows: number, cols: number }

/** The fixture's gguf-quantized blocks (as few rows of several blocks) and a larger random matrix. */
function sources (name: keyof typeof GGML_TYPE): Source[] {
  const type = GGML_TYPE[name]
  const c = fixture.cases.find(f => f.type === type)
  assert.ok(c !== undefined, `fixture has ${name}`)
  const qb = quantInfo(type).blockSize
  const cols = qb === 256 ? 256 : 128
  return [
    { label: 'fixture', raw: new Uint8Array(Buffer.from(c.raw, 'base64')), rows: c.elements / cols, cols },
    { label: 'random', raw: randomBlocks(type, 24 * 512 / qb, type * 7919), rows: 24, cols: 512 }
  ]
}

// ---------------------------------------------------------------------------
// unpacking the form

/** The reconstructed float32 matrix fl32(scale · (u − z) + offset), row-major [rows, cols], in float64 arithmetic first. */
function reconstruct (w: NBitsWeight, rows: number, cols: number): Float32Array {
  const z = 1 << (w.bits - 1)
  const perRow = cols / w.blockSize
  const out = new Float32Array(rows * cols)
  for (let n = 0; n < rows; n++) {
    for (let k = 0; k < cols; k++) {
      const e = n * cols + k
      const u = w.bits === 8 ? w.b[e] : (w.b[e >> 1] >> ((e & 1) * 4)) & 0xf
      const blk = Math.floor(k / w.blockSize)
      const off = w.offsets === null ? 0 : w.offsets[blk * rows + n]
      out[e] = w.scales[n * perRow + blk] * (u - z) + off
    }
  }
  return out
}

function assertSameValues (got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`)
  for (let i = 0; i < want.length; i++) {
    // bit-identical up to the sign of zero (a zero weight is a zero weight to a matmul)
    if (got[i] !== want[i] && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) {
      assert.fail(`${what}: element ${i} is ${got[i]}, dequantize() gives ${want[i]}`)
    }
  }
}

// ---------------------------------------------------------------------------
// graphs

const MS = 'com.microsoft'
const OPSETS = [{ domain: '', version: 17 }, { domain: MS, version: 1 }]

function uint8Tensor (name: string, dims: number[], data: Uint8Array): ITensorProto {
  return { name, dims, dataType: 2, rawData: data }
}

function msNode (op: string, inputs: string[], outputs: string[], attrs: Record<string, number>): INodeProto {
  const n = node(op, inputs, outputs, op, attrs)
  n.domain = MS
  return n
}

/**
 * y = x · Wᵀ as the converter builds it: MatMulNBits on the codes, plus (when there are offsets)
 * ReduceSum of x reshaped to [M, K / bs, bs] over the last axis, MatMul with offsets [K / bs, N], Add.
 */
async function matMulNBitsSession (w: NBitsWeight, M: number, K: number, N: number, accuracyLevel: number): Promise<ort.InferenceSession> {
  const blocks = K / w.blockSize
  const init: ITensorProto[] = [
    uint8Tensor('B', [N, blocks, w.blockSize * w.bits / 8], w.b),
    floatTensor('S', [N * blocks], w.scales)
  ]
  const nodes: INodeProto[] = []
  const attrs = { K, N, bits: w.bits, block_size: w.blockSize, accuracy_level: accuracyLevel }
  if (w.offsets === null) {
    nodes.push(msNode('MatMulNBits', ['x', 'B', 'S'], ['y'], attrs))
  } else {
    init.push(int64Tensor('blockShape', [3], [0, blocks, w.blockSize]), int64Tensor('lastAxis', [1], [-1]), floatTensor('O', [blocks, N], w.offsets))
    nodes.push(
      msNode('MatMulNBits', ['x', 'B', 'S'], ['q'], attrs),
      node('Reshape', ['x', 'blockShape'], ['xb'], 'reshape'),
      node('ReduceSum', ['xb', 'lastAxis'], ['sums'], 'sums', { keepdims: 0 }),
      node('MatMul', ['sums', 'O'], ['off'], 'offsets'),
      node('Add', ['q', 'off'], ['y'], 'add')
    )
  }
  const model = {
    irVersion: 8,
    opsetImport: OPSETS,
    graph: { name: 'nbits', node: nodes, initializer: init, input: [valueInfo('x', DT.FLOAT, [M, K])], output: [valueInfo('y', DT.FLOAT, [M, N])] }
  }
  return await ort.InferenceSession.create(encodeModel(model), { intraOpNumThreads: 1, graphOptimizationLevel: 'all' })
}

/** Rows `ids` of the table: GatherBlockQuantized, plus the gathered per-block offsets when there are any. */
async function gatherSession (type: number, raw: Uint8Array, rows: number, cols: number): Promise<ort.InferenceSession> {
  const g = toGatherBlockQuantized(type, raw, rows, cols)
  assert.ok(g !== null)
  const perRow = cols / g.blockSize
  const init: ITensorProto[] = [uint8Tensor('D', g.dataDims, g.data), floatTensor('S', g.scalesDims, g.scales)]
  const nodes: INodeProto[] = []
  if (g.offsets === null) {
    nodes.push(msNode('GatherBlockQuantized', ['D', 'ids', 'S'], ['y'], g.attributes))
  } else {
    init.push(floatTensor('O', [rows, perRow], g.offsets), int64Tensor('blocked', [3], [0, perRow, g.blockSize]), int64Tensor('flat', [2], [0, cols]), int64Tensor('lastAxis', [1], [-1]))
    nodes.push(
      msNode('GatherBlockQuantized', ['D', 'ids', 'S'], ['q'], g.attributes),
      node('Reshape', ['q', 'blocked'], ['qb'], 'qb'),
      node('Gather', ['O', 'ids'], ['o'], 'o', { axis: 0 }),
      node('Unsqueeze', ['o', 'lastAxis'], ['o3'], 'o3'),
      node('Add', ['qb', 'o3'], ['sum'], 'add'),
      node('Reshape', ['sum', 'flat'], ['y'], 'y')
    )
  }
  const model = {
    irVersion: 8,
    opsetImport: OPSETS,
    graph: { name: 'gbq', node: nodes, initializer: init, input: [valueInfo('ids', DT.INT64, ['T'])], output: [valueInfo('y', DT.FLOAT, ['T', cols])] }
  }
  return await ort.InferenceSession.create(encodeModel(model), { intraOpNumThreads: 1 })
}

/** max |y − x·Wᵀ| (reference in float64) and the product's scale max_{m,n} Σ_k |x_mk|·|W_nk|. */
function compareProduct (y: Float32Array, x: Float32Array, W: Float32Array, M: number, K: number, N: number): { err: number, scale: number } {
  let err = 0
  let scale = 0
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let ref = 0
      let abs = 0
      for (let k = 0; k < K; k++) {
        const p = x[m * K + k] * W[n * K + k]
        ref += p
        abs += Math.abs(p)
      }
      err = Math.max(err, Math.abs(y[m * N + n] - ref))
      scale = Math.max(scale, abs)
    }
  }
  return { err, scale }
}

// ---------------------------------------------------------------------------
// tests

test('every quantized type has its exact form; float types stay float; maxBits 4 keeps only 4-bit forms', () => {
  for (const [name, layout] of LAYOUTS) {
    const type = GGML_TYPE[name]
    assert.deepEqual(nbitsLayout(type), layout, name)
    assert.equal(hasNBitsForm(type), layout !== null, name)
    const four = layout !== null && layout.bits === 4 ? layout : null
    assert.deepEqual(nbitsLayout(type, { maxBits: 4 }), four, `${name}, maxBits 4`)
    assert.equal(hasNBitsForm(type, { maxBits: 4 }), four !== null, `${name}, maxBits 4`)
    if (layout === null) {
      const { typeSize, blockSize } = quantInfo(type)
      assert.equal(toMatMulNBits(type, new Uint8Array(4 * 64 / blockSize * typeSize), 4, 64), null, name)
      assert.equal(toGatherBlockQuantized(type, new Uint8Array(4 * 64 / blockSize * typeSize), 4, 64), null, name)
    }
  }
  assert.equal(hasNBitsForm(16 /* IQ2_XXS */), false)
})

test('scale · (u − 2^(bits−1)) + offset is bit-identical to dequantize() (fixture blocks and random blocks)', () => {
  for (const name of QUANTIZED) {
    const type = GGML_TYPE[name]
    for (const src of sources(name)) {
      const what = `${name} ${src.label} ${src.rows}x${src.cols}`
      const w = toMatMulNBits(type, src.raw, src.rows, src.cols)
      assert.ok(w !== null, what)
      assert.deepEqual({ bits: w.bits, blockSize: w.blockSize, offsets: w.offsets !== null }, nbitsLayout(type), what)
      const perRow = src.cols / w.blockSize
      assert.equal(w.b.length, src.rows * src.cols * w.bits / 8, `${what}: b`)
      assert.equal(w.scales.length, src.rows * perRow, `${what}: scales`)
      if (w.offsets !== null) assert.equal(w.offsets.length, src.rows * perRow, `${what}: offsets`)
      assertSameValues(reconstruct(w, src.rows, src.cols), dequantize(type, src.raw, src.rows * src.cols), what)
    }
  }
})

test('MatMulNBits (+ offsets graph) computes x · dequantize(W)ᵀ: accuracy_level 0 within 1e-4 of the product scale', async () => {
  // Bound: |y − x·Wᵀ| ≤ 1e-4 · max_{m,n} Σ_k |x_mk|·|W_nk| (reference in float64). The weights are exact, so the
  // only error is float32 accumulation (≈ 2^-24 · K per term at worst, ≈ 3e-5 for K = 512) and, with offsets,
  // the float32 block sums of x and their product with the offsets.
  // accuracy_level 4 quantizes x to int8 per block (not exact; this is what makes 8-bit codes fast on CPU):
  // it is checked against a 1e-2 bound.
  const M = 3
  for (const name of QUANTIZED) {
    const type = GGML_TYPE[name]
    for (const src of sources(name)) {
      const { rows: N, cols: K } = src
      const w = toMatMulNBits(type, src.raw, N, K)
      assert.ok(w !== null)
      const W = dequantize(type, src.raw, N * K)
      const r = rng(type * 31 + K)
      const x = Float32Array.from({ length: M * K }, () => r() * 2 - 1)
      for (const [level, bound] of [[0, 1e-4], [4, 1e-2]] as const) {
        const session = await matMulNBitsSession(w, M, K, N, level)
        const y = (await session.run({ x: new ort.Tensor('float32', x, [M, K]) })).y.data as Float32Array
        await session.release()
        const { err, scale } = compareProduct(y, x, W, M, K, N)
        assert.ok(scale > 0, `${name} ${src.label}: non-trivial product`)
        assert.ok(err <= bound * scale, `${name} ${src.label} accuracy_level ${level}: max error ${err} > ${bound} · ${scale}`)
      }
    }
  }
})

test('GatherBlockQuantized (+ gathered offsets) gives rows bit-identical to dequantize()', async () => {
  for (const name of QUANTIZED) {
    const type = GGML_TYPE[name]
    for (const src of sources(name)) {
      const { rows, cols } = src
      const W = dequantize(type, src.raw, rows * cols)
      const ids = [0, rows - 1, Math.floor(rows / 2), 0]
      const session = await gatherSession(type, src.raw, rows, cols)
      const y = (await session.run({ ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [ids.length]) })).y.data as Float32Array
      await session.release()
      const want = new Float32Array(ids.length * cols)
      ids.forEach((row, i) => want.set(W.subarray(row * cols, (row + 1) * cols), i * cols))
      assertSameValues(y, want, `${name} ${src.label} gathered rows`)
    }
  }
})

test('Q4_0 / Q4_1 codes and scales are laid out as repackQ4ForMatMulNBits lays them out', () => {
  for (const name of ['Q4_0', 'Q4_1'] as const) {
    for (const src of sources(name)) {
      const w = toMatMulNBits(GGML_TYPE[name], src.raw, src.rows, src.cols)
      const r = repackQ4ForMatMulNBits(GGML_TYPE[name], src.raw, src.rows, src.cols)
      assert.ok(w !== null)
      for (let blk = 0; blk < w.scales.length; blk++) {
        // repackQ4ForMatMulNBits re-codes a Q4_1 block with d = 0 (q = 1, scale m); here it keeps its codes
        if (name === 'Q4_1' && w.scales[blk] === 0) continue
        assert.equal(w.scales[blk], r.scales[blk], `${name} ${src.label} block ${blk}: scale`)
        assert.deepEqual(w.b.subarray(blk * 16, blk * 16 + 16), r.b.subarray(blk * 16, blk * 16 + 16), `${name} ${src.label} block ${blk}: codes`)
      }
    }
  }
})

test('Q4_1 / Q4_K: a 4-bit offset that is not a float32 value makes the tensor 8-bit (still exact), or null under maxBits 4', () => {
  // Q4_1 block: d = 1, m = 2^-14 · (1 + 2^-10): m + 8d needs 28 significant bits
  const q41 = randomBlocks(GGML_TYPE.Q4_1, 8, 5)
  q41.set([0x00, 0x3c, 0x01, 0x04], 7 * 20) // last block of the second row
  // Q4_K block: d = 1, dmin = 2^-14 · (1 + 2^-10), first sub-block scale 1 and min 1: 8 − dmin needs 28 bits
  const q4k = randomBlocks(GGML_TYPE.Q4_K, 4, 6)
  q4k.set([0x00, 0x3c, 0x01, 0x04], 3 * 144) // last block of the second row
  q4k[3 * 144 + 4] = 1
  q4k[3 * 144 + 8] = 1
  for (const [name, raw, rows, cols] of [['Q4_1', q41, 2, 128], ['Q4_K', q4k, 2, 512]] as const) {
    const type = GGML_TYPE[name]
    const w = toMatMulNBits(type, raw, rows, cols)
    assert.ok(w !== null, name)
    assert.equal(w.bits, 8, `${name}: 8-bit fallback`)
    assert.equal(w.blockSize, 32)
    assertSameValues(reconstruct(w, rows, cols), dequantize(type, raw, rows * cols), `${name} fallback`)
    assert.equal(toMatMulNBits(type, raw, rows, cols, { maxBits: 4 }), null, `${name}: maxBits 4`)
    // without the odd block the 4-bit form is taken
    const good = toMatMulNBits(type, raw.subarray(0, quantInfo(type).typeSize * cols / quantInfo(type).blockSize), 1, cols)
    assert.equal(good?.bits, 4, `${name}: first row alone`)
  }
})

test('offsets are stored transposed [K / blockSize, N]; all-zero offsets are dropped', () => {
  // Q5_1 with m = 0 in every block: no offsets
  const raw = randomBlocks(GGML_TYPE.Q5_1, 6, 9)
  for (let b = 0; b < 6; b++) raw.fill(0, b * 24 + 2, b * 24 + 4)
  const w = toMatMulNBits(GGML_TYPE.Q5_1, raw, 2, 96)
  assert.ok(w !== null)
  assert.equal(w.offsets, null)
  // Q4_1: offset of row n, block c is m + 8d of ggml block n·(K/32) + c
  const r1 = randomBlocks(GGML_TYPE.Q4_1, 6, 10)
  const w1 = toMatMulNBits(GGML_TYPE.Q4_1, r1, 2, 96)
  assert.ok(w1 !== null && w1.offsets !== null)
  const codes = w1.b
  const offsets = w1.offsets
  const W = dequantize(GGML_TYPE.Q4_1, r1, 192)
  let checked = 0
  for (let n = 0; n < 2; n++) {
    for (let c = 0; c < 3; c++) {
      // an element with code 8 is exactly its block's offset
      for (let i = n * 96 + c * 32; i < n * 96 + c * 32 + 32; i++) {
        if (((codes[i >> 1] >> ((i & 1) * 4)) & 0xf) !== 8) continue
        assert.equal(offsets[c * 2 + n], W[i], `row ${n} block ${c}`)
        checked++
        break
      }
    }
  }
  assert.ok(checked >= 4, `checked ${checked} blocks`)
})

test('rows that are not whole blocks have no form; short data is refused', () => {
  assert.equal(toMatMulNBits(GGML_TYPE.Q8_0, new Uint8Array(34 * 4), 2, 48), null)
  assert.equal(toMatMulNBits(GGML_TYPE.Q6_K, new Uint8Array(210 * 2), 1, 128), null)
  assert.throws(() => toMatMulNBits(GGML_TYPE.Q8_0, new Uint8Array(34 * 3), 2, 64), RangeError)
  assert.throws(() => toMatMulNBits(GGML_TYPE.Q4_K, new Uint8Array(144), 2, 256), RangeError)
})
