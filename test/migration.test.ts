/**
 * Request migration (issue 13) with real agent processes: the host of the instance (or of the vDAG
 * stage) serving a completion is killed with SIGKILL mid-generation; the agent serving the client
 * resumes the request elsewhere and the client gets one uninterrupted answer, token for token the
 * answer of a run without failure (greedy). Beyond the limits the client gets a clear error.
 *
 * The kill lands mid-stream by construction: the test reads k tokens of a long greedy completion,
 * then kills the host named by x-blockmesh-served-by (plain requests: the host whose token counter
 * moved). Nothing here measures time.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { componentSpec, deploy, splitAndDeploy, tinyModel } from './helpers/models.ts'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS } from '../agent/model/spec.ts'

/** The `generated` count of the first log line of `agent` with message `msg` (how far the generation was when it moved). */
function generatedAt (agent: AgentProcess, msg: string): number {
  const line = agent.log().split('\n').find(l => l.includes(msg))
  assert.ok(line != null, `${agent.spec.name} logged "${msg}"`)
  return JSON.parse(line).generated
}

/** The data lines of an SSE response as they arrive: parsed JSON, or '[DONE]'. */
async function * sse (res: Response): AsyncGenerator<any> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  const dec = new TextDecoder()
  let buf = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buf += dec.decode(value, { stream: true })
    let i
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, i)
      buf = buf.slice(i + 2)
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue
        yield line === 'data: [DONE]' ? '[DONE]' : JSON.parse(line.slice(6))
      }
    }
  }
}

interface Streamed { text: string, done: boolean, error: any, finish: string | null, usage: any, servedBy: string | null, instance: string | null }

/**
 * Streams a chat completion from `via`; after `killAfter` content chunks calls `kill` with the
 * response's x-blockmesh-served-by (once), then reads the stream to its end.
 */
async function streamChat (via: AgentProcess, body: Record<string, unknown>, killAfter?: number, kill?: (servedBy: string) => Promise<void>): Promise<Streamed> {
  const res = await fetch(`${via.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${via.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } })
  })
  assert.equal(res.status, 200, await (res.status === 200 ? Promise.resolve('') : res.text()))
  const out: Streamed = { text: '', done: false, error: null, finish: null, usage: null, servedBy: res.headers.get('x-blockmesh-served-by'), instance: res.headers.get('x-blockmesh-instance') }
  let chunks = 0
  for await (const e of sse(res)) {
    if (e === '[DONE]') { out.done = true; continue }
    if (e.error != null) { out.error = e.error; continue }
    if (e.usage != null) out.usage = e.usage
    const c = e.choices?.[0]
    if (c == null) continue
    out.finish = c.finish_reason ?? out.finish
    const d = c.delta?.content ?? ''
    if (d === '') continue
    out.text += d
    if (++chunks === killAfter && kill != null) await kill(out.servedBy as string)
  }
  return out
}

async function chat (via: AgentProcess, body: Record<string, unknown>): Promise<any> {
  const r = await via.api('/v1/chat/completions', { method: 'POST', body })
  assert.equal(r.status, 200, JSON.stringify(r.body))
  return r.body
}

describe('a completion whose block instance dies mid-generation completes on another instance', () => {
  // a: serves the clients (resumes up to 3 times); e: a client agent that may not migrate at all;
  // b, c, d: the hosts (the block's policy keeps its instances in their cluster)
  let a: AgentProcess, e: AgentProcess, b: AgentProcess, c: AgentProcess, d: AgentProcess
  const hosts = (): AgentProcess[] => [b, c, d]
  const byPeer = (peer: string): AgentProcess => { const h = hosts().find(x => x.peerId === peer); assert.ok(h != null, `served by a host (${peer})`); return h }
  const model = 'tiny-mig'
  const ask = { model, messages: [{ role: 'user', content: 'Tell me about the harbour.' }], temperature: 0, max_tokens: 1500 }
  let reference: string

  before(async () => {
    a = await AgentProcess.start({ name: 'a', cluster: 'front' })
    ;[e, b, c, d] = await Promise.all([
      AgentProcess.start({ name: 'e', cluster: 'front', bootstrap: [a.addr], extra: ['--migration-max', '0'] }),
      AgentProcess.start({ name: 'b', cluster: 'back', bootstrap: [a.addr] }),
      AgentProcess.start({ name: 'c', cluster: 'back', bootstrap: [a.addr] }),
      AgentProcess.start({ name: 'd', cluster: 'back', bootstrap: [a.addr] })
    ])
    await until(async () => (await a.peers()).length === 5 && (await e.peers()).length === 5, 'the mesh to form')
    const m = tinyModel()
    const block = await deploy(a, componentSpec(m), { id: model, component: `tiny-gpt:${m.md5.slice(0, 8)}`, minInstances: 2, maxInstances: 2, policy: { cluster: { names: ['back'] } } })
    assert.equal(block.status, 'ready', block.error)
    await until(async () => (await a.api(`/api/blocks/${model}`)).body.instances.filter((i: any) => i.status === 'ready').length === 2, 'two ready instances')
    for (const x of [a, e]) await until(async () => (await x.api('/v1/models')).body.data.some((d: any) => d.id === model), `${x.spec.name} to serve ${model}`)
    reference = (await chat(a, ask)).choices[0].message.content
    assert.ok(reference.length > 1000, 'a long answer, so the kill lands mid-generation')
  })
  after(async () => { await stopAll([a, e, b, c, d]) })

  test('streamed: kill -9 the host after 20 tokens; the stream completes with [DONE] and the same text', async () => {
    const hostInstances = (await a.api(`/api/blocks/${model}`)).body.instances.map((i: any) => i.peerId)
    let victim: AgentProcess | undefined
    const got = await streamChat(a, ask, 20, async (servedBy) => {
      victim = byPeer(servedBy)
      assert.ok(hostInstances.includes(servedBy))
      await victim.stop('SIGKILL')
    })
    assert.ok(victim != null, 'a host was killed mid-stream')
    assert.equal(got.error, null, JSON.stringify(got.error))
    assert.equal(got.done, true)
    assert.equal(got.finish, 'length')
    assert.equal(got.usage?.completion_tokens, 1500)
    assert.equal(got.text, reference)
    assert.equal(await a.metric('blockmesh_request_migrations_total', { kind: 'instance', result: 'resumed' }), 1)
    assert.equal(await a.metric('blockmesh_request_migrations_total', { result: 'failed' }), 0)
    const at = generatedAt(a, 'request resumed on another instance')
    assert.ok(at >= 20 && at < 1500, `resumed mid-generation, after ${at} tokens`)
  })

  test('not streamed: kill -9 the host mid-generation; the answer (tokens and logprobs) is the failure-free one', async () => {
    // the owner re-placed the lost instance on the third host
    await until(async () => (await a.api(`/api/blocks/${model}`)).body.instances.filter((i: any) => i.status === 'ready').length === 2, 'the lost instance to be replaced', 90_000)
    const live = hosts().filter(h => h.child.exitCode == null && h.child.signalCode == null)
    assert.equal(live.length, 2)
    const req = { model, prompt: 'The boats came in', max_tokens: 1500, temperature: 0, logprobs: 1 }
    const ref = (await a.api('/v1/completions', { method: 'POST', body: req })).body
    const before = await Promise.all(live.map(async h => await h.metric('blockmesh_tokens_generated_total')))
    const answer = a.api('/v1/completions', { method: 'POST', body: req })
    // the host whose token counter moves is generating this request: kill it once it is 20 tokens in
    const victim = await until(async () => {
      const now = await Promise.all(live.map(async h => await h.metric('blockmesh_tokens_generated_total')))
      const i = now.findIndex((n, j) => n - before[j] >= 20)
      return i >= 0 ? live[i] : undefined
    }, 'a host to generate 20 tokens', 60_000, 20)
    await victim.stop('SIGKILL')
    const r = await answer
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.equal(r.body.choices[0].text, ref.choices[0].text)
    assert.equal(r.body.choices[0].finish_reason, 'length')
    assert.equal(r.body.usage.completion_tokens, 1500)
    const [lp, refLp] = [r.body.choices[0].logprobs, ref.choices[0].logprobs]
    assert.deepEqual(lp.tokens, refLp.tokens)
    lp.token_logprobs.forEach((x: number, i: number) => { assert.ok(Math.abs(x - refLp.token_logprobs[i]) < 1e-3, `token ${i}: ${x} vs ${refLp.token_logprobs[i] as number}`) })
    assert.equal(await a.metric('blockmesh_request_migrations_total', { kind: 'instance', result: 'resumed' }), 2)
  })

  test('over the migration limit (--migration-max 0) the client gets a clear error event instead of [DONE]', async () => {
    const live = hosts().filter(h => h.child.exitCode == null && h.child.signalCode == null)
    assert.equal(live.length, 1)
    // e has seen the killed hosts expire (else its first pick may be a dead one, which — with no migration allowed — fails at once)
    await until(async () => (await e.peers()).length === 3, 'e to see only a, e and the last host', 30_000)
    await until(async () => (await e.api('/v1/models')).body.data.some((d: any) => d.id === model), 'e to still serve the model')
    const got = await streamChat(e, ask, 20, async (servedBy) => { await byPeer(servedBy).stop('SIGKILL') })
    assert.equal(got.done, false)
    assert.equal(got.error?.code, 'migration_limit', JSON.stringify(got.error))
    assert.match(got.error.message, /already migrated 0 time/)
    assert.ok(got.text.length > 0 && reference.startsWith(got.text), `the tokens before the failure were streamed (${JSON.stringify(got.text.slice(0, 80))})`)
    assert.equal(await e.metric('blockmesh_request_migrations_total', { kind: 'instance', result: 'failed' }), 1)
  })
})

describe('a completion through a 3-stage vDAG whose stage dies mid-generation completes once the stage is re-placed', () => {
  let a: AgentProcess, b: AgentProcess, c: AgentProcess, d: AgentProcess, e: AgentProcess
  const dir = tempDir('bm-mig-vdag-')
  const m = generateModel({ ...PRESETS.tiny, layers: 3, maxPositions: 4096, seed: 17 }, join(dir, 'tiny3.onnx'))
  const vdag = 'tiny3-pipeline'

  before(async () => {
    a = await AgentProcess.start({ name: 'a', cluster: 'front' })
    ;[b, c, d] = await Promise.all(['b', 'c', 'd'].map(async name => await AgentProcess.start({ name, cluster: 'back', bootstrap: [a.addr] })))
    // E, like A, runs no stage, and drives the vDAG requests it gets itself
    e = await AgentProcess.start({ name: 'e', cluster: 'front', bootstrap: [a.addr], extra: ['--vdag-driver', 'here'] })
    await until(async () => (await a.peers()).length === 5, 'the mesh to form')
    await splitAndDeploy(a, { modelName: 'tiny3', modelPath: m.path, worldSize: 3, config: { block: { policy: { cluster: { names: ['back'] } } } } })
    await until(async () => (await a.api('/v1/models')).body.data.some((x: any) => x.id === vdag), 'the vDAG to be served', 90_000)
  })
  after(async () => { await stopAll([a, b, c, d, e]) })

  test('a request to an agent outside the pipeline is driven by the first stage\'s host, or with --vdag-driver here by the agent itself; the same text', async () => {
    const route = (await a.api(`/api/vdags/${vdag}`)).body.route as Array<{ peer: string, block: string }>
    assert.ok([b, c, d].some(x => x.peerId === route[0].peer), 'the first stage runs on a back agent')
    await until(async () => (await e.api('/v1/models')).body.data.some((x: any) => x.id === vdag), 'E to serve the vDAG', 60_000)
    const ask = { model: vdag, messages: [{ role: 'user', content: 'Where does the ferry go?' }], temperature: 0, max_tokens: 40 }
    const viaA = await streamChat(a, ask)
    const viaE = await streamChat(e, ask)
    assert.equal(viaA.servedBy, route[0].peer)
    // the host took the driving: A drove nothing itself
    for (const result of ['declined', 'resumed', 'failed']) assert.equal(await a.metric('blockmesh_request_migrations_total', { kind: 'driver', result }), 0, result)
    assert.equal(viaE.servedBy, e.peerId)
    assert.equal(viaA.error, null, JSON.stringify(viaA.error))
    assert.equal(viaA.usage?.completion_tokens, 40)
    assert.equal(viaE.text, viaA.text)
  })

  test('streamed: kill -9 the middle stage\'s host after 20 tokens; the stream completes with the failure-free text', async () => {
    const route = (await a.api(`/api/vdags/${vdag}`)).body.route as Array<{ peer: string, block: string }>
    assert.equal(route.length, 3)
    assert.equal(new Set(route.map(h => h.peer)).size, 3, 'one stage per host')
    const middle = [b, c, d].find(x => x.peerId === route[1].peer) as AgentProcess
    // the request to A is driven by the first stage's host (one link crossing fewer per token)
    const driver = [b, c, d].find(x => x.peerId === route[0].peer) as AgentProcess
    assert.ok(middle != null && driver != null)
    const ask = { model: vdag, messages: [{ role: 'user', content: 'Tell me about the harbour.' }], temperature: 0, max_tokens: 600 }
    const reference = (await chat(a, ask)).choices[0].message.content
    const got = await streamChat(a, ask, 20, async () => { await middle.stop('SIGKILL') })
    assert.equal(middle.child.signalCode, 'SIGKILL')
    assert.equal(got.servedBy, driver.peerId, 'driven by the first stage\'s host')
    assert.equal(got.error, null, JSON.stringify(got.error))
    assert.equal(got.done, true)
    assert.equal(got.usage?.completion_tokens, 600)
    assert.equal(got.text, reference)
    assert.equal(await driver.metric('blockmesh_request_migrations_total', { kind: 'stage', result: 'resumed' }), 1)
    assert.equal(await a.metric('blockmesh_request_migrations_total', { kind: 'driver', result: 'resumed' }), 0, 'the driver itself was not lost')
    // the stage now runs elsewhere
    const now = (await a.api(`/api/vdags/${vdag}`)).body.route as Array<{ peer: string, block: string }>
    assert.notEqual(now[1].peer, middle.peerId)
    const at = generatedAt(driver, 'vDAG step failed; waiting for a route')
    assert.ok(at >= 20 && at < 600, `resumed mid-generation, after ${at} tokens`)
    assert.match(driver.log(), /vDAG sequence resumed on a new route/)
  })

  test('streamed: kill -9 the first stage\'s host, which drives the request, after 20 tokens; the agent serving the client drives it on with the failure-free text', async () => {
    const route = (await a.api(`/api/vdags/${vdag}`)).body.route as Array<{ peer: string, block: string }>
    const driver = [b, c, d].find(x => x.peerId === route[0].peer && x.child.exitCode == null && x.child.signalCode == null) as AgentProcess
    assert.ok(driver != null, 'the first stage runs on a live back agent')
    const ask = { model: vdag, messages: [{ role: 'user', content: 'Tell me about the lighthouse keeper.' }], temperature: 0, max_tokens: 600 }
    const reference = (await chat(a, ask)).choices[0].message.content
    const got = await streamChat(a, ask, 20, async () => { await driver.stop('SIGKILL') })
    assert.equal(driver.child.signalCode, 'SIGKILL')
    assert.equal(got.servedBy, driver.peerId)
    assert.equal(got.error, null, JSON.stringify(got.error))
    assert.equal(got.done, true)
    assert.equal(got.usage?.completion_tokens, 600)
    assert.equal(got.text, reference)
    assert.equal(await a.metric('blockmesh_request_migrations_total', { kind: 'driver', result: 'resumed' }), 1)
    const at = generatedAt(a, 'driving the request here')
    assert.ok(at >= 20 && at < 600, `handed over mid-generation, after ${at} tokens`)
    // the first stage was re-placed, and A (which runs no stage) drove the rest through it
    const now = (await a.api(`/api/vdags/${vdag}`)).body.route as Array<{ peer: string, block: string }>
    assert.notEqual(now[0].peer, driver.peerId)
  })
})
