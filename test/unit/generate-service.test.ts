import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { MeshNode } from '../../mesh/node.ts'
import { GENERATE_PROTOCOL, GenerateError, generateService } from '../../agent/serving/generate-service.ts'
import type { GenerateService, HostedEngine } from '../../agent/serving/generate-service.ts'
import { RemoteEngine } from '../../agent/serving/remote-engine.ts'
import { TokenStream } from '../../agent/executor/token-stream.ts'
import type { GenerateParams, Generation, GenerationResult } from '../../agent/executor/engine.ts'
import { ComponentSpecSchema } from '../../agent/registry/components.ts'
import { ByteTokenizer } from '../../agent/model/tokenizer.ts'
import { ModelEngine } from '../../agent/executor/engine.ts'
import { generateModel } from '../../agent/model/generate.ts'
import { PRESETS } from '../../agent/model/spec.ts'
import { tempDir } from '../helpers/agents.ts'
import { join } from 'node:path'
import { tokenVocab } from '../../agent/openai/json-schema.ts'

/**
 * The host's engine: a real ModelEngine (ONNX Runtime, the generated tiny model) with a recorder around it,
 * so the tests can see what the wire delivered to the engine (its GenerateParams) and that a cancel reached it.
 */
function recorded (real: ModelEngine, calls: GenerateParams[], cancelled: number[]): Extract<HostedEngine, { kind: 'onnx' }>['engine'] {
  return {
    provider: real.provider,
    generate: (p: GenerateParams): Generation => {
      const id = calls.push(p)
      const g = real.generate(p)
      void g.done.then(r => { if (r.reason === 'cancelled') cancelled.push(id) })
      return g
    }
  }
}

describe('/blockmesh/generate/1.0.0 between two libp2p nodes', () => {
  let a: MeshNode, b: MeshNode
  let client: GenerateService, server: GenerateService
  const calls: GenerateParams[] = []
  const cancelled: number[] = []
  const invalid: string[] = []
  /** the session each request's serving() was asked with */
  const sessions: Array<string | undefined> = []
  // a long context, so a generation runs long enough to be cancelled or lost mid-way
  const model = generateModel({ ...PRESETS.tiny, maxPositions: 8192, seed: 71 }, join(tempDir('bm-generate-'), 'tiny.onnx'))
  const spec = ComponentSpecSchema.parse({ name: 'tiny', version: '1', runtime: 'onnx', model: { url: model.path, md5: model.md5 }, contextLength: 8192 })
  const params = (over: Partial<GenerateParams> = {}): GenerateParams => ({ prompt: [72, 105, 33], maxTokens: 5, temperature: 0, topP: 1, seed: 9, stopTokens: [], ...over })
  let real: ModelEngine

  /** The same request run on the engine here, without the protocol: what the host's answer must be. */
  async function direct (p: GenerateParams): Promise<{ tokens: number[], result: GenerationResult, logprobs: Generation['logprobs'] }> {
    const g = real.generate(p)
    const tokens: number[] = []
    for await (const t of g.tokens) tokens.push(t)
    return { tokens, result: await g.done, logprobs: g.logprobs }
  }

  before(async () => {
    real = await ModelEngine.start({ modelPath: model.path, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: 8192, maxBatch: 4, intraOpThreads: 1 })
    a = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    b = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await a.start()
    await b.start()
    const engine = recorded(real, calls, cancelled)
    server = generateService()({
      registrar: b.libp2p,
      dialer: b.libp2p,
      serving: (block, opts) => {
        sessions.push(opts?.session)
        if (block === 'tiny') return { kind: 'onnx', engine, component: { spec }, instance: 'i-1' }
        if (block === 'ext') return { kind: 'external', component: { spec: { ...spec, runtime: 'external' } }, instance: 'i-2' }
        // an engine whose generation gives two tokens, then fails with a code (as a vDAG driver that found no route)
        if (block === 'failing') {
          return {
            kind: 'onnx',
            component: { spec },
            instance: 'i-3',
            engine: {
              provider: { name: 'vdag' },
              generate: (p: GenerateParams): Generation => {
                const s = new TokenStream()
                s.push(7)
                s.push(8)
                s.end({ reason: 'error', promptTokens: p.prompt.length, completionTokens: 2, error: 'a stage failed and no route came up', code: 'migration_failed' })
                return s.generation(() => {})
              }
            }
          }
        }
        throw Object.assign(new Error(`no instance of ${block} here`), { code: 'not_found' })
      },
      tokenizers: { get: async () => new ByteTokenizer() },
      onInvalid: (_peer, reason) => { invalid.push(reason) }
    })
    await server.start()
    client = generateService()({ registrar: a.libp2p, dialer: a.libp2p, serving: () => { throw new Error('none') }, tokenizers: { get: async () => new ByteTokenizer() } })
    await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
  })
  after(async () => { await client.stop().catch(() => {}); await server.stop().catch(() => {}); await a.stop(); await b.stop(); await real.close() })

  test('describe answers with the instance\'s component spec', async () => {
    const d = await client.describe(b.peerId.toString(), 'tiny')
    assert.deepEqual(d, { instance: 'i-1', provider: 'cpu', spec })
  })

  test('generate streams the token ids, the logprobs and the result; RemoteEngine hands them out as a TokenSource', async () => {
    const engine = new RemoteEngine(client, b.peerId.toString(), 'tiny', 'cpu')
    const p = params({ topLogprobs: 2, resumed: 2, presencePenalty: 0.5 })
    const g = engine.generate(p)
    const got: number[] = []
    for await (const t of g.tokens) got.push(t)
    const here = await direct(p)
    assert.equal(here.tokens.length, 5)
    assert.deepEqual(got, here.tokens, 'the host\'s greedy tokens, as the engine gives them here')
    const done = await g.done
    assert.deepEqual({ reason: done.reason, promptTokens: done.promptTokens, completionTokens: done.completionTokens }, { reason: here.result.reason, promptTokens: here.result.promptTokens, completionTokens: here.result.completionTokens })
    assert.equal(done.reason, 'length')
    assert.equal(g.logprobs.length, 5)
    assert.deepEqual(g.logprobs, here.logprobs, 'logprobs and top alternatives, through the wire unchanged')
    const seen = calls[calls.length - 1]
    assert.equal(seen.resumed, 2)
    assert.equal(seen.presencePenalty, 0.5)
    assert.equal(seen.seed, 9)
  })

  test('refusals are typed: unknown block and external instances are "lost" (try elsewhere), a bad request is not', async () => {
    await assert.rejects(client.generate(b.peerId.toString(), 'nope', params()), (e: unknown) => e instanceof GenerateError && e.code === 'not_found' && e.lost)
    await assert.rejects(client.generate(b.peerId.toString(), 'ext', params()), (e: unknown) => e instanceof GenerateError && e.code === 'not_onnx' && e.lost)
    const r = await new RemoteEngine(client, b.peerId.toString(), 'tiny').generate(params({ resumed: 4 })).done
    assert.equal(r.reason, 'error')
    assert.notEqual(r.lost, true)
    assert.match(r.error ?? '', /resumed/)
    assert.ok(invalid.some(x => /resumed/.test(x)), 'the malformed request was reported (a strike)')
  })

  test('1.1.0 carries a failed generation\'s code to the client; a 1.0.0 stream, which older clients read strictly, does not', async () => {
    const r = await new RemoteEngine(client, b.peerId.toString(), 'failing').generate(params()).done
    assert.deepEqual({ reason: r.reason, code: r.code, lost: r.lost, completionTokens: r.completionTokens }, { reason: 'error', code: 'migration_failed', lost: undefined, completionTokens: 2 })
    // an older client dials 1.0.0 alone: the done frame has exactly 1.0.0's fields
    const stream = await a.libp2p.dialProtocol(b.peerId, GENERATE_PROTOCOL)
    const lp = lpStream(stream, { maxDataLength: 1 << 20 })
    await lp.write(new TextEncoder().encode(JSON.stringify({ v: 1, op: 'generate', block: 'failing', params: params() })))
    const frames: any[] = []
    for (;;) {
      const f = JSON.parse(new TextDecoder().decode((await lp.read()).subarray()))
      frames.push(f)
      if (f.t === 'done') break
    }
    assert.deepEqual(frames.map(f => f.t), ['accepted', 'tokens', 'tokens', 'done'])
    assert.deepEqual(Object.keys(frames[3]).sort(), ['completionTokens', 'error', 'promptTokens', 'reason', 't'])
  })

  test('the client\'s session key reaches a 1.1.0 host\'s serving(); an older host (1.0.0 alone) gets the request without it, and serves it', async () => {
    const g = await client.generate(b.peerId.toString(), 'tiny', params(), { session: 'user-42' })
    for await (const f of g.frames) if (f.t === 'done') assert.equal(f.reason, 'length')
    assert.equal(sessions.at(-1), 'user-42')
    // an older host: a node whose service speaks 1.0.0 alone and reads requests strictly
    const c = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await c.start()
    const seen: Array<string | undefined> = []
    const old = generateService({ protocol: GENERATE_PROTOCOL })({ registrar: c.libp2p, dialer: c.libp2p, serving: (_block, opts) => { seen.push(opts?.session); return { kind: 'onnx', engine: real, component: { spec }, instance: 'i-old' } }, tokenizers: { get: async () => new ByteTokenizer() }, onInvalid: (_peer, reason) => { invalid.push(reason) } })
    await old.start()
    try {
      await a.libp2p.dial(c.libp2p.getMultiaddrs()[0])
      const before = invalid.length
      const r = await new RemoteEngine(client, c.peerId.toString(), 'tiny', 'cpu', 'user-42').generate(params()).done
      assert.equal(r.reason, 'length', r.error)
      assert.deepEqual(seen, [undefined])
      assert.equal(invalid.length, before, 'no strike: the request was 1.0.0\'s')
    } finally {
      await old.stop()
      await c.stop()
    }
  })

  test('a frame that is not JSON, or too deep, is refused as bad_request and reported', async () => {
    const before = invalid.length
    for (const bytes of [new TextEncoder().encode('{"v": 1, "op": "gen'), new TextEncoder().encode('['.repeat(5000) + ']'.repeat(5000))]) {
      const stream = await a.libp2p.dialProtocol(b.peerId, GENERATE_PROTOCOL)
      const lp = lpStream(stream, { maxDataLength: 1 << 20 })
      await lp.write(bytes)
      const answer = JSON.parse(new TextDecoder().decode((await lp.read()).subarray()))
      assert.equal(answer.t, 'error')
      assert.equal(answer.code, 'bad_request')
    }
    assert.equal(invalid.length, before + 2)
  })

  test('constrained decoding sends the vocabulary size, not its texts; the host builds its own and refuses a different size', async () => {
    const v = await tokenVocab(new ByteTokenizer())
    const grammar = { type: 'any' } as const
    const p = params({ constraint: { grammar, grammarKey: 'k', vocab: { key: v.key, size: v.size, texts: v.texts } } })
    const g = new RemoteEngine(client, b.peerId.toString(), 'tiny').generate(p)
    for await (const _ of g.tokens) { /* drain */ }
    assert.equal((await g.done).reason, 'length')
    const seen = calls[calls.length - 1].constraint
    assert.ok(seen != null)
    assert.deepEqual(seen.grammar, grammar)
    assert.equal(seen.vocab.size, v.size)
    assert.equal(seen.vocab.texts?.length, v.texts.length, 'the host built the texts from its own tokenizer')
    assert.notEqual(seen.grammarKey, 'k', 'the host keys the grammar itself')
    await assert.rejects(client.generate(b.peerId.toString(), 'tiny', { ...p, constraint: { ...p.constraint!, vocab: { key: 'x', size: v.size + 1 } } }),
      (e: unknown) => e instanceof GenerateError && e.code === 'vocab_mismatch')
  })

  test('cancelling on the client cancels the sequence on the host', async () => {
    const g = new RemoteEngine(client, b.peerId.toString(), 'tiny').generate(params({ maxTokens: 10_000 }))
    let n = 0
    for await (const _ of g.tokens) if (++n === 3) g.cancel()
    assert.equal((await g.done).reason, 'cancelled')
    const id = calls.length
    await new Promise<void>((resolve, reject) => {
      const t0 = Date.now()
      const check = (): void => { if (cancelled.includes(id)) resolve(); else if (Date.now() - t0 > 10_000) reject(new Error('not cancelled on the host')); else setTimeout(check, 20) }
      check()
    })
  })

  test('a host whose answer is not a frame (not JSON) is reported for a strike; one that closes without answering is not', async () => {
    const rogue = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await rogue.start()
    const struck: string[] = []
    const watcher = generateService()({ registrar: a.libp2p, dialer: a.libp2p, serving: () => { throw new Error('none') }, tokenizers: { get: async () => new ByteTokenizer() }, onInvalid: (peer, reason) => { struck.push(`${peer}: ${reason}`) } })
    let mode: 'garbage' | 'silent' = 'silent'
    await rogue.libp2p.handle(GENERATE_PROTOCOL, async (stream) => {
      const lp = lpStream(stream, { maxDataLength: 1 << 20 })
      await lp.read()
      if (mode === 'garbage') await lp.write(new TextEncoder().encode('{"t": "accep'))
      await stream.close().catch(() => {})
    })
    try {
      await a.libp2p.dial(rogue.libp2p.getMultiaddrs()[0])
      const id = rogue.peerId.toString()
      await assert.rejects(watcher.generate(id, 'tiny', params()), (e: unknown) => e instanceof GenerateError && e.lost)
      assert.equal(struck.length, 0, 'a stream closed without an answer costs nothing')
      mode = 'garbage'
      await assert.rejects(watcher.generate(id, 'tiny', params()), (e: unknown) => e instanceof GenerateError)
      assert.equal(struck.length, 1, JSON.stringify(struck))
      assert.ok(struck[0].startsWith(`${id}: unreadable`), struck[0])
    } finally {
      await rogue.stop()
    }
  })

  test('the host going away mid-generation ends the generation as lost', async () => {
    const g = new RemoteEngine(client, b.peerId.toString(), 'tiny').generate(params({ maxTokens: 10_000 }))
    let n = 0
    for await (const _ of g.tokens) if (++n === 3) await b.stop()
    const r = await g.done
    assert.equal(r.reason, 'error')
    assert.equal(r.lost, true)
    assert.ok(n >= 3 && n < 10_000)
  })
})
