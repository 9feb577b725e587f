import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { request as httpRequest } from 'node:http'
import { writeNewSwarmKey } from '../mesh/swarm-key.ts'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { RoguePeer } from './helpers/rogue.ts'

/** Waits for `n` more heartbeats of an agent, counted by its own sequence numbers (not by wall-clock time). */
async function heartbeats (agent: AgentProcess, n: number): Promise<void> {
  const start = (await agent.api('/api/node')).body.seq as number
  await until(async () => (await agent.api('/api/node')).body.seq >= start + n, `${n} heartbeats of ${agent.spec.name}`)
}

describe('misbehaving peers are rejected, counted, then dropped; the agent keeps serving', () => {
  let a: AgentProcess, b: AgentProcess
  const rogues: RoguePeer[] = []

  before(async () => {
    a = await AgentProcess.start({ name: 'target' })
    b = await AgentProcess.start({ name: 'honest', bootstrap: [a.addr] })
    await until(async () => (await a.peers()).length === 2, 'a and b to meet')
  })
  after(async () => {
    await Promise.all(rogues.map(async r => await r.stop()))
    await stopAll([a, b])
  })

  test('each kind of bad frame is rejected with its reason in /metrics', async () => {
    // two bad frames per rogue stay under the strike limit (3), so every kind reaches the validator
    const batches = [['garbage', 'bad-json'], ['bad-schema', 'impersonate'], ['bad-signature', 'oversized']]
    const reasons: Record<string, string> = {
      garbage: 'bad-envelope', 'bad-json': 'bad-json', 'bad-schema': 'bad-schema', impersonate: 'peer-mismatch', 'bad-signature': 'bad-signature', oversized: 'oversized'
    }
    for (const kinds of batches) {
      const r = new RoguePeer(a.addr, b.peerId, kinds)
      rogues.push(r)
      const ready = await r.waitFor('ready')
      assert.equal(ready.subscribed, true, 'the rogue sees the agent on the capacity topic')
      await r.waitFor('done')
      for (const kind of kinds) {
        await until(async () => await a.metric('blockmesh_gossip_messages_rejected_total', { reason: reasons[kind] }) >= 1, `a rejection counted as ${reasons[kind]}`)
      }
    }
    // none of it was accepted as a peer, and b's record was not overwritten by the impersonation
    const peers = await a.peers('all')
    assert.deepEqual(peers.map(p => p.name).sort(), ['honest', 'target'])
    assert.equal(peers.find(p => p.peerId === b.peerId).cluster, 'test')
    assert.equal(await a.metric('blockmesh_peers_banned_total'), 0)
  })

  test('a peer that keeps sending bad frames is disconnected and cannot reconnect', async () => {
    const r = new RoguePeer(a.addr, b.peerId, ['bad-json', 'bad-schema', 'bad-signature', 'garbage'])
    rogues.push(r)
    await r.waitFor('ready')
    await r.waitFor('disconnected', 'disconnected by the agent')
    assert.equal(await a.metric('blockmesh_peers_banned_total'), 1)
    r.redial()
    const redial = await r.waitFor('redial')
    assert.notEqual(redial.result, 'connected', 'a banned peer must not get a working connection')
  })

  test('the agent kept serving: healthy, and still hears the honest peer', async () => {
    assert.equal((await a.api('/api/health')).body.status, 'ok')
    const before = (await a.peers()).find(p => p.peerId === b.peerId).seq
    await until(async () => (await a.peers()).find(p => p.peerId === b.peerId)?.seq > before, 'a fresh record from b')
    assert.ok(a.child.exitCode == null)
  })
})

describe('private network key and allow-list keep outsiders out', () => {
  const agents: AgentProcess[] = []
  after(async () => { await stopAll(agents) })

  test('a node with a different swarm key cannot join; one with the same key can', async () => {
    const dir = tempDir('bm-keys-')
    writeNewSwarmKey(join(dir, 'k1'))
    writeNewSwarmKey(join(dir, 'k2'))
    const a = await AgentProcess.start({ name: 'key-a', swarmKey: join(dir, 'k1') })
    agents.push(a)
    const [same, other] = await Promise.all([
      AgentProcess.start({ name: 'key-same', swarmKey: join(dir, 'k1'), bootstrap: [a.addr] }),
      AgentProcess.start({ name: 'key-other', swarmKey: join(dir, 'k2'), bootstrap: [a.addr] })
    ])
    agents.push(same, other)
    await until(async () => (await a.peers()).some(p => p.peerId === same.peerId), 'the same-key node to join')
    await heartbeats(other, 4) // enough time for several dial attempts
    assert.deepEqual((await other.peers('all')).map(p => p.name), ['key-other'])
    assert.ok(!(await a.peers('all')).some(p => p.peerId === other.peerId))
  })

  test('a node not on the allow-list cannot join; a listed one can', async () => {
    const friend = await AgentProcess.start({ name: 'friend' })
    agents.push(friend)
    const guarded = await AgentProcess.start({ name: 'guarded', allow: [friend.peerId], bootstrap: [friend.addr] })
    agents.push(guarded)
    const stranger = await AgentProcess.start({ name: 'stranger', bootstrap: [guarded.addr] })
    agents.push(stranger)
    await until(async () => (await guarded.peers()).some(p => p.peerId === friend.peerId), 'the listed node to join')
    await heartbeats(stranger, 4)
    assert.ok(!(await guarded.peers('all')).some(p => p.peerId === stranger.peerId))
    assert.deepEqual((await stranger.peers('all')).map(p => p.name), ['stranger'])
    assert.deepEqual((await guarded.api('/api/node')).body.allowList, [friend.peerId])
  })
})

describe('HTTP API security', () => {
  let a: AgentProcess
  before(async () => { a = await AgentProcess.start({ name: 'api' }) })
  after(async () => { await stopAll([a]) })

  const body = { spec: 'count=1,model=L4,memory=24GiB' }

  test('state-changing routes need the bearer token', async () => {
    const none = await a.api('/api/hardware/simulated-gpus', { method: 'PUT', body, token: null })
    assert.equal(none.status, 401)
    assert.equal(none.body.error.code, 'unauthorized')
    const wrong = await a.api('/api/hardware/simulated-gpus', { method: 'PUT', body, token: 'x'.repeat(43) })
    assert.equal(wrong.status, 401)
    assert.equal((await a.api('/api/hardware/simulated-gpus')).body.gpus.length, 0, 'nothing changed without the token')
    const ok = await a.api('/api/hardware/simulated-gpus', { method: 'PUT', body })
    assert.equal(ok.status, 200)
    assert.equal((await a.api('/api/hardware/simulated-gpus')).body.gpus[0].model, 'L4')
  })

  test('read-only routes work without the token', async () => {
    for (const path of ['/api/health', '/api/node', '/api/peers', '/metrics', '/']) {
      assert.equal((await a.api(path)).status, 200, path)
    }
  })

  test('bad bodies get a 400 with field-level messages and change nothing', async () => {
    const before = (await a.api('/api/hardware/simulated-gpus')).body
    const bad = await a.api('/api/hardware/simulated-gpus', { method: 'PUT', body: { gpus: [{ memoryTotalBytes: -5 }] } })
    assert.equal(bad.status, 400)
    assert.equal(bad.body.error.code, 'invalid_request')
    assert.ok(Array.isArray(bad.body.error.details) && bad.body.error.details.length > 0)
    const badSpec = await a.api('/api/hardware/simulated-gpus', { method: 'PUT', body: { spec: 'count=2,memory=lots' } })
    assert.equal(badSpec.status, 400)
    assert.match(badSpec.body.error.message, /not a size/)
    const notJson = await a.api('/api/hardware/simulated-gpus', { method: 'PUT', body: '{"spec": ', headers: { 'content-type': 'application/json' } })
    assert.equal(notJson.status, 400)
    const huge = await a.api('/api/hardware/simulated-gpus', { method: 'PUT', body: { spec: 'x'.repeat(2 * 1024 * 1024) } })
    assert.equal(huge.status, 413)
    assert.equal(huge.body.error.code, 'body_too_large')
    assert.match(huge.body.error.message, /at most 1048576/)
    // refused on its declared length, the answer sent once the client has finished sending: twenty clients each
    // sending 4 MiB in small writes, with `Connection: close` (agent: false) and a pause halfway that gives the
    // server time to answer early, all read the 413 (none loses it to a reset mid-upload)
    const uploads = await Promise.all(Array.from({ length: 20 }, async () => await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${a.url}/api/hardware/simulated-gpus`, { method: 'PUT', agent: false, headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json', 'content-length': String(4 * 1024 * 1024) } }, res => { res.resume(); res.on('end', () => { resolve(res.statusCode ?? 0) }) })
      req.on('error', reject)
      const chunk = Buffer.alloc(64 * 1024, 0x20)
      for (let i = 0; i < 32; i++) req.write(chunk)
      setTimeout(() => {
        for (let i = 0; i < 32; i++) req.write(chunk)
        req.end()
      }, 200)
    })))
    assert.deepEqual(uploads, Array(20).fill(413))
    assert.deepEqual((await a.api('/api/hardware/simulated-gpus')).body, before)
  })

  test('unknown routes answer JSON 404; a non-loopback Host header is refused', async () => {
    const nf = await a.api('/api/nope')
    assert.equal(nf.status, 404)
    assert.equal(nf.body.error.code, 'not_found')
    // fetch() will not let a test forge Host; use a raw request
    const { request } = await import('node:http')
    const url = new URL(a.url)
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: url.hostname, port: url.port, path: '/api/health', headers: { host: 'evil.example:80' } }, res => { res.resume(); resolve(res.statusCode ?? 0) })
      req.on('error', reject)
      req.end()
    })
    assert.equal(status, 403)
  })

  test('pages carry a strict Content-Security-Policy', async () => {
    const res = await fetch(a.url + '/')
    const csp = res.headers.get('content-security-policy') ?? ''
    assert.match(csp, /default-src 'none'/)
    assert.match(csp, /script-src 'self'/)
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/)
  })
})
