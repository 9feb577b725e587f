import { test } from 'node:test'
import assert from 'node:assert/strict'
import { schedule } from '../../agent/scheduler/schedule.ts'
import { PolicySchema } from '../../agent/scheduler/policy.ts'
import { nodeViewsFrom } from '../../agent/scheduler/nodes.ts'
import { CapacityRecordSchema } from '../../mesh/capacity/record.ts'
import type { CapacityRecord } from '../../mesh/capacity/record.ts'
import type { InstanceNeeds, NodeView, PlacementRequest, PlacementResult, Policy } from '../../agent/scheduler/policy.ts'
import { Rng } from '../../agent/model/random.ts'

const GiB = 2 ** 30

type Gpu = NodeView['gpus'][number]
type Reasons = Extract<PlacementResult, { ok: false }>['reasons']

function gpu (freeGiB: number | null, utilisation: number | null, totalGiB = 80): Gpu {
  return { memoryFreeBytes: freeGiB == null ? null : freeGiB * GiB, memoryTotalBytes: totalGiB * GiB, utilisation }
}

function simGpu (freeGiB: number, utilisation = 0): Gpu {
  return { ...gpu(freeGiB, utilisation), simulated: true }
}

function node (peerId: string, cluster: string, vendor: string, o: { cpus: number, load15: number, ramGiB: number, gpus: Gpu[], instances?: number }): NodeView {
  return { peerId, name: peerId, cluster, vendor, cpus: o.cpus, load15: o.load15, ramAvailable: o.ramGiB * GiB, gpus: o.gpus, instances: o.instances ?? 0 }
}

/**
 * lab-a (dma-bangalore): 2 nodes × 2 GPUs, 150 GiB free, mean load 2.5.
 * lab-b (dma-pune): 2 nodes × 1 GPU, 80 GiB free, mean load 12.5.
 */
function mesh (): NodeView[] {
  return [
    node('a1', 'lab-a', 'dma-bangalore', { cpus: 16, load15: 2, ramGiB: 64, gpus: [gpu(40, 10), gpu(30, 50)] }),
    node('a2', 'lab-a', 'dma-bangalore', { cpus: 16, load15: 3, ramGiB: 48, gpus: [gpu(20, 95), gpu(60, 20)] }),
    node('b1', 'lab-b', 'dma-pune', { cpus: 8, load15: 12, ramGiB: 32, gpus: [gpu(70, 5)] }),
    node('b2', 'lab-b', 'dma-pune', { cpus: 4, load15: 13, ramGiB: 16, gpus: [gpu(10, 0)] })
  ]
}

const MISTRAL: Policy = PolicySchema.parse({
  cluster: { minGpus: 3, vendor: 'dma-bangalore', maxCpuLoad15: 10, minFreeGpuMemory: '48GB' },
  node: { maxGpuUtilisation: 90, minFreeGpuMemory: '16GB' }
})
const YOLO: Policy = {
  cluster: { minGpus: 5, vendor: 'dma-bangalore', maxCpuLoad15: 10, minFreeGpuMemory: 9e9 },
  node: { maxGpuUtilisation: 80, minFreeGpuMemory: 5e9 }
}
const VLLM_CHAT: Policy = { cluster: {}, node: { minCpus: 2, minRam: 2 * GiB } }

const NO_NEEDS: InstanceNeeds = { gpuMemory: 0, ram: 0, cpus: 0 }
const MISTRAL_NEEDS: InstanceNeeds = { gpuMemory: 14e9, ram: 8 * GiB, cpus: 2 }

function req (policy: Policy, count: number, more: Partial<PlacementRequest> = {}): PlacementRequest {
  return { policy, needs: NO_NEEDS, count, ...more }
}

function placed (r: PlacementResult): { cluster: string, nodes: string[], gpus: number[][] } {
  assert.ok(r.ok, `expected a placement, got ${JSON.stringify(r)}`)
  return { cluster: r.cluster, nodes: r.placements.map(p => p.peerId), gpus: r.placements.map(p => p.gpuIndexes) }
}

function refused (r: PlacementResult): Reasons {
  assert.ok(!r.ok, `expected a refusal, got ${JSON.stringify(r)}`)
  assert.ok(r.reasons.length > 0, 'a refusal gives at least one reason')
  return r.reasons
}

function reason (reasons: Reasons, filter: string): string {
  const r = reasons.find(x => x.filter === filter)
  assert.ok(r != null, `expected a ${filter} reason in ${JSON.stringify(reasons)}`)
  return r.message
}

function policy (cluster: Policy['cluster'], nodeFilter: Policy['node']): Policy {
  return { cluster, node: nodeFilter }
}

test('mistral-chat-88: the vendor cluster with enough GPUs, nodes by free qualifying GPU memory; count 3 places what fits', () => {
  assert.deepEqual(MISTRAL.cluster.minFreeGpuMemory, 48e9, 'sizes parse to bytes')
  // a1 has 70 GiB on qualifying GPUs, a2 60 GiB (its GPU 0 is at 95 %)
  assert.deepEqual(placed(schedule(req(MISTRAL, 1, { needs: MISTRAL_NEEDS }), mesh())), { cluster: 'lab-a', nodes: ['a1'], gpus: [[0]] })
  assert.deepEqual(placed(schedule(req(MISTRAL, 2, { needs: MISTRAL_NEEDS }), mesh())), { cluster: 'lab-a', nodes: ['a1', 'a2'], gpus: [[0], [1]] })
  // lab-b is another vendor's: only 2 nodes can take an instance
  assert.deepEqual(placed(schedule(req(MISTRAL, 3, { needs: MISTRAL_NEEDS }), mesh())), { cluster: 'lab-a', nodes: ['a1', 'a2'], gpus: [[0], [1]] })
})

test('detector-yolo-88: refused for want of 5 GPUs from the vendor, placed once a third node joins', () => {
  const reasons = refused(schedule(req(YOLO, 2), mesh()))
  assert.deepEqual(reasons, [{ filter: 'cluster.minGpus', message: 'no cluster with ≥ 5 GPUs from dma-bangalore: best was lab-a with 4' }])
  const bigger = [...mesh(), node('a3', 'lab-a', 'dma-bangalore', { cpus: 8, load15: 1, ramGiB: 32, gpus: [gpu(12, 70)] })]
  assert.deepEqual(placed(schedule(req(YOLO, 3), bigger)), { cluster: 'lab-a', nodes: ['a1', 'a2', 'a3'], gpus: [[0], [1], [0]] })
  // a3's GPU goes above 80 % utilisation: it no longer qualifies
  bigger[4].gpus[0].utilisation = 85
  assert.deepEqual(placed(schedule(req(YOLO, 3), bigger)).nodes, ['a1', 'a2'])
})

test('vllm-chat (CPU only): any cluster; no GPUs assigned; CPU and RAM filters apply', () => {
  const r = placed(schedule(req(VLLM_CHAT, 1, { needs: { gpuMemory: 0, ram: GiB, cpus: 1 } }), mesh()))
  assert.equal(r.cluster, 'lab-a', 'the cluster with the most free GPU memory wins the tie')
  assert.deepEqual(r.gpus, [[]])
  assert.deepEqual(r.nodes, ['a2'], 'most free GPU memory first (a2 80 GiB, a1 70 GiB), before most RAM')
  // needs add to the filter: 2 GiB + 40 GiB leaves only a1 (64 GiB) and a2 (48 GiB); 10 CPUs leaves only lab-a
  const strict = placed(schedule(req(VLLM_CHAT, 4, { needs: { gpuMemory: 0, ram: 40 * GiB, cpus: 10 } }), mesh()))
  assert.deepEqual(strict.nodes.toSorted(), ['a1', 'a2'])
  const refusedRam = refused(schedule(req(VLLM_CHAT, 1, { needs: { gpuMemory: 0, ram: 70 * GiB, cpus: 0 } }), mesh()))
  assert.match(reason(refusedRam, 'node.minRam'), /cluster lab-a has no node with ≥ 72\.0 GiB available RAM: best was a1 with 64\.0 GiB/)
})

test('node.names: only the named nodes (a template split pins each stage to the peer its decision chose); none named is a reason', () => {
  const r = placed(schedule(req(policy({}, { names: ['b1'] }), 1), mesh()))
  assert.deepEqual(r.nodes, ['b1'], 'b1 although lab-a has more free GPU memory')
  const two = placed(schedule(req(policy({}, { names: ['a1', 'a2'] }), 2), mesh()))
  assert.deepEqual(two.nodes.toSorted(), ['a1', 'a2'])
  const none = refused(schedule(req(policy({}, { names: ['nowhere'] }), 1), mesh()))
  assert.match(reason(none, 'node.names'), /named nowhere/)
  assert.equal(PolicySchema.safeParse({ node: { names: [] } }).success, false, 'an empty list names no node: refused as a spec')
})

test('spread: at most one instance per node; nodes already holding one are skipped; all full is node.spread', () => {
  const nodes = mesh()
  nodes[0].instances = 1
  assert.deepEqual(placed(schedule(req(MISTRAL, 2, { needs: MISTRAL_NEEDS }), nodes)).nodes, ['a2'])
  nodes[1].instances = 2
  const reasons = refused(schedule(req(MISTRAL, 1, { needs: MISTRAL_NEEDS }), nodes))
  assert.equal(reasons.length, 1)
  assert.match(reason(reasons, 'node.spread'), /every node of cluster lab-a already runs an instance of this block \(2 nodes/)
  // a peer listed twice (two views of one box) is still one node
  const twice = [...mesh(), { ...mesh()[0], name: 'a1-again' }]
  assert.deepEqual(placed(schedule(req(MISTRAL, 3, { needs: MISTRAL_NEEDS }), twice)).nodes, ['a1', 'a2'])
})

test('load limits are strict: a load equal to the limit does not pass', () => {
  // lab-a's mean load is exactly 2.5, lab-b's 12.5
  const r = refused(schedule(req(policy({ maxCpuLoad15: 2.5 }, {}), 1), mesh()))
  assert.deepEqual(r, [{ filter: 'cluster.maxCpuLoad15', message: 'no cluster with 15-minute CPU load < 2.5: best was lab-a with 2.5' }])
  assert.deepEqual(placed(schedule(req(policy({ maxCpuLoad15: 2.6 }, { maxCpuLoad15: 3 }), 2), mesh())).nodes, ['a1'])
})

test('GPU memory claimed in one decision is not reused: one instance per GPU box, distinct GPUs per instance', () => {
  // one 80 GiB GPU could hold 8 instances of 10 GiB, but it is claimed once
  const one = [node('big', 'solo', 'v', { cpus: 64, load15: 0, ramGiB: 512, gpus: [gpu(80, 0)] })]
  const r = placed(schedule(req(policy({}, { minFreeGpuMemory: 10 * GiB }), 3, { needs: { gpuMemory: 10 * GiB, ram: 0, cpus: 0 } }), one))
  assert.deepEqual(r.nodes, ['big'])
  // two GPUs per instance: the 70 GiB GPU cannot stand in for both
  const two = [node('x', 'c', 'v', { cpus: 8, load15: 0, ramGiB: 64, gpus: [gpu(70, 0), gpu(5, 0)] }),
    node('y', 'c', 'v', { cpus: 8, load15: 0, ramGiB: 64, gpus: [gpu(31, 0), gpu(9, 0), gpu(30, 0)] })]
  const twoGpus = policy({}, { gpus: 2 })
  const needs30 = { gpuMemory: 30 * GiB, ram: 0, cpus: 0 }
  assert.deepEqual(placed(schedule(req(twoGpus, 2, { needs: needs30 }), two)), { cluster: 'c', nodes: ['y'], gpus: [[0, 2]] })
  const reasons = refused(schedule(req(twoGpus, 1, { needs: { ...needs30, gpuMemory: 32 * GiB } }), two))
  assert.match(reason(reasons, 'node.minFreeGpuMemory'), /no node with 2 GPUs with ≥ 32\.0 GiB free each: best was y with 31\.0 GiB, 30\.0 GiB free/)
})

test('preferNode and preferCluster are honoured when they qualify', () => {
  const needs = MISTRAL_NEEDS
  assert.deepEqual(placed(schedule(req(MISTRAL, 1, { needs, preferNode: 'a2' }), mesh())).nodes, ['a2'])
  assert.deepEqual(placed(schedule(req(MISTRAL, 2, { needs, preferNode: 'a2' }), mesh())).nodes, ['a2', 'a1'])
  // a preferred node that does not qualify is ignored
  assert.deepEqual(placed(schedule(req(MISTRAL, 1, { needs, preferNode: 'b1' }), mesh())).nodes, ['a1'])
  const cpu = policy({}, { minCpus: 2 })
  assert.equal(placed(schedule(req(cpu, 2), mesh())).cluster, 'lab-a')
  assert.deepEqual(placed(schedule(req(cpu, 2, { preferCluster: 'lab-b' }), mesh())), { cluster: 'lab-b', nodes: ['b1', 'b2'], gpus: [[], []] })
  // the preferred cluster cannot host all 2 (b2 has 4 CPUs): the one that can wins
  assert.equal(placed(schedule(req(policy({}, { minCpus: 6 }), 2, { preferCluster: 'lab-b' }), mesh())).cluster, 'lab-a')
  // a preferred cluster that fails the cluster filter is not used
  assert.equal(placed(schedule(req(policy({ maxCpuLoad15: 10 }, {}), 1, { preferCluster: 'lab-b' }), mesh())).cluster, 'lab-a')
})

test('exclude: excluded peers are not used but still count for the cluster totals', () => {
  assert.deepEqual(placed(schedule(req(MISTRAL, 1, { needs: MISTRAL_NEEDS, exclude: ['a1'] }), mesh())).nodes, ['a2'])
  const reasons = refused(schedule(req(MISTRAL, 1, { needs: MISTRAL_NEEDS, exclude: ['a1', 'a2'] }), mesh()))
  assert.deepEqual(reasons.map(r => r.filter), ['exclude'], 'lab-a still has its 4 GPUs for minGpus')
  assert.match(reasons[0].message, /every node of cluster lab-a is excluded/)
})

test('node order: most free qualifying GPU memory, then most RAM, then lowest load, then peer ID', () => {
  const same = (peerId: string, ramGiB: number, load15: number): NodeView => node(peerId, 'c', 'v', { cpus: 4, load15, ramGiB, gpus: [gpu(20, 0)] })
  const nodes = [same('p4', 8, 1), same('p3', 8, 1), same('p9', 8, 0.5), same('p1', 16, 2), node('p0', 'c', 'v', { cpus: 4, load15: 3, ramGiB: 1, gpus: [gpu(20, 0), gpu(1, 0)] })]
  assert.deepEqual(placed(schedule(req(policy({}, {}), 5), nodes)).nodes, ['p0', 'p1', 'p9', 'p3', 'p4'])
  // only GPUs that qualify count: p0's second GPU is too small for 2 GiB
  assert.deepEqual(placed(schedule(req(policy({}, { minFreeGpuMemory: 2 * GiB }), 5), nodes)).nodes, ['p1', 'p9', 'p3', 'p4', 'p0'])
})

test('deterministic: same input, same output, whatever the order of the nodes', () => {
  const rng = new Rng(7)
  const nodes = randomMesh(rng, 40)
  const requests = [req(MISTRAL, 3, { needs: MISTRAL_NEEDS }), req(YOLO, 2), req(VLLM_CHAT, 5), req(policy({}, {}), 4)]
  for (const r of requests) {
    const first = schedule(r, nodes)
    assert.deepEqual(schedule(r, nodes), first)
    for (let i = 0; i < 5; i++) assert.deepEqual(schedule(r, shuffle(rng, nodes)), first)
  }
})

test('refusals say why, per cluster filter, with the best candidate and its value', () => {
  const onlyA1 = mesh().filter(n => n.peerId !== 'a2')
  assert.deepEqual(refused(schedule(req(MISTRAL, 1), onlyA1)), [{ filter: 'cluster.minGpus', message: 'no cluster with ≥ 3 GPUs from dma-bangalore: best was lab-a with 2' }])

  const hot = mesh()
  hot[0].load15 = 11; hot[1].load15 = 15; hot[2].load15 = 12; hot[3].load15 = 12.6
  assert.deepEqual(refused(schedule(req(policy({ maxCpuLoad15: 10 }, {}), 1), hot)),
    [{ filter: 'cluster.maxCpuLoad15', message: 'no cluster with 15-minute CPU load < 10: best was lab-b with 12.3' }])

  const mem = refused(schedule(req(policy({ minFreeGpuMemory: 200 * GiB }, {}), 1), mesh()))
  assert.match(reason(mem, 'cluster.minFreeGpuMemory'), /^no cluster with ≥ 200\.0 GiB free GPU memory: best was lab-a with 150\.0 GiB$/)
  const memVendor = refused(schedule(req(policy({ minFreeGpuMemory: 100 * GiB, vendor: 'dma-pune' }, {}), 1), mesh()))
  assert.match(reason(memVendor, 'cluster.minFreeGpuMemory'), /≥ 100\.0 GiB free GPU memory from dma-pune: best was lab-b with 80\.0 GiB/)

  assert.deepEqual(refused(schedule(req(policy({ vendor: 'dma-mysore' }, {}), 1), mesh())),
    [{ filter: 'cluster.vendor', message: 'no live nodes from vendor dma-mysore' }])
  assert.match(reason(refused(schedule(req(policy({ names: ['lab-z'] }, {}), 1), mesh())), 'cluster.names'), /no live nodes in cluster lab-z/)
  assert.deepEqual(refused(schedule(req(MISTRAL, 1), [])), [{ filter: 'mesh', message: 'no live nodes' }])

  // two filters each fail on every cluster: both are named, each with its own best
  const both = refused(schedule(req(policy({ minGpus: 5, maxCpuLoad15: 1 }, {}), 1), mesh()))
  assert.deepEqual(both.map(r => r.filter), ['cluster.minGpus', 'cluster.maxCpuLoad15'])
  assert.match(reason(both, 'cluster.minGpus'), /best was lab-a with 4$/)
  assert.match(reason(both, 'cluster.maxCpuLoad15'), /best was lab-a with 2\.5$/)
  // each filter passes somewhere, but no cluster passes both
  const coolB = mesh()
  coolB[2].load15 = 1; coolB[3].load15 = 1
  const combo = refused(schedule(req(policy({ minGpus: 3, maxCpuLoad15: 2 }, {}), 1), coolB))
  assert.deepEqual(combo.map(r => r.filter), ['cluster.minGpus', 'cluster.maxCpuLoad15'])
  assert.match(reason(combo, 'cluster.minGpus'), /no cluster passes every cluster filter: ≥ 3 GPUs rules out 1 of 2 clusters \(best of them: lab-b with 2\)/)
  assert.match(reason(combo, 'cluster.maxCpuLoad15'), /rules out 1 of 2 clusters \(best of them: lab-a with 2\.5\)/)
})

test('refusals say why, per node filter, for the best cluster that passed', () => {
  const gpus = [
    node('n3', 'lab-a', 'v', { cpus: 8, load15: 1, ramGiB: 32, gpus: [gpu(8, 10), gpu(30, 95)] }),
    node('n4', 'lab-a', 'v', { cpus: 8, load15: 1, ramGiB: 32, gpus: [gpu(4, 0)] })
  ]
  const memory = refused(schedule(req(policy({}, { maxGpuUtilisation: 90, minFreeGpuMemory: 16 * GiB }), 1), gpus))
  assert.deepEqual(memory, [{ filter: 'node.minFreeGpuMemory', message: 'cluster lab-a has no node with a GPU under 90% utilisation and ≥ 16.0 GiB free: best was n3 with 8.0 GiB free' }])
  const busy = refused(schedule(req(policy({}, { maxGpuUtilisation: 5, minFreeGpuMemory: 16 * GiB }), 1), gpus.slice(0, 1)))
  assert.deepEqual(busy.map(r => r.filter), ['node.maxGpuUtilisation'], 'the utilisation filter is named, not the memory one it implies')
  assert.match(busy[0].message, /no node with a GPU under 5% utilisation: best was n3 with a GPU at 10%/)
  const count = refused(schedule(req(policy({}, { gpus: 3 }), 1), mesh()))
  assert.match(reason(count, 'node.gpus'), /cluster lab-a has no node with ≥ 3 GPUs: best was a1 with 2/)
  const cpus = refused(schedule(req(policy({}, { minCpus: 32 }), 1), mesh()))
  assert.match(reason(cpus, 'node.minCpus'), /cluster lab-a has no node with ≥ 32 CPUs: best was a1 with 16/)
  const ram = refused(schedule(req(policy({}, { minRam: 100 * GiB }), 1), mesh()))
  assert.match(reason(ram, 'node.minRam'), /≥ 100\.0 GiB available RAM: best was a1 with 64\.0 GiB/)
  const load = refused(schedule(req(policy({}, { maxCpuLoad15: 1.5 }), 1), mesh()))
  assert.match(reason(load, 'node.maxCpuLoad15'), /cluster lab-a has no node with 15-minute CPU load < 1\.5: best was a1 with 2$/)
  // node reasons come from the best cluster that passed the cluster filter (lab-b here)
  const inB = refused(schedule(req(policy({ vendor: 'dma-pune' }, { minCpus: 12 }), 1), mesh()))
  assert.match(reason(inB, 'node.minCpus'), /cluster lab-b has no node with ≥ 12 CPUs: best was b1 with 8/)
  // no single filter rules out every node, their combination does
  const mixed = [mesh()[1], node('a9', 'lab-a', 'dma-bangalore', { cpus: 4, load15: 0, ramGiB: 200, gpus: [] })]
  const combo = refused(schedule(req(policy({}, { minCpus: 10, minRam: 56 * GiB }), 1), mixed))
  assert.deepEqual(combo.map(r => r.filter), ['node.minCpus', 'node.minRam'])
  assert.match(reason(combo, 'node.minCpus'), /no node that passes every node filter: ≥ 10 CPUs rules out 1 of 2 nodes \(best of them: a9 with 4\)/)
  assert.match(reason(combo, 'node.minRam'), /≥ 56\.0 GiB available RAM rules out 1 of 2 nodes \(best of them: a2 with 48\.0 GiB\)/)
})

test('partial placement when fewer nodes qualify than asked; count 0 places nothing', () => {
  const r = schedule(req(policy({}, { maxGpuUtilisation: 60 }), 5), mesh())
  // lab-a can host 2 (a1, a2), lab-b 2 (b1, b2): lab-a has more free GPU memory
  assert.deepEqual(placed(r), { cluster: 'lab-a', nodes: ['a1', 'a2'], gpus: [[0], [1]] })
  const most = placed(schedule(req(policy({}, { minCpus: 6 }), 3, { preferCluster: 'lab-b' }), mesh()))
  assert.equal(most.cluster, 'lab-a', 'the cluster hosting the most instances wins over the preferred one')
  assert.deepEqual(schedule(req(MISTRAL, 0), mesh()), { ok: true, cluster: 'lab-a', placements: [] })
  assert.deepEqual(schedule(req(policy({}, {}), 0, { preferCluster: 'lab-b' }), mesh()), { ok: true, cluster: 'lab-b', placements: [] })
  assert.deepEqual(schedule(req(YOLO, 0), mesh()), { ok: true, cluster: '', placements: [] })
  assert.deepEqual(schedule(req(YOLO, 0), []), { ok: true, cluster: '', placements: [] })
})

const HINT = 'start the agent with --allow-simulated-gpus to place on them'

test('simulated GPUs are ignored (as if absent) unless the request allows them; the refusal says so', () => {
  const nodes = [node('s1', 'sim', 'v', { cpus: 8, load15: 0, ramGiB: 32, gpus: [simGpu(80), simGpu(70)] })]
  const needs = { gpuMemory: 10 * GiB, ram: 0, cpus: 0 }
  const reasons = refused(schedule(req(policy({}, {}), 1, { needs }), nodes))
  assert.deepEqual(reasons[0], { filter: 'gpu.simulated', message: `node s1: its only 2 GPUs are simulated; ${HINT}` }, 'the cause comes first')
  assert.match(reason(reasons, 'node.gpus'), /cluster sim has no node with ≥ 1 GPU: best was s1 with 0/, 'counted as absent')
  assert.deepEqual(placed(schedule(req(policy({}, {}), 1, { needs, allowSimulatedGpus: true }), nodes)), { cluster: 'sim', nodes: ['s1'], gpus: [[0]] })
  // allowSimulatedGpus: false is the default, and an explicit false is the same
  assert.deepEqual(schedule(req(policy({}, {}), 1, { needs, allowSimulatedGpus: false }), nodes), schedule(req(policy({}, {}), 1, { needs }), nodes))
  // work that needs no GPU goes there either way, with no GPU
  assert.deepEqual(placed(schedule(req(VLLM_CHAT, 1), nodes)), { cluster: 'sim', nodes: ['s1'], gpus: [[]] })
  // the cluster filter counts no simulated GPU either
  const one = refused(schedule(req(policy({ minGpus: 1 }, {}), 1), nodes))
  assert.deepEqual(one.map(r => r.filter), ['gpu.simulated', 'cluster.minGpus'])
  assert.match(reason(one, 'cluster.minGpus'), /no cluster with ≥ 1 GPUs: best was sim with 0/)
  assert.equal(placed(schedule(req(policy({ minGpus: 2, minFreeGpuMemory: 150 * GiB }, {}), 1, { allowSimulatedGpus: true }), nodes)).cluster, 'sim')
  // a refusal for another cause does not mention them
  assert.deepEqual(refused(schedule(req(policy({}, { minCpus: 64 }), 1), nodes)).map(r => r.filter), ['node.minCpus'])
})

test('a node with real and simulated GPUs: only the real ones count, and gpuIndexes index the node\'s own list', () => {
  const mixed = node('m1', 'mix', 'v', { cpus: 8, load15: 0, ramGiB: 32, gpus: [simGpu(80), gpu(20, 10), simGpu(60), gpu(30, 10)] })
  const needs = { gpuMemory: 10 * GiB, ram: 0, cpus: 0 }
  assert.deepEqual(placed(schedule(req(policy({}, {}), 1, { needs }), [mixed])).gpus, [[3]])
  assert.deepEqual(placed(schedule(req(policy({}, { gpus: 2 }), 1, { needs }), [mixed])).gpus, [[1, 3]])
  assert.deepEqual(placed(schedule(req(policy({}, { gpus: 2 }), 1, { needs, allowSimulatedGpus: true }), [mixed])).gpus, [[0, 2]])
  const three = refused(schedule(req(policy({}, { gpus: 3 }), 1, { needs }), [mixed]))
  assert.equal(reason(three, 'gpu.simulated'), `node m1: 2 of its 4 GPUs are simulated and not counted; ${HINT}`)
  assert.match(reason(three, 'node.gpus'), /best was m1 with 2$/)
  // the real node wins over the one whose GPUs are all simulated, whatever their free memory
  const nodes = [node('fake', 'c', 'v', { cpus: 8, load15: 0, ramGiB: 64, gpus: [simGpu(80)] }), node('real', 'c', 'v', { cpus: 8, load15: 0, ramGiB: 8, gpus: [gpu(12, 0)] })]
  assert.deepEqual(placed(schedule(req(policy({}, {}), 2, { needs }), nodes)).nodes, ['real'])
  assert.deepEqual(placed(schedule(req(policy({}, {}), 2, { needs, allowSimulatedGpus: true }), nodes)).nodes, ['fake', 'real'])
  // the simulated node's memory does not make its cluster the best one
  const two = [...nodes, node('other', 'd', 'v', { cpus: 8, load15: 0, ramGiB: 8, gpus: [gpu(40, 0)] })]
  assert.deepEqual(placed(schedule(req(policy({}, {}), 1, { needs }), two)), { cluster: 'd', nodes: ['other'], gpus: [[0]] })
})

test('the simulated-GPU note names at most 5 nodes, those the cluster filter counts, in name order', () => {
  const nodes = [7, 3, 5, 1, 6, 2, 4].map(i => node(`s${i}`, 'sim', i === 7 ? 'other' : 'v', { cpus: 8, load15: 0, ramGiB: 32, gpus: [simGpu(80)] }))
  const all = reason(refused(schedule(req(policy({}, { gpus: 1 }), 1), nodes)), 'gpu.simulated')
  assert.equal(all, `node s1: its only GPU is simulated; node s2: its only GPU is simulated; node s3: its only GPU is simulated; node s4: its only GPU is simulated; node s5: its only GPU is simulated; and 2 more nodes with simulated GPUs; ${HINT}`)
  const vendor = reason(refused(schedule(req(policy({ vendor: 'other' }, { gpus: 1 }), 1), nodes)), 'gpu.simulated')
  assert.equal(vendor, `node s7: its only GPU is simulated; ${HINT}`)
})

test('nodeViewsFrom: capacity records to NodeViews, simulated flag kept per GPU, instances from records and the holding set', () => {
  const record = (peerId: string, gpus: Array<{ simulated: boolean, free: number | null }>, instances: string[] = []): CapacityRecord => CapacityRecordSchema.parse({
    v: 1, peerId, name: `name-${peerId}`, cluster: 'c', vendor: 'acme', addrs: [], epoch: 1, seq: 1, ts: 0, heartbeatMs: 1000,
    readings: {
      cpu: { count: 4, model: 'x', load1: 1, load5: 1, load15: 0.5, utilisation: 10 },
      memory: { totalBytes: 16 * GiB, freeBytes: 8 * GiB, availableBytes: 12 * GiB },
      gpus: gpus.map((g, index) => ({ index, vendor: 'NVIDIA', model: 'A100', memoryTotalBytes: 80 * GiB, memoryFreeBytes: g.free, utilisation: g.free == null ? null : 5, simulated: g.simulated }))
    },
    instances: instances.map((block, i) => ({ block, instance: `${block}-${i}`, owner: 'o', status: 'ready', error: null, provider: 'cpu', component: 'm:1', active: 0, queued: 0, tokensPerSecond: 0, affinity: true, sessionTtl: 600 }))
  })
  const records = [
    record('p1', [{ simulated: false, free: 40 * GiB }, { simulated: true, free: 80 * GiB }]),
    record('p2', [{ simulated: true, free: 80 * GiB }], ['blk']),
    record('p3', [], ['other'])
  ]
  const views = nodeViewsFrom(records, { block: 'blk', holding: new Set(['p3']) })
  assert.deepEqual(views[0], {
    peerId: 'p1', name: 'name-p1', cluster: 'c', vendor: 'acme', cpus: 4, load15: 0.5, ramAvailable: 12 * GiB,
    gpus: [
      { memoryFreeBytes: 40 * GiB, memoryTotalBytes: 80 * GiB, utilisation: 5, simulated: false },
      { memoryFreeBytes: 80 * GiB, memoryTotalBytes: 80 * GiB, utilisation: 5, simulated: true }
    ],
    instances: 0
  })
  assert.deepEqual(views.map(v => [v.peerId, v.instances]), [['p1', 0], ['p2', 1], ['p3', 1]], 'p2 by its record, p3 by the holding set')
  assert.deepEqual(nodeViewsFrom(records, { block: 'blk' }).map(v => v.instances), [0, 1, 0])
  assert.deepEqual(nodeViewsFrom(records, { block: 'other', holding: ['p1'] }).map(v => v.instances), [1, 0, 1])
  assert.deepEqual(nodeViewsFrom(records, { block: 'x', holding: id => id === 'p2' }).map(v => v.instances), [0, 1, 0])
  assert.deepEqual(nodeViewsFrom([], { block: 'x' }), [])
  // straight into the scheduler: p2's only GPU is simulated, p1's real one is used
  const needs = { gpuMemory: 10 * GiB, ram: 0, cpus: 0 }
  const fresh = nodeViewsFrom(records, { block: 'new' })
  assert.deepEqual(placed(schedule(req(policy({}, {}), 3, { needs }), fresh)), { cluster: 'c', nodes: ['p1'], gpus: [[0]] })
  assert.deepEqual(placed(schedule(req(policy({}, {}), 3, { needs, allowSimulatedGpus: true }), fresh)), { cluster: 'c', nodes: ['p1', 'p2'], gpus: [[1], [0]] }, 'p1 first: 120 GiB free with its simulated GPU')
})

// ---- randomized property check ---------------------------------------------------------------

function pick<T> (rng: Rng, xs: readonly T[]): T { return xs[Math.floor(rng.next() * xs.length)] }
function int (rng: Rng, lo: number, hi: number): number { return lo + Math.floor(rng.next() * (hi - lo + 1)) }
function maybe<T> (rng: Rng, p: number, f: () => T): T | undefined { return rng.next() < p ? f() : undefined }

function shuffle<T> (rng: Rng, xs: T[]): T[] {
  const out = [...xs]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1))
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

function randomMesh (rng: Rng, n: number): NodeView[] {
  const clusters = ['c0', 'c1', 'c2', 'c3'].slice(0, int(rng, 1, 4))
  const out: NodeView[] = []
  for (let i = 0; i < n; i++) {
    const gpus: Gpu[] = []
    for (let g = int(rng, 0, 4); g > 0; g--) {
      gpus.push({ memoryTotalBytes: 80 * GiB, memoryFreeBytes: rng.next() < 0.1 ? null : int(rng, 0, 80) * GiB, utilisation: rng.next() < 0.1 ? null : int(rng, 0, 100), ...(rng.next() < 0.25 ? { simulated: true } : {}) })
    }
    out.push({
      peerId: `p${i}`,
      name: `n${i}`,
      cluster: pick(rng, clusters),
      vendor: pick(rng, ['v0', 'v1']),
      cpus: int(rng, 1, 32),
      load15: int(rng, 0, 64) / 4, // quarters add up exactly, in any order
      ramAvailable: int(rng, 0, 64) * GiB,
      gpus,
      instances: rng.next() < 0.2 ? 1 : 0
    })
  }
  return out
}

function randomRequest (rng: Rng, nodes: NodeView[]): PlacementRequest {
  const cluster = {
    minGpus: maybe(rng, 0.4, () => int(rng, 0, 12)),
    vendor: maybe(rng, 0.3, () => pick(rng, ['v0', 'v1', 'v2'])),
    maxCpuLoad15: maybe(rng, 0.4, () => int(rng, 1, 16)),
    minFreeGpuMemory: maybe(rng, 0.4, () => int(rng, 0, 300) * GiB),
    names: maybe(rng, 0.2, () => shuffle(rng, ['c0', 'c1', 'c2', 'c3', 'c9']).slice(0, int(rng, 1, 3)))
  }
  const nodeFilter = {
    gpus: maybe(rng, 0.3, () => int(rng, 0, 3)),
    maxGpuUtilisation: maybe(rng, 0.4, () => int(rng, 0, 100)),
    minFreeGpuMemory: maybe(rng, 0.4, () => int(rng, 0, 60) * GiB),
    minCpus: maybe(rng, 0.4, () => int(rng, 0, 24)),
    minRam: maybe(rng, 0.4, () => int(rng, 0, 48) * GiB),
    maxCpuLoad15: maybe(rng, 0.4, () => int(rng, 1, 16))
  }
  const strip = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
  return {
    policy: { cluster: strip(cluster), node: strip(nodeFilter) },
    needs: { gpuMemory: rng.next() < 0.5 ? 0 : int(rng, 1, 40) * GiB, ram: int(rng, 0, 16) * GiB, cpus: int(rng, 0, 8) },
    count: int(rng, 0, 5),
    exclude: maybe(rng, 0.3, () => nodes.filter(() => rng.next() < 0.2).map(x => x.peerId)),
    preferCluster: maybe(rng, 0.3, () => pick(rng, ['c0', 'c1', 'c2', 'c3'])),
    preferNode: maybe(rng, 0.3, () => pick(rng, nodes)?.peerId),
    allowSimulatedGpus: maybe(rng, 0.7, () => rng.next() < 0.5)
  }
}

/** The semantics re-stated the slow, obvious way, independent of the scheduler's code. */
const brute = {
  counted (r: PlacementRequest, n: NodeView): boolean {
    const f = r.policy.cluster
    return (f.names == null || f.names.includes(n.cluster)) && (f.vendor == null || n.vendor === f.vendor)
  },
  /** the GPUs placement may use: simulated ones only when the request allows them */
  gpus (r: PlacementRequest, n: NodeView): Gpu[] {
    return n.gpus.filter(g => r.allowSimulatedGpus === true || g.simulated !== true)
  },
  clusterPasses (r: PlacementRequest, nodes: NodeView[], name: string): boolean {
    const f = r.policy.cluster
    const members = nodes.filter(n => n.cluster === name && brute.counted(r, n))
    if (members.length === 0) return false
    const gpus = members.reduce((s, n) => s + brute.gpus(r, n).length, 0)
    const free = members.reduce((s, n) => s + brute.gpus(r, n).reduce((t, g) => t + (g.memoryFreeBytes ?? 0), 0), 0)
    const load = members.reduce((s, n) => s + n.load15, 0) / members.length
    return (f.minGpus == null || gpus >= f.minGpus) &&
      (f.minFreeGpuMemory == null || free >= f.minFreeGpuMemory) &&
      (f.maxCpuLoad15 == null || load < f.maxCpuLoad15)
  },
  gpusNeeded (r: PlacementRequest): number {
    const f = r.policy.node
    return f.gpus ?? (f.maxGpuUtilisation != null || f.minFreeGpuMemory != null || r.needs.gpuMemory > 0 ? 1 : 0)
  },
  gpuOk (r: PlacementRequest, g: Gpu): boolean {
    const f = r.policy.node
    if (g.simulated === true && r.allowSimulatedGpus !== true) return false
    const utilOk = f.maxGpuUtilisation == null || (g.utilisation != null && g.utilisation < f.maxGpuUtilisation)
    return utilOk && (g.memoryFreeBytes ?? 0) >= Math.max(f.minFreeGpuMemory ?? 0, r.needs.gpuMemory)
  },
  nodeUsable (r: PlacementRequest, n: NodeView): boolean {
    const f = r.policy.node
    return brute.counted(r, n) &&
      !(r.exclude ?? []).includes(n.peerId) &&
      n.instances === 0 &&
      n.cpus >= (f.minCpus ?? 0) && n.cpus >= r.needs.cpus &&
      n.ramAvailable >= (f.minRam ?? 0) + r.needs.ram &&
      (f.maxCpuLoad15 == null || n.load15 < f.maxCpuLoad15) &&
      n.gpus.filter(g => brute.gpuOk(r, g)).length >= brute.gpusNeeded(r)
  },
  /** instances each passing cluster can host */
  capacity (r: PlacementRequest, nodes: NodeView[]): Map<string, number> {
    const out = new Map<string, number>()
    for (const name of new Set(nodes.map(n => n.cluster))) {
      if (brute.clusterPasses(r, nodes, name)) out.set(name, nodes.filter(n => n.cluster === name && brute.nodeUsable(r, n)).length)
    }
    return out
  }
}

test('property: 200 random meshes and policies; every placement passes every filter, none twice, refusals only when nothing fits', () => {
  const rng = new Rng(20261123)
  let placements = 0
  let refusals = 0
  for (let round = 0; round < 200; round++) {
    const nodes = randomMesh(rng, int(rng, 0, 24))
    const r = randomRequest(rng, nodes)
    const result = schedule(r, nodes)
    const where = `round ${round}: ${JSON.stringify(r)} → ${JSON.stringify(result)}`
    const capacity = brute.capacity(r, nodes)
    const most = Math.max(0, ...capacity.values())
    assert.deepEqual(schedule(r, shuffle(rng, nodes)), result, `order-independent, ${where}`)
    if (!result.ok) {
      refusals++
      assert.ok(r.count > 0, `count 0 is never refused, ${where}`)
      assert.equal(most, 0, `refused although cluster(s) ${JSON.stringify([...capacity])} can host, ${where}`)
      assert.ok(result.reasons.length > 0 && result.reasons.every(x => x.message.length > 0), where)
      if (r.allowSimulatedGpus === true) assert.ok(result.reasons.every(x => x.filter !== 'gpu.simulated'), `no simulated-GPU note when they are allowed, ${where}`)
      continue
    }
    assert.equal(result.placements.length, Math.min(r.count, most), `as many as the best cluster can host, ${where}`)
    if (result.placements.length > 0) {
      assert.equal(Math.min(capacity.get(result.cluster) ?? 0, r.count), Math.min(most, r.count), `the chosen cluster hosts the most, ${where}`)
      if (r.preferCluster != null && capacity.get(r.preferCluster) != null && Math.min(capacity.get(r.preferCluster) as number, r.count) === Math.min(most, r.count)) {
        assert.equal(result.cluster, r.preferCluster, `preferCluster honoured, ${where}`)
      }
    } else {
      assert.ok(result.cluster === '' || capacity.has(result.cluster), where)
    }
    const seen = new Set<string>()
    for (const p of result.placements) {
      placements++
      const n = nodes.find(x => x.peerId === p.peerId) as NodeView
      assert.ok(n != null, where)
      assert.ok(!seen.has(p.peerId), `no node twice, ${where}`)
      seen.add(p.peerId)
      assert.equal(n.cluster, result.cluster, where)
      assert.ok(brute.nodeUsable(r, n), `${p.peerId} fails a filter, ${where}`)
      assert.equal(p.gpuIndexes.length, brute.gpusNeeded(r), where)
      assert.equal(new Set(p.gpuIndexes).size, p.gpuIndexes.length, `distinct GPUs, ${where}`)
      for (const i of p.gpuIndexes) assert.ok(n.gpus[i] != null && brute.gpuOk(r, n.gpus[i]), `GPU ${i} of ${p.peerId} does not qualify, ${where}`)
    }
    if (r.preferNode != null && result.placements.length > 0 && result.placements.every(p => p.peerId !== r.preferNode)) {
      const pn = nodes.find(x => x.peerId === r.preferNode) as NodeView
      assert.ok(pn.cluster !== result.cluster || !brute.nodeUsable(r, pn), `preferNode qualified but was not used, ${where}`)
    }
  }
  // the generator must exercise both outcomes
  assert.ok(placements > 50, `only ${placements} placements`)
  assert.ok(refusals > 20, `only ${refusals} refusals`)
})
