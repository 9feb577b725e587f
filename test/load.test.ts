/**
 * Load (issue 13): 100 concurrent streamed chats sent to ONE agent of three agent processes, for a
 * block with an instance on every agent (two thirds tunnelled to peers) and for a 3-stage vDAG with
 * a stage on every agent (issue 14: all sequences between two peers share one pipeline stream): every one completes, none errs.
 * No timing is asserted (the benchmark reports TTFT: npm run bench -- --only load).
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { AgentProcess } from './helpers/agents.ts'
import { stopAll, tempDir } from './helpers/agents.ts'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { burst, deployPipeline, deploySpread, startMesh } from '../bench/load.ts'
import type { BurstResult } from '../bench/load.ts'
import { PeerStreamSlots, StreamsBusyError } from '../mesh/stream-slots.ts'

/** More sequences at once than the 256 streams per connection a stream per sequence per hop allowed (before issue 14). */
const MANY = 300

const REQUESTS = 100
const MAX_TOKENS = 8

function check (r: BurstResult, requests = REQUESTS): void {
  const summary = `${r.completed}/${r.outcomes.length} completed; errors: ${JSON.stringify([...new Set(r.errors)].slice(0, 5))}`
  assert.equal(r.errors.length, 0, summary)
  assert.equal(r.completed, requests, summary)
  for (const o of r.outcomes) {
    assert.equal(o.status, 200)
    assert.ok(o.deltas > 0, 'every stream carried content')
    assert.ok(o.tokens > 0 && o.tokens <= MAX_TOKENS, `usage: ${o.tokens} completion tokens`)
  }
}

describe('stream slots per peer (the dialer side of the tensor and tunnel stream limits)', () => {
  test('up to the limit at once; the next ones wait in order and get the slots of closed streams', async () => {
    const slots = new PeerStreamSlots(2, 'test', 10_000)
    const r1 = await slots.acquire('p')
    await slots.acquire('p')
    const other = await slots.acquire('q')
    assert.equal(slots.inUse('p'), 2)
    const order: number[] = []
    const w3 = slots.acquire('p').then(r => { order.push(3); return r })
    const w4 = slots.acquire('p').then(r => { order.push(4); return r })
    await new Promise(resolve => setImmediate(resolve))
    assert.equal(slots.waiting('p'), 2)
    assert.deepEqual(order, [])
    r1()
    r1() // a second release of the same slot changes nothing
    const r3 = await w3
    assert.deepEqual(order, [3])
    assert.equal(slots.inUse('p'), 2)
    assert.equal(slots.waiting('p'), 1)
    r3()
    ;(await w4)()
    assert.deepEqual(order, [3, 4])
    assert.equal(slots.inUse('p'), 1)
    other()
    assert.equal(slots.inUse('q'), 0)
  })

  test('a waiter leaves the queue when its request goes away, and fails clearly when no slot frees in time', async () => {
    const slots = new PeerStreamSlots(1, 'tensor', 200)
    const held = await slots.acquire('p')
    const gone = new AbortController()
    const waiting = slots.acquire('p', gone.signal)
    gone.abort(new Error('client went away'))
    await assert.rejects(waiting, /client went away/)
    assert.equal(slots.waiting('p'), 0)
    await assert.rejects(slots.acquire('p'), (err: Error) => err instanceof StreamsBusyError && /all 1 tensor streams to peer p stayed busy for 0 s/.test(err.message))
    assert.equal(slots.waiting('p'), 0)
    held()
    assert.equal(slots.inUse('p'), 0)
  })
})

describe('100 concurrent streamed chats through one agent of three', () => {
  let agents: AgentProcess[] = []
  const dir = tempDir('bm-load-')
  const m = generateModel({ ...PRESETS.tiny, layers: 3, maxPositions: 1024, seed: 21 }, join(dir, 'tiny3.onnx'))

  before(async () => {
    agents = await startMesh('load')
    await deploySpread(agents, m, 'spread')
    const route = await deployPipeline(agents, m, 'pipeline')
    assert.equal(new Set(route).size, 3, `one stage per agent: ${route.join(' → ')}`)
  })
  after(async () => { await stopAll(agents) })

  test('a block with an instance on each agent: 100 of 100 complete, 0 errors', async () => {
    const r = await burst(agents[0], 'spread', REQUESTS, MAX_TOKENS)
    check(r)
    assert.equal(new Set(r.outcomes.map(o => o.instance)).size, 3, 'all three instances answered (two of them through the tunnel)')
  })

  test('a 3-stage vDAG with a stage on each agent: 100 of 100 complete, 0 errors', async () => {
    check(await burst(agents[0], 'pipeline', REQUESTS, MAX_TOKENS))
  })

  test('twice in a row, through another agent, both models at once (streams of finished requests are all released)', async () => {
    const [x, y] = await Promise.all([burst(agents[1], 'pipeline', REQUESTS, MAX_TOKENS), burst(agents[1], 'spread', REQUESTS, MAX_TOKENS)])
    check(x)
    check(y)
  })

  test(`${MANY} sequences at once (past the 256 streams per connection a stream per sequence per hop allowed) share one pipeline stream per peer pair: none fails`, async () => {
    const n = MANY
    check(await burst(agents[2], 'pipeline', n, 4), n)
  })
})
