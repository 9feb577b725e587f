/**
 * Load: 100 concurrent streamed chat requests sent to ONE agent of a 3-agent mesh, for
 *  - a block with 3 instances, one on each agent (the receiving agent serves its share and forwards
 *    the rest to the other two over libp2p), and
 *  - a 3-stage vDAG with one stage on each agent (all sequences share one pipeline stream per pair of peers).
 * Reports completed/errors, time to first token (p50/p99) and total completion tokens/s.
 * The client (streamChat, burst) is also what test/load.test.ts asserts with.
 */
import os from 'node:os'
import { AgentProcess, stopAll, until } from '../test/helpers/agents.ts'
import { componentSpec, deploy } from '../test/helpers/models.ts'
import { ensureGeneratedModel } from '../agent/model/cache.ts'
import type { CachedModel } from '../agent/model/cache.ts'
import { PRESETS, parameterCount } from '../agent/model/spec.ts'
import { percentile } from './stats.ts'
import { INSTANCE_HEADER } from '../agent/openai/infer-protocol.ts'
import { TUNNEL_MAX_STREAMS } from '../mesh/tunnel.ts'

/** One streamed chat completion as the client saw it. */
export interface ChatOutcome {
  /** HTTP status of the answer */
  status: number
  /** the instance that answered (x-blockmesh-instance) */
  instance: string | null
  /** ms from sending the request to the first content delta (NaN if none came) */
  ttftMs: number
  /** ms from sending the request to the end of the stream */
  totalMs: number
  /** content deltas received */
  deltas: number
  /** completion tokens from the usage chunk (0 without one) */
  tokens: number
  finishReason: string | null
  /** the stream ended with data: [DONE] */
  done: boolean
  /** an error event in the stream, a non-200 answer, or a broken connection */
  error: string | null
}

/** A streamed /v1/chat/completions through fetch, parsed event by event (every event is checked, nothing skipped). */
export async function streamChat (url: string, token: string, model: string, content: string, maxTokens: number): Promise<ChatOutcome> {
  const t0 = performance.now()
  const out: ChatOutcome = { status: 0, instance: null, ttftMs: NaN, totalMs: NaN, deltas: 0, tokens: 0, finishReason: null, done: false, error: null }
  try {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content }], max_tokens: maxTokens, temperature: 0.7, seed: 7, stream: true, stream_options: { include_usage: true } })
    })
    out.status = res.status
    out.instance = res.headers.get(INSTANCE_HEADER)
    if (res.status !== 200 || res.body == null) {
      out.error = `HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`
      return out
    }
    let buf = ''
    const dec = new TextDecoder()
    for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += dec.decode(part, { stream: true })
      let i: number
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, i)
        buf = buf.slice(i + 2)
        if (!event.startsWith('data: ')) continue
        const data = event.slice(6)
        if (data === '[DONE]') { out.done = true; continue }
        const chunk = JSON.parse(data)
        if (chunk.error != null) { out.error = `error event: ${JSON.stringify(chunk.error).slice(0, 300)}`; continue }
        if (chunk.usage != null) out.tokens = chunk.usage.completion_tokens
        const choice = chunk.choices?.[0]
        if (choice == null) continue
        if (typeof choice.delta?.content === 'string' && choice.delta.content !== '') {
          if (out.deltas === 0) out.ttftMs = performance.now() - t0
          out.deltas++
        }
        if (choice.finish_reason != null) out.finishReason = choice.finish_reason
      }
    }
    if (!out.done && out.error == null) out.error = 'the stream ended without [DONE]'
  } catch (err) {
    out.error = `request failed: ${(err as Error).message}`
  } finally {
    out.totalMs = performance.now() - t0
  }
  return out
}

export interface BurstResult {
  outcomes: ChatOutcome[]
  wallMs: number
  /** finished with [DONE], a finish_reason and no error */
  completed: number
  errors: string[]
}

/** `n` streamed chats sent at once to one agent; waits for all of them. */
export async function burst (agent: AgentProcess, model: string, n: number, maxTokens: number): Promise<BurstResult> {
  const t0 = performance.now()
  const outcomes = await Promise.all(Array.from({ length: n }, async (_, i) => await streamChat(agent.url, agent.token, model, `Request ${i}: tell me about the harbour.`, maxTokens)))
  const wallMs = performance.now() - t0
  const ok = (o: ChatOutcome): boolean => o.error == null && o.done && o.finishReason != null
  return { outcomes, wallMs, completed: outcomes.filter(ok).length, errors: outcomes.filter(o => !ok(o)).map(o => o.error ?? `no finish_reason (done: ${String(o.done)})`) }
}

/** Three agent processes in one mesh (the first is the bootstrap). */
export async function startMesh (prefix: string): Promise<AgentProcess[]> {
  const a = await AgentProcess.start({ name: `${prefix}-a` })
  const [b, c] = await Promise.all([AgentProcess.start({ name: `${prefix}-b`, bootstrap: [a.addr] }), AgentProcess.start({ name: `${prefix}-c`, bootstrap: [a.addr] })])
  await until(async () => (await a.peers()).length === 3 && (await b.peers()).length === 3 && (await c.peers()).length === 3, 'the mesh to form', 60_000)
  return [a, b, c]
}

/** A block of `model` with one instance on each of the three agents; resolves once every agent routes it to 3 ready instances. */
export async function deploySpread (agents: AgentProcess[], m: Pick<CachedModel, 'path' | 'md5' | 'spec'>, id: string, extra: Record<string, unknown> = {}): Promise<void> {
  const [a] = agents
  const block = await deploy(a, componentSpec(m, `${id}-c`, { contextLength: m.spec.maxPositions }), { id, component: `${id}-c:${m.md5.slice(0, 8)}`, minInstances: 3, maxInstances: 3, ...extra })
  if (block.status !== 'ready') throw new Error(`block ${id}: ${block.error as string}`)
  await until(async () => {
    const b = (await a.api(`/api/blocks/${id}`)).body
    return b.instances?.length === 3 && b.instances.every((i: { status: string }) => i.status === 'ready') && new Set(b.instances.map((i: { peerId: string }) => i.peerId)).size === 3
  }, `3 ready instances of ${id} on 3 agents`, 120_000, 250)
  for (const x of agents) await until(async () => (await x.api('/v1/models')).body.data.some((d: { id: string }) => d.id === id), `${x.spec.name} to serve ${id}`, 60_000)
}

/** Splits `m` into 3 stages with a real split task and deploys them as the vDAG `name`, one stage per agent; returns the route's agent names. */
export async function deployPipeline (agents: AgentProcess[], m: Pick<CachedModel, 'path'>, name: string, block: Record<string, unknown> = {}): Promise<string[]> {
  const [a] = agents
  const start = await a.api('/start_model_split_job', {
    method: 'POST',
    body: { task_data: { model_name: name, model_download_url: m.path, world_size: 3, model_split_config: { vdag_name: name, block } }, container_image: 'blockmesh/onnx-splitter', storage_size: '1Gi' }
  })
  if (start.status !== 201) throw new Error(`split: ${start.status} ${JSON.stringify(start.body)}`)
  const task = await until(async () => {
    const t = (await a.api(`/tasks/${start.body.task_id as string}`)).body.data
    return t.status === 'complete' || t.status === 'failed' ? t : undefined
  }, `the split task of ${name}`, 300_000, 250)
  if (task.status !== 'complete') throw new Error(`split of ${name}: ${task.error as string}`)
  const d = await a.api('/api/vdags/deploy', { method: 'POST', body: { task_id: task.task_id } })
  if (d.status !== 201) throw new Error(`deploy ${name}: ${d.status} ${JSON.stringify(d.body)}`)
  const v = await until(async () => {
    const r = (await a.api(`/api/vdags/${name}`)).body
    return r.ready === true && Array.isArray(r.route) ? r : undefined
  }, `vDAG ${name} to be ready`, 300_000, 250)
  for (const x of agents) await until(async () => (await x.api('/v1/models')).body.data.some((d: { id: string }) => d.id === name), `${x.spec.name} to serve ${name}`, 60_000)
  const names = new Map<string, string>(((await a.peers()) as Array<{ peerId: string, name: string }>).map(p => [p.peerId, p.name]))
  return (v.route as Array<{ peer: string }>).map(h => names.get(h.peer) ?? h.peer.slice(0, 8))
}

export interface LoadFigures {
  target: string
  placement: string
  requests: number
  completed: number
  errors: string[]
  ttftP50: number
  ttftP99: number
  tokens: number
  wallMs: number
}

export interface LoadResult { model: string, parameters: number, maxTokens: number, maxBatch: number, cores: number, runs: LoadFigures[], load1: number }

function figures (target: string, placement: string, r: BurstResult): LoadFigures {
  const ttft = r.outcomes.map(o => o.ttftMs).filter(Number.isFinite)
  return {
    target,
    placement,
    requests: r.outcomes.length,
    completed: r.completed,
    errors: r.errors,
    ttftP50: percentile(ttft, 50),
    ttftP99: percentile(ttft, 99),
    tokens: r.outcomes.reduce((s, o) => s + o.tokens, 0),
    wallMs: r.wallMs
  }
}

export async function runLoadBench (opts: { quick: boolean, log: (s: string) => void }): Promise<LoadResult> {
  const { log } = opts
  const requests = 100
  const maxTokens = 16
  const maxBatch = 8
  const m = await ensureGeneratedModel({ ...PRESETS.demo, seed: 1 }, '.blockmesh/bench-models', 'demo-gpt', log)
  const agents = await startMesh('load')
  const [a] = agents
  const result: LoadResult = { model: 'demo (5M)', parameters: parameterCount(m.spec), maxTokens, maxBatch, cores: os.availableParallelism(), runs: [], load1: 0 }
  try {
    await deploySpread(agents, m, 'load-spread', { maxBatch })
    log('  block load-spread: 3 instances on 3 agents')
    const route = await deployPipeline(agents, m, 'load-pipeline', { maxBatch })
    log(`  vDAG load-pipeline: ${route.join(' → ')}`)
    // warm-up: one request each
    for (const model of ['load-spread', 'load-pipeline']) await burst(a, model, 1, 4)
    result.load1 = os.loadavg()[0]
    const rounds = opts.quick ? 1 : 2
    for (const [target, model, placement] of [['block, 3 instances', 'load-spread', 'one instance on each agent'], ['vDAG, 3 stages', 'load-pipeline', route.join(' → ')]] as const) {
      for (let r = 0; r < rounds; r++) {
        const b = await burst(a, model, requests, maxTokens)
        const f = figures(target, placement, b)
        log(`  ${target}, round ${r + 1}: ${f.completed}/${f.requests} completed, TTFT p50 ${f.ttftP50.toFixed(0)} ms p99 ${f.ttftP99.toFixed(0)} ms, ${(f.tokens / (f.wallMs / 1000)).toFixed(1)} tok/s${f.errors.length > 0 ? `; first error: ${f.errors[0]}` : ''}`)
        // the last round is reported (the first warms every instance's batch)
        if (r === rounds - 1) result.runs.push(f)
      }
    }
  } finally {
    await stopAll(agents)
  }
  return result
}

export function loadMarkdown (r: LoadResult): string {
  const rows = r.runs.map(f => `| ${f.target} | ${f.placement} | ${f.completed} / ${f.requests} | ${f.errors.length} | ${f.ttftP50.toFixed(0)} | ${f.ttftP99.toFixed(0)} | ${f.tokens} | ${(f.tokens / (f.wallMs / 1000)).toFixed(1)} | ${(f.wallMs / 1000).toFixed(1)} |`)
  const errors = r.runs.flatMap(f => f.errors.slice(0, 3).map(e => `- ${f.target}: ${e}`))
  return [
    `Three agent processes on this machine (${r.cores} cores), the generated ${r.model} model (${(r.parameters / 1e6).toFixed(1)}M parameters), maxBatch ${r.maxBatch} per instance and per stage. ` +
    `${r.runs[0]?.requests ?? 100} streamed \`/v1/chat/completions\` (max_tokens ${r.maxTokens}, temperature 0.7, \`stream_options.include_usage\`) are sent at once to the first agent, which serves about a third of the block's requests itself and forwards the others to its peers over libp2p (one stream per request), and drives every vDAG sequence (round the ring of stages; all sequences between two peers share one stream). ` +
    `Before issue 13 the vDAG answered 64 of 100 (libp2p's default of 64 outbound streams per protocol and connection, with a stream per sequence per hop); since issue 14 the pipeline needs one stream per pair of peers, and the tunnel protocol takes ${TUNNEL_MAX_STREAMS} streams per connection each way, a dialer past that waiting for a stream to close (see docs/decisions.md, "Load limits", "Ring pipeline"). ` +
    'Completed: the stream ended with a finish_reason and `data: [DONE]` and carried no error event. TTFT: from sending the request to the first content delta, at the client (it includes waiting for a batch slot: with maxBatch 8, most requests queue). Tokens/s: completion tokens of all requests ÷ wall time of the burst. The second of two bursts is shown. ' +
    `1-minute load average of the machine before the bursts: ${r.load1.toFixed(2)}.`,
    '',
    '| served as | placement | completed | errors | TTFT p50 ms | TTFT p99 ms | tokens | tokens/s | wall s |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    ...(errors.length > 0 ? ['', 'Errors (first three per row):', '', ...errors] : [])
  ].join('\n')
}
