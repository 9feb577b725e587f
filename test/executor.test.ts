import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { ModelEngine } from '../agent/executor/engine.ts'
import type { GenerateParams, StepEvent } from '../agent/executor/engine.ts'
import { ByteTokenizer } from '../agent/model/tokenizer.ts'
import { EOS } from '../agent/model/spec.ts'
import { tinyModel } from './helpers/models.ts'

const tok = new ByteTokenizer()
const greedy = (text: string, maxTokens: number): GenerateParams => ({
  prompt: tok.encode(text, { bos: true }), maxTokens, temperature: 0, topP: 1, seed: 1, stopTokens: [EOS]
})

async function collect (engine: ModelEngine, p: GenerateParams, onToken?: (i: number) => void): Promise<number[]> {
  const g = engine.generate(p)
  const out: number[] = []
  for await (const t of g.tokens) { out.push(t); onToken?.(out.length) }
  await g.done
  return out
}

describe('the engine (worker thread, batched decode)', () => {
  let engine: ModelEngine
  const m = tinyModel(undefined, 31)
  before(async () => {
    engine = await ModelEngine.start({ modelPath: m.path, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: 4096, maxBatch: 3 })
  })
  after(async () => { await engine.close() })

  test('sequences that join and leave while others decode get exactly their solo output', async () => {
    const prompts = ['The harbour', 'Mara kept', 'In spring the swallows', 'A good answer', 'Nobody in the town']
    const lengths = [60, 25, 40, 10, 50]
    const solo = []
    for (let i = 0; i < prompts.length; i++) solo.push(await collect(engine, greedy(prompts[i], lengths[i])))
    const batches: number[] = []
    const onStep = (e: StepEvent): void => { if (e.kind === 'decode') batches.push(e.batch) }
    engine.on('step', onStep)
    // start the first, add the others one by one as the first one produces tokens; maxBatch 3 makes some wait
    const runs: Array<Promise<number[]>> = []
    let next = 1
    runs.push(collect(engine, greedy(prompts[0], lengths[0]), n => {
      if (n % 4 === 0 && next < prompts.length) { const i = next++; runs.push(collect(engine, greedy(prompts[i], lengths[i]))) }
    }))
    while (runs.length < prompts.length) await Promise.all(runs)
    const together = await Promise.all(runs)
    engine.off('step', onStep)
    assert.deepEqual(together, solo)
    assert.ok(Math.max(...batches) === 3, `batches reached maxBatch (max ${Math.max(...batches)})`)
    assert.ok(new Set(batches).size >= 3, `the batch changed size as sequences came and went (${[...new Set(batches)].join(',')})`)
  })

  test('a cancelled sequence is freed, and the others are unaffected', async () => {
    const keep = collect(engine, greedy('Mara kept', 40))
    const g = engine.generate(greedy('The harbour', 3000))
    let n = 0
    for await (const _ of g.tokens) if (++n === 5) g.cancel()
    const r = await g.done
    assert.equal(r.reason, 'cancelled')
    assert.ok(r.completionTokens < 3000)
    assert.deepEqual(await keep, await collect(engine, greedy('Mara kept', 40)))
    assert.equal(engine.active, 0)
  })

  test('a length-limited generation delivers every token it counts (the last one too)', async () => {
    for (const n of [1, 5, 17]) {
      const g = engine.generate(greedy('The harbour', n))
      const got: number[] = []
      for await (const t of g.tokens) got.push(t)
      const done = await g.done
      assert.equal(done.reason, 'length')
      assert.equal(got.length, n)
      assert.equal(done.completionTokens, n)
    }
  })

  test('a stop token ends a sequence with reason stop and is never emitted; max tokens ends it with reason length', async () => {
    const g = engine.generate(greedy('x', 5))
    for await (const _ of g.tokens) { /* drain */ }
    assert.deepEqual(await g.done, { reason: 'length', promptTokens: 2, completionTokens: 5, error: undefined })
    // greedy output from this prompt contains spaces: with space as the stop token it ends at the first one
    const free = await collect(engine, greedy('The harbour', 40))
    const firstSpace = free.indexOf(32)
    assert.ok(firstSpace >= 0)
    const s = engine.generate({ ...greedy('The harbour', 40), stopTokens: [32] })
    const toks: number[] = []
    for await (const t of s.tokens) toks.push(t)
    const done = await s.done
    assert.equal(done.reason, 'stop')
    assert.deepEqual(toks, free.slice(0, firstSpace))
  })

  test('the worker keeps the batched cache itself (the graph gives each step\'s keys and values): the same tokens as taking present.* back from every run', async () => {
    assert.equal(engine.keepsCache, true, 'the generated graph gives step outputs, so the worker keeps the cache')
    const plain = await ModelEngine.start({ modelPath: m.path, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: 4096, maxBatch: 3, keepCache: false })
    try {
      assert.equal(plain.keepsCache, false)
      // three at once, of different lengths (rows left-padded differently), long enough for the kept cache to grow several times
      const prompts = ['The harbour', 'In spring the swallows came back', 'A']
      const lengths = [70, 45, 90]
      const run = async (e: ModelEngine): Promise<number[][]> => await Promise.all(prompts.map(async (p, i) => await collect(e, greedy(p, lengths[i]))))
      const [kept, taken] = [await run(engine), await run(plain)]
      assert.deepEqual(kept.map(t => t.length), lengths)
      assert.deepEqual(kept, taken)
    } finally {
      await plain.close()
    }
  })
})

describe('prompts in chunks (the whole model\'s engine)', () => {
  const m = tinyModel(undefined, 37)
  const start = async (prefillChunk?: number): Promise<ModelEngine> => await ModelEngine.start({ modelPath: m.path, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: 4096, maxBatch: 4, prefillChunk })
  // ~1100 byte tokens of varied text
  const longText = Array.from({ length: 40 }, (_, i) => `Line ${i}: the harbour kept ${i * 7} boats; `).join('')
  let chunked: ModelEngine
  before(async () => { chunked = await start(64) })
  after(async () => { await chunked.close() })

  test('a long prompt gives the same tokens and logprobs in chunks of 64 as in one run', async () => {
    const whole = await start(4096)
    try {
      const p = { ...greedy(longText, 24), topLogprobs: 2 }
      assert.ok(p.prompt.length > 1000)
      const run = async (e: ModelEngine): Promise<{ tokens: number[], logprobs: number[] }> => {
        const g = e.generate(p)
        const tokens: number[] = []
        for await (const t of g.tokens) tokens.push(t)
        assert.equal((await g.done).reason, 'length')
        return { tokens, logprobs: g.logprobs.map(l => l.logprob) }
      }
      const steps: StepEvent[] = []
      const onStep = (e: StepEvent): void => { steps.push(e) }
      chunked.on('step', onStep)
      const [a, b] = [await run(chunked), await run(whole)]
      chunked.off('step', onStep)
      assert.equal(steps.filter(e => e.kind === 'prefill').length, Math.ceil(p.prompt.length / 64), 'one prefill run per chunk')
      assert.deepEqual(a.tokens, b.tokens)
      assert.equal(a.logprobs.length, 24)
      a.logprobs.forEach((lp, i) => { assert.ok(Math.abs(lp - b.logprobs[i]) < 1e-3, `token ${i}: logprob ${lp} in chunks, ${b.logprobs[i]} in one run`) })
    } finally {
      await whole.close()
    }
  })

  test('a running sequence keeps decoding while a long prompt goes through, and both get their solo output', async () => {
    const soloShort = await collect(chunked, greedy('The harbour', 60))
    const soloLong = await collect(chunked, greedy(longText, 8))
    const soloLongPrompt = greedy(longText, 8).prompt.length
    // the long prompt (18 chunks of 64, 2 chunks a turn) arrives once the short one decodes; the engine's
    // runs from then on, in the worker's order
    const kinds: string[] = []
    const onStep = (e: StepEvent): void => { kinds.push(e.kind) }
    let longRun: Promise<number[]> | undefined
    const shortRun = collect(chunked, greedy('The harbour', 60), n => {
      if (n === 3) {
        chunked.on('step', onStep)
        longRun = collect(chunked, greedy(longText, 8))
      }
    })
    const short = await shortRun
    assert.ok(longRun != null)
    const long = await longRun
    chunked.off('step', onStep)
    assert.deepEqual(short, soloShort)
    assert.deepEqual(long, soloLong)
    // the short sequence's decoding steps between the long prompt's first and last run (in one run: none)
    const first = kinds.indexOf('prefill')
    const last = kinds.lastIndexOf('prefill')
    assert.equal(kinds.filter(k => k === 'prefill').length, Math.ceil(soloLongPrompt / 64), 'the long prompt in chunks of 64')
    const between = kinds.slice(first, last).filter(k => k === 'decode').length
    assert.ok(between >= 6, `the short sequence decoded ${between} times while the long prompt went through: ${kinds.join(' ')}`)
  })

  test('a prompt whose run fails ends with an error alone: the sequences decoding beside it go on', async () => {
    const solo = await collect(chunked, greedy('Mara kept', 30))
    let bad: Promise<unknown> | undefined
    let goodTokens = 0
    let goodWhenBadEnded = -1
    const good = collect(chunked, greedy('Mara kept', 30), n => {
      goodTokens = n
      if (n === 2) {
        // a token id past the vocabulary: the embedding's Gather fails in ONNX Runtime
        const g = chunked.generate({ ...greedy('x', 5), prompt: [1, 2, 1_000_000] })
        bad = (async () => { for await (const _ of g.tokens) { /* none */ } const d = await g.done; goodWhenBadEnded = goodTokens; return d })()
      }
    })
    assert.deepEqual(await good, solo)
    const r = await bad as { reason: string, error?: string }
    assert.ok(goodWhenBadEnded >= 0 && goodWhenBadEnded < 30, `the good sequence was still decoding when the bad one ended (${goodWhenBadEnded} of 30 tokens)`)
    assert.equal(r.reason, 'error')
    assert.ok(r.error != null && r.error.length > 0)
    assert.equal(chunked.active, 0)
  })

  test('the time bound holds for streams that were decoding when a turn began: a burst arriving while nothing decodes is prefilled whole first', async () => {
    // a budget no prompt fits: while others decode, a turn runs one prompt step
    const strict = await ModelEngine.start({ modelPath: m.path, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: 4096, maxBatch: 8, prefillChunk: 64, promptMsFirst: 1e-6 })
    try {
      const kinds: string[] = []
      const onStep = (e: StepEvent): void => { kinds.push(e.kind) }
      strict.on('step', onStep)
      // a burst of three: all three prompts before the first decoding step (the first one's token does not make it a decoding stream)
      await Promise.all(['The harbour', 'Mara kept', 'A good answer'].map(async p => await collect(strict, greedy(p, 4))))
      assert.deepEqual(kinds.slice(0, 4), ['prefill', 'prefill', 'prefill', 'decode'])
      // two prompts arriving while one decodes: a decoding step between them
      kinds.length = 0
      let late: Array<Promise<number[]>> = []
      await collect(strict, greedy('In spring the swallows', 30), n => {
        if (n === 3) late = ['Nobody in the town', 'The gulls'].map(p => collect(strict, greedy(p, 4)))
      })
      await Promise.all(late)
      strict.off('step', onStep)
      const first = kinds.indexOf('prefill', 1)
      assert.ok(first > 0 && kinds[first + 1] === 'decode' && kinds.indexOf('prefill', first + 1) > first + 1, `a decoding step between the late prompts: ${kinds.join(' ')}`)
    } finally {
      await strict.close()
    }
  })

  test('prefillChunk must be a positive integer', async () => {
    for (const bad of [0, -1, 1.5]) await assert.rejects(start(bad), (err: Error) => err.name === 'EngineError' && /prefillChunk/.test(err.message))
  })
})
