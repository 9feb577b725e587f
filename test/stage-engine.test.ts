import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import os from 'node:os'
import { StageEngine } from '../agent/executor/stage-engine.ts'
import type { StageOutput } from '../agent/executor/stage-engine.ts'
import { ModelEngine } from '../agent/executor/engine.ts'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS, EOS } from '../agent/model/spec.ts'
import { splitDecoder } from '../agent/splitter/onnx-split.ts'
import { ByteTokenizer } from '../agent/model/tokenizer.ts'
import { tempDir } from './helpers/agents.ts'

const tok = new ByteTokenizer()

describe('stage engines chained in one process', () => {
  const dir = tempDir('bm-stage-')
  const m = generateModel({ ...PRESETS.tiny, layers: 3, maxPositions: 512, seed: 8 }, join(dir, 'm.onnx'))
  let stages: StageEngine[] = []
  let whole: ModelEngine
  before(async () => {
    const split = splitDecoder(readFileSync(m.path), 3)
    stages = await Promise.all(split.stages.map(async (s, i) => {
      const p = join(dir, `s${i}.onnx`)
      writeFileSync(p, s.bytes)
      return await StageEngine.start({ modelPath: p, provider: 'cpu', gpus: { nvidia: false, any: false }, maxBatch: 4 })
    }))
    whole = await ModelEngine.start({ modelPath: m.path, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: 512 })
  })
  after(async () => {
    for (const s of stages) await s.close()
    await whole.close()
  })

  /** Greedy generation through the three stages, the way the vDAG driver does it (in micro-batch `group`, when given). */
  async function pipeline (seq: string, text: string, n: number, group?: number, chain: StageEngine[] = stages): Promise<number[]> {
    let tokens = tok.encode(text, { bos: true })
    let past = 0
    const out: number[] = []
    for (let step = 0; step < n; step++) {
      let x: { tokens: number[] } | { hidden: Float32Array, seqLen: number } = { tokens }
      let result: StageOutput | undefined
      for (const s of chain) {
        result = await s.step(seq, x, past, { sampling: { temperature: 0, topP: 1, seed: 1 }, ...(group != null ? { group } : {}) })
        if ('hidden' in result) x = { hidden: result.hidden, seqLen: result.seqLen }
      }
      past += tokens.length
      const t = (result as { token: number }).token
      if (t === EOS) break
      out.push(t)
      tokens = [t]
    }
    for (const s of chain) s.drop(seq)
    return out
  }

  async function whole1 (text: string, n: number): Promise<number[]> {
    const g = whole.generate({ prompt: tok.encode(text, { bos: true }), maxTokens: n, temperature: 0, topP: 1, seed: 1, stopTokens: [EOS] })
    const out: number[] = []
    for await (const t of g.tokens) out.push(t)
    return out
  }

  test('the chained stages produce the monolithic model\'s greedy tokens', async () => {
    assert.deepEqual(await pipeline('a', 'The harbour', 30), await whole1('The harbour', 30))
    assert.equal(stages[0].info.first && stages[2].info.last && !stages[1].info.first, true)
  })

  test('concurrent sequences interleave through the stages (batched) and each gets its own output', async () => {
    const prompts = ['Mara kept a notebook', 'The gulls', 'In spring', 'A good answer']
    const alone = []
    for (const p of prompts) alone.push(await whole1(p, 20))
    let batched = 0
    const onBatch = (b: { size: number }): void => { if (b.size > 1) batched++ }
    for (const s of stages) s.on('batch', onBatch)
    const together = await Promise.all(prompts.map(async (p, i) => await pipeline(`seq-${i}`, p, 20)))
    for (const s of stages) s.off('batch', onBatch)
    assert.deepEqual(together, alone)
    assert.ok(batched > 0, 'some steps ran batched')
    for (const s of stages) assert.equal(s.active, 0, 'dropped sequences free their caches')
  })

  test('micro-batches: groups kept step to step, rebuilt as sequences join, finish at different lengths and leave; every output as alone', async () => {
    // 6 sequences of different prompt and output lengths, started at different times, in three micro-batches of two (mb-0 and mb-3, mb-1 and mb-4, mb-2 and mb-5): a stage batches only one micro-batch at a time
    const specs = [['Mara kept a notebook', 25], ['The gulls', 9], ['In spring', 30], ['A good answer', 4], ['Tide', 18], ['Once, long ago, in a harbour town', 12]] as const
    const alone = []
    for (const [p, n] of specs) alone.push(await whole1(p, n))
    const sizes: number[] = []
    const onBatch = (b: { size: number, rows: number }): void => { if (b.rows === 1) sizes.push(b.size) }
    for (const st of stages) st.on('batch', onBatch)
    const run = async (seq: string, text: string, n: number, delayMs: number): Promise<number[]> => {
      await new Promise(resolve => setTimeout(resolve, delayMs))
      return await pipeline(seq, text, n, Number(seq.slice(3)) % 3)
    }
    const together = await Promise.all(specs.map(async ([p, n], i) => await run(`mb-${i}`, p, n, i * 7)))
    for (const st of stages) st.off('batch', onBatch)
    assert.deepEqual(together, alone)
    assert.ok(sizes.some(b => b === 2), `some steps ran as micro-batches of 2 (sizes seen: ${[...new Set(sizes)].join(',')})`)
    assert.ok(sizes.every(b => b <= 2), 'no stage batched two micro-batches together')
    for (const st of stages) assert.equal(st.active, 0)
  })

  test('the stages keep their batched caches (the split carries each layer\'s step outputs): the same tokens as taking present.* back from every run', async () => {
    assert.deepEqual(stages.map(s => s.keepsCache), [true, true, true])
    // these also differ in the hand-off: ONNX Runtime's default threads take every CPU, so the chained
    // stages' workers wait for their results to be handed on (StageEngineOptions.shareCore); the plain ones do not
    const plain = await Promise.all(stages.map(async (_, i) => await StageEngine.start({ modelPath: join(dir, `s${i}.onnx`), provider: 'cpu', gpus: { nvidia: false, any: false }, maxBatch: 4, keepCache: false, shareCore: false })))
    try {
      assert.deepEqual(stages.map(s => s.sharesCore), [true, true, true])
      // intraOpThreads 0 is ONNX Runtime's default too (a thread per CPU), as the agent passes it for big
      // models and boxes; one thread shares the core only where the process may use one CPU
      for (const [threads, shares] of [[0, true], [1, os.availableParallelism() <= 1]] as const) {
        const e = await StageEngine.start({ modelPath: join(dir, 's0.onnx'), provider: 'cpu', gpus: { nvidia: false, any: false }, intraOpThreads: threads })
        try { assert.equal(e.sharesCore, shares, `intraOpThreads ${threads}`) } finally { await e.close() }
      }
      assert.deepEqual(plain.map(s => [s.keepsCache, s.sharesCore]), [[false, false], [false, false], [false, false]])
      // four sequences in two micro-batches, of different lengths, long enough for the kept caches to grow several times
      const specs = [['Mara kept a notebook', 60], ['The gulls', 45], ['In spring', 70], ['A', 50]] as const
      const run = async (chain: StageEngine[], tag: string): Promise<number[][]> => await Promise.all(specs.map(async ([p, n], i) => await pipeline(`${tag}-${i}`, p, n, i % 2, chain)))
      const kept = await run(stages, 'kept')
      const taken = await run(plain, 'plain')
      assert.ok(kept.every((t, i) => t.length > 20 && t.length <= specs[i][1]))
      assert.deepEqual(kept, taken)
    } finally {
      for (const s of plain) await s.close()
    }
  })

  test('waiting prompts run before the decoding batch (as the whole model\'s engine takes them), at most 512 prompt rows a turn', async () => {
    const s = stages[0]
    const order = async (prompts: Array<[string, number]>): Promise<string[]> => {
      // two sequences with a cache, ready to decode together
      for (const seq of ['dec-a', 'dec-b']) await s.step(seq, { tokens: tok.encode('The gulls', { bos: true }) }, 0)
      const past = tok.encode('The gulls', { bos: true }).length
      const runs: string[] = []
      const onBatch = (b: { size: number, rows: number }): void => { runs.push(b.rows === 1 ? `decode×${b.size}` : `prompt:${b.rows}`) }
      s.on('batch', onBatch)
      // the first prompt keeps the worker busy while everything else queues behind it, the decoding steps
      // first (every input made beforehand, so the steps are posted back to back)
      const [head, ...rest] = prompts.map(([seq, rows]) => ({ seq, tokens: tok.encode('x'.repeat(rows - 1), { bos: true }) }))
      const steps = [s.step(head.seq, { tokens: head.tokens }, 0)]
      steps.push(s.step('dec-a', { tokens: [65] }, past), s.step('dec-b', { tokens: [66] }, past))
      for (const p of rest) steps.push(s.step(p.seq, { tokens: p.tokens }, 0))
      await Promise.all(steps)
      // a batched run's metrics message follows its results
      for (let i = 0; i < 100 && runs.length < prompts.length + 1; i++) await new Promise(resolve => setTimeout(resolve, 10))
      s.off('batch', onBatch)
      for (const seq of ['dec-a', 'dec-b', ...prompts.map(p => p[0])]) s.drop(seq)
      return runs
    }
    assert.deepEqual(await order([['p-1', 200], ['p-2', 20], ['p-3', 30]]), ['prompt:200', 'prompt:20', 'prompt:30', 'decode×2'])
    // 300 + 300 rows reach the turn's share: the decoding batch goes before the third prompt
    assert.deepEqual(await order([['q-1', 300], ['q-2', 300], ['q-3', 30]]), ['prompt:300', 'prompt:300', 'decode×2', 'prompt:30'])
    assert.equal(s.active, 0)
  })

  test('a stage\'s prompt time budget is checked before its worker starts, and kept', async () => {
    for (const bad of [0, -5, Number.NaN]) {
      await assert.rejects(StageEngine.start({ modelPath: join(dir, 's0.onnx'), provider: 'cpu', gpus: { nvidia: false, any: false }, promptMsFirst: bad }), (err: Error) => err.name === 'EngineError' && /promptMsFirst/.test(err.message))
    }
    assert.equal(stages[0].promptMsFirst, 200, 'the default (agent/executor/prefill.ts)')
    const none = await StageEngine.start({ modelPath: join(dir, 's0.onnx'), provider: 'cpu', gpus: { nvidia: false, any: false }, promptMsFirst: Infinity })
    try { assert.equal(none.promptMsFirst, Infinity) } finally { await none.close() }
  })

  test('a step whose cache length disagrees is refused, not computed on the wrong context', async () => {
    await assert.rejects(stages[0].step('x', { tokens: [256, 84] }, 5), /0 positions cached here, the request says 5/)
    stages[0].drop('x')
  })
})
