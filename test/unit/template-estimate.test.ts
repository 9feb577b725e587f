// Memory estimates (agent/templates/estimate.ts, bits per weight from quant-bits.ts): the figures, the
// arithmetic, shapes from model info, and the estimate against a real load of SmolLM2 (the relative error is
// printed; the bound is generous).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { estimateMemory, shapeFromModelInfo } from '../../agent/templates/estimate.ts'
import { bitsPerWeight, knownQuantizations, QuantizationError } from '../../agent/templates/quant-bits.ts'
import type { ModelShape } from '../../agent/templates/estimate.ts'
import { realWeights } from '../helpers/weights.ts'
import { skipNamed } from '../helpers/skip.ts'

const smollm2: ModelShape = { parameters: 134515008, layers: 30, hidden: 576, heads: 9, kvHeads: 3, headDim: 64, vocab: 49152, contextLength: 8192, tiedEmbeddings: true }

test('bits per weight: ggml block layouts, llama.cpp mixes, ONNX dtypes; unknown names are refused with the known ones', () => {
  assert.equal(bitsPerWeight('F32'), 32)
  assert.equal(bitsPerWeight('F16'), 16)
  assert.equal(bitsPerWeight('BF16'), 16)
  assert.equal(bitsPerWeight('Q8_0'), 8.5)
  assert.equal(bitsPerWeight('Q6_K'), 6.5625)
  assert.equal(bitsPerWeight('Q5_0'), 5.5)
  assert.equal(bitsPerWeight('Q5_1'), 6)
  assert.equal(bitsPerWeight('Q4_0'), 4.5)
  assert.equal(bitsPerWeight('q4_1'), 5)
  assert.equal(bitsPerWeight('MOSTLY_Q4_1'), 5)
  const near = (q: string, v: number, tol: number): void => { assert.ok(Math.abs(bitsPerWeight(q) - v) <= tol, `${q}: ${bitsPerWeight(q)} vs ~${v}`) }
  near('Q4_K_M', 4.85, 0.1)
  near('Q5_K_M', 5.6, 0.15)
  near('Q3_K_M', 3.9, 0.1)
  near('Q2_K', 2.8, 0.2)
  assert.equal(bitsPerWeight('q4'), 5.125)
  assert.equal(bitsPerWeight('int8'), 8)
  assert.equal(bitsPerWeight('fp32'), 32)
  assert.equal(bitsPerWeight('fp16'), 16)
  assert.throws(() => bitsPerWeight('Q9_Z'), (e: Error) => e instanceof QuantizationError && /Q4_K_M/.test(e.message) && /q4f16/.test(e.message))
  assert.ok(knownQuantizations().includes('Q4_K_M'))
})

test('the estimate adds up: weights, float32 KV cache at context × concurrency, runtime; per-layer figures for splitting', () => {
  const e = estimateMemory(smollm2, { quantization: 'Q4_1', weights: 'q8', contextLength: 2048, concurrency: 4 })
  assert.equal(e.totalBytes, e.weightsBytes + e.loadOverheadBytes + e.kvCacheBytes + e.runtimeBytes)
  assert.equal(e.totalBytes, e.runtimeBytes + e.layers * e.perLayerBytes + e.embeddingBytes + e.headBytes - e.sharedBytes)
  assert.equal(e.perLayerKvBytes, 2 * 3 * 64 * 2048 * 4 * 4 * 3) // 2 (K, V) × kvHeads × headDim × context × concurrency × float32 × KV_COPIES
  assert.equal(e.kvCacheBytes, 30 * e.perLayerKvBytes)
  // twice the concurrency: twice the KV cache, same weights
  const e2 = estimateMemory(smollm2, { quantization: 'Q4_1', weights: 'q8', contextLength: 2048, concurrency: 8 })
  assert.equal(e2.kvCacheBytes, 2 * e.kvCacheBytes)
  assert.equal(e2.weightsBytes, e.weightsBytes)
  // conversion modes: f32 dequantizes everything (a tied float table is shared by embedding and head), q4 keeps 4-bit forms only
  const f32 = estimateMemory(smollm2, { quantization: 'Q4_1', weights: 'f32', contextLength: 2048, concurrency: 4 })
  const q4 = estimateMemory(smollm2, { quantization: 'Q4_1', weights: 'q4', contextLength: 2048, concurrency: 4 })
  assert.ok(f32.weightsBytes > q4.weightsBytes && q4.weightsBytes > e.weightsBytes, `${f32.weightsBytes} > ${q4.weightsBytes} > ${e.weightsBytes}`)
  assert.ok(f32.sharedBytes > 0 && e.sharedBytes === 0)
  assert.ok(Math.abs(f32.weightsBytes - smollm2.parameters * 4) / (smollm2.parameters * 4) < 0.02)
  // the source file: ~98 MB for SmolLM2 Q4_1
  assert.ok(Math.abs(e.fileBytes - 98_362_432) / 98_362_432 < 0.1, String(e.fileBytes))
  // ONNX exports are served as they are
  const onnx = estimateMemory(smollm2, { quantization: 'fp32', contextLength: 1024, concurrency: 1 })
  assert.ok(onnx.form.startsWith('ONNX export fp32'))
  assert.throws(() => estimateMemory(smollm2, { quantization: 'Q9', contextLength: 1024, concurrency: 1 }), QuantizationError)
  assert.throws(() => estimateMemory({ ...smollm2, layers: 0 }, { quantization: 'Q8_0', contextLength: 1024, concurrency: 1 }))
})

test('shapes from model info: what is recorded is used, what is missing is assumed and said', () => {
  const full = shapeFromModelInfo({ parameters: 134515008, contextLength: 8192, vocabSize: 49152, layers: 30, hidden: 576, heads: 9, kvHeads: 3, architecture: 'llama' })
  assert.deepEqual({ ...full.shape }, { ...smollm2 })
  assert.ok(full.assumed.some(a => a.startsWith('headDim 64')))
  assert.ok(full.assumed.some(a => a.startsWith('tiedEmbeddings true')))
  const gemma = shapeFromModelInfo({ parameters: 268098176, contextLength: 32768, vocabSize: 262144, layers: 18, hidden: 640, heads: 4, kvHeads: 1, architecture: 'gemma3' })
  assert.equal(gemma.shape.headDim, 256)
  assert.equal(gemma.shape.ropeTables, 2)
  // an ONNX export records parameters 0 and may lack kvHeads
  const onnx = shapeFromModelInfo({ parameters: 0, contextLength: 2048, vocabSize: 49152, layers: 30, hidden: 576, heads: 9 })
  assert.equal(onnx.shape.kvHeads, 9)
  assert.ok(onnx.shape.parameters > 100e6 && onnx.shape.parameters < 200e6, String(onnx.shape.parameters))
  assert.ok(onnx.assumed.some(a => a.startsWith('kvHeads 9')) && onnx.assumed.some(a => a.startsWith('parameters')))
  const bare = shapeFromModelInfo({ parameters: 7_000_000_000, contextLength: 4096, vocabSize: 32000 })
  assert.ok(bare.shape.layers > 20 && bare.shape.layers < 60 && bare.shape.hidden >= 3000, JSON.stringify(bare.shape))
  assert.ok(bare.assumed.length >= 4)
  assert.throws(() => shapeFromModelInfo({ parameters: 0, contextLength: 4096, vocabSize: 32000 }), /parameter count/)
})

const smol = realWeights('smollm2')
test(skipNamed('the estimate against a real load of SmolLM2 (q8): ONNX file size and process RSS growth', smol.skip), { skip: smol.skip, timeout: 300_000 }, async () => {
  const { convertGguf } = await import('../../agent/model/gguf/convert.ts')
  const { ModelEngine } = await import('../../agent/executor/engine.ts')
  const dir = await mkdtemp(join(tmpdir(), 'bm-estimate-'))
  try {
    const c = await convertGguf(smol.path, { cacheDir: dir, weights: 'q8' })
    const { shape, assumed } = shapeFromModelInfo(c.info)
    const contextLength = 512
    const concurrency = 2
    const e = estimateMemory(shape, { quantization: c.info.quantization, weights: 'q8', contextLength, concurrency })
    const rope = shape.contextLength * shape.headDim * 4
    const weightsError = (e.weightsBytes + rope - c.onnxBytes) / c.onnxBytes
    const rss0 = process.memoryUsage().rss
    let peak = rss0
    const sample = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 10)
    const engine = await ModelEngine.start({ modelPath: c.onnxPath, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength, maxBatch: concurrency, intraOpThreads: 1 })
    try {
      const prompt = (i: number): number[] => Array.from({ length: contextLength - 24 }, (_, j) => 100 + ((j * 7 + i) % 1000))
      const gens = Array.from({ length: concurrency }, (_, i) => engine.generate({ prompt: prompt(i), maxTokens: 16, temperature: 0, topP: 1, seed: 1, stopTokens: [] }))
      for (const g of gens) { for await (const _ of g.tokens) { /* drain */ } await g.done }
      peak = Math.max(peak, process.memoryUsage().rss)
    } finally {
      clearInterval(sample)
      await engine.close()
    }
    const used = peak - rss0
    const error = (e.totalBytes - used) / used
    console.log(`SmolLM2 ${c.info.quantization} --weights q8, context ${contextLength} × ${concurrency}; assumed: ${assumed.join('; ')}`)
    console.log(`  weights: estimated ${(e.weightsBytes + rope)} B vs ONNX file ${c.onnxBytes} B: error ${(weightsError * 100).toFixed(1)}%`)
    console.log(`  total: estimated ${(e.totalBytes / 2 ** 20).toFixed(1)} MiB vs peak RSS growth ${(used / 2 ** 20).toFixed(1)} MiB (load + ${concurrency} prompts of ${contextLength - 24} tokens): error ${(error * 100).toFixed(1)}%`)
    assert.ok(Math.abs(weightsError) < 0.25, `weights within 25% of the ONNX file: ${(weightsError * 100).toFixed(1)}%`)
    assert.ok(e.totalBytes >= used / 2 && e.totalBytes <= used * 2, `within a factor of 2 of the real load: ${(error * 100).toFixed(1)}%`)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
