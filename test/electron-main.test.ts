// The desktop app's main process, bundled as it ships (main/dist/main.cjs), run under plain Node with a
// stand-in 'electron' module (test/fixtures/fake-electron.cjs) that records what main does and lets the
// test act as the window's pages. The real Electron window is tested in electron-window.test.ts where
// the Electron binary exists. The remote agent connected to is a real agent process; `--local` runs a
// stand-in agent entry (test/fixtures) that the test can make start, exit or hang on cue, since main's
// handling of those is what is tested here (the real local agent under main's launcher is
// electron-local-agent.test.ts).
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { CSP } from '../agent/api/csp.ts'
import { buildDesktop } from '../main/build.ts'
import { IPC_CHANNELS } from '../main/ipc-channels.ts'
import { secureWebPreferences } from '../main/security.ts'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'

const FAKE_ELECTRON = fileURLToPath(new URL('./fixtures/fake-electron.cjs', import.meta.url))
const FAKE_AGENT = fileURLToPath(new URL('./fixtures/fake-desktop-agent.ts', import.meta.url))

interface Reply { ok: boolean, value?: any, error?: { name: string, message: string } }

/** The bundled main process under the fake Electron, driven over its IPC channel. */
class App {
  readonly child: ChildProcess
  readonly exited: Promise<number | null>
  output = ''
  private next = 0
  private readonly pending = new Map<number, (r: Reply) => void>()

  constructor (dist: string, args: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, [join(dist, 'main.cjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env: { ...process.env, ...env } })
    this.child.stdout?.on('data', d => { this.output += String(d) })
    this.child.stderr?.on('data', d => { this.output += String(d) })
    this.child.on('message', ({ id, ...reply }: Reply & { id: number }) => { this.pending.get(id)?.(reply); this.pending.delete(id) })
    this.exited = new Promise(resolve => this.child.on('exit', code => { resolve(code) }))
  }

  async send (msg: Record<string, unknown>): Promise<Reply> {
    const id = ++this.next
    return await new Promise<Reply>(resolve => {
      this.pending.set(id, resolve)
      this.child.send({ ...msg, id })
    })
  }

  async state (): Promise<any> { return (await this.send({ type: 'state' })).value }

  /** Calls an IPC channel as a page at `url` (default: the window's current page) would. */
  async invoke (channel: string, args: unknown[] = [], from: { url?: string, senderId?: number, subframe?: boolean } = {}): Promise<Reply> {
    return await this.send({ type: 'invoke', channel, args, ...from })
  }

  async quit (): Promise<number | null> {
    await this.send({ type: 'quit' })
    return await this.exited
  }

  kill (): void {
    if (this.child.exitCode == null && this.child.signalCode == null) this.child.kill('SIGKILL')
  }
}

describe('the desktop main process (bundled, with a stand-in Electron)', () => {
  let root: string
  let dist: string
  let agent: AgentProcess
  let agentOrigin: string
  let closedOrigin: string
  const apps: App[] = []

  const launch = (args: string[] = [], env: NodeJS.ProcessEnv = {}): { app: App, userData: string } => {
    const userData = join(root, `user-data-${apps.length}`)
    mkdirSync(userData, { recursive: true })
    const app = new App(dist, args, { FAKE_ELECTRON_USER_DATA: userData, BLOCKMESH_AGENT_ENTRY: FAKE_AGENT, BLOCKMESH_NODE: process.execPath, FAKE_AGENT_MODE: 'ok', BLOCKMESH_AGENT_URL: '', BLOCKMESH_LOCAL: '', ...env })
    apps.push(app)
    return { app, userData }
  }

  before(async () => {
    root = tempDir('bm-desktop-main-')
    // the app's layout: <app>/main/dist/main.cjs, with 'electron' resolved from <app>/node_modules
    dist = join(root, 'app', 'main', 'dist')
    await buildDesktop(dist)
    mkdirSync(join(root, 'app', 'node_modules', 'electron'), { recursive: true })
    copyFileSync(FAKE_ELECTRON, join(root, 'app', 'node_modules', 'electron', 'index.js'))

    // a real agent to connect to (its /api/health, its dashboard at /)
    agent = await AgentProcess.start({ name: 'remote-1' })
    agentOrigin = new URL(agent.url).origin
    const closed = createServer()
    await new Promise<void>(resolve => closed.listen(0, '127.0.0.1', resolve))
    closedOrigin = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`
    await new Promise(resolve => closed.close(resolve))
  })

  after(async () => {
    for (const app of apps) app.kill()
    await stopAll([agent])
    rmSync(root, { recursive: true, force: true })
  })

  test('sandbox on before ready, one secure window, the connect page first, every channel and session rule installed', async () => {
    const { app } = launch()
    const connectPage = pathToFileURL(join(dist, 'connect', 'index.html')).href
    const s = await until(async () => { const st = await app.state(); return st.events.includes('show') ? st : null }, 'the window to show')
    assert.ok(s.events.indexOf('enableSandbox') < s.events.indexOf('ready'), 'app.enableSandbox() before ready')
    assert.ok(s.events.includes('requestSingleInstanceLock'))
    assert.equal(s.windows.length, 1)
    assert.deepEqual(s.windows[0].webPreferences, { ...secureWebPreferences(join(dist, 'preload.cjs')) })
    assert.ok(existsSync(s.windows[0].webPreferences.preload), 'the preload is where the window looks for it')
    assert.deepEqual(s.loads, [connectPage])
    assert.ok(existsSync(fileURLToPath(connectPage)))
    assert.deepEqual([...s.channels].sort(), [...IPC_CHANNELS].sort())
    assert.deepEqual(s.session, { permissionRequest: true, permissionCheck: true, devicePermission: true, headers: true })
    assert.equal(s.permissionGranted, false)
    assert.equal(s.permissionCheck, false)
    assert.ok(s.headers['Content-Security-Policy'].includes(CSP))
    for (const event of ['will-navigate', 'will-frame-navigate', 'will-redirect', 'will-attach-webview']) assert.ok(s.contentsListeners[event] >= 1, event)

    // the connect page: not connected; it may not navigate anywhere else; new windows denied
    assert.deepEqual(await app.invoke('connection:current'), { ok: true, value: null })
    assert.deepEqual((await app.send({ type: 'navigate', event: 'will-navigate', url: agentOrigin + '/' })).value, { prevented: true })
    assert.deepEqual((await app.send({ type: 'window-open', url: 'https://docs.example/' })).value, { action: 'deny' })
    assert.deepEqual((await app.state()).opened, ['https://docs.example/'])
    assert.equal(await app.quit(), 0)
  })

  test('connect to an agent, store its token encrypted, refuse foreign senders, switch back', async () => {
    const { app, userData } = launch()
    await until(async () => (await app.state()).loads.length === 1, 'the connect page')

    const down = await app.invoke('connection:connect-remote', [closedOrigin])
    assert.equal(down.ok, false)
    assert.equal(down.error?.name, 'AgentUnreachableError')
    assert.equal((await app.state()).loads.length, 1, 'nothing loaded for an agent that is not there')

    const bad = await app.invoke('connection:connect-remote', ['file:///etc/passwd'])
    assert.equal(bad.error?.name, 'IpcPayloadError')

    assert.deepEqual(await app.invoke('connection:connect-remote', [agentOrigin + '/peers']), { ok: true })
    const s = await app.state()
    assert.equal(s.loads.at(-1), agentOrigin + '/')
    assert.deepEqual((await app.invoke('connection:current')).value, { url: agentOrigin, local: false })
    assert.deepEqual((await app.send({ type: 'navigate', event: 'will-navigate', url: agentOrigin + '/blocks' })).value, { prevented: false })
    assert.deepEqual((await app.send({ type: 'navigate', event: 'will-redirect', url: 'http://127.0.0.1:1/' })).value, { prevented: true })

    const token = 'remote-token-0123456789'
    assert.deepEqual(await app.invoke('auth:set-token', [token]), { ok: true })
    assert.deepEqual(await app.invoke('auth:get-token'), { ok: true, value: token })
    const file = readFileSync(join(userData, 'tokens.json'), 'utf8')
    assert.deepEqual(Object.keys(JSON.parse(file).tokens), [agentOrigin])
    assert.equal(file.includes(token), false, 'no plaintext token on disk')

    assert.equal((await app.invoke('auth:get-token', [], { senderId: s.windowContentsId + 1 })).error?.name, 'IpcSenderError')
    assert.equal((await app.invoke('auth:get-token', [], { subframe: true, url: agentOrigin + '/x' })).error?.name, 'IpcSenderError')
    assert.equal((await app.invoke('auth:get-token', [], { url: 'http://127.0.0.1:1/' })).error?.name, 'IpcSenderError')
    assert.equal((await app.invoke('connection:connect-local')).error?.name, 'IpcSenderError', 'a dashboard cannot start the local agent')

    assert.deepEqual(await app.invoke('connection:switch'), { ok: true })
    assert.equal((await app.state()).loads.at(-1), pathToFileURL(join(dist, 'connect', 'index.html')).href)
    assert.deepEqual((await app.invoke('connection:current')).value, null)
    assert.equal(await app.quit(), 0)
  })

  test('--local starts the local agent on the configured Node, opens it with its token, and quit stops it', async () => {
    const { app, userData } = launch(['--local'])
    const s = await until(async () => { const st = await app.state(); return /^http:\/\/127\.0\.0\.1:\d+\/$/.test(st.currentUrl ?? '') ? st : null }, 'the local agent\'s dashboard')
    const origin = new URL(s.currentUrl).origin
    assert.deepEqual((await app.invoke('connection:current')).value, { url: origin, local: true })
    assert.deepEqual(await app.invoke('auth:get-token'), { ok: true, value: 'fakeToken_0123456789abcdefghijklmnopqrstuvwxyz' })
    const args = JSON.parse(readFileSync(join(userData, 'agent', 'args.json'), 'utf8')) as string[]
    assert.deepEqual(args.slice(0, 5), ['agent', '--api-port', '0', '--data-dir', join(userData, 'agent')])
    assert.equal(await app.quit(), 0)
    assert.equal(readFileSync(join(userData, 'agent', 'stopped'), 'utf8'), 'SIGTERM', 'the agent was stopped before the app quit')
  })

  test('a local agent that cannot start: the connect page shows why', async () => {
    const { app } = launch(['--local'], { FAKE_AGENT_MODE: 'exit' })
    const s = await until(async () => { const st = await app.state(); return st.loads.length >= 2 ? st : null }, 'the connect page with an error')
    assert.match(new URL(s.loads.at(-1)).searchParams.get('error') ?? '', /exited \(3\).*cannot open the database/s)
    assert.equal(await app.quit(), 0)
  })

  test('--agent-url to nothing: the connect page with the error; a bad flag likewise', async () => {
    const { app } = launch(['--agent-url', closedOrigin])
    const s = await until(async () => { const st = await app.state(); return st.loads.length >= 2 ? st : null }, 'the connect page with an error')
    assert.match(new URL(s.loads.at(-1)).searchParams.get('error') ?? '', /not a reachable Blockmesh agent/)
    assert.equal(await app.quit(), 0)

    const { app: flagged } = launch(['--agent-url', 'ftp://x'])
    const f = await until(async () => { const st = await flagged.state(); return st.loads.length >= 1 ? st : null }, 'the connect page')
    assert.match(new URL(f.loads[0]).searchParams.get('error') ?? '', /only http: and https:/)
    assert.equal(await flagged.quit(), 0)
  })

  test('a second instance quits at once and opens no window', async () => {
    const recordFile = join(root, 'second-instance.json')
    const { app } = launch([], { FAKE_ELECTRON_SECOND_INSTANCE: '1', FAKE_ELECTRON_RECORD: recordFile })
    assert.equal(await app.exited, 0)
    const s = JSON.parse(readFileSync(recordFile, 'utf8'))
    assert.deepEqual(s.windows, [])
    assert.ok(s.events.includes('quit'))
  })
})
