/**
 * A mesh that survives its agents (issue 13): real agent processes, killed with SIGKILL, restarted from
 * their data directories. The desired state (components, blocks, vDAGs) is replicated to every agent, so
 * the agent a block was created through is no longer special once it dies.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { AgentProcess, HEARTBEAT_MS, stopAll, tempDir, until } from './helpers/agents.ts'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { NetLab } from './helpers/netns.ts'
import { splitAndDeploy } from './helpers/models.ts'

async function complete (agent: AgentProcess, model: string, prompt = 'The gulls', maxTokens = 8): Promise<{ status: number, text: string }> {
  const r = await agent.api('/v1/completions', { method: 'POST', body: { model, prompt, max_tokens: maxTokens, temperature: 0 } })
  return { status: r.status, text: r.body?.choices?.[0]?.text ?? JSON.stringify(r.body) }
}

describe('kill -9 of the agent that created the blocks: names stay, reconciliation moves, the agent rejoins', () => {
  let a: AgentProcess, b: AgentProcess, c: AgentProcess
  const dir = tempDir('bm-resilience-')
  const m = generateModel({ ...PRESETS.tiny, layers: 2, maxPositions: 1024, seed: 31 }, join(dir, 'tiny2.onnx'))
  let expected = ''
  let taskId = ''

  before(async () => {
    a = await AgentProcess.start({ name: 'a' })
    ;[b, c] = await Promise.all([AgentProcess.start({ name: 'b', bootstrap: [a.addr] }), AgentProcess.start({ name: 'c', bootstrap: [a.addr] })])
    await until(async () => (await a.peers()).length === 3 && (await b.peers()).length === 3 && (await c.peers()).length === 3, 'the mesh to form')
    assert.equal((await a.api('/api/components', { method: 'POST', body: { name: 'tiny2-whole', version: '1', runtime: 'onnx', model: { url: m.path, md5: m.md5 }, contextLength: 1024 } })).status, 201)
    const created = await a.api('/api/blocks', { method: 'POST', body: { id: 'whole', component: 'tiny2-whole:1' } })
    assert.equal(created.status, 201, JSON.stringify(created.body))
    assert.equal(created.body.instances[0]?.peerId, a.peerId, 'placed on its creator first (preferNode: self)')
    // a 2-stage vDAG of the same model, split by a real split task
    taskId = (await splitAndDeploy(a, { modelName: 'tiny2', modelPath: m.path, worldSize: 2 })).task_id
    await until(async () => (await a.api('/v1/models')).body.data.some((d: any) => d.id === 'tiny2-pipeline'), 'the vDAG to serve', 90_000)
    expected = (await complete(a, 'whole')).text
  })
  after(async () => { await stopAll([a, b, c]) })

  test('every agent holds the blocks, components and vDAGs created on one of them, and serves them', async () => {
    for (const x of [b, c]) {
      await until(async () => (await x.api('/api/state')).body.digest === (await a.api('/api/state')).body.digest, `${x.spec.name} to hold a's desired state`)
      assert.equal((await x.api('/api/blocks/whole')).body.createdBy, a.peerId)
      assert.equal((await x.api('/api/blocks/whole')).body.reconciler.peerId, a.peerId, 'its creator reconciles it while live')
      assert.ok((await x.api('/api/components')).body.components.some((co: any) => co.uri === 'tiny2-whole:1'))
      assert.deepEqual((await x.api('/api/vdags/tiny2-pipeline')).body.stages, ['tiny2-pipeline-s0', 'tiny2-pipeline-s1'])
      assert.equal((await complete(x, 'whole')).text, expected)
    }
    // the split plan is replicated too: another agent deploys it by the task id it never ran
    const again = await c.api('/api/vdags/deploy', { method: 'POST', body: { task_id: taskId, name: 'tiny2-again' } })
    assert.equal(again.status, 201, JSON.stringify(again.body))
    assert.deepEqual(again.body.blocks.map((x: any) => x.reused), [true, true], 'the running stage blocks are reused')
    await until(async () => (await complete(b, 'tiny2-again')).status === 200, 'the second vDAG to serve')
  })

  test('after kill -9 of the creator, no agent forgets a name; another reconciles and re-places; both models serve again', async () => {
    const before = (await b.api('/api/blocks/whole')).body.reconciler.term as number
    const statuses = new Set<number>()
    let watching = true
    // while the mesh recovers, clients of b and c must never be told the models do not exist
    const watch = (async () => {
      while (watching) {
        for (const x of [b, c]) for (const model of ['whole', 'tiny2-pipeline']) statuses.add(await complete(x, model, 'x', 1).then(r => r.status, () => -1))
        await new Promise(resolve => setTimeout(resolve, 200))
      }
    })()
    await a.stop('SIGKILL')
    try {
      const taken = await until(async () => {
        const v = (await b.api('/api/blocks/whole')).body
        return v.reconciler != null && v.reconciler.peerId !== a.peerId && v.instances.some((i: any) => i.status === 'ready' && i.peerId !== a.peerId) ? v : undefined
      }, 'another agent to reconcile whole and re-place its instance', 60_000)
      assert.ok([b.peerId, c.peerId].includes(taken.reconciler.peerId))
      assert.ok(taken.reconciler.term > before, `a new term (${taken.reconciler.term as number} > ${before})`)
      for (const x of [b, c]) {
        await until(async () => (await complete(x, 'whole')).status === 200, `${x.spec.name} to serve whole again`, 60_000)
        assert.equal((await complete(x, 'whole')).text, expected, 'the re-placed instance answers as before')
        await until(async () => (await complete(x, 'tiny2-pipeline')).status === 200, `${x.spec.name} to serve the vDAG again`, 90_000)
        assert.equal((await complete(x, 'tiny2-pipeline')).text, expected, 'the vDAG with its re-placed stage answers like the whole model')
      }
    } finally {
      watching = false
      await watch
    }
    assert.ok(!statuses.has(404), `no "does not exist" while recovering (saw ${[...statuses].join(', ')})`)
    assert.ok(await b.metric('blockmesh_reconciler_claims_total') + await c.metric('blockmesh_reconciler_claims_total') >= 1)
  })

  test('the creator restarts, catches up, takes its blocks back under a higher term; one instance each, stages apart', async () => {
    const term = (await b.api('/api/blocks/whole')).body.reconciler.term as number
    await a.launch()
    await until(async () => (await a.api('/api/state')).body.digest === (await b.api('/api/state')).body.digest, 'a to converge to the mesh\'s state')
    const back = await until(async () => {
      const v = (await b.api('/api/blocks/whole')).body
      return v.reconciler?.peerId === a.peerId ? v : undefined
    }, 'the creator to reconcile its block again', 60_000)
    assert.ok(back.reconciler.term > term, 'taking over raises the term')
    // a stage left on the same agent as the other stage while A was down moves away now that A is back: a
    // new instance first, then the crowded one stops (agent/blocks/anti-affinity.ts), so for a moment the
    // stage has two. A full run caught that moment (tiny2-pipeline-s1 ready on b and c): wait for the move
    // to settle, then hold it to one instance each across several heartbeats
    const live = async (id: string): Promise<any[]> => (await b.api(`/api/blocks/${id}`)).body.instances.filter((x: any) => x.status !== 'failed')
    await until(async () => {
      const [w, s0, s1] = await Promise.all(['whole', 'tiny2-pipeline-s0', 'tiny2-pipeline-s1'].map(live))
      return w.length === 1 && s0.length === 1 && s1.length === 1 && s0[0].peerId !== s1[0].peerId
    }, 'one instance of each block, the stages apart', 60_000)
    // stable: one instance of each block, across several heartbeats
    for (let i = 0; i < 4; i++) {
      await new Promise(resolve => setTimeout(resolve, HEARTBEAT_MS))
      for (const id of ['whole', 'tiny2-pipeline-s0', 'tiny2-pipeline-s1']) {
        const v = (await b.api(`/api/blocks/${id}`)).body
        assert.ok(v.instances.filter((x: any) => x.status !== 'failed').length <= 1, `${id}: ${JSON.stringify(v.instances.map((x: any) => [x.peerName, x.status]))}`)
      }
    }
    const hosts = await Promise.all(['tiny2-pipeline-s0', 'tiny2-pipeline-s1'].map(async id => (await a.api(`/api/blocks/${id}`)).body.instances.map((x: any) => x.peerId)))
    assert.notEqual(hosts[0][0], hosts[1][0], 'the two stages run on different agents')
    assert.equal((await complete(a, 'tiny2-pipeline')).text, expected)
  })
})

describe('kill -9 during a burst of API writes', () => {
  test('after restart the database is intact and every acknowledged write is there', async () => {
    const x = await AgentProcess.start({ name: 'burst' })
    try {
      const acked: string[] = []
      const writes = Array.from({ length: 120 }, async (_, i) => {
        await new Promise(resolve => setTimeout(resolve, i * 5))
        try {
          const r = await x.api('/api/components', { method: 'POST', body: { name: `burst-${i}`, version: '1', runtime: 'external', external: { url: 'http://127.0.0.1:9/v1', model: 'm' } } })
          if (r.status === 201) acked.push(`burst-${i}:1`)
        } catch { /* the agent died mid-request: not acknowledged */ }
      })
      await until(() => acked.length >= 30, 'some writes to be acknowledged')
      await x.stop('SIGKILL')
      await Promise.all(writes)
      assert.ok(acked.length >= 30 && acked.length < 120, `killed mid-burst (${acked.length} acknowledged)`)
      await x.launch()
      const uris = new Set((await x.api('/api/components')).body.components.map((co: any) => co.uri))
      const lost = acked.filter(u => !uris.has(u))
      assert.deepEqual(lost, [], 'no acknowledged write lost')
      await x.stop()
      const db = new Database(join(x.dir, 'agent.db'), { readonly: true })
      try {
        assert.equal(db.pragma('integrity_check', { simple: true }), 'ok')
      } finally { db.close() }
    } finally {
      await stopAll([x])
    }
  })
})

const noLab = NetLab.available()
describe(`a partition with writes on both sides heals to one state (agents on separate network hosts)${noLab != null ? ' — skipped: ' + noLab : ''}`, { skip: noLab ?? false }, () => {
  let lab: NetLab
  const agents: AgentProcess[] = []
  before(async () => {
    lab = NetLab.create(3)
    agents.push(await AgentProcess.start({ name: 'p0', netns: lab.host(0).ns, listenIp: lab.host(0).ip }))
    agents.push(...await Promise.all([1, 2].map(async i => await AgentProcess.start({ name: `p${i}`, netns: lab.host(i).ns, listenIp: lab.host(i).ip, bootstrap: [agents[0].addr] }))))
    await until(async () => (await Promise.all(agents.map(async x => (await x.peers()).length))).every(n => n === 3), 'the mesh to form')
  })
  after(async () => {
    await stopAll(agents)
    lab?.destroy()
  })

  test('no acknowledged create, update or delete is lost; every agent ends with the same state', async () => {
    const comp = (name: string): object => ({ name, version: '1', runtime: 'external', external: { url: 'http://127.0.0.1:9/v1', model: name } })
    const [p0, p1, p2] = agents
    assert.equal((await p0.api('/api/components', { method: 'POST', body: comp('before-cut') })).status, 201)
    assert.equal((await p0.api('/api/components', { method: 'POST', body: comp('doomed') })).status, 201)
    await until(async () => (await p2.api('/api/components')).body.components.length === 2, 'the writes to reach every side')
    lab.partition([[0], [1, 2]])
    await until(async () => (await p0.peers()).length === 1 && (await p1.peers()).length === 2, 'the partition to be seen')
    // writes on both sides, each acknowledged by its side
    assert.equal((await p0.api('/api/components', { method: 'POST', body: comp('left') })).status, 201)
    assert.equal((await p1.api('/api/components', { method: 'POST', body: comp('right') })).status, 201)
    assert.equal((await p2.api('/api/components/doomed:1', { method: 'DELETE' })).status, 200)
    assert.equal((await p2.api('/api/components')).body.components.length, 2, 'the right side sees its own writes')
    lab.heal()
    const healedAt = Date.now()
    await until(async () => new Set(await Promise.all(agents.map(async x => (await x.api('/api/state')).body.digest))).size === 1, 'the three agents to converge', 60_000)
    const heartbeats = (Date.now() - healedAt) / HEARTBEAT_MS
    for (const x of agents) {
      const uris = (await x.api('/api/components')).body.components.map((co: any) => co.uri).sort()
      assert.deepEqual(uris, ['before-cut:1', 'left:1', 'right:1'], `${x.spec.name} holds every acknowledged write`)
    }
    // informational (not asserted): the bound stated in docs/decisions.md is expiry + reconnect + one pull
    console.log(`# converged ${heartbeats.toFixed(1)} heartbeats after the partition healed`)
  })
})

describe('a vDAG crowded onto one agent spreads out again when its peer is back', () => {
  let a: AgentProcess, b: AgentProcess
  const dir = tempDir('bm-spread-')
  const m = generateModel({ ...PRESETS.tiny, layers: 2, maxPositions: 1024, seed: 32 }, join(dir, 'tiny2.onnx'))
  before(async () => {
    a = await AgentProcess.start({ name: 'sa' })
    b = await AgentProcess.start({ name: 'sb', bootstrap: [a.addr] })
    await until(async () => (await a.peers()).length === 2 && (await b.peers()).length === 2, 'the mesh to form')
    await splitAndDeploy(a, { modelName: 'spread', modelPath: m.path, worldSize: 2 })
    await until(async () => (await complete(a, 'spread-pipeline')).status === 200, 'the vDAG to serve', 90_000)
  })
  after(async () => { await stopAll([a, b]) })

  const hostsOf = async (x: AgentProcess): Promise<string[][]> => await Promise.all(['spread-pipeline-s0', 'spread-pipeline-s1'].map(async id =>
    (await x.api(`/api/blocks/${id}`)).body.instances.filter((i: any) => i.status === 'ready').map((i: any) => i.peerId as string)))

  test('kill -9 of one agent crowds both stages onto the other; when it is back, one stage moves to it and requests keep being answered', async () => {
    const expected = (await complete(a, 'spread-pipeline', 'The gulls', 16)).text
    const before = await hostsOf(a)
    assert.notEqual(before[0][0], before[1][0], 'the stages start apart')
    await b.stop('SIGKILL')
    await until(async () => { const h = await hostsOf(a); return h[0].length === 1 && h[1].length === 1 && h[0][0] === a.peerId && h[1][0] === a.peerId }, 'both stages on the surviving agent', 60_000)
    assert.equal((await complete(a, 'spread-pipeline', 'The gulls', 16)).text, expected, 'crowded, it still answers')
    // requests keep flowing while the stage moves back
    let flowing = true
    const answers: Array<{ status: number, text: string }> = []
    const load = (async () => { while (flowing) answers.push(await complete(a, 'spread-pipeline', 'The gulls', 16)) })()
    await b.launch()
    try {
      await until(async () => { const h = await hostsOf(a); return h[0].length === 1 && h[1].length === 1 && h[0][0] !== h[1][0] }, 'the stages to be apart again', 90_000)
    } finally {
      flowing = false
      await load
    }
    assert.ok(answers.length > 0)
    assert.deepEqual(answers.filter(r => r.status !== 200 || r.text !== expected), [], 'every request during the move answered, the same')
    assert.equal((await complete(b, 'spread-pipeline', 'The gulls', 16)).text, expected)
  })
})
