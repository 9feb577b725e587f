import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { z } from 'zod'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { MeshNode } from '../../mesh/node.ts'
import { RemoteError, jsonRpcService, lengthPrefixed, requestJson, serveJson } from '../../mesh/rpc.ts'
import { openTunnel, serveTunnel, tunnelService } from '../../mesh/tunnel.ts'
import { FrameLengthError, FrameTooLargeError, ServiceStoppedError, TruncatedFrameError } from '../../mesh/errors.ts'
import type { Offence } from '../../mesh/errors.ts'

describe('framed request/response and tunnel protocols between two real libp2p nodes', () => {
  let a: MeshNode, b: MeshNode
  const invalid: string[] = []
  const offences: Offence[] = []
  let serverSawAbort: Promise<void>
  before(async () => {
    a = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    b = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await a.start()
    await b.start()
    await serveJson(b, '/test/add/1', z.object({ x: z.number(), y: z.number() }).strict(), async (req) => {
      if (req.x < 0) throw Object.assign(new Error('negative numbers refused'), { code: 'refused' })
      return { sum: req.x + req.y }
    }, { onInvalid: (peer, reason, offence) => { invalid.push(reason); offences.push(offence) }, maxFrameBytes: 1024 })
    let sawAbort!: () => void
    serverSawAbort = new Promise(resolve => { sawAbort = resolve })
    await serveTunnel(b, '/test/tunnel/1', async (req, ctx) => {
      ctx.signal.addEventListener('abort', () => { sawAbort() })
      const n = Number(JSON.parse(new TextDecoder().decode(req.body)).n)
      async function * body (): AsyncGenerator<Uint8Array> {
        for (let i = 0; i < n; i++) {
          if (ctx.signal.aborted) return
          yield new TextEncoder().encode(`chunk ${i};`)
          await new Promise(r => setTimeout(r, 20))
        }
      }
      return { status: 200, headers: { 'content-type': 'text/plain', 'x-target': req.target }, body: body() }
    })
    await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
  })
  after(async () => { await a.stop(); await b.stop() })

  test('a JSON request is answered and validated', async () => {
    const r = await requestJson(a, b.peerId.toString(), '/test/add/1', { x: 2, y: 3 }, z.object({ sum: z.number() }))
    assert.deepEqual(r, { sum: 5 })
  })

  test('a handler error comes back as a RemoteError with its code', async () => {
    await assert.rejects(requestJson(a, b.peerId.toString(), '/test/add/1', { x: -1, y: 3 }, z.object({ sum: z.number() })),
      (e: unknown) => e instanceof RemoteError && e.remoteCode === 'refused' && /negative/.test(e.message))
  })

  test('a malformed or oversized request is refused as bad_request and reported', async () => {
    await assert.rejects(requestJson(a, b.peerId.toString(), '/test/add/1', { x: 'two' }, z.object({ sum: z.number() })),
      (e: unknown) => e instanceof RemoteError && e.remoteCode === 'bad_request')
    const stream = await a.libp2p.dialProtocol(b.peerId, '/test/add/1')
    const lp = lpStream(stream, { maxDataLength: 1 << 20 })
    await lp.write(new Uint8Array(4096)) // over the 1 KiB limit
    const answer = JSON.parse(new TextDecoder().decode((await lp.read()).subarray()))
    assert.equal(answer.error.code, 'bad_request')
    assert.equal(invalid.length, 2)
    assert.match(invalid[0], /x: /)
    assert.deepEqual(offences, ['malformed', 'oversized'], 'an oversized frame is its own, lighter, offence')
  })

  test('a tunnel streams the body frame by frame', async () => {
    const res = await openTunnel(a, b.peerId.toString(), '/test/tunnel/1', { target: '/v1/x', headers: {}, body: new TextEncoder().encode('{"n": 5}') })
    assert.equal(res.status, 200)
    assert.equal(res.headers['x-target'], '/v1/x')
    const parts: string[] = []
    for await (const p of res.body) parts.push(new TextDecoder().decode(p))
    assert.deepEqual(parts, ['chunk 0;', 'chunk 1;', 'chunk 2;', 'chunk 3;', 'chunk 4;'])
  })

  test('a client that aborts mid-stream aborts the server side too', async () => {
    const ac = new AbortController()
    const res = await openTunnel(a, b.peerId.toString(), '/test/tunnel/1', { target: '/v1/x', headers: {}, body: new TextEncoder().encode('{"n": 1000}') }, { signal: ac.signal })
    let got = 0
    try {
      for await (const _ of res.body) if (++got === 2) ac.abort()
    } catch { /* ending by abort may surface as an error or as the end of the body */ }
    await serverSawAbort
    assert.equal(got, 2, 'nothing more arrives after the abort')
  })
})

describe('typed frame errors and protocol services (issue 14)', () => {
  let a: MeshNode, b: MeshNode
  before(async () => {
    a = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    b = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await a.start()
    await b.start()
    await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
  })
  after(async () => { await a.stop(); await b.stop() })

  /** What readFrame makes of `bytes` sent (then the sender's side closed): frames, then null or the error. */
  async function readAll (protocol: string, bytes: Uint8Array, max = 1024): Promise<{ frames: string[], end: unknown }> {
    const got = new Promise<{ frames: string[], end: unknown }>((resolve) => {
      void b.libp2p.handle(protocol, async (stream) => {
        const lp = lengthPrefixed(stream, max)
        const frames: string[] = []
        try {
          while (true) {
            const f = await lp.readFrame({ signal: AbortSignal.timeout(5000) })
            if (f == null) { resolve({ frames, end: null }); break }
            frames.push(new TextDecoder().decode(f))
          }
        } catch (err) { resolve({ frames, end: err }) }
        stream.abort(new Error('test done'))
      })
    })
    const stream = await a.libp2p.dialProtocol(b.peerId, protocol)
    stream.send(bytes)
    await stream.close().catch(() => {})
    const r = await got
    await b.libp2p.unhandle(protocol)
    return r
  }

  test('readFrame: a clean end between frames is null; a cut, oversized or endless frame is its typed error', async () => {
    const hi = new Uint8Array([2, 104, 105])
    assert.deepEqual(await readAll('/test/frames/clean', new Uint8Array([...hi, ...hi])), { frames: ['hi', 'hi'], end: null })
    const cut = await readAll('/test/frames/cut', new Uint8Array([...hi, 5, 1, 2]))
    assert.deepEqual(cut.frames, ['hi'])
    assert.ok(cut.end instanceof TruncatedFrameError && cut.end.code === 'ERR_TRUNCATED_FRAME' && cut.end.offence === 'malformed', String(cut.end))
    const cutPrefix = await readAll('/test/frames/cut-prefix', new Uint8Array([0x80]))
    assert.ok(cutPrefix.end instanceof TruncatedFrameError, String(cutPrefix.end))
    const big = await readAll('/test/frames/big', new Uint8Array([0x80, 0x10, 1, 2, 3]))
    assert.ok(big.end instanceof FrameTooLargeError && big.end.offence === 'oversized', String(big.end))
    const endless = await readAll('/test/frames/endless', new Uint8Array(9).fill(0xff))
    assert.ok(endless.end instanceof FrameLengthError && endless.end.code === 'ERR_FRAME_LENGTH', String(endless.end))
  })

  test('a JSON RPC service: offences go to the score it was given; stop() unhandles and aborts the exchanges in flight', async () => {
    const struck: Array<[string, Offence | undefined]> = []
    let started!: () => void
    const inHandler = new Promise<void>(resolve => { started = resolve })
    let handlerSignal: AbortSignal | undefined
    const service = jsonRpcService({
      protocol: '/test/slow/1',
      schema: z.object({ wait: z.boolean() }).strict(),
      handler: async (req, { signal }) => {
        if (!req.wait) return { ok: 1 }
        handlerSignal = signal
        started()
        await new Promise(resolve => signal.addEventListener('abort', resolve, { once: true }))
        return { late: true }
      }
    })({ registrar: b.libp2p, score: { strike: (peer, _reason, offence) => { struck.push([peer, offence]) } } })
    await service.start()
    assert.equal(service.isStarted(), true)
    await assert.rejects(requestJson(a, b.peerId.toString(), '/test/slow/1', { wait: 'no' }, z.unknown()), (e: unknown) => e instanceof RemoteError && e.remoteCode === 'bad_request')
    assert.deepEqual(struck, [[a.peerId.toString(), 'malformed']])
    const pending = requestJson(a, b.peerId.toString(), '/test/slow/1', { wait: true }, z.unknown(), { timeoutMs: 10_000 })
    await inHandler
    await service.stop()
    assert.ok(handlerSignal?.aborted === true && handlerSignal.reason instanceof ServiceStoppedError, 'the handler was told the service stopped')
    await assert.rejects(pending)
    assert.equal(struck.length, 1, 'a stopped service costs the peer nothing')
    await assert.rejects(requestJson(a, b.peerId.toString(), '/test/slow/1', { wait: false }, z.unknown(), { timeoutMs: 5000 }), 'no longer handled')
  })

  test('a tunnel service: a body frame cut short is an error at the client, not a quiet end; stop() unhandles', async () => {
    // a server that answers a head, one body frame, then half a frame, and ends the stream
    await b.libp2p.handle('/test/cut-tunnel/1', async (stream) => {
      const lp = lengthPrefixed(stream, 64 * 1024)
      await lp.readFrame()
      await lp.readFrame()
      await lp.write(new TextEncoder().encode(JSON.stringify({ status: 200, headers: {} })))
      await lp.write(new TextEncoder().encode('part'))
      stream.send(new Uint8Array([10, 1, 2]))
      await stream.close()
    })
    const res = await openTunnel(a, b.peerId.toString(), '/test/cut-tunnel/1', { target: '/x', headers: {}, body: new Uint8Array(0) })
    const parts: string[] = []
    await assert.rejects((async () => { for await (const p of res.body) parts.push(new TextDecoder().decode(p)) })(), (e: unknown) => e instanceof TruncatedFrameError)
    assert.deepEqual(parts, ['part'])
    await b.libp2p.unhandle('/test/cut-tunnel/1')

    const service = tunnelService({ protocol: '/test/tunnel-service/1', handler: async () => ({ status: 204, headers: {}, body: (async function * () {})() }) })({ registrar: b.libp2p, score: b.score })
    await service.start()
    const ok = await openTunnel(a, b.peerId.toString(), '/test/tunnel-service/1', { target: '/x', headers: {}, body: new Uint8Array(0) })
    assert.equal(ok.status, 204)
    for await (const _ of ok.body) assert.fail('no body')
    await service.stop()
    await assert.rejects(openTunnel(a, b.peerId.toString(), '/test/tunnel-service/1', { target: '/x', headers: {}, body: new Uint8Array(0) }, { timeoutMs: 5000 }))
  })

  test('a responder whose answer is not a frame (not JSON, oversized) is struck; one that closes without answering is not', async () => {
    const bId = b.peerId.toString()
    const answers: Record<string, (lp: ReturnType<typeof lengthPrefixed>, stream: any) => Promise<void>> = {
      '/test/garbage-answer/1': async (lp) => { await lp.write(new TextEncoder().encode('not json {')) },
      '/test/huge-answer/1': async (_lp, stream) => { stream.send(new Uint8Array([0x80, 0x80, 0x80, 0x10])) },
      '/test/no-answer/1': async () => {}
    }
    for (const [protocol, answer] of Object.entries(answers)) {
      await b.libp2p.handle(protocol, async (stream) => {
        const lp = lengthPrefixed(stream, 64 * 1024)
        await lp.readFrame()
        await answer(lp, stream)
        await stream.close().catch(() => {})
      })
    }
    try {
      const before = a.score.score(bId)
      await assert.rejects(requestJson(a, bId, '/test/no-answer/1', {}, z.unknown(), { timeoutMs: 5000 }), (e: unknown) => e instanceof RemoteError)
      assert.equal(a.score.score(bId), before, 'a stream closed without an answer costs nothing')
      await assert.rejects(requestJson(a, bId, '/test/garbage-answer/1', {}, z.unknown(), { timeoutMs: 5000 }), (e: unknown) => e instanceof RemoteError && e.remoteCode === 'bad_response')
      const afterGarbage = a.score.score(bId)
      assert.ok(afterGarbage > before, `struck for the garbage answer: ${before} → ${afterGarbage}`)
      await assert.rejects(requestJson(a, bId, '/test/huge-answer/1', {}, z.unknown(), { timeoutMs: 5000, maxFrameBytes: 1024 }), (e: unknown) => e instanceof RemoteError && e.remoteCode === 'bad_response')
      assert.ok(a.score.score(bId) > afterGarbage, 'struck for the oversized answer')
    } finally {
      for (const protocol of Object.keys(answers)) await b.libp2p.unhandle(protocol)
    }
  })

  test('a tunnel request that does not arrive within its deadline is refused and is an offence; the handler never runs', async () => {
    const invalid: Array<{ reason: string, offence: Offence }> = []
    let handled = 0
    const service = tunnelService({ protocol: '/test/slow-request/1', requestTimeoutMs: 300, onInvalid: (_peer, reason, offence) => { invalid.push({ reason, offence }) }, handler: async () => { handled++; return { status: 204, headers: {}, body: (async function * () {})() } } })({ registrar: b.libp2p, score: b.score })
    await service.start()
    try {
      // a head, then nothing: the body never comes
      const stream = await a.libp2p.dialProtocol(b.peerId, '/test/slow-request/1')
      const lp = lengthPrefixed(stream, 64 * 1024)
      await lp.write(new TextEncoder().encode(JSON.stringify({ target: '/x', headers: {} })))
      const closed = new Promise<void>(resolve => { stream.addEventListener('close', () => { resolve() }, { once: true }) })
      await closed
      assert.equal(handled, 0)
      assert.equal(invalid.length, 1, JSON.stringify(invalid))
      assert.match(invalid[0].reason, /request/)
    } finally {
      await service.stop()
    }
  })
})
