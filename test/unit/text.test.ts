import { test } from 'node:test'
import assert from 'node:assert/strict'
import { StopMatcher } from '../../agent/openai/stop.ts'
import { ByteTokenizer } from '../../agent/model/tokenizer.ts'
import { argmax, sampleToken } from '../../agent/executor/sampling.ts'
import { Rng } from '../../agent/model/random.ts'
import { providerOrder } from '../../agent/executor/providers.ts'

test('stop strings: text that may start a stop string is held back, and nothing after the stop is emitted', () => {
  const m = new StopMatcher(['END', '\n\n'])
  assert.deepEqual(m.push('hello E'), { emit: 'hello ', stopped: false })
  assert.deepEqual(m.push('N'), { emit: '', stopped: false })
  assert.deepEqual(m.push('Xtra'), { emit: 'ENXtra', stopped: false })
  assert.deepEqual(m.push(' line\n'), { emit: ' line', stopped: false })
  assert.deepEqual(m.push('\nmore'), { emit: '', stopped: true })
  const n = new StopMatcher(['ab'])
  assert.deepEqual(n.push('xa'), { emit: 'x', stopped: false })
  assert.equal(n.flush(), 'a')
  assert.deepEqual(new StopMatcher([]).push('anything'), { emit: 'anything', stopped: false })
})

test('the byte tokenizer round-trips UTF-8 and decodes characters split across tokens', () => {
  const t = new ByteTokenizer()
  const text = 'Mara — 灯台 🌊'
  const tokens = t.encode(text, { bos: true })
  assert.equal(tokens[0], t.bos)
  assert.equal(t.decode(tokens), text)
  const d = t.decoder()
  let out = ''
  for (const tok of tokens) out += d.push(tok)
  out += d.end()
  assert.equal(out, text)
  assert.equal(d.push(t.eos), '', 'specials decode to nothing')
})

test('sampling: greedy is argmax; a seed reproduces; top_p keeps only the nucleus', () => {
  const logits = new Float32Array([0, 5, 1, 4.9, -3])
  assert.equal(argmax(logits), 1)
  assert.equal(sampleToken(logits, { temperature: 0, topP: 1 }, new Rng(1)), 1)
  const draw = (seed: number): number[] => { const r = new Rng(seed); return Array.from({ length: 50 }, () => sampleToken(logits, { temperature: 1, topP: 1 }, r)) }
  assert.deepEqual(draw(7), draw(7))
  assert.notDeepEqual(draw(7), draw(8))
  // tokens 1 and 3 hold ~97% of the mass: top_p 0.9 never picks anything else
  const r = new Rng(3)
  const picks = new Set(Array.from({ length: 500 }, () => sampleToken(logits, { temperature: 1, topP: 0.9 }, r)))
  assert.deepEqual([...picks].sort(), [1, 3])
  // without top_p the tail does appear over many draws
  const r2 = new Rng(3)
  const all = new Set(Array.from({ length: 2000 }, () => sampleToken(logits, { temperature: 2, topP: 1 }, r2)))
  assert.ok(all.has(0) && all.has(2))
})

test('execution providers: auto tries CUDA only with an NVIDIA GPU; WebGPU only when asked; CPU always last', () => {
  assert.deepEqual(providerOrder('auto', { nvidia: false, any: false }), ['cpu'])
  assert.deepEqual(providerOrder('auto', { nvidia: true, any: true }), ['cuda', 'cpu'])
  assert.deepEqual(providerOrder('auto', { nvidia: false, any: true }), ['cpu'])
  assert.deepEqual(providerOrder('webgpu', { nvidia: false, any: true }), ['webgpu', 'cpu'])
  assert.deepEqual(providerOrder('cuda', { nvidia: false, any: false }), ['cuda', 'cpu'])
  assert.deepEqual(providerOrder('cpu', { nvidia: true, any: true }), ['cpu'])
})

test('auto ONNX Runtime threads: small models leave a core free on small boxes; large ones get every core', async () => {
  const { autoThreads } = await import('../../agent/blocks/host.ts')
  const MiB = 1024 * 1024
  assert.equal(autoThreads(20 * MiB, 2), 1)
  assert.equal(autoThreads(20 * MiB, 4), 3)
  assert.equal(autoThreads(400 * MiB, 2), 0, 'memory-bound: all cores (0 = ONNX Runtime default)')
  assert.equal(autoThreads(20 * MiB, 16), 0)
  assert.equal(autoThreads(20 * MiB, 1), 1)
})
