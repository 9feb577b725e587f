/**
 * Inference benchmarks:
 *  - framework overhead: decode tokens/s of one stream through the agent's HTTP API (a real agent
 *    process, its worker thread, SSE) ÷ a bare onnxruntime-node loop on the same model, same tokens;
 *  - decode tokens/s of a ~100M-parameter model ÷ the memory-bandwidth limit (bandwidth measured in
 *    this run ÷ weight bytes): each decoded token must read every weight once;
 *  - aggregate tokens/s with 1, 4 and 8 concurrent streams (batched decode).
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { AgentProcess, stopAll, until } from '../test/helpers/agents.ts'
import { componentSpec, deploy } from '../test/helpers/models.ts'
import { ensureGeneratedModel } from '../agent/model/cache.ts'
import type { CachedModel } from '../agent/model/cache.ts'
import { PRESETS, parameterCount } from '../agent/model/spec.ts'
import { ByteTokenizer } from '../agent/model/tokenizer.ts'
import { memoryBandwidth } from './membw.ts'
import { median } from './stats.ts'

const PROMPT = 'The harbour town woke before the sun.'

export interface ModelFigures {
  name: string
  parameters: number
  weightBytes: number
  bareTps: number[]
  apiTps: number[]
  aggregate: Array<{ streams: number, tokensPerSecond: number }>
  threads: number
  /** the same stream requested through a second agent, which tunnels it over libp2p */
  viaPeerTps: number[]
}

export interface InferenceResult { bandwidth: number, threads: number, tokens: number, models: ModelFigures[], provider: string }

/** The bare loop in its own process (bench/bare-loop.ts); round(n) gives decode tokens/s. */
class BareLoop {
  private readonly child: ChildProcess
  private constructor (child: ChildProcess) { this.child = child }
  static async start (modelPath: string, prompt: number[], threads: number): Promise<BareLoop> {
    const child = spawn(process.execPath, [fileURLToPath(new URL('./bare-loop.ts', import.meta.url)), modelPath, prompt.join(','), String(threads)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => { resolve() })
      child.once('exit', code => { reject(new Error(`bare loop exited (${code})`)) })
    })
    return new BareLoop(child)
  }

  async round (n: number): Promise<number> {
    return await new Promise(resolve => {
      this.child.once('message', (m: { tps: number }) => { resolve(m.tps) })
      this.child.send({ n })
    })
  }

  stop (): void { this.child.kill() }
}

/** One streamed completion through the API; returns decode tokens/s (first to last token) and the token count. */
/**
 * One streamed completion, each token timed at the client as its event arrives. Light parsing, so the
 * measuring client takes little of the CPU it measures: timestamps per event; JSON only for the usage
 * event at the end.
 */
export async function timedStream (agent: AgentProcess, model: string, prompt: string, n: number): Promise<{ times: number[], usage: { prompt_tokens: number, completion_tokens: number } }> {
  const res = await fetch(`${agent.url}/v1/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt, max_tokens: n, temperature: 0, stream: true, stream_options: { include_usage: true } })
  })
  if (!res.ok || res.body == null) throw new Error(`completion failed: ${res.status} ${await res.text()}`)
  const times: number[] = []
  let usage = { prompt_tokens: 0, completion_tokens: 0 }
  let buf = ''
  for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += Buffer.from(part).toString('utf8')
    let i: number
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, i)
      buf = buf.slice(i + 2)
      if (event.includes('"usage"')) usage = JSON.parse(event.slice(6)).usage
      else if (!event.includes('"text":"",') && event.includes('"text":')) times.push(performance.now())
    }
  }
  return { times, usage }
}

/** Decode tokens/s of one streamed completion of the benchmark's prompt: first to last token, at the client. */
export async function apiStream (agent: AgentProcess, model: string, n: number): Promise<{ tps: number, tokens: number }> {
  const { times, usage } = await timedStream(agent, model, PROMPT, n)
  const tokens = usage.completion_tokens
  const first = times[0] ?? 0
  const last = times.at(-1) ?? 0
  return { tps: (tokens - 1) / ((last - first) / 1000), tokens }
}

export async function aggregate (agent: AgentProcess, model: string, streams: number, n: number): Promise<number> {
  const t0 = performance.now()
  const counts = await Promise.all(Array.from({ length: streams }, async () => (await apiStream(agent, model, n)).tokens))
  return counts.reduce((a, b) => a + b, 0) / ((performance.now() - t0) / 1000)
}

export async function runInferenceBench (opts: { quick: boolean, log: (s: string) => void }): Promise<InferenceResult> {
  const { log } = opts
  const dir = '.blockmesh/bench-models'
  const models: Array<{ name: string, m: CachedModel, tokens: number, aggTokens: number }> = [
    { name: 'demo (5M)', m: await ensureGeneratedModel({ ...PRESETS.demo, seed: 1 }, dir, 'demo-gpt', log), tokens: opts.quick ? 64 : 200, aggTokens: opts.quick ? 32 : 100 },
    { name: '~100M', m: await ensureGeneratedModel({ ...PRESETS['100m'], seed: 1 }, dir, 'gpt-100m', log), tokens: opts.quick ? 16 : 48, aggTokens: opts.quick ? 8 : 24 }
  ]
  const bw = await memoryBandwidth()
  log(`memory bandwidth (copy, ${bw.threads} threads): ${(bw.bytesPerSecond / 1e9).toFixed(1)} GB/s`)
  const prompt = new ByteTokenizer().encode(PROMPT, { bos: true })
  const agent = await AgentProcess.start({ name: 'bench-infer' })
  const front = await AgentProcess.start({ name: 'bench-front', bootstrap: [agent.addr] })
  const result: InferenceResult = { bandwidth: bw.bytesPerSecond, threads: bw.threads, tokens: 0, models: [], provider: '' }
  try {
    for (const { name, m, tokens, aggTokens } of models) {
      const id = `bench-${m.md5.slice(0, 6)}`
      const block = await deploy(agent, componentSpec(m, `bench-${m.md5.slice(0, 6)}`, { contextLength: m.spec.maxPositions }), { id, component: `bench-${m.md5.slice(0, 6)}:${m.md5.slice(0, 8)}` })
      if (block.status !== 'ready') throw new Error(`block ${id}: ${block.error as string}`)
      result.provider = block.runtime.provider
      // the bare loop gets the thread count the agent chose for this block
      const bare = await BareLoop.start(m.path, prompt, block.runtime.threads)
      const fig: ModelFigures = { name, parameters: parameterCount(m.spec), weightBytes: m.sizeBytes, bareTps: [], apiTps: [], aggregate: [], threads: block.runtime.threads, viaPeerTps: [] }
      await until(async () => (await front.api('/v1/models')).body.data.some((x: { id: string }) => x.id === id), `${front.spec.name} to route ${id}`)
      await bare.round(8) // warm-up both paths
      await apiStream(agent, id, 8)
      const rounds = opts.quick ? 2 : 4
      for (let r = 0; r < rounds; r++) {
        fig.bareTps.push(await bare.round(tokens))
        fig.apiTps.push((await apiStream(agent, id, tokens)).tps)
        fig.viaPeerTps.push((await apiStream(front, id, tokens)).tps)
        log(`  ${name} round ${r + 1}: bare ${fig.bareTps.at(-1)?.toFixed(1)} tok/s, API ${fig.apiTps.at(-1)?.toFixed(1)} tok/s, via a peer ${fig.viaPeerTps.at(-1)?.toFixed(1)} tok/s`)
      }
      bare.stop()
      for (const streams of [1, 4, 8]) {
        const tps = await aggregate(agent, id, streams, aggTokens)
        fig.aggregate.push({ streams, tokensPerSecond: tps })
        log(`  ${name} ${streams} stream(s): ${tps.toFixed(1)} tok/s in all`)
      }
      result.models.push(fig)
      result.tokens = tokens
    }
  } finally {
    await stopAll([agent, front])
  }
  return result
}

export function inferenceMarkdown (r: InferenceResult): string {
  const rows = r.models.map(f => {
    const bare = median(f.bareTps)
    const api = median(f.apiTps)
    const limit = r.bandwidth / f.weightBytes
    const via = median(f.viaPeerTps)
    return `| ${f.name} | ${(f.parameters / 1e6).toFixed(1)}M / ${(f.weightBytes / 2 ** 20).toFixed(0)} MiB | ${f.threads === 0 ? 'all' : f.threads} | ${bare.toFixed(1)} | ${api.toFixed(1)} | **${(api / bare).toFixed(3)}** | ${via.toFixed(1)} (**${(via / api).toFixed(2)}**) | ${limit.toFixed(1)} | **${(api / limit).toFixed(2)}** | ${f.aggregate.map(a => a.tokensPerSecond.toFixed(0)).join(' / ')} |`
  })
  return [
    `One agent process on this machine, execution provider \`${r.provider}\`, greedy decoding. ` +
    'ORT threads: what the agent chose for the block (autoThreads: on ≤ 4 cores a model under 256 MiB gets cores − 1, leaving a core to HTTP; otherwise all cores); the bare loop uses the same. ' +
    '"Bare" is a plain onnxruntime-node loop (same model, same session options, same tokens) in a worker thread of a process of its own, as the agent runs models; "API" is a streamed `/v1/completions` through a real agent (HTTP, worker thread, SSE), timed at the client from the first to the last token; rounds alternate between the two and the medians are shown. ' +
    `Memory bandwidth measured in the same run: ${(r.bandwidth / 1e9).toFixed(1)} GB/s (memcpy on ${r.threads} threads, read + write); the limit is that ÷ weight bytes, since each decoded token reads every weight once. ` +
    '"Via a peer": the same stream requested from a second agent process, which routes it to the first through the libp2p tunnel (both on this machine). ' +
    'Aggregate: N concurrent streamed requests, total completion tokens ÷ wall time (prefill included).',
    '',
    '| model | parameters / weights | ORT threads | bare ORT tok/s | API tok/s | API ÷ bare | via a peer tok/s (÷ API) | bandwidth limit tok/s | API ÷ limit | aggregate tok/s, 1 / 4 / 8 streams |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows
  ].join('\n')
}
