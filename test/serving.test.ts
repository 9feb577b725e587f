/**
 * The serving layer (issue 14): the inference tunnel is served by the OpenAI serving directly, never by a
 * request to the agent's own HTTP API. Agent A holds the blocks (a tiny onnx model and an external
 * system, the OpenAI fixture server in its own process); agent B has none and serves A's instances: the
 * external one through the byte tunnel, the onnx one token by token. A test libp2p node also tunnels
 * straight to A's onnx instance. A's HTTP request counter (blockmesh_http_requests_total) shows that none
 * of this reached A's /v1 routes, while every answer came back whole, streamed or not, naming A.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { componentSpec, deploy, tinyModel } from './helpers/models.ts'
import { MeshNode } from '../mesh/node.ts'
import { openTunnel } from '../mesh/tunnel.ts'
import { INFER_PROTOCOL } from '../agent/openai/infer-protocol.ts'
import { SseWriter } from '../agent/http/sse.ts'
import { TunnelSink } from '../agent/http/sink.ts'
import { CHAT, COMPLETIONS } from '../agent/serving/endpoints.ts'
import { OpenAIError } from '../agent/openai/errors.ts'
import { OpenAIServing } from '../agent/serving/openai-serving.ts'
import type { ServingDeps } from '../agent/serving/backend.ts'
import { AgentMetrics } from '../agent/metrics.ts'
import { createLogger } from '../agent/log.ts'
import { ByteTokenizer } from '../agent/model/tokenizer.ts'
import { ModelEngine } from '../agent/executor/engine.ts'
import type { GenerateParams } from '../agent/executor/engine.ts'

const FIXTURE = fileURLToPath(new URL('./fixtures/openai-server.ts', import.meta.url))
const SERVED_BY = 'x-blockmesh-served-by'
const INSTANCE = 'x-blockmesh-instance'

/** The OpenAI fixture server as its own process. */
async function startFixture (): Promise<{ url: string, child: ChildProcess }> {
  const child = spawn(process.execPath, [FIXTURE], { stdio: ['ignore', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve)
    child.once('exit', code => { reject(new Error(`fixture exited (${code}) before printing its URL`)) })
  })
  lines.close()
  return { url: (JSON.parse(first) as { url: string }).url, child }
}

/** SSE text → the data of each event (comments dropped), in order. */
function events (text: string): string[] {
  return text.split('\n\n').filter(e => e.trim() !== '').flatMap(e => e.split('\n').filter(l => l.startsWith('data: ')).map(l => l.slice(6)))
}

/** The text of a chat or completion answer, whole or streamed (the data events of a stream). */
function textOf (path: string, body: string, streamed: boolean): { text: string, model: string, finish: string | null } {
  if (!streamed) {
    const j = JSON.parse(body)
    return { text: path === CHAT.path ? j.choices[0].message.content : j.choices[0].text, model: j.model, finish: j.choices[0].finish_reason }
  }
  const data = events(body)
  assert.equal(data.at(-1), '[DONE]', `a stream ends with [DONE]: ${body.slice(-300)}`)
  const chunks = data.slice(0, -1).map(d => JSON.parse(d))
  let finish: string | null = null
  let text = ''
  for (const c of chunks) {
    assert.equal(c.error, undefined, JSON.stringify(c.error))
    for (const ch of c.choices) {
      text += path === CHAT.path ? (ch.delta?.content ?? '') : ch.text
      finish = ch.finish_reason ?? finish
    }
  }
  return { text, model: chunks[0].model, finish }
}

async function post (agent: AgentProcess, path: string, body: object): Promise<{ status: number, headers: Headers, text: string }> {
  const res = await fetch(agent.url + path, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${agent.token}` }, body: JSON.stringify(body) })
  return { status: res.status, headers: res.headers, text: await res.text() }
}

/** A's /v1 generation routes hit over HTTP, by route. */
async function v1Hits (agent: AgentProcess): Promise<number> {
  return await agent.metric('blockmesh_http_requests_total', { route: '/v1/chat/completions' }) + await agent.metric('blockmesh_http_requests_total', { route: '/v1/completions' })
}

const request = (path: string, model: string, content: string, over: object = {}): object => path === CHAT.path
  ? { model, messages: [{ role: 'user', content }], max_tokens: 12, temperature: 0, ...over }
  : { model, prompt: content, max_tokens: 12, temperature: 0, ...over }

describe('serving layer: tunnelled requests are served without the peer\'s HTTP API', () => {
  let a: AgentProcess, b: AgentProcess
  let fixture: { url: string, child: ChildProcess }
  let node: MeshNode | undefined
  const onnx = 'tiny'
  const external = 'echo'

  before(async () => {
    fixture = await startFixture()
    a = await AgentProcess.start({ name: 'serve-a', cluster: 'host' })
    b = await AgentProcess.start({ name: 'serve-b', cluster: 'edge', bootstrap: [a.addr] })
    await until(async () => (await a.peers()).length === 2 && (await b.peers()).length === 2, 'the mesh to form')
    const m = tinyModel()
    const onHost = { policy: { cluster: { names: ['host'] } } }
    const tiny = await deploy(a, componentSpec(m), { id: onnx, component: `tiny-gpt:${m.md5.slice(0, 8)}`, ...onHost })
    assert.equal(tiny.status, 'ready', tiny.error)
    const echo = await deploy(a, { name: 'echo', version: '1', runtime: 'external', external: { url: fixture.url, model: 'fixture-model' } }, { id: external, component: 'echo:1', ...onHost })
    assert.equal(echo.status, 'ready', echo.error)
    // B learns of A's instances by gossip
    await until(async () => {
      const ids = ((await b.api('/v1/models')).body.data as Array<{ id: string }>).map(x => x.id)
      return ids.includes(onnx) && ids.includes(external)
    }, 'B to see both models')
  })
  after(async () => {
    await node?.stop().catch(() => {})
    await stopAll([a, b])
    fixture?.child.kill('SIGTERM')
  })

  test('an external instance on A, asked through B: the tunnel, streamed and not, chat and completions; A\'s /v1 routes never hit', async () => {
    const before = await v1Hits(a)
    const servedHere = await a.metric('blockmesh_routed_requests_total', { target: 'local' })
    for (const path of [CHAT.path, COMPLETIONS.path]) {
      for (const stream of [false, true]) {
        const r = await post(b, path, request(path, external, 'the boats sail home', { stream }))
        assert.equal(r.status, 200, r.text)
        assert.equal(r.headers.get(SERVED_BY), a.peerId, 'served by A')
        assert.match(r.headers.get('content-type') ?? '', stream ? /^text\/event-stream/ : /^application\/json/)
        assert.ok((r.headers.get(INSTANCE) ?? '') !== '', 'the instance is named')
        const out = textOf(path, r.text, stream)
        assert.equal(out.text, 'echo: the boats sail home', `${path} stream=${String(stream)}`)
        assert.equal(out.model, external, 'the block id, not the upstream model name')
      }
    }
    assert.equal(await v1Hits(a), before, 'A served them without its HTTP API')
    assert.equal(await a.metric('blockmesh_routed_requests_total', { target: 'local' }) - servedHere, 4, 'A served all four itself (from the tunnel)')
  })

  test('an onnx instance on A, asked through B (token by token) and through a tunnel straight to A: the same greedy text; A\'s /v1 routes never hit', async () => {
    const before = await v1Hits(a)
    node = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await node.start()
    const dialer = node
    await until(async () => await dialer.libp2p.dial(multiaddr(a.addr), { signal: AbortSignal.timeout(5000) }).then(() => true, () => false), 'the test node to connect to A')
    const tunnel = async (path: string, body: object, headers: Record<string, string> = { 'content-type': 'application/json' }): Promise<{ status: number, headers: Record<string, string>, text: string }> => {
      const res = await openTunnel(dialer, a.peerId, INFER_PROTOCOL, { target: path, headers, body: new TextEncoder().encode(JSON.stringify(body)) }, { signal: AbortSignal.timeout(30_000) })
      let text = ''
      const dec = new TextDecoder()
      for await (const chunk of res.body) text += dec.decode(chunk, { stream: true })
      return { status: res.status, headers: res.headers, text: text + dec.decode() }
    }
    for (const path of [CHAT.path, COMPLETIONS.path]) {
      const viaB = await post(b, path, request(path, onnx, 'Where is the harbour?', { stream: false }))
      assert.equal(viaB.status, 200, viaB.text)
      assert.equal(viaB.headers.get(SERVED_BY), a.peerId)
      const want = textOf(path, viaB.text, false)
      assert.ok(want.text.length > 0)
      for (const stream of [false, true]) {
        const direct = await tunnel(path, request(path, onnx, 'Where is the harbour?', { stream, stream_options: stream ? { include_usage: true } : null }))
        assert.equal(direct.status, 200, direct.text)
        assert.match(direct.headers['content-type'] ?? '', stream ? /^text\/event-stream/ : /^application\/json/)
        assert.equal(direct.headers[SERVED_BY], a.peerId)
        const got = textOf(path, direct.text, stream)
        assert.deepEqual(got, want, `${path} stream=${String(stream)} through the tunnel`)
        if (stream) assert.equal(JSON.parse(events(direct.text).at(-2) as string).usage.completion_tokens, 12, 'include_usage')
      }
    }
    // the tunnel's own refusals, in OpenAI's shape: a path it does not carry, a body the schema refuses, a body that is not JSON
    const nowhere = await tunnel('/api/blocks', {})
    assert.equal(nowhere.status, 404)
    assert.equal(JSON.parse(nowhere.text).error.code, 'not_found')
    const bad = await tunnel(CHAT.path, { model: onnx, messages: 'nope' })
    assert.equal(bad.status, 400, bad.text)
    assert.equal(JSON.parse(bad.text).error.param, 'messages')
    const res = await openTunnel(dialer, a.peerId, INFER_PROTOCOL, { target: CHAT.path, headers: {}, body: new TextEncoder().encode('{not json') }, { signal: AbortSignal.timeout(30_000) })
    for await (const _ of res.body) { /* drain */ }
    assert.equal(res.status, 400)
    const unknown = await tunnel(CHAT.path, request(CHAT.path, 'no-such-model', 'hi'))
    assert.equal(unknown.status, 404)
    assert.equal(JSON.parse(unknown.text).error.code, 'model_not_found')
    assert.equal(await v1Hits(a), before, 'A served them without its HTTP API')
    assert.ok(await v1Hits(b) > 0, 'while B\'s counter does count')
  })
})

describe('serving layer units', () => {
  test('SseWriter on a TunnelSink: head at once, events in order, backpressure, end', async () => {
    const sink = new TunnelSink()
    const sse = new SseWriter(sink, { headers: { 'x-blockmesh-instance': 'i1' } })
    const head = await sink.head
    assert.equal(head.status, 200)
    assert.equal(head.headers['content-type'], 'text/event-stream; charset=utf-8')
    assert.equal(head.headers['x-blockmesh-instance'], 'i1')
    const big = 'x'.repeat(64 * 1024)
    // more than the sink buffers: send waits until the reader takes it
    const writing = (async () => { for (let i = 0; i < 4; i++) await sse.send({ i, big }); await sse.send('[DONE]'); sse.end() })()
    let text = ''
    for await (const chunk of sink) text += (chunk as Buffer).toString('utf8')
    await writing
    const data = events(text)
    assert.equal(data.length, 5)
    assert.deepEqual(data.slice(0, 4).map(d => JSON.parse(d).i), [0, 1, 2, 3])
    assert.equal(data[4], '[DONE]')
  })

  test('SseWriter.post drops a client that does not read, rather than buffering without bound', () => {
    const sink = new TunnelSink()
    const sse = new SseWriter(sink)
    let closed = false
    sse.onClose(() => { closed = true })
    assert.equal(sse.post({ a: 1 }, 'peers', 1024), true)
    assert.equal(sse.post({ big: 'y'.repeat(4096) }, 'peers', 1024), true)
    assert.equal(sse.post({ a: 2 }, 'peers', 1024), false, 'over the bound: dropped')
    assert.equal(sse.closed, true)
    return new Promise<void>(resolve => setImmediate(() => { assert.equal(closed, true); resolve() }))
  })

  test('a TunnelSink closed before any answer resolves its head as 499', async () => {
    const sink = new TunnelSink()
    sink.destroy()
    assert.equal((await sink.head).status, 499)
  })

  test('endpoints: the schemas refuse with OpenAIError 400 naming the field', () => {
    assert.throws(() => CHAT.parse({ model: 'm', messages: [] }), (err: unknown) => err instanceof OpenAIError && err.status === 400 && err.param === 'messages')
    assert.throws(() => CHAT.parse({ model: 'm', messages: [{ role: 'user', content: 'hi' }], top_logprobs: 2 }), (err: unknown) => err instanceof OpenAIError && err.param === 'top_logprobs')
    assert.throws(() => COMPLETIONS.parse({ model: 'm', prompt: ['a', 'b'] }), (err: unknown) => err instanceof OpenAIError && err.param === 'prompt')
    assert.equal(COMPLETIONS.parse({ model: 'm', prompt: 'a' }).model, 'm')
  })
})

describe('OpenAIServing without Fastify: a real engine in this process, the agent\'s routing as a stand-in', () => {
  const tokenizer = new ByteTokenizer()
  const seen: GenerateParams[] = []
  // the engine is real (ONNX Runtime on the generated tiny model); what routing and the registries answer is a
  // stand-in here (one local instance), so that the serving layer runs without an agent's HTTP server
  const model = tinyModel(tempDir('bm-serving-unit-'), 77)
  let real: ModelEngine
  const engine = {
    get provider () { return real.provider },
    generate (params: GenerateParams) {
      seen.push(params)
      return real.generate(params)
    }
  }
  /** The tokens and finish of the same request on the engine directly: what the answer must say. */
  async function direct (p: GenerateParams): Promise<{ text: string, reason: string, completionTokens: number }> {
    const g = real.generate(p)
    const tokens: number[] = []
    for await (const t of g.tokens) tokens.push(t)
    const r = await g.done
    return { text: tokenizer.decode(tokens), reason: r.reason, completionTokens: r.completionTokens }
  }
  before(async () => { real = await ModelEngine.start({ modelPath: model.path, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: 512, maxBatch: 4, intraOpThreads: 1 }) })
  after(async () => { await real.close() })
  const component = { uri: 'tiny-local:1', createdAt: new Date(0).toISOString(), spec: { name: 'tiny-local', version: '1', runtime: 'onnx', tokenizer: { type: 'byte' }, contextLength: 512, defaults: { maxTokens: 16, temperature: 0, topP: 1 }, resources: {} } }
  const deps = {
    mesh: { peerId: { toString: () => 'self-peer' }, libp2p: {} },
    gossip: { peers: () => [] },
    router: {
      resolve: (name: string) => name,
      vdag: () => undefined,
      pick: (model: string) => model === 'tiny-local' ? { kind: 'local', instance: 'i1' } : null,
      known: () => false,
      markFailure: () => {}
    },
    host: { serving: () => ({ kind: 'onnx', engine, component, instance: 'i1' }) },
    owner: { has: () => false, get: () => { throw new Error('no block') } },
    components: { get: () => component },
    vdags: { find: () => undefined },
    stages: () => { throw new Error('no stages') },
    tokenizers: { get: async () => tokenizer },
    metrics: new AgentMetrics(() => 0),
    log: createLogger('silent')
  } as unknown as ServingDeps
  const serving = new OpenAIServing(deps)
  const signal = new AbortController().signal

  test('chat, whole: a JSON body with the answer, usage and the headers naming the instance', async () => {
    const res = await serving.serve(CHAT, CHAT.parse({ model: 'tiny-local', messages: [{ role: 'user', content: 'hi' }] }), { signal })
    assert.equal(res.kind, 'json')
    assert.deepEqual(res.headers, { [INSTANCE]: 'i1', [SERVED_BY]: 'self-peer' })
    const body = (res as { body: any }).body
    const p = seen.at(-1) as GenerateParams
    assert.deepEqual(p.prompt, tokenizer.chatPrompt([{ role: 'user', content: 'hi' }]), 'the chat template\'s prompt went to the engine')
    assert.equal(p.maxTokens, 16, 'the component\'s default max tokens')
    const expected = await direct(p)
    assert.equal(body.object, 'chat.completion')
    assert.equal(body.system_fingerprint, `blockmesh-${real.provider.name}`)
    assert.deepEqual(body.choices, [{ index: 0, message: { role: 'assistant', content: expected.text }, logprobs: null, finish_reason: expected.reason }])
    assert.deepEqual(body.usage, { prompt_tokens: p.prompt.length, completion_tokens: expected.completionTokens, total_tokens: p.prompt.length + expected.completionTokens })
  })

  test('completions, streamed, n=2: SSE onto a sink, each choice whole, finish, usage, [DONE]', async () => {
    const res = await serving.serve(COMPLETIONS, COMPLETIONS.parse({ model: 'tiny-local', prompt: 'say', n: 2, seed: 7, max_tokens: 3, stream: true, stream_options: { include_usage: true } }), { signal })
    assert.equal(res.kind, 'stream')
    const sink = new TunnelSink()
    const writing = (res as { writeTo: (s: TunnelSink) => Promise<void> }).writeTo(sink)
    assert.equal((await sink.head).headers[SERVED_BY], 'self-peer')
    let text = ''
    for await (const chunk of sink) text += (chunk as Buffer).toString('utf8')
    await writing
    const data = events(text)
    assert.equal(data.at(-1), '[DONE]')
    const chunks = data.slice(0, -1).map(d => JSON.parse(d))
    const [p0, p1] = seen.slice(-2).sort((x, y) => x.seed - y.seed)
    for (const [i, p] of [p0, p1].entries()) {
      const expected = await direct(p)
      const mine = chunks.filter(c => c.choices[0]?.index === i)
      assert.equal(mine.map(c => c.choices[0].text).join(''), expected.text)
      assert.equal(mine.at(-1).choices[0].finish_reason, 'length')
      assert.equal(expected.completionTokens, 3)
    }
    assert.deepEqual(chunks.at(-1).usage, { prompt_tokens: p0.prompt.length, completion_tokens: 6, total_tokens: p0.prompt.length + 6 })
    assert.equal(chunks.at(-1).system_fingerprint, undefined)
    // choice i samples with seed + i
    assert.deepEqual(seen.slice(-2).map(p => p.seed).sort(), [7, 8])
  })

  test('an unknown model, a prompt over the context: OpenAIErrors thrown before any answer', async () => {
    await assert.rejects(serving.serve(CHAT, CHAT.parse({ model: 'nope', messages: [{ role: 'user', content: 'hi' }] }), { signal }), (err: unknown) => err instanceof OpenAIError && err.status === 404 && err.code === 'model_not_found')
    await assert.rejects(serving.serve(COMPLETIONS, COMPLETIONS.parse({ model: 'tiny-local', prompt: 'x'.repeat(600) }), { signal }), (err: unknown) => err instanceof OpenAIError && err.status === 400 && err.code === 'context_length_exceeded')
  })
})
