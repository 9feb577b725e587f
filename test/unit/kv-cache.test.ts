/**
 * The engines' kept KV cache (agent/executor/kv-cache.ts): rows gathered left-padded with room to grow,
 * each step's new position written at `end`, larger buffers when full, and the step mask that hides the
 * padding and the room. Checked against a plain model of the cache: each row's list of positions.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import ort from 'onnxruntime-node'
import { appendStep, gather, keepsCache, roomFor, stepFetches, stepMask, stepOutputOf, wholeFetches } from '../../agent/executor/kv-cache.ts'
import type { CacheLayout, CacheRows } from '../../agent/executor/kv-cache.ts'

const layout: CacheLayout = { names: ['past_key_values.0.key', 'past_key_values.0.value', 'past_key_values.3.key', 'past_key_values.3.value'], heads: 2, headDim: 3 }
const { heads: A, headDim: D } = layout

/** The value stored for (name, row's position p, head a, d): distinct per input so rows and inputs cannot be mixed up. */
const valueOf = (n: number, seq: number, p: number, a: number, d: number): number => n * 1e6 + seq * 1e4 + p * 100 + a * 10 + d

/** A cache of one sequence `seq` holding `len` positions, exactly sized (as a prompt run leaves it). */
function own (seq: number, len: number): CacheRows {
  const past: CacheRows['past'] = {}
  layout.names.forEach((name, n) => {
    const data = new Float32Array(A * len * D)
    for (let a = 0; a < A; a++) for (let p = 0; p < len; p++) for (let d = 0; d < D; d++) data[(a * len + p) * D + d] = valueOf(n, seq, p, a, d)
    past[name] = new ort.Tensor('float32', data, [1, A, len, D])
  })
  return { past, end: len, cap: len }
}

/** Reads row r's last `len` positions back as values. */
function rowValues (c: CacheRows, r: number, len: number): number[] {
  const out: number[] = []
  layout.names.forEach(name => {
    const data = c.past[name].data as Float32Array
    for (let a = 0; a < A; a++) for (let p = c.end - len; p < c.end; p++) for (let d = 0; d < D; d++) out.push(data[((r * A + a) * c.cap + p) * D + d])
  })
  return out
}

function expected (seq: number, len: number): number[] {
  const out: number[] = []
  layout.names.forEach((_, n) => { for (let a = 0; a < A; a++) for (let p = 0; p < len; p++) for (let d = 0; d < D; d++) out.push(valueOf(n, seq, p, a, d)) })
  return out
}

/** A run's step outputs for rows `seqs` at their next positions `lengths`. */
function stepOut (seqs: number[], lengths: number[]): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {}
  layout.names.forEach((name, n) => {
    const data = new Float32Array(seqs.length * A * D)
    seqs.forEach((seq, r) => { for (let a = 0; a < A; a++) for (let d = 0; d < D; d++) data[(r * A + a) * D + d] = valueOf(n, seq, lengths[r], a, d) })
    out[stepOutputOf(name)] = new ort.Tensor('float32', data, [seqs.length, A, 1, D])
  })
  return out
}

test('rows gathered from their own caches and stepped many times hold exactly their positions, left-padded, as the buffers grow', () => {
  fc.assert(fc.property(
    fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 5 }),
    fc.integer({ min: 0, max: 70 }),
    (starts, steps) => {
      const seqs = starts.map((_, i) => i + 1)
      const cache = gather(layout, starts.map((len, i) => ({ from: own(seqs[i], len), row: 0 })), starts, true)
      assert.equal(cache.end, Math.max(...starts))
      assert.equal(cache.cap, cache.end + roomFor(cache.end))
      const lengths = [...starts]
      for (let s = 0; s < steps; s++) {
        assert.ok(cache.end < cache.cap, 'there is always room for the next step')
        appendStep(layout, cache, stepOut(seqs, lengths), seqs.length)
        lengths.forEach((_, r) => { lengths[r]++ })
      }
      seqs.forEach((seq, r) => { assert.deepEqual(rowValues(cache, r, lengths[r]), expected(seq, lengths[r])) })
      // a row taken back out into a cache of its own (to run alone) and regathered into a smaller batch keeps its positions
      const alone = gather(layout, [{ from: cache, row: seqs.length - 1 }], [lengths.at(-1) as number], false)
      assert.equal(alone.cap, alone.end)
      assert.deepEqual(rowValues(alone, 0, lengths.at(-1) as number), expected(seqs.at(-1) as number, lengths.at(-1) as number))
    }
  ), { numRuns: 60 })
})

test('the step mask sees each row\'s positions and the new one at index cap, never the padding or the room', () => {
  const m = stepMask([2, 4, 1], 4, 7)
  assert.deepEqual(m.dims, [3, 8])
  assert.deepEqual(Array.from(m.data as BigInt64Array, Number), [
    0, 0, 1, 1, 0, 0, 0, 1,
    1, 1, 1, 1, 0, 0, 0, 1,
    0, 0, 0, 1, 0, 0, 0, 1
  ])
})

test('which outputs are fetched: a kept cache takes all but present.*; a prompt run all but the step outputs; both needed for every cache input', () => {
  const names = ['logits', 'present.0.key', 'present.0.value', 'present.3.key', 'present.3.value', 'present.0.key_step', 'present.0.value_step', 'present.3.key_step', 'present.3.value_step']
  assert.equal(keepsCache(names, layout), true)
  assert.equal(keepsCache(names.filter(n => n !== 'present.3.value_step'), layout), false)
  assert.equal(keepsCache(names, { ...layout, names: [] }), false)
  assert.deepEqual(Object.keys(stepFetches(names)), ['logits', 'present.0.key_step', 'present.0.value_step', 'present.3.key_step', 'present.3.value_step'])
  assert.deepEqual(Object.keys(wholeFetches(names)), ['logits', 'present.0.key', 'present.0.value', 'present.3.key', 'present.3.value'])
  assert.equal(stepOutputOf('past_key_values.12.value'), 'present.12.value_step')
  assert.throws(() => stepOutputOf('hidden_states'))
})

test('a step without room, or without a single-position step output, is refused', () => {
  const full = own(1, 3)
  assert.throws(() => { appendStep(layout, full, stepOut([1], [3]), 1) }, /no room/)
  const cache = gather(layout, [{ from: own(1, 3), row: 0 }], [3], true)
  const wrong = stepOut([1], [3])
  delete wrong['present.3.value_step']
  assert.throws(() => { appendStep(layout, cache, wrong, 1) }, /present\.3\.value_step/)
})
