import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import type { Tensor } from 'onnxruntime-node'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS, BYTE_VOCAB, EOS, parameterCount } from '../agent/model/spec.ts'
import type { ModelSpec } from '../agent/model/spec.ts'
import { modelWeights, bigramLogits, readCorpus } from '../agent/model/weights.ts'
import { referenceForward, weightMap } from '../agent/model/reference.ts'
import type { KV } from '../agent/model/reference.ts'
import { decodeModel } from '../agent/model/onnx.ts'
import { readFileSync } from 'node:fs'
import { int64, emptyPast, sequenceFeeds, presentAsPast, decoderShape } from '../agent/executor/feeds.ts'
import type { DecoderShape, Feeds } from '../agent/executor/feeds.ts'
import { io } from '../agent/model/graph.ts'
import { tempDir } from './helpers/agents.ts'

const spec: ModelSpec = { ...PRESETS.tiny, seed: 11 }
let path = ''
let session: ort.InferenceSession
let shape: DecoderShape
const weights = weightMap(modelWeights(spec))

function maxAbsDiff (a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'same length')
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

before(async () => {
  path = generateModel(spec, join(tempDir(), 'tiny.onnx')).path
  session = await ort.InferenceSession.create(path)
  shape = decoderShape(session)
})

test('the generator is deterministic: same arguments, same MD5; another seed, another file', () => {
  const a = generateModel(spec, join(tempDir(), 'a.onnx'))
  const b = generateModel(spec, join(tempDir(), 'b.onnx'))
  const c = generateModel({ ...spec, seed: 12 }, join(tempDir(), 'c.onnx'))
  assert.equal(a.md5, b.md5)
  assert.deepEqual(readFileSync(a.path), readFileSync(b.path))
  assert.notEqual(a.md5, c.md5)
})

test('the file follows the optimum decoder convention and holds the parameters it claims', () => {
  assert.deepEqual(shape, { layers: 2, heads: 4, headDim: 16, vocab: BYTE_VOCAB })
  assert.deepEqual(session.inputNames.slice(0, 3), ['input_ids', 'attention_mask', 'position_ids'])
  assert.ok(session.outputNames.includes('present.1.value'))
  const model = decodeModel(readFileSync(path))
  const floats = model.graph!.initializer!.filter(t => t.dataType === 1 && (t.dims?.length ?? 0) > 0 && !String(t.name).startsWith('const.'))
  const count = floats.reduce((s, t) => s + (t.dims as number[]).reduce((a, b) => a * Number(b), 1), 0)
  assert.equal(count, parameterCount(spec))
  assert.equal(Number(model.opsetImport![0].version), 17)
})

test('ONNX Runtime computes what the TypeScript reference computes (max abs diff ≤ 1e-4), with padding and a KV cache', async () => {
  // two sequences, the second left-padded: exercises the attention mask and explicit positions
  const a = [256, 84, 104, 101, 32, 98]
  const b = [258, 258, 256, 77, 97, 114]
  const mask = [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]
  const pos = [[0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 2, 3]]
  const feeds: Feeds = {
    [io.inputIds]: int64([...a, ...b], [2, 6]),
    [io.attentionMask]: int64(mask.flat(), [2, 6]),
    [io.positionIds]: int64(pos.flat(), [2, 6]),
    ...emptyPast(shape, 2)
  }
  const out = await session.run(feeds)
  const ref = referenceForward(spec, weights, { inputIds: [a, b], attentionMask: mask, positionIds: pos })
  // padded query rows of sequence b attend to nothing real; compare only real positions
  const V = spec.vocab
  const real = (logits: ArrayLike<number>): number[] => [...Array.from({ length: 6 }, (_, s) => s), 8, 9, 10, 11]
    .flatMap(row => Array.from({ length: V }, (_, v) => logits[row * V + v]))
  assert.ok(maxAbsDiff(real(out.logits.data as Float32Array), real(ref.logits)) <= 1e-4)
  assert.ok(maxAbsDiff(out[io.presentKey(1)].data as Float32Array, ref.present[1].key.data) <= 1e-4)

  // one decode step on top of that cache
  const next = [111, 97]
  const mask2 = mask.map(m => [...m, 1])
  const pos2 = [[6], [4]]
  const out2 = await session.run({
    [io.inputIds]: int64(next, [2, 1]),
    [io.attentionMask]: int64(mask2.flat(), [2, 7]),
    [io.positionIds]: int64(pos2.flat(), [2, 1]),
    ...presentAsPast(shape, out)
  })
  const past = ref.present.map(p => ({ key: p.key, value: p.value }))
  const ref2 = referenceForward(spec, weights, { inputIds: [[111], [97]], attentionMask: mask2, positionIds: pos2, past })
  const diff = maxAbsDiff(out2.logits.data as Float32Array, ref2.logits)
  assert.ok(diff <= 1e-4, `decode-step logits differ by ${diff}`)
})

test('decoding with the KV cache gives the logits of full recomputation', async () => {
  const tokens = [256, ...new TextEncoder().encode('Mara kept a notebook')]
  const prefill = 5
  let out = await session.run(sequenceFeeds(tokens.slice(0, prefill), 0, emptyPast(shape, 1)))
  const V = spec.vocab
  for (let t = prefill; t < tokens.length; t++) {
    out = await session.run(sequenceFeeds([tokens[t]], t, presentAsPast(shape, out)))
    const full = await session.run(sequenceFeeds(tokens.slice(0, t + 1), 0, emptyPast(shape, 1)))
    const fullLast = (full.logits.data as Float32Array).subarray(t * V, (t + 1) * V)
    const diff = maxAbsDiff(out.logits.data as Float32Array, fullLast)
    assert.ok(diff <= 1e-4, `step ${t}: ${diff}`)
    assert.equal((out[io.presentKey(0)] as Tensor).dims[2], t + 1)
  }
})

test('the demo weights make a bigram language model: greedy next byte = the corpus bigram\'s likeliest', async () => {
  const M = bigramLogits(readCorpus())
  const V = BYTE_VOCAB
  const corpusBytes = new Set(readCorpus())
  let agree = 0
  let total = 0
  for (const ctx of corpusBytes) {
    const out = await session.run(sequenceFeeds([ctx], 0, emptyPast(shape, 1)))
    const l = out.logits.data as Float32Array
    let arg = 0
    for (let v = 1; v < V; v++) if (l[v] > l[arg]) arg = v
    let want = 0
    for (let v = 1; v < V; v++) if (M[ctx * V + v] > M[ctx * V + want]) want = v
    if (arg === want) agree++
    total++
    assert.notEqual(arg, 256, 'never BOS')
    assert.notEqual(arg, 258, 'never PAD')
  }
  assert.ok(agree / total >= 0.9, `agreement ${agree}/${total}`)
  // EOS is reachable (paragraph ends), so generation can stop by itself
  assert.ok(M[46 * V + EOS] > M[46 * V + 120], '"." is more often followed by the end than by "x"')
})
