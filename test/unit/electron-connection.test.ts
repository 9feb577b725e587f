import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ConnectionController, NotConnectedError, PageLoadError } from '../../main/connection.ts'
import type { ConnectionDeps } from '../../main/connection.ts'
import { AgentUnreachableError, probeAgent } from '../../main/agent-probe.ts'
import { isNavigationAllowed } from '../../main/security.ts'

const CONNECT_PAGE = 'file:///app/main/dist/connect/index.html'
const LOCAL = 'http://127.0.0.1:45678'
const REMOTE = 'https://agent.example:8443'

class MapTokens {
  readonly map = new Map<string, string>()
  get (origin: string): string | null { return this.map.get(new URL(origin).origin) ?? null }
  set (origin: string, token: string): void { this.map.set(new URL(origin).origin, token) }
  clear (origin: string): void { this.map.delete(new URL(origin).origin) }
}

function setup (over: Partial<ConnectionDeps> = {}): { ctl: ConnectionController, loads: string[], tokens: MapTokens, probes: string[], starts: { n: number } } {
  const loads: string[] = []
  const probes: string[] = []
  const starts = { n: 0 }
  const tokens = new MapTokens()
  let ctl: ConnectionController | undefined
  ctl = new ConnectionController({
    connectPage: CONNECT_PAGE,
    load: async url => {
      // the window only goes where the navigation guard would let it stay
      assert.ok(ctl != null && isNavigationAllowed(url, ctl.allowed()), `load of ${url} while allowed is ${JSON.stringify(ctl?.allowed())}`)
      loads.push(url)
    },
    startLocalAgent: async () => { starts.n++; return { origin: LOCAL, token: 'local-token' } },
    probe: async origin => { probes.push(origin) },
    tokens,
    ...over
  })
  return { ctl, loads, tokens, probes, starts }
}

describe('connection controller', () => {
  test('connect-local: starts the agent, stores its token for its origin, opens its dashboard', async () => {
    const { ctl, loads, tokens, starts } = setup()
    assert.equal(ctl.current(), null)
    await ctl.connectLocal()
    assert.equal(starts.n, 1)
    assert.deepEqual(ctl.current(), { url: LOCAL, local: true })
    assert.deepEqual(loads, [LOCAL + '/'])
    assert.equal(tokens.get(LOCAL), 'local-token')
    assert.equal(ctl.getToken(), 'local-token')
    assert.deepEqual(ctl.allowed(), { connectPage: CONNECT_PAGE, agentOrigin: LOCAL })
  })

  test('connect-remote: probes first, then opens; the token calls concern that origin only', async () => {
    const { ctl, loads, tokens, probes } = setup()
    tokens.set(LOCAL, 'local-token')
    await ctl.connectRemote(REMOTE)
    assert.deepEqual(probes, [REMOTE])
    assert.deepEqual(loads, [REMOTE + '/'])
    assert.deepEqual(ctl.current(), { url: REMOTE, local: false })
    assert.equal(ctl.getToken(), null, 'the local agent\'s token is not the remote\'s')
    ctl.setToken('remote-token')
    assert.equal(tokens.get(REMOTE), 'remote-token')
    assert.equal(tokens.get(LOCAL), 'local-token')
    ctl.clearToken()
    assert.equal(tokens.get(REMOTE), null)
    assert.equal(tokens.get(LOCAL), 'local-token')
  })

  test('an unreachable remote: nothing loads, still disconnected, the error goes to the caller', async () => {
    const { ctl, loads } = setup({ probe: async origin => { throw new AgentUnreachableError(origin, 'ECONNREFUSED') } })
    await assert.rejects(ctl.connectRemote(REMOTE), AgentUnreachableError)
    assert.deepEqual(loads, [])
    assert.equal(ctl.current(), null)
  })

  test('a dashboard that fails to load: back to the connect page with the error, disconnected', async () => {
    const loads: string[] = []
    const { ctl } = setup({ load: async url => { loads.push(url); if (url.startsWith('http')) throw new Error('ERR_CONNECTION_REFUSED (-102)') } })
    await assert.rejects(ctl.connectRemote(REMOTE), PageLoadError)
    assert.equal(ctl.current(), null)
    assert.equal(loads.length, 2)
    const back = new URL(loads[1])
    assert.equal(back.origin + back.pathname, 'null' + new URL(CONNECT_PAGE).pathname)
    assert.match(back.searchParams.get('error') ?? '', /agent\.example:8443.*ERR_CONNECTION_REFUSED/)
  })

  test('a load superseded by a switch does not send the window back a second time', async () => {
    let fail: ((err: Error) => void) | undefined
    const loads: string[] = []
    const { ctl } = setup({ load: async url => { loads.push(url); if (url.startsWith('http')) await new Promise<void>((_resolve, reject) => { fail = reject }) } })
    const connecting = ctl.connectRemote(REMOTE)
    while (fail == null) await new Promise(resolve => setImmediate(resolve))
    await ctl.switch()
    fail(new Error('ERR_ABORTED (-3)'))
    await assert.rejects(connecting, PageLoadError)
    assert.deepEqual(loads, [REMOTE + '/', CONNECT_PAGE])
  })

  test('a failed local start is the caller\'s error; nothing is stored or loaded', async () => {
    const { ctl, loads, tokens } = setup({ startLocalAgent: async () => { throw new Error('Node.js v20 is too old') } })
    await assert.rejects(ctl.connectLocal(), /too old/)
    assert.deepEqual(loads, [])
    assert.equal(tokens.map.size, 0)
  })

  test('switch: back to the connect page, disconnected; token calls then have no agent', async () => {
    const { ctl, loads } = setup()
    await ctl.connectLocal()
    await ctl.switch()
    assert.equal(ctl.current(), null)
    assert.equal(loads.at(-1), CONNECT_PAGE)
    assert.equal(ctl.getToken(), null)
    assert.throws(() => { ctl.setToken('x') }, NotConnectedError)
    assert.throws(() => { ctl.clearToken() }, NotConnectedError)
    assert.deepEqual(ctl.allowed(), { connectPage: CONNECT_PAGE, agentOrigin: null })
  })

  test('the local agent stopping sends the window back only if it shows that agent', async () => {
    const { ctl, loads } = setup()
    await ctl.connectRemote(REMOTE)
    await ctl.localAgentStopped(LOCAL, 'code 1')
    assert.deepEqual(ctl.current(), { url: REMOTE, local: false })
    await ctl.switch()
    await ctl.connectLocal()
    await ctl.localAgentStopped(LOCAL, 'code 1; its log: /x/agent.log')
    assert.equal(ctl.current(), null)
    assert.match(new URL(loads.at(-1) ?? '').searchParams.get('error') ?? '', /local agent stopped \(code 1; its log/)
  })

  test('the IPC handlers call the controller', async () => {
    const { ctl, tokens } = setup()
    const h = ctl.handlers()
    await h['connection:connect-local']()
    assert.deepEqual(await h['connection:current'](), { url: LOCAL, local: true })
    assert.equal(await h['auth:get-token'](), 'local-token')
    await h['auth:set-token']('new-token')
    assert.equal(tokens.get(LOCAL), 'new-token')
    await h['auth:clear-token']()
    assert.equal(tokens.get(LOCAL), null)
    await h['connection:switch']()
    assert.equal(await h['connection:current'](), null)
  })
})

describe('agent probe', () => {
  let server: Server
  let origin: string
  const hits: string[] = []
  let currentMode = 'ok'
  before(async () => {
    server = createServer((req, res) => {
      hits.push(req.url ?? '')
      switch (currentMode) {
        case 'ok': res.setHeader('content-type', 'application/json'); res.end(JSON.stringify({ status: 'ok', name: 'agent-0', peerId: 'p', version: '0.1.0' })); break
        case 'not-found': res.statusCode = 404; res.end('{}'); break
        case 'html': res.setHeader('content-type', 'text/html'); res.end('<html>router login</html>'); break
        case 'other-json': res.end(JSON.stringify({ hello: 'world' })); break
        case 'redirect': res.statusCode = 302; res.setHeader('location', 'http://127.0.0.1:1/api/health'); res.end(); break
        case 'huge': res.end(JSON.stringify({ status: 'ok', name: 'x', pad: 'x'.repeat(200_000) })); break
        case 'silent': break // never answers
      }
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  after(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })

  test('an agent answers /api/health', async () => {
    currentMode = 'ok'
    assert.deepEqual(await probeAgent(origin), { name: 'agent-0', version: '0.1.0' })
    assert.equal(hits.at(-1), '/api/health')
  })

  for (const [mode, reason] of [['not-found', /answered 404/], ['html', /did not answer JSON/], ['other-json', /did not answer like an agent/], ['redirect', /answered 302/], ['huge', /more than 65536 bytes/]] as const) {
    test(`not an agent: ${mode}`, async () => {
      currentMode = mode
      await assert.rejects(probeAgent(origin), (err: unknown) => {
        assert.ok(err instanceof AgentUnreachableError)
        assert.equal(err.origin, origin)
        assert.match(err.message, reason)
        return true
      })
    })
  }

  test('nothing listening, or no answer in time', async () => {
    const closed = createServer()
    await new Promise<void>(resolve => closed.listen(0, '127.0.0.1', resolve))
    const port = (closed.address() as AddressInfo).port
    await new Promise(resolve => closed.close(resolve))
    await assert.rejects(probeAgent(`http://127.0.0.1:${port}`), /ECONNREFUSED/)
    currentMode = 'silent'
    await assert.rejects(probeAgent(origin, { timeoutMs: 200 }), /no answer within 200 ms/)
  })
})
