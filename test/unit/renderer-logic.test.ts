// The dashboard's logic that does not need a browser: how it reads the API's
// errors, builds the topology graph, parses event streams and form values.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { errorOf } from '../../renderer/src/errors.ts'
import { graphElements, peerPositions, vdagLayouts } from '../../renderer/src/topology-model.ts'
import { SseSplitter, EventTooLargeError } from '../../renderer/src/sse.ts'
import { compact, numberOrText } from '../../renderer/src/form.ts'
import type { Peer, Task } from '../../renderer/src/types.ts'
import { balanceOf, planOf } from '../../renderer/src/split-result.ts'

test('errors in each of the agent\'s shapes become one ApiError with field messages', () => {
  const api = errorOf(400, { error: { code: 'invalid_request', message: 'invalid body', details: [{ field: 'policy.node.minRam', message: 'not a size' }] } })
  assert.equal(api.code, 'invalid_request')
  assert.equal(api.field('policy.node.minRam'), 'not a size')
  assert.equal(api.field('policy.node'), 'not a size', 'a parent name finds a nested field')
  assert.equal(api.field('minInstances'), undefined)
  const seed = errorOf(400, { success: false, error: 'invalid body: task_data.world_size: too big', code: 'invalid_request', details: [{ field: 'task_data.world_size', message: 'too big' }] })
  assert.equal(seed.message, 'invalid body: task_data.world_size: too big')
  assert.equal(seed.field('task_data.world_size'), 'too big')
  const openai = errorOf(404, { error: { message: 'model x not found', type: 'invalid_request_error', code: 'model_not_found', param: 'model' } })
  assert.equal(openai.code, 'model_not_found')
  assert.equal(openai.field('model'), 'model x not found')
  const text = errorOf(502, 'Bad Gateway')
  assert.equal(text.message, 'HTTP 502: Bad Gateway')
  assert.equal(text.status, 502)
})

function peer (id: string, cluster: string, over: Partial<Peer> = {}): Peer {
  return {
    peerId: id, name: `n-${id}`, cluster, vendor: '', addrs: [], epoch: 1, seq: 1, heartbeatMs: 1000,
    readings: { cpu: { count: 1, model: '', load1: 0, load5: 0, load15: 0, utilisation: 0 }, memory: { totalBytes: 1, freeBytes: 1, availableBytes: 1 }, gpus: [] },
    instances: [], vdags: [], links: [], self: false, status: 'live', connected: true, lastSeen: '', lastSeenAgoMs: 0, score: 0,
    ...over
  }
}

function ready (block: string): Peer['instances'][number] {
  return { block, instance: `${block}-i`, owner: 'a', status: 'ready', error: null, provider: 'cpu', component: 'c:1', active: 0, queued: 0, tokensPerSecond: 0 }
}

test('the topology: clusters hold their peers, connections once per pair, a vDAG as hops between the peers of consecutive stages', () => {
  const peers = [
    peer('a', 'x', { self: true, links: ['b', 'c', 'gone'], vdags: [{ name: 'pipe', stages: ['s0', 's1'], contextLength: 64 }], instances: [ready('s0')] }),
    peer('b', 'x', { links: ['a'], instances: [ready('s1'), { ...ready('s0'), status: 'loading' }] }),
    peer('c', 'y', { links: ['a'] })
  ]
  const vdags = vdagLayouts(peers)
  assert.deepEqual(vdags.map(v => ({ name: v.name, owner: v.owner, stages: v.stages.map(s => s.peers.map(p => p.peerId)) })), [{ name: 'pipe', owner: 'n-a', stages: [['a'], ['b']] }])
  const els = graphElements(peers, vdags)
  const ids = els.map(e => e.data.id)
  assert.deepEqual(ids.filter(i => i?.startsWith('cluster:')), ['cluster:x', 'cluster:y'])
  assert.deepEqual(els.filter(e => e.classes?.includes('peer')).map(e => [e.data.id, e.data.parent]), [['a', 'cluster:x'], ['b', 'cluster:x'], ['c', 'cluster:y']])
  assert.deepEqual(ids.filter(i => i?.startsWith('link:')).sort(), ['link:a:b', 'link:a:c'], 'one edge per connected pair; unknown peers left out')
  assert.deepEqual(els.filter(e => e.classes === 'vdag').map(e => [e.data.source, e.data.target, e.data.label]), [['a', 'b', 'pipe 0→1']])
  const pos = peerPositions(peers)
  assert.equal(pos.size, 3)
  assert.ok(pos.get('c')!.x > Math.max(pos.get('a')!.x, pos.get('b')!.x), 'the second cluster is drawn to the right of the first')
  assert.notDeepEqual(pos.get('a'), pos.get('b'))
})

test('event streams are split into data payloads, across chunk boundaries, with a bound', () => {
  const s = new SseSplitter(64)
  assert.deepEqual(s.push('event: x\ndata: {"a"'), [])
  assert.deepEqual(s.push(':1}\n\n: comment\n\ndata: one\r\ndata: two\r\n\r\ndata: [DONE]\n\n'), ['{"a":1}', 'one\ntwo', '[DONE]'])
  assert.throws(() => s.push('data: ' + 'x'.repeat(100)), EventTooLargeError)
})

test('form values: numbers where they parse, the text otherwise (so the API names it), empty parts dropped', () => {
  assert.equal(numberOrText(' 3 '), 3)
  assert.equal(numberOrText('16GiB'), '16GiB')
  assert.equal(numberOrText(''), undefined)
  assert.deepEqual(compact({ a: 1, b: undefined, p: { c: {}, n: { x: undefined, y: 0 } }, l: [] }), { a: 1, p: { n: { y: 0 } }, l: [] })
})

test('a split task\'s result: the plan and the balance line are read only when they have the expected shape', () => {
  const task = (result: unknown): Task => ({ task_id: 't', status: 'complete', progress: 1, result } as unknown as Task)
  const plan = { vdag: { name: 'x-pipeline' }, stages: [{ rank: 0, layers: [0, 16], model_layer_hash: 'a'.repeat(32), size_bytes: 10 }] }
  assert.equal(planOf(task({ plan }))?.vdag.name, 'x-pipeline')
  assert.equal(planOf(task({ plan: { ...plan, stages: [{ rank: 0, layers: [0] }] } })), null)
  assert.equal(balanceOf(task({ balance: { cost: 'measured', ranges: [[0, 16], [16, 30]], pre_layers: 0, post_layers: 2.5 } })),
    'cut by measured step time: the parts before the layers weigh 0 layer(s), the parts after them (final norm, LM head) 2.5')
  assert.equal(balanceOf(task({ balance: { cost: 'params', ranges: [[0, 1], [1, 2]] } })), 'cut by the bytes a decode step reads')
  assert.equal(balanceOf(task({ balance: { cost: 'measured', post_layers: '<img>' } })),
    'cut by measured step time: the parts before the layers weigh ? layer(s), the parts after them (final norm, LM head) ?')
  assert.equal(balanceOf(task({ balance: { cost: 'fastest' } })), null)
  assert.equal(balanceOf(task(null)), null)
})
