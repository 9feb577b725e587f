/**
 * Serving through a peer: what the hop costs a request (issue 14: "requests per second and p50/p99
 * latency for small completions through one agent, direct vs via a peer"). Two agent processes in
 * distinct clusters; agent A holds the blocks (a block policy keeps them in A's cluster), agent B holds
 * none and serves A's instances:
 *  - an onnx block (the generated tiny model): asked of A, served by its own instance; asked of B,
 *    served token by token over /blockmesh/generate/1.0.0 (B has the component, loads its tokenizer,
 *    and detokenizes and writes the answer itself);
 *  - an external block (the OpenAI fixture server, standing in for vLLM): asked of A, proxied to the
 *    fixture; asked of B, the request goes whole through the byte tunnel to A (/blockmesh/infer), which
 *    proxies it; and the fixture asked directly, as the floor.
 * Small non-streamed /v1/completions (max_tokens 4, temperature 0): one at a time (latency p50/p99), and
 * 16 at once (requests per second, latency p50/p99). Every answer is checked: HTTP 200, the completion
 * there, and x-blockmesh-served-by naming A.
 */
import os from 'node:os'
import { AgentProcess, stopAll, until } from '../test/helpers/agents.ts'
import { componentSpec, deploy } from '../test/helpers/models.ts'
import { startFixtureServer } from '../test/helpers/fixture.ts'
import { ensureGeneratedModel } from '../agent/model/cache.ts'
import { PRESETS, parameterCount } from '../agent/model/spec.ts'
import { SERVED_BY_HEADER } from '../agent/openai/infer-protocol.ts'
import { percentile } from './stats.ts'

export interface TunnelRow {
  block: string
  /** how the request is served */
  path: string
  /** one at a time: ms each */
  sequentialMs: number[]
  /** `concurrency` at once: ms each */
  concurrentMs: number[]
  /** `concurrency` at once: requests per second, one figure per round */
  rps: number[]
  /** failed or wrongly served answers (first few kept) */
  errors: string[]
  failures: number
}

export interface TunnelResult {
  model: string
  parameters: number
  maxTokens: number
  concurrency: number
  cores: number
  rows: TunnelRow[]
}

interface Target {
  block: string
  path: string
  url: string
  token: string | null
  model: string
  /** the peer id the answer must name (x-blockmesh-served-by), or null (the fixture names none) */
  servedBy: string | null
}

/** One non-streamed completion; resolves with its time in ms, or throws with what was wrong. */
async function complete (t: Target, prompt: string, maxTokens: number): Promise<number> {
  const t0 = performance.now()
  const res = await fetch(`${t.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(t.token != null ? { authorization: `Bearer ${t.token}` } : {}) },
    body: JSON.stringify({ model: t.model, prompt, max_tokens: maxTokens, temperature: 0 })
  })
  const text = await res.text()
  const ms = performance.now() - t0
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`)
  const body = JSON.parse(text) as { choices?: Array<{ text?: string }> }
  if (typeof body.choices?.[0]?.text !== 'string') throw new Error(`no completion text: ${text.slice(0, 200)}`)
  if (t.servedBy != null && res.headers.get(SERVED_BY_HEADER) !== t.servedBy) throw new Error(`served by ${res.headers.get(SERVED_BY_HEADER) ?? 'nobody named'}, not A`)
  return ms
}

async function sequential (t: Target, row: TunnelRow, n: number, maxTokens: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    try {
      row.sequentialMs.push(await complete(t, `Request ${i}: the harbour at dawn`, maxTokens))
    } catch (err) {
      row.failures++
      if (row.errors.length < 3) row.errors.push((err as Error).message)
    }
  }
}

async function concurrent (t: Target, row: TunnelRow, n: number, concurrency: number, maxTokens: number): Promise<void> {
  let next = 0
  const t0 = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    for (let i = next++; i < n; i = next++) {
      try {
        row.concurrentMs.push(await complete(t, `Request ${i}: the harbour at dawn`, maxTokens))
      } catch (err) {
        row.failures++
        if (row.errors.length < 3) row.errors.push((err as Error).message)
      }
    }
  }))
  row.rps.push(n / ((performance.now() - t0) / 1000))
}

export async function runTunnelBench (opts: { quick: boolean, log: (s: string) => void }): Promise<TunnelResult> {
  const { log } = opts
  const maxTokens = 4
  const concurrency = 16
  const rounds = opts.quick ? 2 : 3
  const seqN = opts.quick ? 60 : 200
  const concN = opts.quick ? 160 : 640
  const m = await ensureGeneratedModel({ ...PRESETS.tiny, seed: 1 }, '.blockmesh/bench-models', 'tiny-gpt', log)
  const fixture = await startFixtureServer()
  let a: AgentProcess | undefined
  let b: AgentProcess | undefined
  try {
    a = await AgentProcess.start({ name: 'tunnel-a', cluster: 'host' })
    b = await AgentProcess.start({ name: 'tunnel-b', cluster: 'edge', bootstrap: [a.addr] })
    const [A, B] = [a, b]
    await until(async () => (await A.peers()).length === 2 && (await B.peers()).length === 2, 'the mesh to form', 60_000)
    const onHost = { policy: { cluster: { names: ['host'] } } }
    const onnx = await deploy(A, componentSpec(m, 'tunnel-tiny'), { id: 'tunnel-tiny', component: `tunnel-tiny:${m.md5.slice(0, 8)}`, ...onHost })
    if (onnx.status !== 'ready') throw new Error(`block tunnel-tiny: ${onnx.error as string}`)
    const echo = await deploy(A, { name: 'tunnel-echo', version: '1', runtime: 'external', external: { url: fixture.url, model: 'fixture-model' } }, { id: 'tunnel-echo', component: 'tunnel-echo:1', ...onHost })
    if (echo.status !== 'ready') throw new Error(`block tunnel-echo: ${echo.error as string}`)
    await until(async () => {
      const ids = ((await B.api('/v1/models')).body.data as Array<{ id: string }>).map(x => x.id)
      return ids.includes('tunnel-tiny') && ids.includes('tunnel-echo')
    }, 'B to see both blocks', 60_000)
    log(`  blocks tunnel-tiny (onnx) and tunnel-echo (external) on ${A.spec.name}; ${B.spec.name} serves them through it`)

    const targets: Target[] = [
      { block: 'onnx (tiny)', path: 'A, its own instance', url: A.url, token: A.token, model: 'tunnel-tiny', servedBy: A.peerId },
      { block: 'onnx (tiny)', path: 'B → A, token by token (/blockmesh/generate/1.0.0)', url: B.url, token: B.token, model: 'tunnel-tiny', servedBy: A.peerId },
      { block: 'external (fixture)', path: 'the fixture server directly', url: fixture.url, token: null, model: 'fixture-model', servedBy: null },
      { block: 'external (fixture)', path: 'A, proxied to the fixture', url: A.url, token: A.token, model: 'tunnel-echo', servedBy: A.peerId },
      { block: 'external (fixture)', path: 'B → A, byte tunnel (/blockmesh/infer/1.0.0)', url: B.url, token: B.token, model: 'tunnel-echo', servedBy: A.peerId }
    ]
    const rows: TunnelRow[] = targets.map(t => ({ block: t.block, path: t.path, sequentialMs: [], concurrentMs: [], rps: [], errors: [], failures: 0 }))
    // warm-up (connections, JIT, the instance's first batches, B's component and tokenizer), not recorded
    for (const t of targets) {
      const scratch: TunnelRow = { ...rows[0], sequentialMs: [], concurrentMs: [], rps: [], errors: [], failures: 0 }
      await sequential(t, scratch, 20, maxTokens)
      await concurrent(t, scratch, 2 * concurrency, concurrency, maxTokens)
      if (scratch.failures > 0) throw new Error(`${t.block} via ${t.path}: ${scratch.errors[0]}`)
    }
    // interleaved rounds, so drifting machine load hits every path alike
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < targets.length; i++) {
        await sequential(targets[i], rows[i], Math.ceil(seqN / rounds), maxTokens)
        await concurrent(targets[i], rows[i], Math.ceil(concN / rounds), concurrency, maxTokens)
      }
      log(`  round ${r + 1}/${rounds}: ` + rows.map(x => `${x.path.split(',')[0]} p50 ${percentile(x.sequentialMs, 50).toFixed(2)} ms, ${x.rps.at(-1)!.toFixed(0)} req/s`).join('; '))
    }
    return { model: 'tiny', parameters: parameterCount(m.spec), maxTokens, concurrency, cores: os.availableParallelism(), rows }
  } finally {
    await stopAll([a, b])
    await fixture.stop()
  }
}

export function tunnelMarkdown (r: TunnelResult): string {
  const med = (xs: number[]): number => percentile(xs, 50)
  const base = new Map<string, TunnelRow>()
  for (const row of r.rows) if (row.path.startsWith('A,')) base.set(row.block, row)
  const lines = r.rows.map(row => {
    const a = base.get(row.block)
    const via = row.path.startsWith('B') && a != null
      ? `+${(med(row.sequentialMs) - med(a.sequentialMs)).toFixed(2)} ms, ${(med(row.rps) / med(a.rps)).toFixed(2)}×`
      : '—'
    return `| ${row.block} | ${row.path} | ${med(row.sequentialMs).toFixed(2)} | ${percentile(row.sequentialMs, 99).toFixed(2)} | ` +
      `${med(row.rps).toFixed(0)} | ${med(row.concurrentMs).toFixed(1)} | ${percentile(row.concurrentMs, 99).toFixed(1)} | ${via} | ${row.failures} |`
  })
  const errors = r.rows.flatMap(row => row.errors.map(e => `- ${row.block}, ${row.path}: ${e}`))
  return [
    `Two agent processes on this machine (${r.cores} cores), in distinct clusters; agent A holds the blocks (a block policy keeps them in its cluster), agent B holds none. ` +
    `Non-streamed \`/v1/completions\` (max_tokens ${r.maxTokens}, temperature 0), from one client process over HTTP keep-alive: ${r.rows[0]?.sequentialMs.length ?? 0} one at a time per path (latency), and bursts with ${r.concurrency} in flight (requests/s: requests ÷ wall time of the burst; latency of each), rounds interleaved across the paths. ` +
    `onnx: the generated tiny model (${(r.parameters / 1e3).toFixed(0)}k parameters, byte tokenizer), small enough that the path, not the model, dominates; B serves it token by token over /blockmesh/generate/1.0.0 (B has the component and loads its tokenizer, so it tokenizes, detokenizes and writes the answer; A's instance only generates token ids). ` +
    'external: the OpenAI fixture server (test/fixtures/openai-server.ts, standing in for vLLM) as an external instance on A; B, which cannot serve an external instance token by token, sends the request whole through the byte tunnel to A, which proxies it. ' +
    'Every answer is checked: HTTP 200, a completion, and x-blockmesh-served-by naming A. "Via a peer" compares B\'s row with A\'s own: added p50 latency one at a time, and requests/s as a ratio.',
    '',
    `| block | asked of, served by | one at a time: p50 ms | p99 ms | ${r.concurrency} in flight: req/s | p50 ms | p99 ms | via a peer | failed |`,
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |',
    ...lines,
    ...(errors.length > 0 ? ['', 'Errors (first three per path):', '', ...errors] : [])
  ].join('\n')
}
