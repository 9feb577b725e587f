/**
 * GraphBuilder.maskBias (agent/model/graph-builder.ts) run in ONNX Runtime against a reference written here,
 * over random rows (fast-check): left padding, holes between the past and the new positions (an engine's
 * unused cache room, masked out) and prompt chunks. Causal: a query sees keys at or before its index that
 * the mask marks. Sliding window: and fewer than `window` marked positions between them, counted by the
 * mask, not by index, so holes do not shrink the window.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import ort from 'onnxruntime-node'
import { GraphBuilder, MASK_NEG } from '../../agent/model/graph-builder.ts'
import { DT, IR_VERSION, encodeModel, valueInfo } from '../../agent/model/onnx.ts'

async function biasSession (window?: number): Promise<ort.InferenceSession> {
  const g = new GraphBuilder()
  g.add('Identity', [g.maskBias('input_ids', 'attention_mask', '/mask', window)], 'bias')
  return await ort.InferenceSession.create(encodeModel({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'mask',
      node: g.nodes,
      initializer: g.inits,
      input: [valueInfo('input_ids', DT.INT64, ['B', 'S']), valueInfo('attention_mask', DT.INT64, ['B', 'T'])],
      output: [valueInfo('bias', DT.FLOAT, ['B', 1, 'S', 'T'])]
    }
  }))
}

/** whether query j (index T - S + j) may see key k in a row with this mask */
function visible (mask: number[], S: number, j: number, k: number, window?: number): boolean {
  const T = mask.length
  const q = T - S + j
  if (k > q || mask[k] !== 1) return false
  if (window === undefined) return true
  let between = 0 // marked positions in (k, q]
  for (let t = k + 1; t <= q; t++) between += mask[t]
  return between < window
}

/** a row: left padding, a past, unused room, then S new positions (all marked) */
const rowArb = (S: number, T: number): fc.Arbitrary<number[]> => fc.tuple(fc.nat(T - S), fc.nat(T - S)).map(([pad, room]) => {
  const past = T - S
  const p = Math.min(pad, past)
  const r = Math.min(room, past - p)
  return [...Array(p).fill(0), ...Array(past - p - r).fill(1), ...Array(r).fill(0), ...Array(S).fill(1)]
})

for (const window of [undefined, 1, 3, 7]) {
  test(`mask bias ${window === undefined ? 'causal' : `with a sliding window of ${window}`}: as the reference, with left padding, cache room and chunks`, async () => {
    const session = await biasSession(window)
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 12 }),
      async (B, S, past) => {
        const T = S + past
        const rows = fc.sample(fc.array(rowArb(S, T), { minLength: B, maxLength: B }), 1)[0]
        const out = await session.run({
          input_ids: new ort.Tensor('int64', new BigInt64Array(B * S), [B, S]),
          attention_mask: new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [B, T])
        })
        const bias = out.bias.data as Float32Array
        assert.deepEqual(out.bias.dims, [B, 1, S, T])
        for (let b = 0; b < B; b++) {
          for (let j = 0; j < S; j++) {
            for (let k = 0; k < T; k++) {
              const want = visible(rows[b], S, j, k, window) ? 0 : MASK_NEG
              assert.equal(bias[((b * S) + j) * T + k], want, `row ${JSON.stringify(rows[b])}, query ${j}, key ${k}`)
            }
          }
        }
      }), { numRuns: 60 })
  })
}

test('the window counts marked positions: room between the past and the new position does not hide the window\'s oldest keys', async () => {
  const session = await biasSession(3)
  // past of 4 (indices 0-3), room of 2 (4-5), the new position at 6: it sees itself and the 2 newest past keys
  const out = await session.run({
    input_ids: new ort.Tensor('int64', new BigInt64Array(1), [1, 1]),
    attention_mask: new ort.Tensor('int64', BigInt64Array.from([1, 1, 1, 1, 0, 0, 1].map(BigInt)), [1, 7])
  })
  assert.deepEqual([...(out.bias.data as Float32Array)].map(x => x === 0 ? 1 : 0), [0, 0, 1, 1, 0, 0, 1])
})
