/**
 * What a decode step pays to hand its KV cache back to JavaScript. onnxruntime-node copies every output
 * of a run into a new ArrayBuffer (its binding's OrtValueToNapiValue), and a decoder's outputs include
 * the whole present.* cache, which grows with batch × context. Here one batched decode step of the
 * generated ~100M model (one ONNX Runtime thread) is timed as the engines run it (all outputs) and with
 * the logits alone fetched (the cache is still computed inside the run, only not copied out), at batch
 * 1, 4, 8 and 16 with 100 cached positions. The difference is the copy's cost. Then the engine itself,
 * which keeps the batched cache when the graph gives each step's keys and values (agent/executor/kv-cache.ts),
 * against the same engine taking present.* back from every run (keepCache: false): tokens/s with 1, 8 and
 * 16 concurrent sequences (docs/decisions.md, "Pipeline on separate boxes").
 *
 *   npm run bench -- --only kvcopy
 */
import ort from 'onnxruntime-node'
import { ensureGeneratedModel } from '../agent/model/cache.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { decoderShape, int64 } from '../agent/executor/feeds.ts'
import { io } from '../agent/model/graph.ts'
import { median } from './stats.ts'
import { ModelEngine } from '../agent/executor/engine.ts'
import { ByteTokenizer } from '../agent/model/tokenizer.ts'
import { EOS } from '../agent/model/spec.ts'

export interface KvCopyRow { batch: number, positions: number, allMs: number, logitsMs: number, cacheMiB: number }
export interface EngineRow { streams: number, kept: number[], taken: number[] }
export interface KvCopyResult { rows: KvCopyRow[], engine: EngineRow[], model: string, skipped?: string }

export async function runKvCopyBench (opts: { quick: boolean, log: (s: string) => void }): Promise<KvCopyResult> {
  const m = await ensureGeneratedModel({ ...PRESETS['100m'], seed: 1 }, '.blockmesh/bench-models', 'gpt-100m', opts.log)
  const session = await ort.InferenceSession.create(m.path, { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 1 })
  const result: KvCopyResult = { rows: [], engine: [], model: `generated ~100M (${m.spec.layers} layers, hidden ${m.spec.hidden})` }
  // the binding names a partial fetch's outputs by the session's first names: fetch a prefix only
  if (session.outputNames[0] !== io.logits) { result.skipped = `the model's first output is ${session.outputNames[0]}, not ${io.logits}`; return result }
  const shape = decoderShape(session)
  const T = 100
  const rounds = opts.quick ? 7 : 15
  for (const B of [1, 4, 8, 16]) {
    const feeds: Record<string, ort.Tensor> = {}
    const size = B * shape.heads * T * shape.headDim
    for (let l = 0; l < shape.layers; l++) {
      feeds[io.pastKey(l)] = new ort.Tensor('float32', new Float32Array(size).fill(0.01), [B, shape.heads, T, shape.headDim])
      feeds[io.pastValue(l)] = new ort.Tensor('float32', new Float32Array(size).fill(0.01), [B, shape.heads, T, shape.headDim])
    }
    feeds[io.inputIds] = int64(new Array(B).fill(5), [B, 1])
    feeds[io.attentionMask] = int64(new Array(B * (T + 1)).fill(1), [B, T + 1])
    feeds[io.positionIds] = int64(new Array(B).fill(T), [B, 1])
    const all: number[] = []
    const logits: number[] = []
    await session.run(feeds) // warm-up
    for (let r = 0; r < rounds; r++) {
      let t = performance.now()
      const out = await session.run(feeds)
      all.push(performance.now() - t)
      if (out[io.presentKey(0)].dims[2] !== T + 1) throw new Error('unexpected present shape')
      t = performance.now()
      const only = await session.run(feeds, { [io.logits]: null })
      logits.push(performance.now() - t)
      if (Object.keys(only).length !== 1) throw new Error('the partial fetch returned more than the logits')
    }
    const row: KvCopyRow = { batch: B, positions: T, allMs: median(all), logitsMs: median(logits), cacheMiB: 2 * shape.layers * B * shape.heads * (T + 1) * shape.headDim * 4 / 2 ** 20 }
    result.rows.push(row)
    opts.log(`  batch ${B}: all outputs ${row.allMs.toFixed(1)} ms, logits only ${row.logitsMs.toFixed(1)} ms (${row.cacheMiB.toFixed(0)} MiB of cache out)`)
  }
  await session.release()

  // the engine, keeping the cache and not: the same model, maxBatch 16, one thread each, taking turns
  const start = async (keepCache: boolean): Promise<ModelEngine> => await ModelEngine.start({ modelPath: m.path, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: 1024, maxBatch: 16, intraOpThreads: 1, keepCache })
  const kept = await start(true)
  const taken = await start(false)
  try {
    if (!kept.keepsCache || taken.keepsCache) throw new Error('the engines did not take the cache modes asked for')
    const prompt = new ByteTokenizer().encode('The harbour master kept a notebook of every ship that came in', { bos: true })
    const tokensPerSecond = async (e: ModelEngine, streams: number, n: number): Promise<number> => {
      const t0 = performance.now()
      const counts = await Promise.all(Array.from({ length: streams }, async () => {
        const g = e.generate({ prompt, maxTokens: n, temperature: 0, topP: 1, seed: 1, stopTokens: [EOS] })
        let c = 0
        for await (const _ of g.tokens) c++
        return c
      }))
      return counts.reduce((a, b) => a + b, 0) / ((performance.now() - t0) / 1000)
    }
    await tokensPerSecond(kept, 2, 4)
    await tokensPerSecond(taken, 2, 4)
    for (const streams of [1, 8, 16]) {
      const row: EngineRow = { streams, kept: [], taken: [] }
      for (let r = 0; r < (opts.quick ? 1 : 3); r++) {
        row.kept.push(await tokensPerSecond(kept, streams, 64))
        row.taken.push(await tokensPerSecond(taken, streams, 64))
      }
      result.engine.push(row)
      opts.log(`  engine, ${streams} stream(s): cache kept ${median(row.kept).toFixed(1)} tok/s, present.* taken back ${median(row.taken).toFixed(1)} tok/s`)
    }
  } finally {
    await kept.close()
    await taken.close()
  }
  return result
}

export function kvCopyMarkdown (r: KvCopyResult): string {
  if (r.skipped != null) return `Not measured: ${r.skipped}.`
  return [
    `The ${r.model}, one ONNX Runtime thread, in the benchmark process; one batched decode step with ${r.rows[0]?.positions ?? 100} cached positions per sequence, median of rounds, the two ways taking turns. "All outputs" is how the engines run a step today: the logits and every present.* tensor, which onnxruntime-node copies into new JavaScript buffers. "Logits only" fetches the logits alone: the same graph runs (the new cache is still built inside the run), only nothing else is copied out. The difference is what handing the cache back costs.`,
    '',
    '| batch | cache handed back | all outputs (ms) | logits only (ms) | the copy\'s share of the step | ms per token: all / logits only |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...r.rows.map(x => `| ${x.batch} | ${x.cacheMiB.toFixed(0)} MiB | ${x.allMs.toFixed(1)} | ${x.logitsMs.toFixed(1)} | **${(100 * (1 - x.logitsMs / x.allMs)).toFixed(0)}%** | ${(x.allMs / x.batch).toFixed(2)} / ${(x.logitsMs / x.batch).toFixed(2)} |`),
    '',
    'The engine (agent/executor/worker.ts, maxBatch 16, one thread) keeps the batched cache itself when the graph gives each step\'s keys and values (agent/executor/kv-cache.ts), against the same engine taking present.* back from every run (`keepCache: false`): 1, 8 and 16 concurrent generations of 64 tokens from the same prompt, total tokens ÷ wall time (prefill included), median of rounds, the two taking turns.',
    '',
    '| streams | cache kept (tok/s) | present.* taken back (tok/s) | kept ÷ taken back |',
    '| ---: | ---: | ---: | ---: |',
    ...r.engine.map(e => `| ${e.streams} | ${median(e.kept).toFixed(1)} | ${median(e.taken).toFixed(1)} | **${(median(e.kept) / median(e.taken)).toFixed(2)}** |`)
  ].join('\n')
}
