import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { READY_FILE } from '../agent/config.ts'
import { LocalAgent } from '../main/local-agent.ts'
import { tempDir } from './helpers/agents.ts'

// The desktop app's "Start a local agent", with the real agent (agent/cli/main.ts) on this Node.
test('the desktop app starts a real local agent, reads its token, and stops it', async () => {
  const dataDir = join(tempDir('bm-desktop-'), 'agent')
  // the app keeps the agent's default listen address; a test takes any free port on loopback
  const agent = await LocalAgent.start({ dataDir, node: process.execPath, name: 'desktop-test', extraArgs: ['--listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'warn'] })
  try {
    assert.equal(agent.running, true)
    const health = await (await fetch(`${agent.info.origin}/api/health`)).json() as { status: string, name: string, peerId: string }
    assert.equal(health.status, 'ok')
    assert.equal(health.name, 'desktop-test')
    assert.equal(health.peerId, agent.info.peerId)
    const auth = await (await fetch(`${agent.info.origin}/api/auth`, { headers: { authorization: `Bearer ${agent.info.token}` } })).json() as { authenticated: boolean }
    assert.equal(auth.authenticated, true, 'the token read from the data dir is the agent\'s')
    assert.equal((await fetch(`${agent.info.origin}/api/auth`, { headers: { authorization: 'Bearer wrong-token-wrong-token-wrong-token' } })).status, 401)
  } finally {
    await agent.stop()
  }
  assert.equal(agent.running, false)
  assert.equal(existsSync(join(dataDir, READY_FILE)), false, 'a clean stop (SIGTERM) removes agent.json')
  rmSync(join(dataDir, '..'), { recursive: true, force: true })
})
