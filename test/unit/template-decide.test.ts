// The whole-or-split decision (agent/templates/decide.ts): properties checked against brute force on small
// meshes, and the three cases of the issue on a 3-peer mesh.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { decidePlacement, formatBytes } from '../../agent/templates/decide.ts'
import type { Candidate, DecisionNeed } from '../../agent/templates/decide.ts'
import { estimateMemory } from '../../agent/templates/estimate.ts'
import { fuzzParams } from '../helpers/fuzz.ts'

const GiB = 2 ** 30

/** What stage `i` of `k` with `n` layers needs. */
function stageBytes (need: DecisionNeed, i: number, k: number, n: number): number {
  return need.runtimeBytes + n * need.perLayerBytes + (i === 0 ? need.embeddingBytes : 0) + (i === k - 1 ? need.headBytes : 0)
}

/** Compositions of n into k positive parts. */
function * compositions (n: number, k: number): Generator<number[]> {
  if (k === 1) { if (n >= 1) yield [n]; return }
  for (let first = 1; first <= n - (k - 1); first++) for (const rest of compositions(n - first, k - 1)) yield [first, ...rest]
}

/** Ordered choices of k distinct items. */
function * arrangements<T> (items: T[], k: number): Generator<T[]> {
  if (k === 0) { yield []; return }
  for (let i = 0; i < items.length; i++) for (const rest of arrangements(items.filter((_, j) => j !== i), k - 1)) yield [items[i], ...rest]
}

/** Whether any assignment of the layers to k distinct peers (in some order) fits, by brute force. */
function anyFits (need: DecisionNeed, peers: Candidate[], k: number, headroom: number): boolean {
  if (k === 1) return peers.some(p => need.totalBytes <= p.freeBytes * (1 - headroom))
  for (const order of arrangements(peers, k)) {
    for (const parts of compositions(need.layers, k)) {
      if (parts.every((n, i) => stageBytes(need, i, k, n) <= order[i].freeBytes * (1 - headroom))) return true
    }
  }
  return false
}

const needArb = fc.record({
  layers: fc.integer({ min: 1, max: 7 }),
  perLayerBytes: fc.integer({ min: 1, max: 100 }),
  embeddingBytes: fc.integer({ min: 0, max: 150 }),
  headBytes: fc.integer({ min: 0, max: 150 }),
  runtimeBytes: fc.integer({ min: 0, max: 80 }),
  shared: fc.boolean()
}).map(({ shared, ...n }): DecisionNeed => ({
  ...n,
  totalBytes: n.runtimeBytes + n.layers * n.perLayerBytes + n.embeddingBytes + n.headBytes - (shared ? Math.min(n.embeddingBytes, n.headBytes) : 0)
}))

/** peers whose free memory is drawn around the model's need, so that all three answers come up */
const peersArb = (need: DecisionNeed): fc.Arbitrary<Candidate[]> => fc.array(fc.record({ share: fc.integer({ min: 0, max: 130 }), kind: fc.constantFrom('gpu' as const, 'ram' as const) }), { maxLength: 5 })
  .map(ps => ps.map((p, i): Candidate => ({ peerId: `id${i}`, name: `peer-${String.fromCharCode(101 - i)}`, freeBytes: Math.round(p.share * need.totalBytes / 100), kind: p.kind })))

const caseArb = needArb.chain(need => fc.record({
  need: fc.constant(need),
  peers: peersArb(need),
  headroom: fc.constantFrom(0, 0.1, 0.25),
  maxStages: fc.integer({ min: 1, max: 5 }),
  rtt: fc.option(fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 25, maxLength: 25 }), { nil: undefined })
}))

test('decisions: a whole model fits its peer; a split covers every layer once, fits, is minimal and RTT-best; refusals only when nothing fits', () => {
  const seen = { whole: 0, split: 0, refused: 0 }
  fc.assert(fc.property(caseArb, ({ need, peers, headroom, maxStages, rtt }) => {
    const rttMs = rtt == null ? undefined : (a: string, b: string): number => rtt[Number(a.slice(2)) * 5 + Number(b.slice(2))]
    const d = decidePlacement(need, peers, { headroom, maxStages, rttMs })
    seen[d.kind]++
    const usable = (p: Candidate): number => p.freeBytes * (1 - headroom)
    assert.deepEqual(Object.keys(d.freeBytes).sort(), peers.map(p => p.name).sort())
    for (const p of peers) {
      assert.ok(d.reason.includes(p.name) && d.reason.includes(formatBytes(p.freeBytes)), `the reason names ${p.name} and its free memory: ${d.reason}`)
    }
    assert.ok(d.reason.includes(formatBytes(need.totalBytes)), d.reason)
    const kMax = Math.min(maxStages, peers.length, need.layers)
    if (d.kind === 'whole') {
      assert.ok(need.totalBytes <= usable(d.peer))
      assert.equal(d.needBytes, need.totalBytes)
      for (const p of peers) if (need.totalBytes <= usable(p)) assert.ok(p.freeBytes <= d.peer.freeBytes)
    } else if (d.kind === 'split') {
      const k = d.stages.length
      assert.ok(k >= 2 && k <= maxStages)
      assert.ok(!anyFits(need, peers, 1, headroom), 'no whole placement fits')
      for (let j = 2; j < k; j++) assert.ok(!anyFits(need, peers, j, headroom), `no ${j}-stage split fits where ${k} were used`)
      assert.equal(new Set(d.stages.map(s => s.peer.peerId)).size, k, 'no peer used twice')
      let at = 0
      d.stages.forEach((s, i) => {
        assert.equal(s.layers[0], at)
        assert.ok(s.layers[1] > s.layers[0])
        at = s.layers[1]
        assert.equal(s.bytes, stageBytes(need, i, k, s.layers[1] - s.layers[0]))
        assert.ok(s.bytes <= usable(s.peer), `stage ${i} fits ${s.peer.name}`)
      })
      assert.equal(at, need.layers, 'every layer exactly once')
      assert.equal(d.needBytes, d.stages.reduce((a, s) => a + s.bytes, 0))
      assert.ok(d.reason.includes(formatBytes(d.needBytes)) && d.reason.includes(`${k} stages`), d.reason)
      if (rttMs != null) {
        const path = (o: Candidate[]): number => o.slice(1).reduce((t, p, i) => t + rttMs(o[i].peerId, p.peerId), 0)
        const set = d.stages.map(s => s.peer)
        for (const order of arrangements(set, k)) {
          const fitsOrder = [...compositions(need.layers, k)].some(parts => parts.every((n, i) => stageBytes(need, i, k, n) <= usable(order[i])))
          if (fitsOrder) assert.ok(path(order) >= (d.rttMs as number), `order ${order.map(p => p.name).join('→')} has less RTT than the chosen one`)
        }
      }
    } else {
      for (let k = 1; k <= kMax; k++) assert.ok(!anyFits(need, peers, k, headroom), `refused, but a ${k}-stage placement fits`)
      assert.equal(d.needBytes, need.totalBytes)
    }
  }), fuzzParams(400))
  console.log('decisions seen:', seen)
  assert.ok(seen.whole > 0 && seen.split > 0 && seen.refused > 0, JSON.stringify(seen))
})

// ---------------------------------------------------------------- the three cases

const mesh: Candidate[] = [
  { peerId: 'A', name: 'alpha', freeBytes: 10 * GiB, kind: 'gpu' },
  { peerId: 'B', name: 'bravo', freeBytes: 8 * GiB, kind: 'gpu' },
  { peerId: 'C', name: 'charlie', freeBytes: 4 * GiB, kind: 'ram' }
]
// a Qwen2.5-7B-like decoder
const q7b = { parameters: 7_615_616_512, layers: 28, hidden: 3584, heads: 28, kvHeads: 4, headDim: 128, vocab: 152064, contextLength: 32768, ffn: 18944 }

test('3 peers: a model that fits one is placed whole on the peer with the most free memory', () => {
  const e = estimateMemory({ parameters: 134515008, layers: 30, hidden: 576, heads: 9, kvHeads: 3, headDim: 64, vocab: 49152, contextLength: 8192, tiedEmbeddings: true }, { quantization: 'Q4_1', contextLength: 2048, concurrency: 4 })
  const d = decidePlacement(e, mesh)
  assert.equal(d.kind, 'whole')
  assert.equal(d.kind === 'whole' && d.peer.name, 'alpha')
  console.log(d.reason)
  assert.match(d.reason, /alpha 10\.00 GiB \(gpu\)/)
})

test('3 peers: a model too big for any one is split into 2 stages, ordered by RTT', () => {
  const e = estimateMemory(q7b, { quantization: 'Q4_K_M', contextLength: 2048, concurrency: 1 })
  assert.ok(e.totalBytes > 10 * GiB * 0.9 && e.totalBytes < 18 * GiB * 0.9, formatBytes(e.totalBytes))
  const rtt: Record<string, number> = { AB: 9, BA: 9, AC: 1, CA: 1, BC: 1, CB: 1 }
  const d = decidePlacement(e, mesh, { rttMs: (a, b) => rtt[a + b] })
  console.log(d.reason)
  assert.equal(d.kind, 'split')
  if (d.kind !== 'split') return
  assert.deepEqual(d.stages.map(s => s.peer.name).sort(), ['alpha', 'bravo'])
  assert.equal(d.stages[0].layers[0], 0)
  assert.equal(d.stages[1].layers[1], 28)
  assert.match(d.reason, /split into 2 stages/)
})

test('3 peers: a model that fits nowhere is refused, with by how much', () => {
  const e = estimateMemory({ ...q7b, layers: 80, hidden: 8192, heads: 64, kvHeads: 8, ffn: 28672, parameters: 70_553_706_496, vocab: 128256 }, { quantization: 'Q4_K_M', contextLength: 4096, concurrency: 1 })
  const d = decidePlacement(e, mesh)
  console.log(d.reason)
  assert.equal(d.kind, 'refused')
  const usable = 22 * GiB * 0.9
  assert.ok(d.reason.includes(formatBytes(e.totalBytes - usable)), d.reason)
  assert.match(d.reason, /short/)
})

test('refused when a split would fit but only with more stages than allowed', () => {
  const need: DecisionNeed = { totalBytes: 300, layers: 3, perLayerBytes: 100, embeddingBytes: 0, headBytes: 0, runtimeBytes: 0 }
  const peers: Candidate[] = ['a', 'b', 'c'].map(n => ({ peerId: n, name: n, freeBytes: 100, kind: 'ram' }))
  assert.equal(decidePlacement(need, peers, { headroom: 0 }).kind, 'split')
  const d = decidePlacement(need, peers, { headroom: 0, maxStages: 2 })
  assert.equal(d.kind, 'refused')
  assert.match(d.reason, /no split into at most 2 stages fits/)
})

test('ties between peers go to the lowest name; bad options are refused', () => {
  const need: DecisionNeed = { totalBytes: 10, layers: 2, perLayerBytes: 5, embeddingBytes: 0, headBytes: 0, runtimeBytes: 0 }
  const d = decidePlacement(need, [{ peerId: '2', name: 'zulu', freeBytes: 50, kind: 'ram' }, { peerId: '1', name: 'echo', freeBytes: 50, kind: 'ram' }])
  assert.equal(d.kind === 'whole' && d.peer.name, 'echo')
  assert.throws(() => decidePlacement(need, [], { headroom: 1 }), /headroom/)
  assert.throws(() => decidePlacement(need, [{ peerId: 'x', name: 'x', freeBytes: -1, kind: 'ram' }]))
})
