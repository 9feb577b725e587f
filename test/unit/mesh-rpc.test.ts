import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { z } from 'zod'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { MeshNode } from '../../mesh/node.ts'
import { RemoteError, requestJson, serveJson } from '../../mesh/rpc.ts'
import { openTunnel, serveTunnel } from '../../mesh/tunnel.ts'

describe('framed request/response and tunnel protocols between two real libp2p nodes', () => {
  let a: MeshNode, b: MeshNode
  const invalid: string[] = []
  let serverSawAbort: Promise<void>
  before(async () => {
    a = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    b = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await a.start()
    await b.start()
    await serveJson(b, '/test/add/1', z.object({ x: z.number(), y: z.number() }).strict(), async (req) => {
      if (req.x < 0) throw Object.assign(new Error('negative numbers refused'), { code: 'refused' })
      return { sum: req.x + req.y }
    }, { onInvalid: (peer, reason) => { invalid.push(reason) }, maxFrameBytes: 1024 })
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
