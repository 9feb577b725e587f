import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { appendFileSync, copyFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { componentSpec, deploy, tinyModel } from './helpers/models.ts'

async function chat (agent: AgentProcess, model: string): Promise<{ status: number, body: any }> {
  return await agent.api('/v1/chat/completions', { method: 'POST', body: { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 8, temperature: 0 } })
}

describe('blocks on one agent', () => {
  let agent: AgentProcess
  let server: Server
  const dir = tempDir('bm-blocks-')
  const m = tinyModel(dir, 21)
  // files other blocks here have not loaded: a file already in the agent's content store (same MD5) is used
  // from there, whatever URL a component names
  const viaHttp = tinyModel(dir, 22)
  const corrupted = tinyModel(dir, 23)

  before(async () => {
    agent = await AgentProcess.start({ name: 'blocks' })
    // a plain HTTP server for the "model from a URL" case
    server = createServer((req, res) => {
      if (req.url === '/models/tiny.onnx') {
        const bytes = readFileSync(viaHttp.path)
        res.writeHead(200, { 'content-length': bytes.length })
        res.end(bytes)
      } else {
        res.writeHead(404)
        res.end()
      }
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  })
  after(async () => {
    server.close()
    await stopAll([agent])
  })

  test('a block loads (pending → loading → ready) and reports the execution provider that ran it', async () => {
    const b = await deploy(agent, componentSpec(m), { id: 'first', component: `tiny-gpt:${m.md5.slice(0, 8)}` })
    assert.equal(b.status, 'ready')
    assert.equal(b.runtime.provider, 'cpu', 'this machine has no GPU: CPU is chosen')
    assert.deepEqual(b.runtime.providerTried, [], 'auto on a box without GPUs does not even try GPU providers')
    assert.equal(b.runtime.modelBytes, m.sizeBytes)
    assert.equal(typeof b.runtime.threads, 'number', 'the thread count the session uses is reported')
    assert.equal(b.runtime.promptBudgetMs, 200, 'the default prompt time budget (agent/executor/prefill.ts)')
    assert.equal((await chat(agent, 'first')).status, 200)
  })

  test('a block\'s prompt time budget is checked, reaches its engine and is reported (0: none, throughput first)', async () => {
    for (const bad of [-1, 2.5, 60_001, '200']) {
      const r = await agent.api('/api/blocks', { method: 'POST', body: { id: 'budget-bad', component: `tiny-gpt:${m.md5.slice(0, 8)}`, promptBudgetMs: bad } })
      assert.equal(r.status, 400, `promptBudgetMs ${JSON.stringify(bad)}: ${JSON.stringify(r.body)}`)
      assert.match(JSON.stringify(r.body), /promptBudgetMs/)
    }
    const b = await deploy(agent, componentSpec(m), { id: 'budget-none', component: `tiny-gpt:${m.md5.slice(0, 8)}`, promptBudgetMs: 0 })
    assert.equal(b.status, 'ready', b.error)
    assert.equal(b.spec.promptBudgetMs, 0)
    assert.equal(b.runtime.promptBudgetMs, 0)
    assert.equal((await chat(agent, 'budget-none')).status, 200)
    assert.equal((await agent.api('/api/blocks/budget-none', { method: 'DELETE' })).status, 200)
  })

  test('a model fetched over HTTP is downloaded, checked and served', async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/models/tiny.onnx`
    const b = await deploy(agent, componentSpec(viaHttp, 'tiny-http', { model: { url, md5: viaHttp.md5 } }), { id: 'from-http', component: `tiny-http:${viaHttp.md5.slice(0, 8)}` })
    assert.equal(b.status, 'ready', b.error)
    assert.ok(b.runtime.modelPath.startsWith(join(agent.dir, 'content')), `kept in the agent's content store (${b.runtime.modelPath as string})`)
    const held = (await agent.api('/api/content')).body.files.find((f: any) => f.md5 === viaHttp.md5)
    assert.equal(held?.state, 'complete', 'the downloaded file is in the store, for peers too')
    assert.equal(await agent.metric('blockmesh_content_received_bytes_total', { source: 'origin' }), viaHttp.sizeBytes, 'its bytes came from the origin')
    assert.equal((await chat(agent, 'from-http')).status, 200)
  })

  test('a corrupt model file fails its block with a clear reason and leaves the others running', async () => {
    const bad = join(dir, 'corrupt.onnx')
    copyFileSync(corrupted.path, bad)
    appendFileSync(bad, 'garbage')
    const b = await deploy(agent, componentSpec(corrupted, 'tiny-corrupt', { model: { url: bad, md5: corrupted.md5 } }), { id: 'corrupt', component: `tiny-corrupt:${corrupted.md5.slice(0, 8)}` })
    assert.equal(b.status, 'failed')
    assert.match(b.error, /MD5/)
    assert.match(b.error, new RegExp(corrupted.md5))
    const r = await chat(agent, 'corrupt')
    assert.equal(r.status, 503)
    assert.equal(r.body.error.code, 'model_not_ready')
    assert.equal((await agent.api('/api/blocks/first')).body.status, 'ready')
    assert.equal((await chat(agent, 'first')).status, 200)
  })

  test('bad specs get field-level 400s; duplicates and components in use get 409; unknown components 404', async () => {
    const bad = await agent.api('/api/components', { method: 'POST', body: { ...componentSpec(m), name: 'Bad Name', contextLength: 'long', model: { url: m.path, md5: 'xyz' } } })
    assert.equal(bad.status, 400)
    const fields = bad.body.error.details.map((d: any) => d.field).sort()
    assert.deepEqual(fields, ['contextLength', 'model.md5', 'name'])
    const unknownKey = await agent.api('/api/components', { method: 'POST', body: { ...componentSpec(m, 'x2'), colour: 'red' } })
    assert.equal(unknownKey.status, 400)
    assert.match(unknownKey.body.error.message, /colour/)
    const dup = await agent.api('/api/components', { method: 'POST', body: componentSpec(m) })
    assert.equal(dup.status, 409)
    const inUse = await agent.api(`/api/components/${encodeURIComponent(`tiny-gpt:${m.md5.slice(0, 8)}`)}`, { method: 'DELETE' })
    assert.equal(inUse.status, 409)
    assert.match(inUse.body.error.message, /first/)
    const noComp = await agent.api('/api/blocks', { method: 'POST', body: { component: 'nothing:1' } })
    assert.equal(noComp.status, 404)
    const badBlock = await agent.api('/api/blocks', { method: 'POST', body: { component: 'tiny-gpt', maxBatch: 0 } })
    assert.equal(badBlock.status, 400)
    assert.deepEqual(badBlock.body.error.details.map((d: any) => d.field).sort(), ['component', 'maxBatch'])
  })

  test('blocks survive an agent restart: they load again and serve', async () => {
    await agent.stop()
    await agent.launch()
    await until(async () => (await agent.api('/api/blocks/first')).body.status === 'ready', 'block first to be ready again', 60_000)
    await until(async () => (await agent.api('/api/blocks/from-http')).body.status === 'ready', 'block from-http to be ready again', 60_000)
    assert.equal((await chat(agent, 'first')).status, 200)
    const corrupt = await until(async () => {
      const b = (await agent.api('/api/blocks/corrupt')).body
      return b.status === 'failed' ? b : undefined
    }, 'the corrupt block to fail again')
    assert.match(corrupt.error, /MD5/)
  })

  test('deleting a block stops it and removes it', async () => {
    const del = await agent.api('/api/blocks/from-http', { method: 'DELETE' })
    assert.equal(del.status, 200)
    assert.equal((await agent.api('/api/blocks/from-http')).status, 404)
    assert.equal((await chat(agent, 'from-http')).status, 404)
    assert.ok(!(await agent.api('/v1/models')).body.data.some((x: any) => x.id === 'from-http'))
  })
})
