/**
 * Blocks across the mesh (seed 000's three deployments): four agents, each its own process, in two
 * clusters. GPU capacity is declared with --simulate-gpus (this machine has no GPU), so the records
 * say simulated: true. vLLM cannot run here: an OpenAI-compatible fixture server stands in for it.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { startFixtureServer } from './helpers/fixture.ts'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { alive } from './helpers/cli.ts'

const example = (name: string): any => JSON.parse(readFileSync(new URL(`../examples/${name}`, import.meta.url), 'utf8'))

async function chat (agent: AgentProcess, model: string, user?: string): Promise<{ status: number, instance: string | null, body: any }> {
  const res = await fetch(`${agent.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hello there' }], max_tokens: 6, temperature: 0, ...(user != null ? { user } : {}) })
  })
  return { status: res.status, instance: res.headers.get('x-blockmesh-instance'), body: await res.json() }
}

describe('blocks placed by policy across a 4-agent mesh of two clusters (GPUs simulated)', () => {
  const A_GPUS = 'count=2,model=A100,memory=80GiB,free=60GiB,util=10'
  const B_GPUS = 'count=1,model=L4,memory=24GiB,free=20GiB,util=5'
  let a1: AgentProcess, a2: AgentProcess, b1: AgentProcess, b2: AgentProcess
  let fixture: Awaited<ReturnType<typeof startFixtureServer>>
  const dir = tempDir('bm-place-')
  const agents = (): AgentProcess[] => [a1, a2, b1, b2]
  const byPeer = (peerId: string): AgentProcess => agents().find(a => a.peerId === peerId) as AgentProcess

  before(async () => {
    a1 = await AgentProcess.start({ name: 'a1', cluster: 'lab-a', simulateGpus: A_GPUS, extra: ['--vendor', 'dma-bangalore'] })
    ;[a2, b1, b2] = await Promise.all([
      AgentProcess.start({ name: 'a2', cluster: 'lab-a', simulateGpus: A_GPUS, bootstrap: [a1.addr], extra: ['--vendor', 'dma-bangalore'] }),
      AgentProcess.start({ name: 'b1', cluster: 'lab-b', simulateGpus: B_GPUS, bootstrap: [a1.addr], extra: ['--vendor', 'acme'] }),
      AgentProcess.start({ name: 'b2', cluster: 'lab-b', simulateGpus: B_GPUS, bootstrap: [a1.addr], extra: ['--vendor', 'acme'] })
    ])
    await until(async () => (await Promise.all(agents().map(async a => (await a.peers()).length))).every(n => n === 4), 'the mesh to form')
    // the example components, with their models generated here (same seeds → the MD5s pinned in examples/)
    for (const [file, seed, out] of [['mistral-chat.json', 88, 'mistral.onnx'], ['detector-yolo.json', 89, 'detector.onnx']] as const) {
      const comp = example(`components/${file}`)
      const m = generateModel({ ...PRESETS.demo, seed }, join(dir, out))
      assert.equal(m.md5, comp.model.md5, `examples/components/${file} pins the MD5 of the generated model`)
      const r = await b1.api('/api/components', { method: 'POST', body: { ...comp, model: { url: m.path, md5: m.md5 } } })
      assert.equal(r.status, 201, JSON.stringify(r.body))
    }
    fixture = await startFixtureServer(['--model', 'mistralai/Mistral-7B-Instruct-v0.1'])
    const vllm = example('components/vllm-chat.json')
    assert.equal((await b1.api('/api/components', { method: 'POST', body: { ...vllm, external: { ...vllm.external, url: fixture.url } } })).status, 201)
  })
  after(async () => {
    await fixture?.stop()
    await stopAll(agents())
  })

  test('mistral-chat-88 lands in the cluster with ≥ 3 GPUs from dma-bangalore, and any agent serves it', async () => {
    const r = await b1.api('/api/blocks', { method: 'POST', body: example('mistral-chat-88.json') })
    assert.equal(r.status, 201, JSON.stringify(r.body))
    assert.equal(r.body.instances.length, 1)
    const host = r.body.instances[0]
    assert.ok(['a1', 'a2'].includes(host.peerName), `placed on ${host.peerName as string}`)
    const ready = await until(async () => { const b = (await b1.api('/api/blocks/mistral-chat-88')).body; return b.status === 'ready' ? b : undefined }, 'mistral-chat-88 to be ready', 60_000)
    assert.equal(ready.instances[0].status, 'ready')
    // served through an agent that neither owns nor runs it
    const answer = await chat(b2, 'mistral-chat-88')
    assert.equal(answer.status, 200, JSON.stringify(answer.body))
    assert.equal(answer.instance, host.instance)
    assert.ok((await b2.api('/v1/models')).body.data.some((m: any) => m.id === 'mistral-chat-88'))
  })

  test('detector-yolo-88 is refused with the reason per filter', async () => {
    const r = await b1.api('/api/blocks', { method: 'POST', body: example('detector-yolo-88.json') })
    assert.equal(r.status, 201)
    assert.equal(r.body.status, 'failed')
    assert.equal(r.body.instances.length, 0)
    const reasons = r.body.refusal.map((x: any) => `${x.filter as string}: ${x.message as string}`).join('\n')
    assert.match(reasons, /cluster\.minGpus: no cluster with ≥ 5 GPUs from dma-bangalore: best was lab-a with 4/)
    assert.match(r.body.error, /≥ 5 GPUs/)
  })

  test('vllm-chat forwards to the external OpenAI-compatible server, through any agent', async () => {
    const r = await b1.api('/api/blocks', { method: 'POST', body: example('vllm-chat.json') })
    assert.equal(r.status, 201, JSON.stringify(r.body))
    await until(async () => (await b1.api('/api/blocks/vllm-chat')).body.status === 'ready', 'vllm-chat to be ready')
    for (const via of [b1, a1]) {
      // an agent other than the host learns the instance is ready from the host's next heartbeat
      await until(async () => (await chat(via, 'vllm-chat')).status === 200, `${via.spec.name} to route to the ready instance`)
      const answer = await chat(via, 'vllm-chat')
      assert.equal(answer.status, 200, JSON.stringify(answer.body))
      assert.equal(answer.body.choices[0].message.content, 'echo: hello there')
      assert.equal(answer.body.model, 'vllm-chat', 'the external model name is hidden behind the block id')
    }
  })

  test('round-robin spreads requests over instances; one session stays on one instance', async () => {
    const scaled = await b1.api('/api/blocks/mistral-chat-88/scale', { method: 'PUT', body: { instances: 2 } })
    assert.equal(scaled.status, 200, JSON.stringify(scaled.body))
    const b = await until(async () => {
      const v = (await b1.api('/api/blocks/mistral-chat-88')).body
      return v.instances.filter((i: any) => i.status === 'ready').length === 2 ? v : undefined
    }, 'two ready instances', 60_000)
    assert.deepEqual(b.instances.map((i: any) => i.peerName).sort(), ['a1', 'a2'], 'spread over the cluster\'s nodes')
    await until(async () => (await b2.api('/v1/models')).body.data.length > 0 && (await chat(b2, 'mistral-chat-88')).status === 200, 'b2 to route')
    await until(async () => {
      const seen = new Set<string>()
      for (let i = 0; i < 4; i++) seen.add((await chat(b2, 'mistral-chat-88')).instance ?? '')
      return seen.size === 2
    }, 'b2 to know both instances and alternate between them')
    const served = []
    for (let i = 0; i < 6; i++) served.push((await chat(b2, 'mistral-chat-88')).instance)
    assert.equal(new Set(served).size, 2, `both instances served (${served.join(', ')})`)
    for (let i = 0; i < 5; i++) assert.notEqual(served[i], served[i + 1], 'consecutive requests alternate')
    const alice = []
    for (let i = 0; i < 5; i++) alice.push((await chat(b2, 'mistral-chat-88', 'alice')).instance)
    assert.equal(new Set(alice).size, 1, `a session stays put (${alice.join(', ')})`)
  })

  test('killing the agent that holds an instance re-places it within the policy, and requests are served again', async () => {
    // a policy that still fits lab-a after one of its nodes dies (mistral-chat-88's ≥ 3 GPUs would not)
    const spec = { id: 'replace-me', component: 'mistral-chat:1', policy: { cluster: { vendor: 'dma-bangalore' }, node: { maxGpuUtilisation: 90, minFreeGpuMemory: '16GB' } } }
    assert.equal((await b1.api('/api/blocks', { method: 'POST', body: spec })).status, 201)
    const one = await until(async () => { const v = (await b1.api('/api/blocks/replace-me')).body; return v.status === 'ready' ? v : undefined }, 'replace-me to be ready', 60_000)
    const victim = byPeer(one.instances[0].peerId)
    assert.ok(victim === a1 || victim === a2, 'placed in lab-a')
    const other = victim === a1 ? a2 : a1
    await until(async () => (await chat(b2, 'replace-me')).status === 200, 'b2 to serve it')
    await victim.stop('SIGKILL')
    const replaced = await until(async () => {
      const v = (await b1.api('/api/blocks/replace-me')).body
      return v.instances.length === 1 && v.instances[0].peerId === other.peerId && v.instances[0].status === 'ready' ? v : undefined
    }, 'the instance to be re-placed on the other lab-a node', 90_000)
    assert.equal(replaced.status, 'ready')
    await until(async () => (await chat(b2, 'replace-me')).status === 200, 'requests to be served again')
    assert.equal((await chat(b2, 'replace-me')).instance, replaced.instances[0].instance)
    assert.ok(await b1.metric('blockmesh_instance_replacements_total') >= 1)
  })

  test('with the capacity removed, the same policy is refused, per filter', async () => {
    const remaining = [a1, a2].find(a => a.child.exitCode == null && a.child.signalCode == null) as AgentProcess
    const put = await remaining.api('/api/hardware/simulated-gpus', { method: 'PUT', body: { spec: 'count=1,model=A100,memory=80GiB,free=10GiB,util=95' } })
    assert.equal(put.status, 200)
    await until(async () => (await b1.peers()).find(p => p.peerId === remaining.peerId)?.readings.gpus.length === 1, 'b1 to see the reduced capacity')
    const r = await b1.api('/api/blocks', { method: 'POST', body: { ...example('mistral-chat-88.json'), id: 'mistral-chat-89' } })
    assert.equal(r.body.status, 'failed')
    const byFilter = Object.fromEntries(r.body.refusal.map((x: any) => [x.filter, x.message]))
    assert.match(byFilter['cluster.minGpus'], /≥ 3 GPUs from dma-bangalore: best was lab-a with 1/)
    assert.match(byFilter['cluster.minFreeGpuMemory'], /free GPU memory/)
  })
})

describe('init processes and autoscaling', () => {
  let owner: AgentProcess, helper: AgentProcess
  const dir = tempDir('bm-init-')
  before(async () => {
    owner = await AgentProcess.start({ name: 'owner', extra: ['--accept-remote-processes'] })
    helper = await AgentProcess.start({ name: 'helper', bootstrap: [owner.addr], extra: ['--accept-remote-processes'] })
    await until(async () => (await owner.peers()).length === 2, 'two agents to meet')
  })
  after(async () => { await stopAll([owner, helper]) })

  test('an init process starts with its block, serves chat through /v1, and stops with it', async () => {
    const comp = example('components/vllm-chat-init.json')
    assert.equal((await owner.api('/api/components', { method: 'POST', body: comp })).status, 201)
    assert.equal((await owner.api('/api/blocks', { method: 'POST', body: example('vllm-chat-init.json') })).status, 201)
    await until(async () => (await owner.api('/api/blocks/vllm-chat-init')).body.status === 'ready', 'the init-process block to be ready', 60_000)
    const instances = (await owner.api('/api/instances')).body.instances
    const init = instances.find((i: any) => i.block === 'vllm-chat-init').initProcess
    assert.ok(init?.pid > 0 && /^http:\/\/127\.0\.0\.1:\d+$/.test(init.url), JSON.stringify(instances))
    await until(async () => (await helper.api('/v1/models')).body.data.some((m: any) => m.id === 'vllm-chat-init'), 'the other agent to know the instance is ready')
    for (const via of [owner, helper]) {
      const answer = await chat(via, 'vllm-chat-init')
      assert.equal(answer.status, 200, JSON.stringify(answer.body))
      assert.equal(answer.body.choices[0].message.content, 'echo: hello there')
    }
    assert.ok(alive(init.pid))
    assert.equal((await owner.api('/api/blocks/vllm-chat-init', { method: 'DELETE' })).status, 200)
    await until(() => !alive(init.pid), 'the init process to stop with its block')
  })

  test('autoscaling adds an instance under sustained queueing and removes it when idle', async () => {
    const m = generateModel({ ...PRESETS.tiny, maxPositions: 4096, seed: 41 }, join(dir, 'tiny.onnx'))
    assert.equal((await owner.api('/api/components', { method: 'POST', body: { name: 'tiny-auto', version: '1', runtime: 'onnx', model: { url: m.path, md5: m.md5 }, contextLength: 4096 } })).status, 201)
    const created = await owner.api('/api/blocks', {
      method: 'POST',
      body: { id: 'auto', component: 'tiny-auto:1', maxBatch: 1, minInstances: 1, maxInstances: 2, autoscaling: { metric: 'queueDepth', scaleUpAbove: 0.5, scaleDownBelow: 0.1, window: 3, cooldown: 2 } }
    })
    assert.equal(created.status, 201, JSON.stringify(created.body))
    await until(async () => (await owner.api('/api/blocks/auto')).body.status === 'ready', 'block auto to be ready')
    // sustained load: more concurrent long requests than one instance (maxBatch 1) can run, so they queue
    let stop = false
    const load = Array.from({ length: 5 }, async () => {
      while (!stop) {
        await fetch(`${owner.url}/v1/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${owner.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'auto', prompt: 'go', max_tokens: 400, temperature: 0.9 })
        }).then(async r => await r.text()).catch(() => '')
      }
    })
    await until(async () => (await owner.api('/api/blocks/auto')).body.instances.length === 2, 'the autoscaler to add an instance', 120_000)
    assert.ok(await owner.metric('blockmesh_autoscale_decisions_total', { block: 'auto', direction: 'up' }) >= 1)
    stop = true
    await Promise.all(load)
    await until(async () => (await owner.api('/api/blocks/auto')).body.instances.length === 1, 'the autoscaler to remove the idle instance', 120_000)
    assert.ok(await owner.metric('blockmesh_autoscale_decisions_total', { block: 'auto', direction: 'down' }) >= 1)
  })
})

describe('an init process another agent wrote runs only with --accept-remote-processes, whoever reconciles the block', () => {
  test('a block this agent creates on a component a peer wrote is refused here, says why, and starts no process; the agent\'s own component runs', async () => {
    const writer = await AgentProcess.start({ name: 'writer' })
    const victim = await AgentProcess.start({ name: 'victim', bootstrap: [writer.addr] })
    const marker = join(tempDir('bm-foreign-init-'), 'ran')
    // the init process would leave a file behind if it ever started
    const comp = (name: string): object => ({ name, version: '1', runtime: 'external', external: { model: 'm' }, init: { command: process.execPath, args: ['-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, 'ran'); setInterval(() => {}, 1000)`], readiness: '/health', timeoutSeconds: 30 } })
    try {
      await until(async () => (await victim.peers()).length === 2, 'the mesh to form')
      assert.equal((await writer.api('/api/components', { method: 'POST', body: comp('foreign-init') })).status, 201)
      await until(async () => (await victim.api('/api/components/foreign-init:1')).status === 200, 'the component to reach the victim')
      // created through the victim's own API: the victim reconciles it, and only the victim may host it
      const r = await victim.api('/api/blocks', { method: 'POST', body: { id: 'foreign-init', component: 'foreign-init:1', policy: { cluster: {}, node: { names: ['victim'] } } } })
      assert.equal(r.status, 201, JSON.stringify(r.body))
      const failed = await until(async () => { const b = (await victim.api('/api/blocks/foreign-init')).body; return b.status === 'failed' && /accept-remote-processes/.test(b.error ?? '') ? b : undefined }, 'the victim to refuse the foreign init process')
      assert.equal(failed.instances.length, 0)
      assert.equal(existsSync(marker), false, 'the init process never started')
      // the victim's own component with the same init process is its operator's choice: it starts
      assert.equal((await victim.api('/api/components', { method: 'POST', body: comp('own-init') })).status, 201)
      assert.equal((await victim.api('/api/blocks', { method: 'POST', body: { id: 'own-init', component: 'own-init:1', policy: { cluster: {}, node: { names: ['victim'] } } } })).status, 201)
      await until(() => existsSync(marker), 'the agent\'s own init process to start')
    } finally {
      await stopAll([victim, writer])
    }
  })
})

describe('simulated GPUs are used for placement only where the placing agent allows it', () => {
  test('an agent started without --allow-simulated-gpus refuses to place GPU work on a peer\'s simulated GPUs, and says why', async () => {
    const sim = await AgentProcess.start({ name: 'sim', simulateGpus: 'count=2,model=A100,memory=80GiB,free=70GiB,util=5' })
    const strict = await AgentProcess.start({ name: 'strict', bootstrap: [sim.addr] })
    try {
      await until(async () => (await strict.peers()).length === 2, 'the mesh to form')
      const peer = (await strict.peers()).find((p: any) => p.name === 'sim')
      assert.ok(peer.readings.gpus.length === 2 && peer.readings.gpus.every((g: any) => g.simulated === true), 'the records say simulated')
      const comp = { name: 'needs-gpu', version: '1', runtime: 'external', external: { url: 'http://127.0.0.1:9/v1', model: 'm' }, resources: { gpuMemory: '16GB' } }
      assert.equal((await strict.api('/api/components', { method: 'POST', body: comp })).status, 201)
      const r = await strict.api('/api/blocks', { method: 'POST', body: { id: 'needs-gpu', component: 'needs-gpu:1' } })
      assert.equal(r.status, 201, JSON.stringify(r.body))
      assert.equal(r.body.instances.length, 0, 'nothing placed on fake GPUs')
      assert.equal(r.body.status, 'failed')
      assert.match(r.body.refusal.map((x: any) => x.message).join('\n'), /simulated.*--allow-simulated-gpus/)
    } finally {
      await stopAll([strict, sim])
    }
  })
})
