import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { Rng } from '../../agent/model/random.ts'
import {
  SequenceSampler, applyMask, applyPenalties, applyRepetitionPenalty, argmax, logSoftmax, logSumExp, sampleToken, tokenLogprobs, topK
} from '../../agent/executor/sampling.ts'

const row = (...v: number[]): Float32Array => Float32Array.from(v)
const close = (a: number, b: number, eps = 1e-6): void => { assert.ok(Math.abs(a - b) <= eps, `${a} ≈ ${b}`) }

test('presence and frequency penalties follow OpenAI: logit -= presence·(count>0) + frequency·count', () => {
  const l = row(1, 2, 3, 4)
  applyPenalties(l, new Map([[1, 1], [3, 3], [0, 0]]), 0.5, 0.25)
  assert.deepEqual(Array.from(l), [1, 2 - 0.5 - 0.25, 3, 4 - 0.5 - 0.75])
  // negative penalties encourage repetition
  const m = row(0, 0)
  applyPenalties(m, new Map([[0, 2]]), -1, -1)
  assert.deepEqual(Array.from(m), [3, 0])
  // ids outside the row are ignored
  const n = row(1)
  applyPenalties(n, new Map([[5, 1], [-1, 1]]), 1, 1)
  assert.deepEqual(Array.from(n), [1])
})

test('repetition penalty follows Hugging Face: positive logits divided, negative multiplied, unseen untouched', () => {
  const l = row(2, -2, 2, -2, 0)
  applyRepetitionPenalty(l, new Set([0, 1, 4]), 2)
  assert.deepEqual(Array.from(l), [1, -4, 2, -2, 0])
  const m = row(3, -3)
  applyRepetitionPenalty(m, [0, 1], 0.5) // < 1 encourages repetition
  assert.deepEqual(Array.from(m), [6, -1.5])
})

test('log-softmax: exp sums to 1, shift-invariant, stable for large logits, −Infinity stays −Infinity', () => {
  fc.assert(fc.property(fc.array(fc.float({ min: -50, max: 50, noNaN: true }), { minLength: 1, maxLength: 64 }), fc.float({ min: -1000, max: 1000, noNaN: true }), (xs, shift) => {
    const lp = logSoftmax(xs)
    close(lp.reduce((a, v) => a + Math.exp(v), 0), 1, 1e-9)
    const shifted = logSoftmax(xs.map(x => x + shift))
    lp.forEach((v, i) => { close(v, shifted[i], 1e-3) })
    for (const v of lp) assert.ok(v <= 1e-12)
  }))
  const big = logSoftmax([1000, 1000])
  close(big[0], Math.log(0.5))
  const masked = logSoftmax([0, -Infinity, 0])
  assert.equal(masked[1], -Infinity)
  close(masked[0], Math.log(0.5))
  assert.equal(logSumExp([-Infinity, -Infinity]), -Infinity)
})

test('top-k: the k largest, best first, ties to the lower id, never a masked token', () => {
  assert.deepEqual(topK(row(1, 5, 3, 5, -Infinity, 4), 3), [1, 3, 5])
  assert.deepEqual(topK(row(1, 2), 0), [])
  assert.deepEqual(topK(row(-Infinity, 1, -Infinity), 5), [1])
  fc.assert(fc.property(fc.array(fc.integer({ min: -5, max: 5 }), { minLength: 1, maxLength: 40 }), fc.integer({ min: 0, max: 20 }), (xs, k) => {
    const want = xs.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k).map(p => p[1])
    assert.deepEqual(topK(xs, k), want)
  }))
})

test('token logprobs: the chosen token\'s log_softmax and the top k; greedy picks the first of the top', () => {
  const l = row(2, 1, 0.5, 3)
  const lp = tokenLogprobs(l, argmax(l), 2)
  const ref = logSoftmax(l)
  close(lp.logprob, ref[3])
  assert.deepEqual(lp.top.map(t => t[0]), [3, 0])
  close(lp.top[1][1], ref[0])
  assert.equal(lp.top[0][1], lp.logprob)
})

test('a mask leaves only its tokens; bits past the mask are masked too', () => {
  const l = row(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
  applyMask(l, Uint8Array.from([0b00000101])) // tokens 0 and 2; 8 and 9 are past the mask's byte
  assert.deepEqual(Array.from(l), [1, -Infinity, 3, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity])
})

test('the sequence sampler without controls is sampleToken exactly (same tokens, same generator use)', () => {
  fc.assert(fc.property(fc.array(fc.float({ min: -10, max: 10, noNaN: true }), { minLength: 2, maxLength: 50 }), fc.integer({ min: 0, max: 2 ** 31 }), fc.constantFrom(0, 0.7, 1, 1.5), fc.constantFrom(1, 0.9, 0.5), (xs, seed, temperature, topP) => {
    const logits = Float32Array.from(xs)
    const a = new Rng(seed)
    const b = new Rng(seed)
    const s = new SequenceSampler({ temperature, topP, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1 }, b, [0, 1])
    assert.ok(s.plain)
    for (let i = 0; i < 5; i++) assert.equal(s.next(logits).token, sampleToken(logits, { temperature, topP }, a))
  }))
})

test('the sequence sampler: penalties change a repeating greedy choice; masks are obeyed at any temperature; logprobs come with each token', () => {
  const logits = row(5, 4.5, 0, 0)
  const plain = new SequenceSampler({ temperature: 0, topP: 1 }, new Rng(1))
  assert.deepEqual([0, 1, 2].map(() => plain.next(logits).token), [0, 0, 0])
  const freq = new SequenceSampler({ temperature: 0, topP: 1, frequencyPenalty: 1 }, new Rng(1))
  assert.deepEqual([0, 1, 2].map(() => freq.next(logits).token), [0, 1, 0])
  const pres = new SequenceSampler({ temperature: 0, topP: 1, presencePenalty: 2 }, new Rng(1))
  assert.deepEqual([0, 1, 2].map(() => pres.next(logits).token), [0, 1, 0]) // both seen: 3 vs 2.5
  const rep = new SequenceSampler({ temperature: 0, topP: 1, repetitionPenalty: 2 }, new Rng(1), [0])
  assert.equal(rep.next(logits).token, 1) // 5/2 < 4.5: the prompt's token counts too
  const lp = new SequenceSampler({ temperature: 1, topP: 1, topLogprobs: 2, frequencyPenalty: 0.5 }, new Rng(3))
  const mask = Uint8Array.from([0b1100])
  for (let i = 0; i < 50; i++) {
    const r = lp.next(logits, mask)
    assert.ok(r.token === 2 || r.token === 3)
    assert.ok(r.logprob != null)
    assert.equal(r.logprob.top.length, 2)
    assert.ok(r.logprob.top.every(([id]) => id === 2 || id === 3))
    close(Math.exp(r.logprob.top[0][1]) + Math.exp(r.logprob.top[1][1]), 1, 1e-6)
  }
  // logprobs are temperature-free: the same at T=0.3 and T=1.7
  const a = new SequenceSampler({ temperature: 0.3, topP: 1, topLogprobs: 1 }, new Rng(1)).next(logits).logprob
  const b = new SequenceSampler({ temperature: 1.7, topP: 1, topLogprobs: 1 }, new Rng(1)).next(logits).logprob
  assert.deepEqual(a?.top, b?.top)
})

/** sampleToken as it was before its top-p nucleus was found by threshold: a full sort of every token. */
function fullSortSample (logits: Float32Array, p: { temperature: number, topP: number }, rng: Rng): number {
  const n = logits.length
  let max = -Infinity
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i]
  const probs = new Float64Array(n)
  let sum = 0
  for (let i = 0; i < n; i++) { probs[i] = Math.exp((logits[i] - max) / p.temperature); sum += probs[i] }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b)
  let acc = 0
  let keep = 0
  while (keep < n && acc < p.topP * sum) acc += probs[order[keep++]]
  let r = rng.next() * acc
  for (const i of order.slice(0, Math.max(1, keep))) { r -= probs[i]; if (r < 0) return i }
  return order[Math.max(1, keep) - 1]
}

test('top-p sampling picks exactly what a full sort of every token picks (ties, flat and peaked rows, large vocabularies)', () => {
  fc.assert(fc.property(
    fc.integer({ min: 2, max: 3000 }), fc.constantFrom(0.05, 0.5, 2, 10, 60), fc.constantFrom(0.3, 1, 1.7), fc.constantFrom(0.01, 0.5, 0.9, 0.95, 0.999), fc.integer({ min: 0, max: 2 ** 31 }),
    (n, scale, temperature, topP, seed) => {
      const g = new Rng(seed)
      const logits = new Float32Array(n)
      for (let i = 0; i < n; i++) logits[i] = Math.round(g.normal() * scale * 4) / 4 // quarter steps: many ties
      const a = new Rng(seed ^ 0x5bd1e995)
      const b = new Rng(seed ^ 0x5bd1e995)
      for (let k = 0; k < 4; k++) assert.equal(sampleToken(logits, { temperature, topP }, a), fullSortSample(logits, { temperature, topP }, b))
    }), { numRuns: 400 })
})
