/** The dashboard's API on real agent processes: the live event stream, the token check, the served build. */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { AgentProcess, stopAll, until } from './helpers/agents.ts'
import { RENDERER_DIST } from '../agent/api/routes/dashboard.ts'
import { SseSplitter } from '../renderer/src/sse.ts'
import { skipNamed } from './helpers/skip.ts'
const notBuilt = (): string | false => !existsSync(join(RENDERER_DIST, 'index.html')) && 'the dashboard is not built (npm test builds it)'

/** Reads the first `n` events (name and parsed data) of an SSE response. */
async function readEvents (res: Response, n: number): Promise<Array<{ event: string, data: any }>> {
  const out: Array<{ event: string, data: any }> = []
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
  let raw = ''
  const split = new SseSplitter(8 * 1024 * 1024)
  while (out.length < n) {
    const { value, done } = await reader.read()
    if (done) break
    raw += value
    // event names are on their own lines; pair each data payload with the name before it
    const names = [...raw.matchAll(/^event: (\w+)$/gm)].map(m => m[1])
    for (const data of split.push(value)) out.push({ event: names[out.length] ?? 'message', data: JSON.parse(data) })
  }
  await reader.cancel()
  return out
}

/** GET with the path sent exactly as given, and optional headers; resolves the status. */
async function rawStatus (base: string, path: string, headers: Record<string, string> = {}): Promise<number> {
  const url = new URL(base)
  return await new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, headers }, res => { res.resume(); resolve(res.statusCode ?? 0) })
    req.on('error', reject)
    req.end()
  })
}

describe('dashboard API: live events, token check, the built renderer', () => {
  let a: AgentProcess, b: AgentProcess

  before(async () => {
    a = await AgentProcess.start({ name: 'ev-a', cluster: 'one' })
    b = await AgentProcess.start({ name: 'ev-b', cluster: 'two', bootstrap: [a.addr] })
    await until(async () => (await a.peers()).length === 2, 'the mesh to form')
  })
  after(async () => { await stopAll([a, b]) })

  test('GET /api/events streams hello (peers + history) then peers with new samples; peers list their connections', async () => {
    // wait until both records name the connection, so the stream has something to show
    await until(async () => (await a.peers()).every(p => p.links.length === 1), 'links in both records')
    const res = await fetch(`${a.url}/api/events`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/)
    assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'none'/)
    const [hello, next, ...more] = await readEvents(res, 5)
    assert.equal(hello.event, 'hello')
    assert.equal(hello.data.self, a.peerId)
    const byName = Object.fromEntries(hello.data.peers.map((p: any) => [p.name, p]))
    assert.deepEqual(byName['ev-a'].links, [b.peerId])
    assert.deepEqual(byName['ev-b'].links, [a.peerId])
    assert.equal(byName['ev-b'].cluster, 'two')
    assert.ok(hello.data.history[a.peerId].length >= 1, 'history has samples of this agent')
    assert.ok(hello.data.history[b.peerId].length >= 1, 'and of its peer')
    assert.equal(next.event, 'peers')
    assert.equal(next.data.peers.length, 2)
    // over a few heartbeats, both peers' new records arrive as samples
    const sampled = [next, ...more].flatMap(e => Object.entries(e.data.samples) as Array<[string, any]>)
    assert.deepEqual([...new Set(sampled.map(([peer]) => peer))].sort(), [a.peerId, b.peerId].sort())
    for (const [, s] of sampled) {
      assert.equal(typeof s.cpu, 'number')
      assert.equal(typeof s.tps, 'number')
    }
  })

  test('event streams: refused to other sites\' pages; when full, the oldest stream makes room', async () => {
    assert.equal(await rawStatus(a.url, '/api/events', { 'sec-fetch-site': 'cross-site' }), 403)
    assert.equal(await rawStatus(a.url, '/api/events', { origin: 'http://evil.example' }), 403)
    const ctl = new AbortController()
    try {
      // one after another: the agent admits them in this order (a stream is registered before its headers are sent),
      // so streams[0] is the oldest; opened all at once they could arrive in any order and another one be closed
      const streams: Response[] = []
      for (let i = 0; i < 32; i++) streams.push(await fetch(`${a.url}/api/events`, { signal: ctl.signal }))
      assert.ok(streams.every(r => r.status === 200))
      const first = streams[0].body!.getReader()
      const extra = await fetch(`${a.url}/api/events`, { signal: ctl.signal })
      assert.equal(extra.status, 200, 'the 33rd stream is admitted')
      // the first stream is ended by the agent: reading it reaches its end
      for (;;) { if ((await first.read()).done) break }
    } finally { ctl.abort() }
  })

  test('GET /api/auth checks a token without changing anything', async () => {
    assert.deepEqual((await a.api('/api/auth')).body.authenticated, false)
    const wrong = await a.api('/api/auth', { headers: { authorization: 'Bearer nope' } })
    assert.equal(wrong.status, 401)
    const right = await a.api('/api/auth', { headers: { authorization: `Bearer ${a.token}` } })
    assert.deepEqual(right.body, { authenticated: true })
  })

  test(skipNamed('the built dashboard is served at / with the CSP; hashed assets are immutable; nothing else is', notBuilt()), { skip: notBuilt() }, async () => {
    const page = await fetch(`${a.url}/`)
    assert.equal(page.status, 200)
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/)
    assert.equal(page.headers.get('cache-control'), 'no-cache')
    const html = (await page.text()).replace(/<!--[\s\S]*?-->/g, '')
    const scripts = html.match(/<script\b[^>]*>/g) ?? []
    assert.ok(scripts.length > 0)
    for (const tag of scripts) assert.match(tag, /\ssrc="\/assets\//, `script without src: ${tag}`)
    assert.doesNotMatch(html, /<style\b|\sstyle=/, 'no inline style')
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1]
    assert.ok(asset != null, html)
    const js = await fetch(a.url + asset)
    assert.equal(js.status, 200)
    assert.match(js.headers.get('cache-control') ?? '', /immutable/)
    assert.match(js.headers.get('content-type') ?? '', /javascript/)
    // raw paths (fetch would normalise the dots away)
    for (const path of ['/assets/../../package.json', '/assets/%2e%2e/%2e%2e/package.json', '/package.json', '/assets/../index.html']) {
      assert.equal(await rawStatus(a.url, path), 404, path)
    }
    assert.equal((await fetch(`${a.url}/src/main.tsx`)).status, 404)
  })
})
