import { test } from 'node:test'
import assert from 'node:assert/strict'
import { StatsHistory, sampleOf } from '../../agent/stats/history.ts'
import type { CapacityRecord } from '../../mesh/capacity/record.ts'

function record (over: Partial<CapacityRecord> = {}): CapacityRecord {
  return {
    v: 1, peerId: 'p1', name: 'n', cluster: 'c', vendor: '', addrs: [], epoch: 1, seq: 1, ts: 1, heartbeatMs: 1000,
    links: [],
    providers: [],
    vdags: [],
    instances: [
      { block: 'b', instance: 'i1', owner: 'o', status: 'ready', error: null, provider: 'cpu', component: 'x:1', active: 1, queued: 0, tokensPerSecond: 12.5, affinity: true, sessionTtl: 60 },
      { block: 'b', instance: 'i2', owner: 'o', status: 'ready', error: null, provider: 'cpu', component: 'x:1', active: 0, queued: 0, tokensPerSecond: 2.5, affinity: true, sessionTtl: 60 }
    ],
    readings: {
      cpu: { count: 4, model: 'cpu', load1: 1.234, load5: 1, load15: 1, utilisation: 40 },
      memory: { totalBytes: 1000, freeBytes: 100, availableBytes: 250 },
      gpus: [
        { index: 0, vendor: 'NVIDIA', model: 'H100', memoryTotalBytes: 100, memoryFreeBytes: 25, utilisation: 90, simulated: true },
        { index: 1, vendor: 'NVIDIA', model: 'H100', memoryTotalBytes: 100, memoryFreeBytes: 75, utilisation: 10, simulated: true },
        { index: 2, vendor: 'X', model: 'unknown', memoryTotalBytes: 100, memoryFreeBytes: null, utilisation: null, simulated: false }
      ]
    },
    ...over
  }
}

test('a sample sums tokens/s over instances and averages only the GPUs that report', () => {
  const s = sampleOf(record(), 5000)
  assert.deepEqual(s, { t: 5000, cpu: 40, load1: 1.23, ram: 75, gpu: 50, gpuMem: 50, tps: 15 })
  const none = sampleOf(record({ instances: [], readings: { ...record().readings, gpus: [] } }), 1)
  assert.equal(none.gpu, null)
  assert.equal(none.gpuMem, null)
  assert.equal(none.tps, 0)
})

test('history takes one sample per record, keeps the newest per peer, and forgets the least recent peers', () => {
  const h = new StatsHistory({ perPeer: 3, maxPeers: 2 })
  assert.ok(h.add(record({ seq: 1 }), 1) != null)
  assert.equal(h.add(record({ seq: 1 }), 2), null, 'the same record twice is one sample')
  for (let seq = 2; seq <= 5; seq++) h.add(record({ seq }), seq)
  assert.deepEqual(h.all().p1.map(s => s.t), [3, 4, 5])
  h.add(record({ peerId: 'p2' }), 10)
  h.add(record({ seq: 6 }), 11) // p1 is now the most recent
  h.add(record({ peerId: 'p3' }), 12)
  assert.deepEqual(Object.keys(h.all()).sort(), ['p1', 'p3'])
  // a restart (new epoch) with a lower seq is a new record
  assert.ok(h.add(record({ epoch: 2, seq: 1 }), 13) != null)
})
