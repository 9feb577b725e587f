import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { CHANNEL_PLACES, IPC_CHANNELS, IpcPayloadError, IpcSenderError, UnknownIpcChannelError, createSenderGuard, registerIpc } from '../../main/ipc.ts'
import type { IpcHandlers, IpcSender } from '../../main/ipc.ts'
import type { AllowedLocations } from '../../main/security.ts'

const WINDOW_ID = 7
const CONNECT_PAGE = 'file:///app/main/dist/connect/index.html'
const AGENT = 'http://127.0.0.1:7700'

/** ipcMain's handle(), recording handlers so a test can invoke them as Electron would. */
class FakeIpcMain {
  readonly handlers = new Map<string, (event: IpcSender, ...args: unknown[]) => Promise<unknown>>()
  handle (channel: string, listener: (event: IpcSender, ...args: unknown[]) => Promise<unknown>): void {
    if (this.handlers.has(channel)) throw new Error(`second handler for ${channel}`)
    this.handlers.set(channel, listener)
  }

  async invoke (channel: string, event: IpcSender, ...args: unknown[]): Promise<unknown> {
    const h = this.handlers.get(channel)
    if (h == null) throw new Error(`No handler registered for '${channel}'`)
    return await h(event, ...args)
  }
}

const mainFrame = (url: string): IpcSender['senderFrame'] => ({ url, parent: null })
const fromWindow = (url: string): IpcSender => ({ sender: { id: WINDOW_ID }, senderFrame: mainFrame(url) })

function setup (allowed: AllowedLocations = { connectPage: CONNECT_PAGE, agentOrigin: AGENT }): { ipc: FakeIpcMain, calls: Array<[string, unknown[]]>, logged: string[] } {
  const ipc = new FakeIpcMain()
  const calls: Array<[string, unknown[]]> = []
  const logged: string[] = []
  const record = (channel: string, result: unknown = undefined) => (...args: unknown[]) => { calls.push([channel, args]); return result }
  const handlers: IpcHandlers = {
    'auth:get-token': record('auth:get-token', 'tok-1'),
    'auth:set-token': record('auth:set-token'),
    'auth:clear-token': record('auth:clear-token'),
    'connection:current': record('connection:current', { url: AGENT, local: false }),
    'connection:connect-local': record('connection:connect-local'),
    'connection:connect-remote': record('connection:connect-remote'),
    'connection:switch': record('connection:switch')
  }
  const guard = createSenderGuard({ windowContentsId: () => WINDOW_ID, allowed: () => allowed, log: m => logged.push(m) })
  const registered = registerIpc(ipc, handlers, guard, m => logged.push(m))
  assert.deepEqual([...registered].sort(), [...IPC_CHANNELS].sort())
  return { ipc, calls, logged }
}

describe('IPC sender check', () => {
  test('an allowed channel from the app\'s window, main frame, allowed page runs its handler', async () => {
    const { ipc, calls } = setup()
    assert.equal(await ipc.invoke('auth:get-token', fromWindow(`${AGENT}/blocks`)), 'tok-1')
    assert.deepEqual(await ipc.invoke('connection:current', fromWindow(CONNECT_PAGE)), { url: AGENT, local: false })
    await ipc.invoke('connection:connect-local', fromWindow(`${CONNECT_PAGE}?error=x`))
    assert.deepEqual(calls.map(c => c[0]), ['auth:get-token', 'connection:current', 'connection:connect-local'])
  })

  test('another webContents is rejected (and logged), its handler never runs', async () => {
    const { ipc, calls, logged } = setup()
    await assert.rejects(ipc.invoke('auth:get-token', { sender: { id: WINDOW_ID + 1 }, senderFrame: mainFrame(AGENT + '/') }), (err: unknown) => {
      assert.ok(err instanceof IpcSenderError)
      assert.equal(err.name, 'IpcSenderError')
      assert.equal(err.channel, 'auth:get-token')
      return true
    })
    assert.equal(calls.length, 0)
    assert.ok(logged.some(l => l.includes('not the app\'s window')))
  })

  test('a subframe is rejected, even on the agent\'s own origin', async () => {
    const { ipc, calls } = setup()
    const event: IpcSender = { sender: { id: WINDOW_ID }, senderFrame: { url: AGENT + '/frame', parent: mainFrame(AGENT + '/') } }
    await assert.rejects(ipc.invoke('auth:get-token', event), /subframe/)
    assert.equal(calls.length, 0)
  })

  test('a foreign origin in the window is rejected', async () => {
    const { ipc, calls } = setup()
    for (const url of ['http://127.0.0.1:7701/', 'https://evil.example/', 'file:///tmp/evil.html', 'data:text/html,x', 'about:blank']) {
      await assert.rejects(ipc.invoke('auth:get-token', fromWindow(url)), IpcSenderError, url)
      await assert.rejects(ipc.invoke('connection:current', fromWindow(url)), IpcSenderError, url)
    }
    assert.equal(calls.length, 0)
  })

  test('a frame that is gone, or no window at all, is rejected', async () => {
    const { ipc } = setup()
    await assert.rejects(ipc.invoke('connection:current', { sender: { id: WINDOW_ID }, senderFrame: null }), /frame is gone/)
    const guard = createSenderGuard({ windowContentsId: () => null, allowed: () => ({ connectPage: CONNECT_PAGE, agentOrigin: null }) })
    assert.throws(() => guard(fromWindow(CONNECT_PAGE), 'connection:current'), IpcSenderError)
  })

  test('before connecting, the agent origin is no allowed sender', async () => {
    const { ipc } = setup({ connectPage: CONNECT_PAGE, agentOrigin: null })
    await assert.rejects(ipc.invoke('connection:switch', fromWindow(AGENT + '/')), IpcSenderError)
    await ipc.invoke('connection:switch', fromWindow(CONNECT_PAGE))
  })

  test('each channel only from its pages: tokens from the dashboard, connecting from the connect page', async () => {
    const { ipc, calls } = setup()
    await assert.rejects(ipc.invoke('auth:get-token', fromWindow(CONNECT_PAGE)), /connect page/)
    await assert.rejects(ipc.invoke('connection:connect-remote', fromWindow(AGENT + '/'), 'http://evil.example'), /dashboard/)
    await assert.rejects(ipc.invoke('connection:connect-local', fromWindow(AGENT + '/')), /dashboard/)
    assert.equal(calls.length, 0)
    await ipc.invoke('connection:switch', fromWindow(AGENT + '/'))
    assert.deepEqual(calls.map(c => c[0]), ['connection:switch'])
    for (const channel of IPC_CHANNELS) assert.ok(CHANNEL_PLACES[channel].length > 0, channel)
  })
})

describe('IPC registration', () => {
  test('a channel not on the allow-list is refused at registration, and nothing is registered', () => {
    const ipc = new FakeIpcMain()
    const guard = createSenderGuard({ windowContentsId: () => WINDOW_ID, allowed: () => ({ connectPage: CONNECT_PAGE, agentOrigin: AGENT }) })
    const handlers = { 'connection:current': () => null, 'shell:exec': () => 'pwned' } as unknown as IpcHandlers
    assert.throws(() => registerIpc(ipc, handlers, guard), (err: unknown) => {
      assert.ok(err instanceof UnknownIpcChannelError)
      assert.equal(err.channel, 'shell:exec')
      return true
    })
    assert.equal(ipc.handlers.size, 0)
  })

  test('only the handlers given are registered', () => {
    const ipc = new FakeIpcMain()
    const guard = createSenderGuard({ windowContentsId: () => WINDOW_ID, allowed: () => ({ connectPage: CONNECT_PAGE, agentOrigin: AGENT }) })
    assert.deepEqual(registerIpc(ipc, { 'connection:current': () => null }, guard), ['connection:current'])
    assert.deepEqual([...ipc.handlers.keys()], ['connection:current'])
  })
})

describe('IPC payloads', () => {
  test('a token: 1-4096 characters without whitespace', async () => {
    const { ipc, calls, logged } = setup()
    const from = fromWindow(AGENT + '/')
    await ipc.invoke('auth:set-token', from, 'abc_DEF-123')
    await ipc.invoke('auth:set-token', from, 'x'.repeat(4096))
    for (const bad of ['', 'has space', 'tab\there', 'new\nline', 'x'.repeat(4097), 42, null, { token: 'x' }]) {
      await assert.rejects(ipc.invoke('auth:set-token', from, bad), IpcPayloadError, JSON.stringify(bad))
    }
    await assert.rejects(ipc.invoke('auth:set-token', from), IpcPayloadError, 'missing argument')
    await assert.rejects(ipc.invoke('auth:set-token', from, 'ok', 'extra'), IpcPayloadError, 'extra argument')
    assert.deepEqual(calls, [['auth:set-token', ['abc_DEF-123']], ['auth:set-token', ['x'.repeat(4096)]]])
    assert.ok(logged.some(l => l.includes('bad arguments')))
  })

  test('a remote URL: http(s), no credentials, no fragment; the handler gets its origin', async () => {
    const { ipc, calls } = setup()
    const from = fromWindow(CONNECT_PAGE)
    await ipc.invoke('connection:connect-remote', from, 'http://127.0.0.1:7700')
    await ipc.invoke('connection:connect-remote', from, 'https://agent.example:8443/some/path?x=1')
    assert.deepEqual(calls, [['connection:connect-remote', ['http://127.0.0.1:7700']], ['connection:connect-remote', ['https://agent.example:8443']]])
    for (const bad of ['file:///etc/passwd', 'javascript:alert(1)', 'ftp://host/', 'http://user:pw@127.0.0.1:7700/', 'http://127.0.0.1:7700/#frag', 'not a url', '', 7700, 'http://' + 'a'.repeat(2100) + '.example/']) {
      await assert.rejects(ipc.invoke('connection:connect-remote', from, bad), IpcPayloadError, JSON.stringify(bad))
    }
    assert.equal(calls.length, 2)
  })

  test('channels without arguments refuse any', async () => {
    const { ipc, calls } = setup()
    await assert.rejects(ipc.invoke('auth:get-token', fromWindow(AGENT + '/'), 'http://other.example'), IpcPayloadError)
    await assert.rejects(ipc.invoke('connection:connect-local', fromWindow(CONNECT_PAGE), { dataDir: '/' }), IpcPayloadError)
    assert.equal(calls.length, 0)
  })

  test('the sender is checked before the payload: a foreign sender learns nothing about the schema', async () => {
    const { ipc } = setup()
    await assert.rejects(ipc.invoke('auth:set-token', fromWindow('https://evil.example/'), ''), IpcSenderError)
  })
})
