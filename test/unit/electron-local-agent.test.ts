import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, sep } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { TOKEN_FILE as AGENT_TOKEN_FILE } from '../../agent/identity.ts'
import { READY_FILE } from '../../agent/config.ts'
import { AgentEntryNotFoundError, AgentStartError, LocalAgent, NodeNotFoundError, NodeVersionError, TOKEN_FILE, agentName, checkNodeBinary, checkNodeVersion, resolveAgentEntry, unpackedPath } from '../../main/local-agent.ts'

const FAKE_AGENT = fileURLToPath(new URL('../fixtures/fake-desktop-agent.ts', import.meta.url))
const REAL_ENTRY = fileURLToPath(new URL('../../agent/cli/main.ts', import.meta.url))
const posix = process.platform !== 'win32'

let root: string
before(() => { root = mkdtempSync(join(tmpdir(), 'bm-local-agent-')) })
after(() => { rmSync(root, { recursive: true, force: true }) })

let n = 0
const newDir = (): string => join(root, `agent-${n++}`)
const withMode = (mode: string): NodeJS.ProcessEnv => ({ ...process.env, FAKE_AGENT_MODE: mode })

/** A fake `node` that prints a version (a shell script). */
function fakeNode (version: string): string {
  const path = join(root, `node-${version}-${n++}`)
  writeFileSync(path, `#!/bin/sh\necho ${version}\n`)
  chmodSync(path, 0o755)
  return path
}

describe('Node.js version check', () => {
  test('>= 22.18 passes; older, or not a version, fails with NodeVersionError', () => {
    for (const ok of ['v22.18.0', 'v22.23.3', 'v23.0.0', 'v24.1.0\n']) checkNodeVersion(ok)
    for (const bad of ['v20.11.1', 'v22.17.9', 'v18.0.0', '22.18.0', 'Electron 45', '']) {
      assert.throws(() => { checkNodeVersion(bad) }, NodeVersionError, bad)
    }
  })

  test('runs the binary: this Node passes, an old one and a missing one fail clearly', { skip: !posix && 'shell-script fake binaries' }, async () => {
    assert.equal(await checkNodeBinary(process.execPath), process.version)
    await assert.rejects(checkNodeBinary(fakeNode('v20.11.1')), (err: unknown) => {
      assert.ok(err instanceof NodeVersionError)
      assert.match(err.message, /v20\.11\.1.*>= 22\.18.*BLOCKMESH_NODE/)
      return true
    })
    await assert.rejects(checkNodeBinary(join(root, 'no-such-node')), NodeNotFoundError)
  })

  test('BLOCKMESH_NODE picks the binary, and an old one stops the start before anything is spawned', { skip: !posix && 'shell-script fake binaries' }, async () => {
    const dataDir = newDir()
    await assert.rejects(LocalAgent.start({ dataDir, entry: FAKE_AGENT, env: { ...process.env, BLOCKMESH_NODE: fakeNode('v21.7.3') } }), NodeVersionError)
    assert.equal(existsSync(join(dataDir, 'args.json')), false)
  })
})

describe('agent entry and name', () => {
  test('found from the source layout (main/x.ts) and from the bundle (main/dist/main.cjs)', () => {
    const repo = fileURLToPath(new URL('../../', import.meta.url))
    assert.equal(resolveAgentEntry({}, pathToFileURL(join(repo, 'main', 'local-agent.ts')).href), REAL_ENTRY)
    assert.equal(resolveAgentEntry({}, pathToFileURL(join(repo, 'main', 'dist', 'main.cjs')).href), REAL_ENTRY)
  })

  test('inside a packaged app it points into app.asar.unpacked (an external Node cannot read the archive)', () => {
    const seen: string[] = []
    const unpacked = join(sep, 'opt', 'Blockmesh', 'resources', 'app.asar.unpacked', 'agent', 'cli', 'main.ts')
    const entry = resolveAgentEntry({}, pathToFileURL(join(sep, 'opt', 'Blockmesh', 'resources', 'app.asar', 'main', 'dist', 'main.cjs')).href, p => { seen.push(p); return p === unpacked })
    assert.equal(entry, unpacked)
    assert.ok(seen.every(p => !p.split(sep).includes('app.asar')))
    assert.equal(unpackedPath(join(sep, 'a', 'app.asar.bak', 'x')), join(sep, 'a', 'app.asar.bak', 'x'), 'only the archive segment itself')
  })

  test('BLOCKMESH_AGENT_ENTRY overrides; a missing entry is a clear error', () => {
    assert.equal(resolveAgentEntry({ BLOCKMESH_AGENT_ENTRY: FAKE_AGENT }), FAKE_AGENT)
    assert.throws(() => resolveAgentEntry({ BLOCKMESH_AGENT_ENTRY: join(root, 'missing.ts') }), AgentEntryNotFoundError)
    assert.throws(() => resolveAgentEntry({}, pathToFileURL(join(root, 'x', 'y', 'main.cjs')).href), AgentEntryNotFoundError)
  })

  test('the host name becomes a valid agent name', () => {
    assert.equal(agentName('my-laptop.local'), 'my-laptop.local')
    assert.equal(agentName('Jo\'s MacBook Pro'), 'Jo-s-MacBook-Pro')
    assert.equal(agentName('_-weird'), 'weird')
    assert.equal(agentName('x'.repeat(100)).length, 64)
    assert.equal(agentName('---'), 'desktop')
    assert.equal(agentName(''), 'desktop')
  })

  test('the token file name is the agent\'s', () => {
    assert.equal(TOKEN_FILE, AGENT_TOKEN_FILE)
  })
})

describe('starting and stopping (a fake agent process)', () => {
  test('ready once agent.json names the child; a stale agent.json does not count; token read from api-token', async () => {
    const dataDir = newDir()
    const stale = { pid: 1, name: 'old', cluster: 'default', peerId: 'old', apiUrl: 'http://127.0.0.1:1', multiaddrs: [], startedAt: '' }
    mkdirSync(dataDir, { recursive: true })
    writeFileSync(join(dataDir, READY_FILE), JSON.stringify(stale))
    const agent = await LocalAgent.start({ dataDir, node: process.execPath, entry: FAKE_AGENT, name: 'desk-1', env: withMode('ok') })
    try {
      assert.notEqual(agent.info.pid, 1)
      assert.match(agent.info.apiUrl, /^http:\/\/127\.0\.0\.1:\d+$/)
      assert.notEqual(agent.info.apiUrl, 'http://127.0.0.1:1')
      assert.equal(agent.info.origin, agent.info.apiUrl)
      assert.equal(agent.info.token, 'fakeToken_0123456789abcdefghijklmnopqrstuvwxyz')
      assert.equal(agent.info.name, 'desk-1')
      assert.equal(agent.running, true)
      const args = JSON.parse(readFileSync(join(dataDir, 'args.json'), 'utf8')) as string[]
      assert.deepEqual(args, ['agent', '--api-port', '0', '--data-dir', dataDir, '--name', 'desk-1'])
      // it is really serving where it said
      assert.equal((await fetch(agent.info.apiUrl)).status, 200)
    } finally {
      await agent.stop()
    }
    assert.equal(agent.running, false)
    assert.equal(readFileSync(join(dataDir, 'stopped'), 'utf8'), 'SIGTERM', 'stopped with SIGTERM first')
  })

  test('an agent that exits before it is ready: AgentStartError with its exit code and the end of its log', async () => {
    const dataDir = newDir()
    await assert.rejects(LocalAgent.start({ dataDir, node: process.execPath, entry: FAKE_AGENT, env: withMode('exit') }), (err: unknown) => {
      assert.ok(err instanceof AgentStartError)
      assert.match(err.message, /exited \(3\)/)
      assert.match(err.message, /cannot open the database \(on purpose\)/)
      return true
    })
  })

  test('an agent that never gets ready: AgentStartError after the bound, and the child is stopped', async () => {
    const dataDir = newDir()
    let pid: number | undefined
    await assert.rejects(LocalAgent.start({ dataDir, node: process.execPath, entry: FAKE_AGENT, env: withMode('never-ready'), readyTimeoutMs: 300, stopGraceMs: 5000 }), (err: unknown) => {
      assert.ok(err instanceof AgentStartError)
      assert.match(err.message, /not ready after 300 ms/)
      pid = err.pid
      return true
    })
    assert.ok(pid != null && pid > 0)
    assert.throws(() => process.kill(pid as number, 0), { code: 'ESRCH' }, 'the child is gone')
  })

  test('a start can be cancelled (the app quits meanwhile)', async () => {
    const dataDir = newDir()
    const cancel = new AbortController()
    const starting = LocalAgent.start({ dataDir, node: process.execPath, entry: FAKE_AGENT, env: withMode('never-ready'), signal: cancel.signal })
    // cancel once the child is up (it has written its arguments)
    while (!existsSync(join(dataDir, 'args.json'))) await new Promise(resolve => setTimeout(resolve, 20))
    cancel.abort()
    await assert.rejects(starting, /cancelled/)
    assert.equal(readFileSync(join(dataDir, 'stopped'), 'utf8'), 'SIGTERM')
  })

  test('an agent that ignores SIGTERM is killed after the grace period', async () => {
    const dataDir = newDir()
    const agent = await LocalAgent.start({ dataDir, node: process.execPath, entry: FAKE_AGENT, env: withMode('ignore-term'), stopGraceMs: 300 })
    const exited = new Promise<[number | null, string | null]>(resolve => { agent.onExit((code, signal) => { resolve([code, signal]) }) })
    await agent.stop()
    assert.deepEqual(await exited, [null, 'SIGKILL'])
    assert.match(readFileSync(agent.info.logFile, 'utf8'), /ignoring SIGTERM/)
    await agent.stop() // stopping twice is harmless
  })

  test('the log file is the agent\'s own, 0600, in its data dir', { skip: !posix && 'POSIX modes' }, async () => {
    const dataDir = newDir()
    const agent = await LocalAgent.start({ dataDir, node: process.execPath, entry: FAKE_AGENT, env: withMode('ok') })
    await agent.stop()
    assert.equal(agent.info.logFile, join(dataDir, 'agent.log'))
    assert.match(readFileSync(agent.info.logFile, 'utf8'), new RegExp(`fake agent ${agent.info.pid} starting`))
    assert.equal(statSync(agent.info.logFile).mode & 0o777, 0o600)
  })
})
