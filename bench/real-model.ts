/**
 * Real models, Blockmesh vs llama.cpp, side by side in one run on the same machine with the same threads:
 * the same GGUF file served by a real agent process (converted to ONNX, run by onnxruntime-node in a
 * worker thread of the agent) and by llama-cpp-python's server (bench/llamacpp.ts). Both are asked the
 * same raw prompts on /v1/completions at temperature 0, and timed at the client:
 *  - single-stream decode tokens/s (first to last streamed token), rounds alternating the two systems;
 *  - aggregate tokens/s with 1, 4 and 8 concurrent streams (total completion tokens ÷ wall time);
 *  - time to first token for a ~512-token prompt (a different first word each round, so no prefix is reused);
 *  - resident memory (VmRSS) of the agent process and of the llama.cpp server process after warm-up;
 *  - decode tokens/s ÷ the memory-bandwidth limit (bandwidth measured in this run ÷ weight bytes).
 */
import { existsSync, mkdirSync, readFileSync, statSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { availableParallelism, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { AgentProcess, stopAll, tempDir, until } from '../test/helpers/agents.ts'
import { KNOWN_MODELS, cachedWeightPath } from '../agent/model/known-models.ts'
import { loadTokenizerBundle } from '../agent/model/tokenizers/bundle.ts'
import type { TextTokenizer } from '../agent/model/tokenizer.ts'
import { memoryBandwidth } from './membw.ts'
import { median } from './stats.ts'
import { LlamaServer, findLlamaPython, killTrackedChildren, trackChild } from './llamacpp.ts'
import { ndjsonLines } from '../agent/cli/client.ts'

const CORPUS = readFileSync(fileURLToPath(new URL('../agent/model/corpus.txt', import.meta.url)), 'utf8')
/** converted models kept between runs (the conversion is cached by GGUF digest and converter version) */
const MODEL_CACHE = fileURLToPath(new URL('../.blockmesh/bench-real-models', import.meta.url))
/** the decode prompt: the corpus's first two sentences, continued freely */
const DECODE_PROMPT = CORPUS.split(/(?<=\.)\s+/).slice(0, 2).join(' ')
const LONG_PROMPT_TOKENS = 512
const CONTEXT = 2048
const STREAMS = [1, 4, 8]

type System = 'Blockmesh' | 'llama.cpp'

interface Target {
  system: System
  url: string
  model: string
  headers: Record<string, string>
  /** fields only this server needs */
  extra: Record<string, unknown>
  pid: number
}

interface Rss { rss: number, hwm: number, anon: number, file: number }

export interface SystemFigures {
  decodeTps: number[]
  aggregate: Array<{ streams: number, tps: number[] }>
  ttftMs: number[]
  /** prompt tokens of the long prompt, as the server counted them */
  longPromptTokens: number | null
  /** completion tokens of one decode request (non-streamed, same prompt and max_tokens) */
  completionTokens: number
  /** the agent before the block loaded (Blockmesh only) */
  rssBefore: Rss | null
  rss: Rss
  /** VmHWM at the end of the model's run */
  peak: number
  weightBytes: number
  weightsWhat: string
  threads: number
}

export interface ModelResult {
  id: string
  label: string
  gguf: string
  skipped?: string
  quantization?: string
  parameters?: number
  provider?: string
  blockmesh?: SystemFigures
  llama?: SystemFigures
  llamaError?: string
  /** where the two greedy outputs of the decode request part, in characters (null: identical) */
  divergeAt?: number | null
  decodeText?: string
}

export interface RealResult {
  quick: boolean
  threads: number
  bandwidth: number
  bandwidthThreads: number
  decodeTokens: number
  aggTokens: number
  rounds: number
  aggRounds: number
  llama: { python: string, version: string, flags: string[] } | { reason: string }
  load: { start: number[], end: number[] }
  models: ModelResult[]
}

function readRss (pid: number): Rss {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
  return { rss: kb('VmRSS'), hwm: kb('VmHWM'), anon: kb('RssAnon'), file: kb('RssFile') }
}

const mib = (b: number): string => (b / 2 ** 20).toFixed(0)

interface StreamOut { ttftMs: number, first: number, last: number, events: number, usage: { prompt: number, completion: number } | null, text: string }

/** One streamed completion; the same light client for both servers (one JSON parse per event). */
async function stream (t: Target, prompt: string, maxTokens: number): Promise<StreamOut> {
  const t0 = performance.now()
  const res = await fetch(`${t.url}/v1/completions`, {
    method: 'POST',
    headers: { ...t.headers, 'content-type': 'application/json' },
    body: JSON.stringify({ model: t.model, prompt, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true }, ...t.extra })
  })
  if (!res.ok || res.body == null) throw new Error(`${t.system}: completion failed: ${res.status} ${await res.text()}`)
  const out: StreamOut = { ttftMs: NaN, first: 0, last: 0, events: 0, usage: null, text: '' }
  let buf = ''
  const decoder = new TextDecoder()
  for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(part, { stream: true }).replace(/\r/g, '')
    let i: number
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, i)
      buf = buf.slice(i + 2)
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue
        const data = line.slice(5).trim()
        if (data === '[DONE]' || data === '') continue
        const now = performance.now()
        const j = JSON.parse(data) as { choices?: Array<{ text?: string }>, usage?: { prompt_tokens: number, completion_tokens: number } | null }
        if (j.usage != null) out.usage = { prompt: j.usage.prompt_tokens, completion: j.usage.completion_tokens }
        const text = j.choices?.[0]?.text
        if (text != null && text !== '') {
          if (out.first === 0) { out.first = now; out.ttftMs = now - t0 }
          out.last = now
          out.events++
          out.text += text
        }
      }
    }
  }
  return out
}

async function complete (t: Target, prompt: string, maxTokens: number): Promise<{ text: string, prompt: number, completion: number }> {
  const res = await fetch(`${t.url}/v1/completions`, {
    method: 'POST',
    headers: { ...t.headers, 'content-type': 'application/json' },
    body: JSON.stringify({ model: t.model, prompt, max_tokens: maxTokens, temperature: 0, ...t.extra })
  })
  const body = await res.json() as { choices: Array<{ text: string }>, usage: { prompt_tokens: number, completion_tokens: number } }
  if (!res.ok) throw new Error(`${t.system}: completion failed: ${res.status} ${JSON.stringify(body)}`)
  return { text: body.choices[0].text, prompt: body.usage.prompt_tokens, completion: body.usage.completion_tokens }
}

/** Completion tokens of a streamed request: the server's usage when it sends one, else the count of the same (greedy, deterministic) request non-streamed. */
function tokensOf (s: StreamOut, known: number): number {
  return s.usage?.completion ?? known
}

function decodeTps (s: StreamOut, known: number): number {
  return (tokensOf(s, known) - 1) / ((s.last - s.first) / 1000)
}

async function aggregate (t: Target, streams: number, n: number, known: number): Promise<number> {
  const t0 = performance.now()
  const outs = await Promise.all(Array.from({ length: streams }, async () => await stream(t, DECODE_PROMPT, n)))
  const wall = (performance.now() - t0) / 1000
  return outs.reduce((a, s) => a + tokensOf(s, known), 0) / wall
}

/** A prompt of about `target` tokens (BOS included) from the corpus, opened by a marker that differs per round. */
function longPrompt (tok: TextTokenizer, target: number): (round: number) => string {
  let words = CORPUS.split(/\s+/).filter(w => w !== '')
  while (tok.encode(words.join(' '), { bos: true }).length < target + 16) words = [...words, ...words]
  const make = (w: number, round: number): string => `Story ${round % 10}. ${words.slice(0, w).join(' ')}`
  let lo = 1
  let hi = words.length
  while (lo < hi) { // the most words that stay within the target
    const mid = Math.ceil((lo + hi) / 2)
    if (tok.encode(make(mid, 1), { bos: true }).length <= target) lo = mid
    else hi = mid - 1
  }
  return round => make(lo, round)
}

/** Where two texts part (null: identical). */
function divergence (a: string, b: string): number | null {
  if (a === b) return null
  let i = 0
  while (i < a.length && i < b.length && a[i] === b[i]) i++
  return i
}

async function startAgent (name: string): Promise<AgentProcess> {
  mkdirSync(MODEL_CACHE, { recursive: true })
  const dir = tempDir(`bm-${name}-`)
  symlinkSync(MODEL_CACHE, join(dir, 'models'), 'dir')
  const a = new AgentProcess({ name, dir })
  try {
    await a.launch()
  } finally {
    if (a.child != null) trackChild(a.child)
  }
  return a
}

/** POST /api/models with progress lines (a first conversion can take minutes; the lines keep the request alive). */
export async function addModel (agent: AgentProcess, source: string, name: string, weights: string, log: (s: string) => void): Promise<{ uri: string, spec: any, cached: boolean }> {
  const res = await fetch(`${agent.url}/api/models`, {
    method: 'POST',
    headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json', accept: 'application/x-ndjson' },
    body: JSON.stringify({ source, name, contextLength: CONTEXT, weights })
  })
  if (!res.ok || res.body == null) throw new Error(`model add: ${res.status} ${await res.text()}`)
  let lastPhase = ''
  for await (const e of ndjsonLines<any>(res.body as unknown as AsyncIterable<Uint8Array>)) {
    if (e.type === 'error') throw new Error(`model add: ${e.error.code as string}: ${e.error.message as string}`)
    if (e.type === 'done') return { uri: e.component.uri, spec: e.component.spec, cached: e.cached }
    if (e.type === 'progress' && e.progress.phase !== lastPhase) { lastPhase = e.progress.phase; log(`  converting: ${lastPhase}…`) }
  }
  throw new Error('model add: the answer ended without a result')
}

async function runModel (id: 'smollm2' | 'gemma3', label: string, opts: { weights: string, quick: boolean, threads: number, python: string | null, decodeTokens: number, aggTokens: number, rounds: number, aggRounds: number, log: (s: string) => void }): Promise<ModelResult> {
  const { log, threads } = opts
  const gguf = cachedWeightPath(id)
  const result: ModelResult = { id, label, gguf }
  if (!existsSync(gguf)) {
    result.skipped = `the GGUF ${gguf} is not on this machine (fetch it with: bash scripts/fetch-weights.sh)`
    log(`  ${label}: skipped: ${result.skipped}`)
    return result
  }
  const ggufBytes = statSync(gguf).size
  let agent: AgentProcess | undefined
  let llama: LlamaServer | undefined
  try {
    // Blockmesh: an agent process, the model added (converted once, then cached), a block with T threads
    agent = await startAgent(`bench-real-${id}`)
    let model = await addModel(agent, gguf, KNOWN_MODELS[id].name, opts.weights, log)
    if (!model.cached) {
      // the conversion ran in this agent and left its memory behind: measure a fresh agent instead
      log(`  ${label}: converted; restarting the agent so its memory figures exclude the conversion`)
      await stopAll([agent])
      agent = await startAgent(`bench-real-${id}`)
      model = await addModel(agent, gguf, KNOWN_MODELS[id].name, opts.weights, log)
    }
    const rssBefore = readRss(agent.child.pid as number)
    const blockId = `real-${id}`
    const created = await agent.api('/api/blocks', { method: 'POST', body: { id: blockId, component: model.uri, threads, maxBatch: 8 } })
    if (created.status !== 201) throw new Error(`block: ${created.status} ${JSON.stringify(created.body)}`)
    const block = await until(async () => {
      const r = await agent?.api(`/api/blocks/${blockId}`)
      return r?.body.status === 'ready' || r?.body.status === 'failed' ? r.body : undefined
    }, `block ${blockId} to load`, 15 * 60_000, 250)
    if (block.status !== 'ready') throw new Error(`block ${blockId}: ${block.error as string}`)
    result.provider = block.runtime.provider
    result.quantization = model.spec.modelInfo?.quantization
    result.parameters = model.spec.modelInfo?.parameters
    log(`  ${label}: Blockmesh block ready (${block.runtime.provider}, ${block.runtime.threads} threads, ONNX ${mib(block.runtime.modelBytes)} MiB, loaded in ${block.runtime.loadMs} ms)`)
    const bm: Target = { system: 'Blockmesh', url: agent.url, model: blockId, headers: { authorization: `Bearer ${agent.token}` }, extra: {}, pid: agent.child.pid as number }

    let ll: Target | undefined
    if (opts.python != null) {
      try {
        llama = await LlamaServer.start({ python: opts.python, model: gguf, threads, contextLength: CONTEXT })
        ll = { system: 'llama.cpp', url: llama.url, model: KNOWN_MODELS[id].name, headers: {}, extra: { repeat_penalty: 1.0 }, pid: llama.pid }
        log(`  ${label}: llama.cpp server ready (pid ${llama.pid})`)
      } catch (err) {
        result.llamaError = (err as Error).message
        log(`  ${label}: llama.cpp server failed: ${result.llamaError}`)
      }
    }
    const targets = ll != null ? [bm, ll] : [bm]
    // a round's order alternates, so neither system always runs first
    const ordered = (r: number): Target[] => r % 2 === 0 ? targets : [...targets].reverse()

    const tok = await loadTokenizerBundle(model.spec.tokenizer.url)
    const long = longPrompt(tok, LONG_PROMPT_TOKENS)

    // warm-up: a long prompt and a short decode each, then resident memory
    for (const t of targets) {
      await stream(t, long(0), 4)
      await stream(t, DECODE_PROMPT, 8)
    }
    const figs = new Map<System, SystemFigures>()
    for (const t of targets) {
      const rss = readRss(t.pid)
      const isBm = t.system === 'Blockmesh'
      figs.set(t.system, {
        decodeTps: [], aggregate: STREAMS.map(streams => ({ streams, tps: [] })), ttftMs: [], longPromptTokens: null, completionTokens: 0,
        rssBefore: isBm ? rssBefore : null, rss, peak: 0,
        weightBytes: isBm ? block.runtime.modelBytes : ggufBytes,
        weightsWhat: isBm ? 'ONNX file' : 'GGUF file',
        threads: isBm ? block.runtime.threads : threads
      })
      log(`  ${label}: ${t.system} resident after warm-up ${mib(rss.rss)} MiB (anon ${mib(rss.anon)}, file ${mib(rss.file)})${isBm ? `; agent before the block ${mib(rssBefore.rss)} MiB` : ''}`)
    }
    const fig = (t: Target): SystemFigures => figs.get(t.system) as SystemFigures

    // the same request non-streamed: completion tokens (llama.cpp's stream carries no usage) and the greedy text
    const texts = new Map<System, string>()
    for (const t of targets) {
      const c = await complete(t, DECODE_PROMPT, opts.decodeTokens)
      fig(t).completionTokens = c.completion
      texts.set(t.system, c.text)
      log(`  ${label}: ${t.system} decode request: ${c.prompt} prompt + ${c.completion} completion tokens`)
    }
    result.decodeText = texts.get('Blockmesh')
    if (ll != null) {
      result.divergeAt = divergence(texts.get('Blockmesh') ?? '', texts.get('llama.cpp') ?? '')
      if (result.divergeAt != null) for (const t of targets) log(`  ${label}: ${t.system} greedy text: ${JSON.stringify(texts.get(t.system)?.slice(0, 160))}`)
    }

    for (let r = 0; r < opts.rounds; r++) {
      const line: string[] = []
      for (const t of ordered(r)) {
        const s = await stream(t, DECODE_PROMPT, opts.decodeTokens)
        if (s.usage == null && s.events !== fig(t).completionTokens) log(`  ${label}: ${t.system} streamed ${s.events} text events for ${fig(t).completionTokens} tokens (multi-byte tokens merged); counting tokens`)
        fig(t).decodeTps.push(decodeTps(s, fig(t).completionTokens))
        line.push(`${t.system} ${fig(t).decodeTps.at(-1)?.toFixed(1)}`)
      }
      log(`  ${label} decode round ${r + 1}: ${line.join(', ')} tok/s`)
    }

    for (let r = 0; r < opts.rounds; r++) {
      const line: string[] = []
      for (const t of ordered(r)) {
        const s = await stream(t, long(r + 1), 2)
        fig(t).ttftMs.push(s.ttftMs)
        if (s.usage != null) fig(t).longPromptTokens = s.usage.prompt
        line.push(`${t.system} ${s.ttftMs.toFixed(0)}`)
      }
      log(`  ${label} time to first token, round ${r + 1}: ${line.join(', ')} ms`)
    }
    for (const t of targets) {
      if (fig(t).longPromptTokens == null) fig(t).longPromptTokens = (await complete(t, long(opts.rounds), 1)).prompt
    }
    log(`  ${label}: long prompt ${targets.map(t => `${t.system} ${fig(t).longPromptTokens ?? '?'}`).join(', ')} tokens`)

    for (let r = 0; r < opts.aggRounds; r++) {
      for (const [k, streams] of STREAMS.entries()) {
        const line: string[] = []
        for (const t of ordered(r + k)) {
          const tps = await aggregate(t, streams, opts.aggTokens, fig(t).completionTokens)
          fig(t).aggregate[k].tps.push(tps)
          line.push(`${t.system} ${tps.toFixed(1)}`)
        }
        log(`  ${label} ${streams} stream(s), round ${r + 1}: ${line.join(', ')} tok/s in all`)
      }
    }
    for (const t of targets) fig(t).peak = readRss(t.pid).hwm
    result.blockmesh = figs.get('Blockmesh')
    result.llama = figs.get('llama.cpp')
  } finally {
    await llama?.stop()
    await stopAll([agent])
  }
  return result
}

export async function runRealModelBench (opts: { quick: boolean, log: (s: string) => void }): Promise<RealResult> {
  const { log, quick } = opts
  const onSignal = (): void => { killTrackedChildren(); process.exit(130) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    // same threads for both: the core count (BENCH_REAL_THREADS overrides, for both)
    const threads = Number(process.env.BENCH_REAL_THREADS ?? '') > 0 ? Number(process.env.BENCH_REAL_THREADS) : availableParallelism()
    const load = { start: loadavg(), end: [] as number[] }
    const found = await findLlamaPython(log)
    const llamaInfo: RealResult['llama'] = found.python != null
      ? { python: found.python, version: found.version, flags: LlamaServer.flags({ threads, contextLength: CONTEXT }) }
      : { reason: found.reason }
    log(found.python != null ? `  llama.cpp: llama-cpp-python ${found.version} (${found.python})` : `  llama.cpp: unavailable: ${found.reason}`)
    const bw = await memoryBandwidth()
    log(`  memory bandwidth (copy, ${bw.threads} threads): ${(bw.bytesPerSecond / 1e9).toFixed(1)} GB/s`)
    const p = { quick, threads, python: found.python, decodeTokens: quick ? 32 : 128, aggTokens: quick ? 32 : 128, rounds: quick ? 2 : 5, aggRounds: quick ? 1 : 3, log }
    const result: RealResult = {
      quick, threads, bandwidth: bw.bytesPerSecond, bandwidthThreads: bw.threads, decodeTokens: p.decodeTokens, aggTokens: p.aggTokens,
      rounds: p.rounds, aggRounds: p.aggRounds, llama: llamaInfo, load, models: []
    }
    // each model under each conversion mode, llama.cpp measured beside each (BENCH_REAL_WEIGHTS=q8,int8 by default)
    const modes = (process.env.BENCH_REAL_WEIGHTS ?? 'q8,int8').split(',').map(x => x.trim()).filter(Boolean)
    for (const [id, name] of [['smollm2', 'SmolLM2-135M-Instruct Q4_1'], ['gemma3', 'Gemma 3 270M Q4_K_M']] as const) for (const weights of modes) {
      const label = `${name}, Blockmesh \`--weights ${weights}\``
      log(`  ${label}`)
      try {
        result.models.push(await runModel(id, label, { ...p, weights }))
      } catch (err) {
        log(`  ${label}: failed: ${(err as Error).stack ?? String(err)}`)
        result.models.push({ id, label, gguf: cachedWeightPath(id), skipped: `the run failed: ${(err as Error).message}` })
      }
    }
    load.end = loadavg()
    return result
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    killTrackedChildren()
  }
}

const f1 = (x: number): string => Number.isFinite(x) ? x.toFixed(1) : 'n/a'
const f2 = (x: number): string => Number.isFinite(x) ? x.toFixed(2) : 'n/a'

function modelMarkdown (m: ModelResult, r: RealResult): string {
  const head = `### ${m.label}`
  if (m.skipped != null || m.blockmesh == null) return `${head}\n\nSkipped: ${m.skipped ?? 'no figures'}.`
  const b = m.blockmesh
  const l = m.llama
  const rows: string[] = []
  const row = (what: string, bv: string, lv: string, ratio: string, goal = ''): void => { rows.push(`| ${what} | ${bv} | ${lv} | ${ratio} | ${goal} |`) }
  const ratio = (x: number, y: number | undefined, digits = 2): string => y == null || !Number.isFinite(x / y) ? '—' : `**${(x / y).toFixed(digits)}**`
  const goal = (x: number, y: number | undefined, min: number): string => y == null || !Number.isFinite(x / y) ? `≥ ${min.toFixed(1)}: not measured` : `≥ ${min.toFixed(1)}: ${x / y >= min ? 'met' : '**not met**'}`
  const bDec = median(b.decodeTps)
  const lDec = l != null ? median(l.decodeTps) : undefined
  row(`single-stream decode tok/s (${r.decodeTokens} tokens, median of ${b.decodeTps.length})`, f1(bDec), lDec != null ? f1(lDec) : '—', ratio(bDec, lDec), goal(bDec, lDec, 0.8))
  for (const [k, a] of b.aggregate.entries()) {
    const bv = median(a.tps)
    const lv = l != null ? median(l.aggregate[k].tps) : undefined
    row(`aggregate tok/s, ${a.streams} stream${a.streams > 1 ? 's' : ''} (median of ${a.tps.length})`, f1(bv), lv != null ? f1(lv) : '—', ratio(bv, lv), a.streams === 8 ? goal(bv, lv, 1.0) : '')
  }
  const bT = median(b.ttftMs)
  const lT = l != null ? median(l.ttftMs) : undefined
  row(`time to first token, ~${LONG_PROMPT_TOKENS}-token prompt, ms (median of ${b.ttftMs.length}; lower is better)`, `${bT.toFixed(0)} (${b.longPromptTokens ?? '?'} prompt tokens)`, l != null && lT != null ? `${lT.toFixed(0)} (${l.longPromptTokens ?? '?'} prompt tokens)` : '—', ratio(bT, lT), '')
  row('resident memory after warm-up, MiB (VmRSS; lower is better)', `${mib(b.rss.rss)} (agent before the block: ${b.rssBefore != null ? mib(b.rssBefore.rss) : '?'})`, l != null ? mib(l.rss.rss) : '—', ratio(b.rss.rss, l?.rss.rss), '')
  row('peak resident memory over the run, MiB (VmHWM)', mib(b.peak), l != null ? mib(l.peak) : '—', ratio(b.peak, l?.peak), '')
  const bLimit = r.bandwidth / b.weightBytes
  const lLimit = l != null ? r.bandwidth / l.weightBytes : undefined
  row('weights read per token (proxy), MiB', `${mib(b.weightBytes)} (${b.weightsWhat})`, l != null ? `${mib(l.weightBytes)} (${l.weightsWhat})` : '—', ratio(b.weightBytes, l?.weightBytes), '')
  row('bandwidth limit tok/s (bandwidth ÷ weight bytes)', f1(bLimit), lLimit != null ? f1(lLimit) : '—', '', '')
  row('decode tok/s ÷ bandwidth limit', `**${f2(bDec / bLimit)}**`, lDec != null && lLimit != null ? `**${f2(lDec / lLimit)}**` : '—', '', '')
  const notes: string[] = []
  notes.push(`${m.parameters != null ? `${(m.parameters / 1e6).toFixed(0)}M parameters, ` : ''}${m.quantization ?? ''} GGUF \`${m.gguf.replace(/^.*\//, '')}\`; Blockmesh execution provider \`${m.provider ?? '?'}\`, ${b.threads} ORT threads${l != null ? `; llama.cpp ${l.threads} threads` : ''}.`)
  notes.push(`Completion tokens of the decode request (from \`usage\`, non-streamed): Blockmesh ${b.completionTokens}${l != null ? `, llama.cpp ${l.completionTokens}` : ''}` +
    (l != null ? `; the greedy outputs ${m.divergeAt == null ? 'are identical' : `part ${m.divergeAt === 0 ? 'from the first token' : `after ${m.divergeAt} characters`} (a near tie between two tokens can flip greedy decoding; what matters here is that both generate the same number of tokens)`}.` : '.'))
  if (bDec / bLimit > 1 || (lDec != null && lLimit != null && lDec / lLimit > 1)) {
    notes.push('A ratio to the bandwidth limit above 1 means this run\'s bandwidth figure understates what decoding reached: it is memcpy\'s (read + write), reads alone stream faster, and a busy machine measures it low.')
  }
  if (m.llamaError != null) notes.push(`llama.cpp could not be measured: ${m.llamaError}`)
  return `${head}\n\n${notes.join(' ')}\n\n| measure | Blockmesh | llama.cpp | Blockmesh ÷ llama.cpp | goal |\n| --- | ---: | ---: | ---: | --- |\n${rows.join('\n')}`
}

export function realModelMarkdown (r: RealResult): string {
  const llama = 'reason' in r.llama
    ? `**llama.cpp is missing from this run**: ${r.llama.reason}. Blockmesh figures alone.`
    : `llama.cpp: llama-cpp-python ${r.llama.version}'s server (\`python -m llama_cpp.server ${r.llama.flags.join(' ')}\`), requests with \`repeat_penalty: 1.0\`; ` +
      '`logits_all False` keeps it computing logits for the last position only, as Blockmesh does. ' +
      'Its server runs one completion at a time (one llama context behind a lock; it has no parallel slots), and with `interrupt_requests False` a request that arrives while another streams waits for it instead of cutting it short: ' +
      'so its 4- and 8-stream aggregates are concurrent requests queued and served one after another — its real aggregate throughput, measured the same way as Blockmesh\'s, which decodes up to 8 sequences in one batched step. (llama.cpp\'s own C++ `llama-server` has parallel slots with continuous batching; it is not what is measured here.) ' +
      'llama-cpp-python also reuses the KV cache of a prompt prefix it saw in the previous request, so in the aggregate runs (one prompt, repeated; the decode figure excludes prefill anyway) it skips nearly all of the short prompt\'s prefill, which Blockmesh does each time; the time-to-first-token prompts differ near their start, so there it prefills (nearly) in full.'
  return [
    `Both systems in one run on this machine (${availableParallelism()} cores), serving the same GGUF file, with the same threads: T = ${r.threads}${r.threads === availableParallelism() ? ' (the core count)' : ''} for Blockmesh's ONNX Runtime session (block \`threads: ${r.threads}\`) and for llama.cpp (\`n_threads\` and \`n_threads_batch\`). ` +
    'Blockmesh: a real agent process, the GGUF added with `POST /api/models` (converted to ONNX, context 2048, the ONNX size is shown) and a block loaded from it; the model runs in a worker thread of the agent. Each model is measured under two conversion modes, each beside its own llama.cpp run: `q8`, the default — every quantized tensor stays quantized, 4-bit ones computed exactly with float activations, 8-bit ones with int8 activations — and `int8`, where 4-bit ones are computed with int8 activations too (ORT\'s fastest kernels, as llama.cpp does with Q8_1 activations, though with a different rounding: its greedy outputs agree less with llama.cpp\'s, see docs/decisions.md). ' +
    llama,
    '',
    'Both are sent the same raw prompt on `/v1/completions` at temperature 0 (greedy), streamed, and timed at the client (one light client for both). ' +
    `Single-stream decode: ${r.decodeTokens} tokens from a two-sentence prompt, tokens/s from the first to the last streamed token, rounds alternating which system goes first, median shown. ` +
    `Aggregate: N concurrent streamed requests of ${r.aggTokens} tokens each, total completion tokens ÷ wall time (prefill included). ` +
    `Time to first token: a prompt from the story corpus cut to about ${LONG_PROMPT_TOKENS} tokens (the count each server reported is shown), with a different opening (\`Story N.\`) each round so llama.cpp cannot reuse a cached prefix; from sending the request to the first streamed token. ` +
    'Token counts are checked from `usage` (llama-cpp-python sends no usage when streaming; its count is that of the same greedy request non-streamed). ' +
    'Resident memory: VmRSS from /proc of the agent process (its worker thread holds the model) and of the llama.cpp server process, after warm-up; both map or read the weights, so file-backed pages count. ' +
    `Bandwidth limit: memory bandwidth measured in this run, ${(r.bandwidth / 1e9).toFixed(1)} GB/s (memcpy on ${r.bandwidthThreads} threads, read + write, bench/membw.ts), ÷ the bytes of weights read per token — for Blockmesh the ONNX file's size (a fair proxy: the file is almost all weights and each token reads nearly all of them — the tied LM head reads its whole table; the embedding table, a separate quantized copy, is read one row per token, and the rotary cos/sin tables in part, so the proxy overstates what is read), for llama.cpp the GGUF's. ` +
    'Ratios are Blockmesh ÷ llama.cpp (for time and memory, lower is better).' +
    (r.quick ? ' **Quick run** (`--quick`): fewer tokens and rounds.' : '') +
    ` Load average (1/5/15 min) at the start ${r.load.start.map(x => x.toFixed(2)).join(' / ')}, at the end ${r.load.end.map(x => x.toFixed(2)).join(' / ')}.`,
    '',
    ...r.models.flatMap(m => [modelMarkdown(m, r), ''])
  ].join('\n').trimEnd()
}
