/**
 * An init container written in Python on the SDK (seed 001; issue 17), run by a real agent: the component's
 * `init.command` is `python:PATH.py`, so the agent runs it in a virtual environment with the SDK
 * (aios_init_container). The program deploys a third-party OpenAI-compatible server on a port of its own
 * (test/fixtures/openai-server.ts standing in for vLLM), reports that endpoint, and the agent serves the block
 * (runtime external) from it, with the endpoint in blockInitData.initContainer; deleting the block stops the
 * program, whose teardown stops the server.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pythonMissing } from './helpers/python.ts'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'

const INIT = fileURLToPath(new URL('./fixtures/python-init/openai_init.py', import.meta.url))
const SERVER = fileURLToPath(new URL('./fixtures/openai-server.ts', import.meta.url))

const missing = pythonMissing()

function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

describe(missing === false ? 'an init container written in Python on the SDK' : `an init container written in Python: skipped, ${missing}`, { skip: missing, timeout: 600_000 }, () => {
  let agent: AgentProcess
  const out = tempDir('bm-py-init-')

  before(async () => { agent = await AgentProcess.start({ name: 'py-init' }) })
  after(async () => { await stopAll([agent]) })

  test('it deploys the system, reports its endpoint, the block serves from it, and it is torn down with the block', async () => {
    const component = {
      name: 'py-init-chat',
      version: '1',
      runtime: 'external',
      external: { model: 'py-model' },
      // the first run makes the environment (pip installs the SDK): allow for it
      init: { command: `python:${INIT}`, env: { FIXTURE_NODE: process.execPath, FIXTURE_SERVER: SERVER, FIXTURE_OUT: out }, readiness: '/health', timeoutSeconds: 480 },
      resources: { cpus: 1, ram: '128MiB' }
    }
    const c = await agent.api('/api/components', { method: 'POST', body: component })
    assert.equal(c.status, 201, JSON.stringify(c.body))
    const b = await agent.api('/api/blocks', { method: 'POST', body: { id: 'py-init-chat', component: 'py-init-chat:1', blockInitData: { model: 'py-model', note: 'from the block' } } })
    assert.equal(b.status, 201, JSON.stringify(b.body))
    await until(async () => {
      const s = (await agent.api('/api/blocks/py-init-chat')).body
      if (s.status === 'failed') throw new Error(`block failed: ${s.error as string}`)
      return s.status === 'ready'
    }, 'the block to be ready', 540_000, 250)

    // the program told the agent the deployed server's endpoint, not its own control port
    const note = JSON.parse(readFileSync(join(out, 'py-init-chat.json'), 'utf8'))
    assert.equal(note.block, 'py-init-chat')
    assert.deepEqual(note.init_data, { model: 'py-model', note: 'from the block' })
    const init = (await agent.api('/api/instances')).body.instances.find((i: any) => i.block === 'py-init-chat').initProcess
    assert.equal(init.endpoint, `http://127.0.0.1:${note.port as number}`)
    assert.notEqual(init.url, init.endpoint)
    assert.equal(note.instance, (await agent.api('/api/instances')).body.instances.find((i: any) => i.block === 'py-init-chat').instance)
    const health = await fetch(`${init.url as string}/health`)
    assert.equal(health.status, 200)
    assert.equal((await health.json()).endpoint, init.endpoint)

    // the block answers from the deployed server
    const r = await agent.api('/v1/chat/completions', { method: 'POST', body: { model: 'py-init-chat', messages: [{ role: 'user', content: 'hello there' }] } })
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.equal(r.body.choices[0].message.content, 'echo: hello there')
    assert.ok(alive(note.pid) && alive(init.pid))

    // deleting the block stops the init program; its teardown stops the server it deployed
    assert.equal((await agent.api('/api/blocks/py-init-chat', { method: 'DELETE' })).status, 200)
    await until(() => !alive(init.pid) && !alive(note.pid), 'the init program and the server it deployed to stop', 30_000)
    assert.ok(existsSync(join(out, 'py-init-chat.json')))
  })
})
