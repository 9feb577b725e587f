/**
 * A long prompt arriving while other streams decode, on the whole model's engine, three ways: in one run
 * (the engine as it was: the decoding streams wait for the whole prompt); in chunks of 256 tokens, two a
 * turn, a decoding step between (the row bound alone, what a GPU meets); and as the engine is, chunks cut
 * to a turn's time budget from the measured prompt rate (agent/executor/prefill.ts). Per round, 4 streams decode;
 * once each has a few tokens a prompt of ~1000 tokens arrives; the round ends at its first token. Measured:
 * the long prompt's time to first token, and in that wait the decoding streams' longest gap between two
 * tokens and their tokens/s. The two engines take turns round after round (medians). SmolLM2 (converted,
 * q8) when its weights are in the cache, and the generated ~100M model; one ONNX Runtime thread each.
 *
 *   npm run bench -- --only prefillmix
 */
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { ModelEngine } from '../agent/executor/engine.ts'
import type { GenerateParams } from '../agent/executor/engine.ts'
import { PREFILL_CHUNK, PROMPT_MS_FIRST } from '../agent/executor/prefill.ts'
import { ensureGeneratedModel } from '../agent/model/cache.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { ByteTokenizer } from '../agent/model/tokenizer.ts'
import type { TextTokenizer } from '../agent/model/tokenizer.ts'
import { cachedWeightPath } from '../agent/model/known-models.ts'
import { convertGguf } from '../agent/model/gguf/convert.ts'
import { loadTokenizerBundle } from '../agent/model/tokenizers/bundle.ts'
import { median } from './stats.ts'

const CORPUS = readFileSync(fileURLToPath(new URL('../agent/model/corpus.txt', import.meta.url)), 'utf8')
const DECODERS = 4

/** One round's figures: the long prompt's first token, and the decoding streams while it waited. */
export interface MixRound { ttftMs: number, maxGapMs: number, decodeTps: number }
export interface MixModel { model: string, promptTokens: number, oneRun: MixRound[], rows: MixRound[], timed: MixRound[] }
const WAYS = ['oneRun', 'rows', 'timed'] as const
export interface MixResult { models: MixModel[], threads: number, skipped: string[] }

function promptOf (tok: TextTokenizer, target: number, offset: number): number[] {
  const words = CORPUS.split(/\s+/).filter(w => w !== '')
  const start = (offset * 37) % words.length
  let text = ''
  for (let i = 0; tok.encode(text, { bos: true }).length < target; i++) text += `${words[(start + i) % words.length]} `
  return tok.encode(text, { bos: true }).slice(0, target)
}

async function round (engine: ModelEngine, tok: TextTokenizer, long: number[]): Promise<MixRound> {
  // no stop tokens: the decoding streams go on until cancelled, so every one decodes for the whole wait
  const params = (prompt: number[], maxTokens: number): GenerateParams => ({ prompt, maxTokens, temperature: 0, topP: 1, seed: 1, stopTokens: [] })
  let submitted = 0
  let first = 0
  const times: number[][] = Array.from({ length: DECODERS }, () => [])
  const started: Array<() => void> = []
  const allStarted = Promise.all(Array.from({ length: DECODERS }, async () => { await new Promise<void>(resolve => { started.push(resolve) }) }))
  const decoders = Array.from({ length: DECODERS }, (_, i) => {
    const g = engine.generate(params(promptOf(tok, 24, i), 100_000))
    const run = (async () => {
      let n = 0
      for await (const _ of g.tokens) {
        times[i].push(performance.now())
        if (++n === 4) started[i]()
        if (first > 0) g.cancel()
      }
      await g.done
    })()
    return run
  })
  await allStarted
  submitted = performance.now()
  const g = engine.generate(params(long, 1))
  for await (const _ of g.tokens) { if (first === 0) first = performance.now() }
  await g.done
  if (first === 0) throw new Error('the long prompt gave no token')
  await Promise.all(decoders)
  let maxGap = 0
  let inWait = 0
  for (const ts of times) {
    for (let k = 1; k < ts.length; k++) {
      if (ts[k] > submitted && ts[k - 1] < first) maxGap = Math.max(maxGap, Math.min(ts[k], first) - Math.max(ts[k - 1], submitted))
    }
    inWait += ts.filter(t => t > submitted && t <= first).length
  }
  return { ttftMs: first - submitted, maxGapMs: maxGap, decodeTps: inWait / ((first - submitted) / 1000) }
}

export async function runPrefillMixBench (opts: { quick: boolean, log: (s: string) => void }): Promise<MixResult> {
  const threads = 1
  const result: MixResult = { models: [], threads, skipped: [] }
  const rounds = opts.quick ? 2 : 4
  const targets: Array<{ label: string, path: string, tok: TextTokenizer, context: number }> = []
  const gguf = cachedWeightPath('smollm2')
  if (existsSync(gguf)) {
    const c = await convertGguf(gguf, { cacheDir: '.blockmesh/bench-models', weights: 'q8' })
    const tok = await loadTokenizerBundle(c.tokenizerPath)
    targets.push({ label: 'SmolLM2-135M Q4_1 (converted, q8)', path: c.onnxPath, tok, context: 2048 })
  } else {
    result.skipped.push(`SmolLM2: no ${gguf} (scripts/fetch-weights.sh fetches it)`)
  }
  const m = await ensureGeneratedModel({ ...PRESETS['100m'], seed: 1 }, '.blockmesh/bench-models', 'gpt-100m', opts.log)
  targets.push({ label: `generated ~100M (${m.spec.layers} layers, hidden ${m.spec.hidden})`, path: m.path, tok: new ByteTokenizer(), context: m.spec.maxPositions })
  for (const t of targets) {
    const promptTokens = Math.min(opts.quick ? 600 : 1000, t.context - 64)
    const start = async (prefillChunk: number, promptMsFirst: number): Promise<ModelEngine> => await ModelEngine.start({ modelPath: t.path, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: t.context, maxBatch: 8, intraOpThreads: threads, prefillChunk, promptMsFirst })
    const engines = {
      oneRun: await start(t.context, Infinity),
      rows: await start(PREFILL_CHUNK, Infinity),
      timed: await start(PREFILL_CHUNK, PROMPT_MS_FIRST)
    }
    try {
      const fig: MixModel = { model: t.label, promptTokens, oneRun: [], rows: [], timed: [] }
      const long = promptOf(t.tok, promptTokens, 99)
      for (const w of WAYS) await round(engines[w], t.tok, long.slice(0, 300)) // warm-up (and a first prompt rate)
      for (let r = 0; r < rounds; r++) {
        for (const w of WAYS) fig[w].push(await round(engines[w], t.tok, long))
        opts.log(`  ${t.label}, round ${r + 1}: ${WAYS.map(w => `${w} ttft ${fig[w][r].ttftMs.toFixed(0)} ms, gap ${fig[w][r].maxGapMs.toFixed(0)} ms, ${fig[w][r].decodeTps.toFixed(1)} tok/s`).join('; ')}`)
      }
      result.models.push(fig)
    } finally {
      for (const w of WAYS) await engines[w].close()
    }
  }
  return result
}

export function prefillMixMarkdown (r: MixResult): string {
  const med = (rs: MixRound[], k: keyof MixRound): number => median(rs.map(x => x[k]))
  const x = (a: number, b: number): string => b > 0 ? `**${(a / b).toFixed(2)}**` : '–'
  const label = { oneRun: 'one run', rows: `chunks of ${PREFILL_CHUNK}, two a turn`, timed: `time budget (${PROMPT_MS_FIRST} ms)` }
  const rows = r.models.flatMap(m => WAYS.map(w => {
    const [t, g, d] = [med(m[w], 'ttftMs'), med(m[w], 'maxGapMs'), med(m[w], 'decodeTps')]
    const [t0, g0, d0] = [med(m.oneRun, 'ttftMs'), med(m.oneRun, 'maxGapMs'), med(m.oneRun, 'decodeTps')]
    return `| ${m.model} | ${m.promptTokens} | ${label[w]} | ${t.toFixed(0)} | ${x(t, t0)} | ${g.toFixed(0)} | ${x(g, g0)} | ${d.toFixed(1)} | ${x(d, d0)} |`
  }))
  return [
    `The whole model's engine (agent/executor/worker.ts), ${r.threads} ONNX Runtime thread, maxBatch 8, in this process. Per round ${DECODERS} streams decode (short prompts, greedy); once each has 4 tokens, a long prompt of the length shown arrives (corpus text, 1 new token). Three ways to take it: "one run", the whole prompt before the next decoding step (the engine before chunked prefill); "chunks of ${PREFILL_CHUNK}, two a turn", the row bound alone, a decoding step of the running streams after every two chunks; "time budget", the engine as it is (agent/executor/prefill.ts): while others decode, a turn's prompt work is cut to fit ${PROMPT_MS_FIRST} ms from the prompt rate the engine measures. Time to first token: from the long prompt's submission to its token. Longest gap: the longest wait between two tokens of any decoding stream during that time. Tokens/s: the decoding streams' tokens in that time ÷ that time. The three engines take turns, ${r.models[0]?.timed.length ?? 0} rounds each, medians; ratios are against one run.`,
    '',
    '| model | prompt tokens | prompt taken | long prompt\'s first token (ms) | ÷ one run | decoding streams\' longest gap (ms) | ÷ one run | decoding tokens/s meanwhile | ÷ one run |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    ...(r.skipped.length > 0 ? ['', `Skipped: ${r.skipped.join('; ')}.`] : [])
  ].join('\n')
}
