/**
 * Request migration (issue 13) in one process: a generation that loses its instance (MigratingSource
 * around a real engine) or a stage (VdagDriver over real stage engines) after k tokens, and is resumed
 * by replaying prompt + those k tokens, gives exactly the tokens of an uninterrupted run — greedy,
 * seeded sampling with penalties, JSON-constrained, with logprobs — and the limits end it with a clear error.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ModelEngine } from '../agent/executor/engine.ts'
import type { GenerateParams, Generation, GenerationResult } from '../agent/executor/engine.ts'
import { StageEngine } from '../agent/executor/stage-engine.ts'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS, EOS } from '../agent/model/spec.ts'
import { splitDecoder } from '../agent/splitter/onnx-split.ts'
import { ByteTokenizer } from '../agent/model/tokenizer.ts'
import { grammarFromResponseFormat, tokenVocab } from '../agent/openai/json-schema.ts'
import type { TokenSource } from '../agent/openai/generate.ts'
import { MigratingSource } from '../agent/serving/migrate.ts'
import type { InstanceChoice } from '../agent/serving/migrate.ts'
import { VdagDriver } from '../agent/vdag/driver.ts'
import { pipelineService } from '../agent/vdag/pipeline.ts'
import type { LocalStages, PipelineComponents, PipelineService, RouteHop } from '../agent/vdag/pipeline.ts'
import type { MeshNode } from '../mesh/node.ts'
import { tempDir } from './helpers/agents.ts'

/** A pipeline whose stages are all on this (pretend) agent: steps run in process, nothing goes over libp2p. */
function localPipeline (local: LocalStages): PipelineService {
  return pipelineService({ local, offences: { strike () {} }, log: { debug () {}, info () {}, warn () {} } })({ self: 'self', libp2p: {} as unknown as PipelineComponents['libp2p'], isBanned: () => false, ping: async () => {} })
}

const tok = new ByteTokenizer()

interface Run { tokens: number[], logprobs: Array<{ logprob: number }>, result: GenerationResult }

async function run (source: TokenSource, p: GenerateParams): Promise<Run> {
  const g = source.generate(p)
  const tokens: number[] = []
  for await (const t of g.tokens) tokens.push(t)
  return { tokens, logprobs: [...g.logprobs], result: await g.done }
}

/** A source whose i-th generation is lost after failAfter[i] tokens (the inner one cancelled, the result 'lost'). */
function flaky (engine: TokenSource, failAfter: number[]): TokenSource & { calls: GenerateParams[] } {
  const calls: GenerateParams[] = []
  return {
    calls,
    generate: (p: GenerateParams): Generation => {
      const limit = failAfter[calls.length] ?? Infinity
      calls.push(p)
      const g = engine.generate(p)
      let lost = false
      return {
        id: g.id,
        logprobs: g.logprobs,
        cancel: g.cancel,
        tokens: (async function * () {
          let n = 0
          for await (const t of g.tokens) {
            if (n >= limit) { lost = true; break }
            n++
            yield t
          }
        })(),
        done: g.done.then(r => lost ? { ...r, reason: 'error' as const, error: 'simulated: the instance died', lost: true } : r)
      }
    }
  }
}

const sameTokens = (a: Run, b: Run, what: string): void => {
  assert.deepEqual(a.tokens, b.tokens, what)
  assert.equal(a.result.reason, b.result.reason, what)
  assert.equal(a.result.completionTokens, b.result.completionTokens, what)
  assert.equal(a.logprobs.length, b.logprobs.length, what)
  a.logprobs.forEach((lp, i) => { assert.ok(Math.abs(lp.logprob - b.logprobs[i].logprob) < 1e-3, `${what}: logprob ${i}`) })
}

describe('request migration, in process', () => {
  const dir = tempDir('bm-migrate-')
  const m = generateModel({ ...PRESETS.tiny, layers: 3, maxPositions: 1024, seed: 21 }, join(dir, 'm.onnx'))
  let engine: ModelEngine
  const stages = new Map<string, StageEngine>()
  const prompt = tok.encode('The harbour town', { bos: true })
  let variants: Array<{ name: string, p: GenerateParams }>

  before(async () => {
    engine = await ModelEngine.start({ modelPath: m.path, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: 1024, maxBatch: 4 })
    const split = splitDecoder(readFileSync(m.path), 3)
    await Promise.all(split.stages.map(async (s, i) => {
      const p = join(dir, `s${i}.onnx`)
      writeFileSync(p, s.bytes)
      stages.set(`s${i}`, await StageEngine.start({ modelPath: p, provider: 'cpu', gpus: { nvidia: false, any: false }, maxBatch: 4 }))
    }))
    const json = grammarFromResponseFormat({ type: 'json_object' })
    assert.ok(json != null)
    const v = await tokenVocab(tok)
    const base: GenerateParams = { prompt, maxTokens: 48, temperature: 0, topP: 1, seed: 1, stopTokens: [EOS] }
    variants = [
      { name: 'greedy', p: base },
      { name: 'seeded sampling', p: { ...base, temperature: 1, topP: 0.9, seed: 77 } },
      { name: 'penalties', p: { ...base, temperature: 0.8, topP: 0.95, seed: 4, presencePenalty: 0.6, frequencyPenalty: 0.9, repetitionPenalty: 1.3 } },
      { name: 'logprobs', p: { ...base, topLogprobs: 3 } },
      { name: 'json', p: { ...base, temperature: 1, topP: 1, seed: 3, maxTokens: 40, constraint: { grammar: json.grammar, grammarKey: json.key, vocab: { key: v.key, size: v.size, texts: v.texts } } } }
    ]
  })
  after(async () => {
    await engine.close()
    for (const s of stages.values()) await s.close()
  })

  test('the engine resumes a sequence from prompt + generated tokens (resumed) exactly where it was', async () => {
    for (const { name, p } of variants) {
      const whole = await run(engine, p)
      assert.ok(whole.tokens.length >= 10, `${name}: ${whole.tokens.length} tokens`)
      for (const k of [1, 9]) {
        const rest = await run(engine, { ...p, prompt: [...p.prompt, ...whole.tokens.slice(0, k)], maxTokens: p.maxTokens - k, resumed: k })
        assert.deepEqual(rest.tokens, whole.tokens.slice(k), `${name}, resumed after ${k}`)
      }
    }
  })

  test('MigratingSource: an instance lost twice mid-generation, the stream goes on with the same tokens', async () => {
    for (const { name, p } of variants) {
      const whole = await run(engine, p)
      const first = flaky(engine, [4, 3])
      const second = flaky(engine, [])
      const choices: InstanceChoice[] = [{ source: first, peer: 'a', instance: 'i-a' }, { source: first, peer: 'a', instance: 'i-a2' }, { source: second, peer: 'b', instance: 'i-b' }]
      const migrations: string[] = []
      let picks = 1
      const source = new MigratingSource({
        first: choices[0],
        next: async (failed) => { assert.equal(failed, choices[picks - 1]); return choices[picks++] },
        limits: { max: 3, maxTokens: 8192 },
        onMigration: (result, d) => { migrations.push(`${result}:${d.generated}`) }
      })
      const got = await run(source, p)
      sameTokens(got, whole, name)
      assert.deepEqual(migrations, ['resumed:4', 'resumed:7'], name)
      // the replays: prompt + generated so far, resumed = k, max_tokens reduced
      assert.equal(first.calls[1].resumed, 4)
      assert.deepEqual(first.calls[1].prompt, [...p.prompt, ...whole.tokens.slice(0, 4)])
      assert.equal(first.calls[1].maxTokens, p.maxTokens - 4)
      assert.equal(second.calls[0].resumed, 7)
    }
  })

  test('MigratingSource: over the migration limit or the replay cap, or with nothing to go to, a clear error', async () => {
    const p = variants[0].p
    const always = flaky(engine, [2, 2, 2, 2, 2])
    const choice = { source: always, peer: 'a', instance: 'i' }
    const limited = await run(new MigratingSource({ first: choice, next: async () => choice, limits: { max: 2, maxTokens: 8192 } }), p)
    assert.equal(limited.result.reason, 'error')
    assert.equal(limited.result.code, 'migration_limit')
    assert.match(limited.result.error ?? '', /already migrated 2 time/)
    assert.equal(limited.tokens.length, 6, 'the tokens before the limit were handed out')
    const capped = await run(new MigratingSource({ first: { source: flaky(engine, [5]), peer: 'a', instance: 'i' }, next: async () => choice, limits: { max: 3, maxTokens: prompt.length + 3 } }), p)
    assert.equal(capped.result.code, 'migration_limit')
    assert.match(capped.result.error ?? '', /over the migration cap/)
    // lost before its first token, nothing is replayed: the next instance gets the request as it came, whatever the cap
    const whole = await run(engine, p)
    const early = await run(new MigratingSource({ first: { source: flaky(engine, [0]), peer: 'a', instance: 'i' }, next: async () => ({ source: engine, peer: 'b', instance: 'j' }), limits: { max: 3, maxTokens: prompt.length - 1 } }), p)
    sameTokens(early, whole, 'lost before the first token, over the cap')
    const none = await run(new MigratingSource({ first: { source: flaky(engine, [5]), peer: 'a', instance: 'i' }, next: async () => null, limits: { max: 3, maxTokens: 8192 } }), p)
    assert.equal(none.result.code, 'migration_failed')
    // a request's own failure is not migrated
    const calls: number[] = []
    const bad = await run(new MigratingSource({ first: { source: { generate: (q) => { calls.push(1); return engine.generate({ ...q, resumed: q.prompt.length + 1 }) } }, peer: 'a', instance: 'i' }, next: async () => choice, limits: { max: 3, maxTokens: 8192 } }), p)
    assert.equal(bad.result.reason, 'error')
    assert.equal(calls.length, 1)
    assert.equal(engine.active, 0)
  })

  test('VdagDriver: a stage that dies mid-generation is replaced by a new route; prompt + tokens replayed from position 0, same tokens', async () => {
    const good: RouteHop[] = ['s0', 's1', 's2'].map(block => ({ peer: 'self', block }))
    for (const { name, p } of variants) {
      const whole = await run(new VdagDriver(localPipeline(b => stages.get(b) as StageEngine), () => good), p)
      const reference = await run(engine, p)
      sameTokens(whole, reference, `${name}: the pipeline equals the whole model`)
      // 'dying' serves s1 for 6 steps, then every step fails; the second route uses the healthy s1
      let steps = 0
      const dying = {
        info: (stages.get('s1') as StageEngine).info,
        step: async (...args: Parameters<StageEngine['step']>) => { if (++steps > 6) throw new Error('simulated: the stage\'s host died'); return await (stages.get('s1') as StageEngine).step(...args) },
        drop: (seq: string) => { (stages.get('s1') as StageEngine).drop(seq) }
      } as unknown as StageEngine
      const routes: RouteHop[][] = [[good[0], { peer: 'self', block: 's1-dying' }, good[2]], good]
      const migrations: string[] = []
      const driver = new VdagDriver(localPipeline(b => b === 's1-dying' ? dying : stages.get(b) as StageEngine), { route: () => routes.shift() ?? null }, {
        max: 3, maxTokens: 8192, waitMs: 5000, onMigration: (result, d) => { migrations.push(`${result}:${d.generated}`) }
      })
      const got = await run(driver, p)
      sameTokens(got, whole, name)
      assert.deepEqual(migrations, ['resumed:6'], name) // 6 steps gave 6 tokens, the 7th failed
      for (const s of stages.values()) assert.equal(s.active, 0, `${name}: every stage freed the sequences`)
    }
  })

  test('VdagDriver: a generation handed over with resumed = k (a lost driver elsewhere) goes on with the same tokens', async () => {
    const good: RouteHop[] = ['s0', 's1', 's2'].map(block => ({ peer: 'self', block }))
    const driver = new VdagDriver(localPipeline(b => stages.get(b) as StageEngine), () => good)
    for (const { name, p } of variants) {
      const whole = await run(driver, p)
      assert.ok(whole.tokens.length >= 10, `${name}: ${whole.tokens.length} tokens`)
      for (const k of [1, 9]) {
        const rest = await run(driver, { ...p, prompt: [...p.prompt, ...whole.tokens.slice(0, k)], maxTokens: p.maxTokens - k, resumed: k })
        assert.deepEqual(rest.tokens, whole.tokens.slice(k), `${name}, resumed after ${k}`)
        assert.equal(rest.result.completionTokens, whole.tokens.length - k, `${name}: only the new tokens count`)
      }
    }
    const bad = await run(driver, { ...variants[0].p, resumed: variants[0].p.prompt.length + 1 })
    assert.equal(bad.result.reason, 'error')
    assert.match(bad.result.error ?? '', /resumed \(\d+\) must be a count of the prompt's last tokens/)
    for (const s of stages.values()) assert.equal(s.active, 0, 'every stage freed the sequences')
  })

  test('VdagDriver: past the limit, or with no route in time, the error says so', async () => {
    const broken = { info: (stages.get('s1') as StageEngine).info, step: async () => { throw new Error('simulated: gone') }, drop: () => {} } as unknown as StageEngine
    const route: RouteHop[] = [{ peer: 'self', block: 's0' }, { peer: 'self', block: 'broken' }, { peer: 'self', block: 's2' }]
    const local = (b: string): StageEngine => b === 'broken' ? broken : stages.get(b) as StageEngine
    const migrations: string[] = []
    const limited = await run(new VdagDriver(localPipeline(local), { route: () => route.map(h => ({ ...h })) }, { max: 1, maxTokens: 8192, waitMs: 5000, onMigration: r => { migrations.push(r) } }), variants[0].p)
    assert.equal(limited.result.code, 'migration_limit')
    assert.deepEqual(migrations, ['resumed', 'failed'])
    let asked = 0
    const none = await run(new VdagDriver(localPipeline(local), { route: () => asked++ === 0 ? route : null }, { max: 3, maxTokens: 8192, waitMs: 600 }), variants[0].p)
    assert.equal(none.result.code, 'migration_failed')
    assert.match(none.result.error ?? '', /no route with every stage ready/)
  })
})
