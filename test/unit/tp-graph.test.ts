/**
 * Tensor-parallel shards (agent/model/tp-graph.ts), run in real ONNX Runtime sessions: for 1, 2 and 4 ranks,
 * the ranks' partials summed after every segment (the all-reduce, done here in-process) give the whole
 * generated model's logits (agent/model/graph.ts), for a prompt and then decode steps over each rank's own
 * KV cache. Bad shares are refused.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import ort from 'onnxruntime-node'
import { PRESETS } from '../../agent/model/spec.ts'
import type { ModelSpec } from '../../agent/model/spec.ts'
import { modelWeights } from '../../agent/model/weights.ts'
import type { NamedTensor } from '../../agent/model/weights.ts'
import { buildGraph, MASK_NEG } from '../../agent/model/graph.ts'
import { encodeModel } from '../../agent/model/onnx.ts'
import { TensorParallelError, attentionSegment, embed, headSegment, mlpSegment, tpIo, tpShare } from '../../agent/model/tp-graph.ts'

const spec: ModelSpec = { ...PRESETS.tiny, seed: 7 }
const W = new Map<string, NamedTensor>([...modelWeights(spec)].map(t => [t.name, t]))
const D = spec.hidden / spec.heads
const session = async (m: Parameters<typeof encodeModel>[0]): Promise<ort.InferenceSession> => await ort.InferenceSession.create(encodeModel(m))
const f32 = (data: Float32Array, dims: number[]): ort.Tensor => new ort.Tensor('float32', data, dims)
const i64 = (xs: number[], dims: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), dims)

/** causal bias for one sequence: queries at past..past+S-1 over keys 0..past+S-1 */
function bias (past: number, s: number): ort.Tensor {
  const t = past + s
  const out = new Float32Array(s * t)
  for (let j = 0; j < s; j++) for (let k = 0; k < t; k++) out[j * t + k] = k <= past + j ? 0 : MASK_NEG
  return f32(out, [1, 1, s, t])
}

/** [1, heads, a, D] ++ [1, heads, b, D] along the sequence axis */
function concatSeq (a: ort.Tensor, b: ort.Tensor): ort.Tensor {
  const [, heads, la] = a.dims
  const lb = b.dims[2]
  const out = new Float32Array(heads * (la + lb) * D)
  const A = a.data as Float32Array
  const Bd = b.data as Float32Array
  for (let h = 0; h < heads; h++) {
    out.set(A.subarray(h * la * D, (h + 1) * la * D), h * (la + lb) * D)
    out.set(Bd.subarray(h * lb * D, (h + 1) * lb * D), h * (la + lb) * D + la * D)
  }
  return f32(out, [1, heads, la + lb, D])
}

function maxDiff (a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

test('summed tensor-parallel shards give the whole model\'s logits, prompt and decode steps, for 1, 2 and 4 ranks', async () => {
  const whole = await session(buildGraph(spec, W.values()))
  const head = await session(headSegment(spec, W))
  const tokens = [256, 72, 101, 108, 108, 111, 32, 119]
  const prompt = 5
  // the whole model: the prompt, then one token at a time over its present.* cache
  const wholeLogits: Float32Array[] = []
  let past: Record<string, ort.Tensor> = {}
  for (let i = 0; i < spec.layers; i++) {
    past[`past_key_values.${i}.key`] = f32(new Float32Array(0), [1, spec.heads, 0, D])
    past[`past_key_values.${i}.value`] = f32(new Float32Array(0), [1, spec.heads, 0, D])
  }
  for (let at = 0; at < tokens.length;) {
    const n = at === 0 ? prompt : 1
    const out = await whole.run({ input_ids: i64(tokens.slice(at, at + n), [1, n]), attention_mask: i64(Array(at + n).fill(1), [1, at + n]), position_ids: i64(Array.from({ length: n }, (_, j) => at + j), [1, n]), ...past })
    wholeLogits.push((out.logits.data as Float32Array).slice((n - 1) * spec.vocab))
    past = {}
    for (let i = 0; i < spec.layers; i++) {
      past[`past_key_values.${i}.key`] = out[`present.${i}.key`]
      past[`past_key_values.${i}.value`] = out[`present.${i}.value`]
    }
    at += n
  }

  for (const ranks of [1, 2, 4]) {
    const shares = Array.from({ length: ranks }, (_, r) => tpShare(spec, r, ranks))
    const attn = await Promise.all(shares.map(async s => await Promise.all(Array.from({ length: spec.layers }, async (_, i) => await session(attentionSegment(spec, W, i, s))))))
    const mlp = await Promise.all(shares.map(async s => await Promise.all(Array.from({ length: spec.layers }, async (_, i) => await session(mlpSegment(spec, W, i, s))))))
    const caches = shares.map(s => Array.from({ length: spec.layers }, () => ({ k: f32(new Float32Array(0), [1, s.heads, 0, D]), v: f32(new Float32Array(0), [1, s.heads, 0, D]) })))
    const got: Float32Array[] = []
    for (let at = 0; at < tokens.length;) {
      const n = at === 0 ? prompt : 1
      const h = embed(spec, W, tokens.slice(at, at + n), Array.from({ length: n }, (_, j) => at + j))
      const b = bias(at, n)
      for (let i = 0; i < spec.layers; i++) {
        for (const seg of ['attn', 'mlp'] as const) {
          const sum = new Float32Array(h.length)
          for (let r = 0; r < ranks; r++) {
            const hidden = f32(h.slice(), [1, n, spec.hidden])
            const out = seg === 'attn'
              ? await attn[r][i].run({ [tpIo.hidden]: hidden, [tpIo.bias]: b, [tpIo.pastKey]: caches[r][i].k, [tpIo.pastValue]: caches[r][i].v })
              : await mlp[r][i].run({ [tpIo.hidden]: hidden })
            const partial = out[tpIo.partial].data as Float32Array
            for (let k = 0; k < sum.length; k++) sum[k] += partial[k]
            if (seg === 'attn') caches[r][i] = { k: concatSeq(caches[r][i].k, out[tpIo.stepKey]), v: concatSeq(caches[r][i].v, out[tpIo.stepValue]) }
          }
          for (let k = 0; k < h.length; k++) h[k] += sum[k]
        }
      }
      const logits = (await head.run({ [tpIo.hidden]: f32(h, [1, n, spec.hidden]) }))[tpIo.logits].data as Float32Array
      got.push(logits.slice((n - 1) * spec.vocab))
      at += n
    }
    assert.equal(got.length, wholeLogits.length)
    got.forEach((l, k) => {
      const d = maxDiff(l, wholeLogits[k])
      assert.ok(d < 1e-3, `${ranks} ranks, step ${k}: logits differ by ${d}`)
    })
    // and a shard is a share: rank 0 of 2 holds half the heads' query/key/value columns
    if (ranks === 2) assert.deepEqual(caches[0][0].k.dims, [1, spec.heads / 2, tokens.length, D])
  }
})

test('shares that do not divide the heads, and ranks out of range, are refused', () => {
  assert.throws(() => tpShare(spec, 0, 3), TensorParallelError)
  assert.throws(() => tpShare(spec, 2, 2), TensorParallelError)
  assert.throws(() => tpShare(spec, 0, 0), TensorParallelError)
  assert.deepEqual(tpShare(spec, 1, 2), { rank: 1, ranks: 2, heads: 2, headsFrom: 2, ffn: 128, ffnFrom: 128 })
  assert.throws(() => embed(spec, W, [spec.vocab], [0]), TensorParallelError)
})
