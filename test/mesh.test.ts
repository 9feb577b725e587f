import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { AgentProcess, stopAll, until, HEARTBEAT_MS } from './helpers/agents.ts'

const GiB = 1024 ** 3

describe('three agents, each its own OS process, form a mesh and gossip capacity', () => {
  let a: AgentProcess, b: AgentProcess, c: AgentProcess

  before(async () => {
    a = await AgentProcess.start({ name: 'a', simulateGpus: 'count=2,model=A100,memory=80GiB,free=70GiB,util=5' })
    ;[b, c] = await Promise.all([
      AgentProcess.start({ name: 'b', bootstrap: [a.addr] }),
      AgentProcess.start({ name: 'c', bootstrap: [a.addr], cluster: 'other' })
    ])
  })
  after(async () => { await stopAll([a, b, c]) })

  test('each agent sees the other two, with the readings they publish, at most 2 heartbeats behind', async () => {
    const all = [a, b, c]
    await until(async () => {
      for (const x of all) if ((await x.peers()).length !== 3) return false
      return true
    }, 'every agent to list 3 live peers')

    for (const x of all) {
      for (const y of all) {
        if (x === y) continue
        // read y's own latest record first, then x's view of y: x may only be ahead by then, never > 2 behind
        const own = (await y.api('/api/node')).body
        const view = (await x.peers()).find(p => p.peerId === y.peerId)
        assert.ok(view != null, `${x.spec.name} lists ${y.spec.name}`)
        assert.equal(view.status, 'live')
        assert.equal(view.epoch, own.epoch)
        assert.ok(view.seq >= own.seq - 2, `${x.spec.name}'s record of ${y.spec.name} is seq ${view.seq}, ${y.spec.name} is at ${own.seq}`)
        // the readings that do not drift must match exactly
        assert.equal(view.name, own.name)
        assert.equal(view.cluster, own.cluster)
        assert.deepEqual(view.addrs, own.addrs)
        assert.equal(view.readings.cpu.count, own.readings.cpu.count)
        assert.equal(view.readings.memory.totalBytes, own.readings.memory.totalBytes)
        assert.deepEqual(view.readings.gpus, own.readings.gpus)
      }
    }
    const viewOfA = (await b.peers()).find(p => p.peerId === a.peerId)
    assert.equal(viewOfA.readings.gpus.length, 2)
    assert.ok(viewOfA.readings.gpus.every((g: any) => g.simulated === true && g.memoryTotalBytes === 80 * GiB && g.memoryFreeBytes === 70 * GiB))
    assert.equal((await b.peers()).find(p => p.peerId === c.peerId).cluster, 'other')
  })

  test('a changed reading reaches the others within 2 heartbeats', async () => {
    const put = await a.api('/api/hardware/simulated-gpus', {
      method: 'PUT', body: { spec: 'count=2,model=A100,memory=80GiB,free=12GiB,util=93' }
    })
    assert.equal(put.status, 200)
    const seq = put.body.publishedSeq as number
    assert.equal(typeof seq, 'number')
    for (const x of [b, c]) {
      const view = await until(async () => {
        const v = (await x.peers()).find(p => p.peerId === a.peerId)
        return v?.readings.gpus[0]?.memoryFreeBytes === 12 * GiB ? v : undefined
      }, `${x.spec.name} to see a's new free GPU memory`)
      assert.ok(view.seq <= seq + 2, `${x.spec.name} first saw the change at seq ${view.seq}; it was published at ${seq}`)
      assert.equal(view.readings.gpus[1].utilisation, 93)
    }
  })

  test('a killed agent disappears from the others after it stops heartbeating, and is listed as expired', async () => {
    const cId = c.peerId
    assert.ok((await a.peers()).some(p => p.peerId === cId), 'c is live before the kill')
    await c.stop('SIGKILL')
    for (const x of [a, b]) {
      await until(async () => !(await x.peers()).some(p => p.peerId === cId), `${x.spec.name} to drop c`, 30_000)
      const expired = (await x.peers('all')).find(p => p.peerId === cId)
      assert.equal(expired?.status, 'expired')
      assert.ok(expired.lastSeenAgoMs >= 0)
    }
    assert.ok(await a.metric('blockmesh_peers_expired_total') >= 1)
    assert.equal(await a.metric('blockmesh_peers_known'), 1)
  })

  test('a restarted agent keeps its peer ID, starts a new epoch, and finds the mesh from its stored peers', async () => {
    const before = c.peerId
    await c.launch({ bootstrap: [] }) // same data dir, no bootstrap flag: it must use the peers it stored
    assert.equal(c.peerId, before)
    const own = (await c.api('/api/node')).body
    assert.equal(own.epoch, 2)
    await until(async () => (await c.peers()).length === 3, 'c to see a and b again from stored peers', 60_000)
      .catch((err: Error) => { throw new Error(`${err.message}\n--- c's log (tail):\n${c.log().split('\n').slice(-15).join('\n')}`) })
    // the others accept the new epoch even though its sequence numbers restarted at 0
    await until(async () => (await a.peers()).find(p => p.peerId === before)?.epoch === 2, 'a to see c in epoch 2')
    await until(async () => (await b.peers()).find(p => p.peerId === before)?.status === 'live', 'b to see c live again')
  })
})
