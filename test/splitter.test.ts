import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { balanceLayers, indexGraph, parameterBytes, splitDecoder, SplitError, HIDDEN_IN, HIDDEN_OUT, layerOfNode } from '../agent/splitter/onnx-split.ts'
import { verifySplit } from '../agent/splitter/verify.ts'
import { decodeModel, encodeModel } from '../agent/model/onnx.ts'
import { tempDir } from './helpers/agents.ts'

const dir = tempDir('bm-split-')
const tiny = generateModel({ ...PRESETS.tiny, layers: 3, seed: 4 }, join(dir, 'tiny3.onnx'))
const bytes = readFileSync(tiny.path)
const prompt = [256, ...new TextEncoder().encode('The gulls followed them')]

test('layer indexes are read from node names of generated and optimum-style exports', () => {
  assert.equal(layerOfNode('/h.3/attn/qkv'), 3)
  assert.equal(layerOfNode('/transformer/h.11/attn/c_attn/MatMul'), 11)
  assert.equal(layerOfNode('/model/layers.7/self_attn/q_proj/MatMul'), 7)
  assert.equal(layerOfNode('/mask/causal'), null)
})

test('balancing by parameter bytes and by capacity weights', () => {
  const even = { perLayer: [10, 10, 10, 10, 10, 10], pre: 0, post: 0 }
  assert.deepEqual(balanceLayers(even, 3), [[0, 2], [2, 4], [4, 6]])
  // a heavy embedding on stage 0 pushes layers to the others: stage 0 keeps one, and no stage
  // costs more than 30 (the optimum: 20 + 10 on stage 0)
  const heavy = balanceLayers({ ...even, pre: 20 }, 3)
  assert.deepEqual(heavy[0], [0, 1])
  assert.equal(Math.max(...heavy.map(([a, b], i) => (b - a) * 10 + (i === 0 ? 20 : 0))), 30)
  // a peer with twice the capacity takes twice the layers
  assert.deepEqual(balanceLayers(even, 2, [2, 1]), [[0, 4], [4, 6]])
  assert.throws(() => balanceLayers(even, 7), /exceeds the model's 6 layers/)
  assert.throws(() => balanceLayers(even, 2, [1, 0]), /positive number per stage/)
  const real = parameterBytes(indexGraph(decodeModel(bytes)))
  assert.equal(real.perLayer.length, 3)
  assert.ok(real.pre > 0 && real.post > 0 && real.perLayer.every(b => b === real.perLayer[0]))
  // what a decode step reads: the embedding tables are gathered a row at a time, so they weigh nothing
  const step = parameterBytes(indexGraph(decodeModel(bytes)), { perStep: true })
  assert.equal(step.pre, 0)
  assert.equal(step.post, real.post)
  assert.deepEqual(step.perLayer, real.perLayer)
  // a model whose embedding is as big as its LM head (SmolLM2: 32 MB each, 30 layers of 4.8 MB): by bytes
  // the two stages got 15 layers each, the second also the head; by what a step reads, the first takes more
  const smol = { perLayer: new Array<number>(30).fill(4.8), pre: 32, post: 32 }
  assert.deepEqual(balanceLayers(smol, 2), [[0, 15], [15, 30]])
  const [first, second] = balanceLayers({ ...smol, pre: 0 }, 2)
  assert.ok(first[1] - first[0] >= 18 && second[1] - second[0] <= 12, JSON.stringify([first, second]))
})

for (const world of [2, 3]) {
  test(`a ${world}-stage split chained in ONNX Runtime reproduces the monolithic logits (≤ 1e-4), prefill and decode`, async () => {
    const out = splitDecoder(bytes, world)
    assert.equal(out.stages.length, world)
    assert.deepEqual(out.stages.map(s => s.layers).flat(), out.ranges.flat())
    assert.equal(out.stages[0].inputs.includes('input_ids'), true)
    assert.equal(out.stages[world - 1].outputs.includes('logits'), true)
    for (const s of out.stages.slice(1)) assert.equal(s.inputs[0], HIDDEN_IN)
    for (const s of out.stages.slice(0, -1)) assert.equal(s.outputs[0], HIDDEN_OUT)
    // each stage is a valid model that loads on its own and holds only its layers' KV cache
    for (const s of out.stages) {
      const session = await ort.InferenceSession.create(s.bytes)
      const kv = session.inputNames.filter(n => n.startsWith('past_key_values.')).map(n => Number(n.split('.')[1]))
      assert.deepEqual([...new Set(kv)], Array.from({ length: s.layers[1] - s.layers[0] }, (_, i) => s.layers[0] + i))
      await session.release()
    }
    const v = await verifySplit(bytes, out.stages.map(s => s.bytes), prompt, 5)
    assert.ok(v.maxAbsDiff <= 1e-4, `prefill ${v.maxAbsDiff}`)
    assert.ok(v.decodeMaxAbsDiff <= 1e-4, `decode ${v.decodeMaxAbsDiff}`)
    assert.equal(v.greedyEqual, true)
  })
}

test('the split is deterministic (same stage MD5s) and stage parameters add up to the model\'s', () => {
  const a = splitDecoder(bytes, 3)
  const b = splitDecoder(bytes, 3)
  assert.deepEqual(a.stages.map(s => s.md5), b.stages.map(s => s.md5))
  const p = parameterBytes(indexGraph(decodeModel(bytes)))
  const total = p.pre + p.post + p.perLayer.reduce((x, y) => x + y, 0)
  assert.equal(a.stages.reduce((x, s) => x + s.parameterBytes, 0), total)
})

test('a model without layer names, or too many stages, is refused with a reason', () => {
  assert.throws(() => splitDecoder(bytes, 4), (e: Error) => e instanceof SplitError && /exceeds the model's 3 layers/.test(e.message))
  const m = decodeModel(bytes)
  for (const n of m.graph?.node ?? []) n.name = 'x'
  assert.throws(() => splitDecoder(encodeModel(m), 2), /no layers found/)
})
