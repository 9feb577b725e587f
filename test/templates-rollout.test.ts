/**
 * Rolling a service to another template version while it serves (issue 16): two agents in their own
 * processes, the SmolLM2 template deployed as the service `chat`, then rolled from v1 to v2 while 8 clients
 * (4 through each agent) stream completions back to back. The new version is deployed beside the old one,
 * the name moves to it once it serves, and the old one drains: every request completes, requests in flight
 * at the switch finish on v1, requests after the rollout are served by v2's instance. A rollout to a
 * version that cannot load (asked for by PUTting the seed's MLService manifest again) fails and leaves the
 * service where it was. When the agent running a rollout is killed, the other agent takes the rollout over.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { realWeights } from './helpers/weights.ts'

const smol = realWeights('smollm2')
const TEMPLATE = 'smollm2-135m-instruct'

interface Done { client: number, via: string, start: number, end: number, ok: boolean, instance: string, error: string | null, tokens: number }

/** One streamed completion: ok only with a finish_reason and [DONE], and no error event. */
async function streamOnce (agent: AgentProcess, client: number, model = 'chat'): Promise<Done> {
  const start = Date.now()
  try {
    const res = await fetch(`${agent.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${agent.token}` },
      body: JSON.stringify({ model, prompt: `Count on: ${client + 1}, ${client + 2}, ${client + 3},`, max_tokens: 24, temperature: 0, stream: true })
    })
    const instance = res.headers.get('x-blockmesh-instance') ?? ''
    const text = await res.text()
    const events = text.split('\n').filter(l => l.startsWith('data: ')).map(l => l.slice(6))
    const chunks = events.filter(e => e !== '[DONE]').map(e => JSON.parse(e))
    const finished = chunks.some(c => c.choices?.[0]?.finish_reason != null)
    const failed = chunks.find(c => c.error != null)
    const ok = res.status === 200 && events.at(-1) === '[DONE]' && finished && failed == null
    return { client, via: agent.spec.name, start, end: Date.now(), ok, instance, error: ok ? null : `${res.status} ${text.slice(0, 300)}`, tokens: chunks.length }
  } catch (err) {
    return { client, via: agent.spec.name, start, end: Date.now(), ok: false, instance: '', error: (err as Error).message, tokens: 0 }
  }
}

/** Instance IDs of a block, as its API shows them. */
async function instancesOf (agent: AgentProcess, block: string): Promise<string[]> {
  const r = await agent.api(`/api/blocks/${block}`)
  return r.status === 200 ? (r.body.instances as Array<{ instance: string }>).map(i => i.instance) : []
}

describe(`a service rolled from v1 to v2 while 8 streams run${smol.skip !== false ? ` (skipped: ${String(smol.skip)})` : ''}`, { skip: smol.skip, timeout: 900_000 }, () => {
  let a: AgentProcess, b: AgentProcess

  before(async () => {
    a = await AgentProcess.start({ name: 'ro-a' })
    b = await AgentProcess.start({ name: 'ro-b', bootstrap: [a.addr] })
    await until(async () => (await a.peers()).length === 2 && (await b.peers()).length === 2, 'the mesh to form')
  })
  after(async () => { await stopAll([a, b]) })

  test('deploy v1, make v2, roll while 8 clients stream: no request fails, the switch is drained, v2 serves afterwards', async (t) => {
    const deployed = await a.api(`/api/templates/${TEMPLATE}/deploy`, { method: 'POST', body: { name: 'chat' } })
    assert.equal(deployed.status, 201, JSON.stringify(deployed.body))
    assert.equal(deployed.body.block.id, 'chat')
    await until(async () => (await b.api('/v1/models')).body.data?.some((m: any) => m.id === 'chat') === true, 'chat to serve (seen from B)', 300_000, 250)
    const v1Instances = await instancesOf(a, 'chat')
    assert.equal(v1Instances.length, 1)

    // the service is recorded with the version it runs, its unit and no rollout
    const svc = await b.api('/api/mlservices/chat')
    assert.equal(svc.status, 200, JSON.stringify(svc.body))
    assert.equal(svc.body.version, `${TEMPLATE}-v1`)
    assert.equal(svc.body.target, 'chat')
    assert.equal(svc.body.rollout, null)

    const v2 = await a.api(`/api/templates/${TEMPLATE}`, { method: 'PUT', body: { sampling: { maxTokens: 64 } } })
    assert.equal(v2.status, 201, JSON.stringify(v2.body))
    assert.equal(v2.body.version.name, `${TEMPLATE}-v2`)

    // 8 clients, 4 through each agent, streaming back to back until told to stop
    const results: Done[] = []
    let stop = false
    const clients = Array.from({ length: 8 }, async (_, i) => {
      const via = i % 2 === 0 ? a : b
      while (!stop) results.push(await streamOnce(via, i))
    })
    await until(() => new Set(results.map(r => r.client)).size === 8, 'every client to finish a first request', 300_000, 100)

    const rolled = await b.api('/api/mlservices/chat/rollout', { method: 'POST', body: { version: `${TEMPLATE}-v2` } })
    assert.equal(rolled.status, 202, JSON.stringify(rolled.body))
    assert.equal(rolled.body.service.rollout.phase, 'starting')
    assert.equal(rolled.body.service.rollout.to.unit, 'chat-v2')
    assert.equal(rolled.body.service.createdAt, svc.body.createdAt, 'the service as stored, with when it was created')
    // a second rollout while one runs is refused
    assert.equal((await a.api('/api/mlservices/chat/rollout', { method: 'POST', body: { version: `${TEMPLATE}-v2` } })).status, 409)

    const done = await until(async () => {
      const s = (await a.api('/api/mlservices/chat')).body
      if (s.rollout?.phase === 'failed') throw new Error(`rollout failed: ${s.rollout.error as string}`)
      return s.rollout?.phase === 'done' ? s : null
    }, 'the rollout to finish', 600_000, 250)
    const switchedAt = Date.parse(done.rollout.switchedAt)
    const v2Instances = await instancesOf(a, 'chat-v2')
    assert.equal(v2Instances.length, 1)
    // a few more requests per client after the rollout, then stop
    const settled = results.length
    await until(() => results.length >= settled + 8, 'requests after the rollout', 300_000, 100)
    stop = true
    await Promise.all(clients)

    const failed = results.filter(r => !r.ok)
    assert.deepEqual(failed, [], `${failed.length} of ${results.length} requests failed`)
    const spanning = results.filter(r => r.start < switchedAt && r.end > switchedAt)
    t.diagnostic(`${results.length} streamed requests, ${spanning.length} in flight at the switch, rollout ${done.rollout.startedAt} → switch ${done.rollout.switchedAt} → done ${done.rollout.finishedAt}`)
    assert.ok(spanning.length >= 1, `some requests were in flight at the switch (${results.length} requests)`)
    for (const r of spanning) assert.ok(r.instance === '' || v1Instances.includes(r.instance) || v2Instances.includes(r.instance), `in flight at the switch: served by ${r.instance}`)
    assert.ok(results.some(r => v1Instances.includes(r.instance)), 'v1 served requests before the switch')
    const afterDone = results.filter(r => r.start > Date.parse(done.rollout.finishedAt))
    assert.ok(afterDone.length >= 1)
    for (const r of afterDone) assert.ok(v2Instances.includes(r.instance), `after the rollout ${r.client} via ${r.via} was served by ${r.instance}, not v2's ${v2Instances.join(',')}`)

    // the old unit is gone everywhere; the service runs v2 through chat-v2, still under its own name
    assert.equal((await a.api('/api/blocks/chat')).status, 404)
    for (const x of [a, b]) {
      const s = (await x.api('/api/mlservices/chat')).body
      assert.equal(s.version, `${TEMPLATE}-v2`)
      assert.equal(s.target, 'chat-v2')
      assert.equal(s.ready, true)
      assert.ok((await x.api('/v1/models')).body.data.some((m: any) => m.id === 'chat'))
    }
    // rolling to the version it runs is refused
    assert.equal((await a.api('/api/mlservices/chat/rollout', { method: 'POST', body: { version: `${TEMPLATE}-v2` } })).status, 409)
  })

  test('a rollout to a version that cannot load fails, is removed again, and the service stays on its version', async () => {
    const dir = tempDir('bm-rollout-')
    const broken = join(dir, 'broken.gguf')
    writeFileSync(broken, 'not a gguf file')
    const t = await a.api('/api/templates', { method: 'POST', body: { name: 'broken', source: { kind: 'uri', uri: broken }, model: { parameters: 1_000_000 } } })
    assert.equal(t.status, 201, JSON.stringify(t.body))
    const before = (await a.api('/api/mlservices/chat')).body
    // the seed's MLService manifest applied again with another modelTemplateVersionRef rolls the service (PUT, YAML)
    const manifest = (name: string): string => `apiVersion: ml.oneblock.ai/v1alpha1\nkind: MLService\nmetadata:\n  name: ${name}\nspec:\n  modelTemplateVersionRef:\n    name: broken-v1\n`
    const put = async (path: string, name: string): Promise<Response> => await fetch(`${a.url}${path}`, { method: 'PUT', headers: { 'content-type': 'application/yaml', authorization: `Bearer ${a.token}` }, body: manifest(name) })
    assert.equal((await put('/api/mlservices/chat', 'other')).status, 400, 'metadata.name must match the path')
    const r = await put('/api/mlservices/chat', 'chat')
    const rb = await r.json() as any
    assert.equal(r.status, 202, JSON.stringify(rb))
    assert.equal(rb.rolling, true)
    const failed = await until(async () => {
      const s = (await b.api('/api/mlservices/chat')).body
      return s.rollout?.phase === 'failed' ? s : null
    }, 'the rollout to fail', 120_000, 250)
    assert.ok(failed.rollout.error.length > 0)
    assert.equal(failed.version, before.version)
    assert.equal(failed.target, before.target)
    assert.equal((await a.api(`/api/blocks/${failed.rollout.to.unit as string}`)).status, 404)
    const ok = await streamOnce(b, 0)
    assert.equal(ok.ok, true, ok.error ?? '')
  })

  test('deleting the service removes its unit; its name stops answering', async () => {
    const r = await b.api('/api/mlservices/chat', { method: 'DELETE' })
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.deepEqual(r.body.units, ['chat-v2'])
    assert.equal((await a.api('/api/mlservices/chat')).status, 404)
    await until(async () => !((await a.api('/v1/models')).body.data as any[]).some(m => m.id === 'chat'), 'chat to be gone from /v1/models', 60_000, 250)
  })

  test('the agent running a rollout is killed (SIGKILL): the other agent gives the rollout up and the service stays where it was', async () => {
    // a version whose model never arrives: its source is a server that takes the request and never answers
    let asked = 0
    const hang = http.createServer(() => { asked++ })
    await new Promise<void>(resolve => hang.listen(0, '127.0.0.1', resolve))
    try {
      const url = `http://127.0.0.1:${(hang.address() as AddressInfo).port}/model.gguf`
      assert.equal((await a.api('/api/templates', { method: 'POST', body: { name: 'stuck', source: { kind: 'uri', uri: url }, model: { parameters: 1_000_000 } } })).status, 201)
      const deployed = await a.api(`/api/templates/${TEMPLATE}/deploy`, { method: 'POST', body: { name: 'chat2' } })
      assert.equal(deployed.status, 201, JSON.stringify(deployed.body))
      await until(async () => (await a.api('/v1/models')).body.data?.some((m: any) => m.id === 'chat2') === true, 'chat2 to serve', 300_000, 250)
      const before = (await a.api('/api/mlservices/chat2')).body
      const r = await b.api('/api/mlservices/chat2/rollout', { method: 'POST', body: { version: 'stuck-v1' } })
      assert.equal(r.status, 202, JSON.stringify(r.body))
      assert.equal(r.body.service.rollout.by, b.peerId)
      await until(() => asked > 0, 'the rollout to ask for the new version\'s model', 60_000)
      b.child.kill('SIGKILL')
      await b.exited()
      const s = await until(async () => {
        const x = (await a.api('/api/mlservices/chat2')).body
        return x.rollout?.phase === 'failed' ? x : undefined
      }, 'agent A to give the orphaned rollout up', 120_000, 250)
      assert.match(s.rollout.error, /went away/)
      assert.equal(s.rollout.by, a.peerId)
      assert.equal(s.version, before.version)
      assert.equal(s.target, before.target)
      // still served (re-placed on A if its instance was on B)
      await until(async () => { const x = await streamOnce(a, 1, 'chat2'); return x.ok ? x : undefined }, 'chat2 to answer through A', 180_000, 500)
    } finally {
      hang.closeAllConnections()
      hang.close()
    }
  })
})
