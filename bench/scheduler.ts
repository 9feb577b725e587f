/**
 * Scheduler benchmark: how long one placement decision (agent/scheduler/schedule.ts) takes over
 * simulated meshes of 1,000 and 10,000 nodes, for the seed's example policies and one that no
 * cluster can meet.
 */
import { cpus } from 'node:os'
import { schedule } from '../agent/scheduler/schedule.ts'
import type { InstanceNeeds, NodeView, Policy, PlacementResult } from '../agent/scheduler/policy.ts'
import { Rng } from '../agent/model/random.ts'
import { median, percentile } from './stats.ts'

const GiB = 2 ** 30
const VENDORS = ['dma-bangalore', 'dma-pune', 'aws-mumbai', 'campus-lab']
const GPU_MODELS = [{ memoryGiB: 80, weight: 3 }, { memoryGiB: 24, weight: 3 }, { memoryGiB: 48, weight: 2 }, { memoryGiB: 16, weight: 2 }]
const NODES_PER_CLUSTER = 100

interface Case { name: string, policy: Policy, needs: InstanceNeeds, count: number }

const CASES: Case[] = [
  {
    name: 'mistral-chat-88 (3 instances)',
    policy: { cluster: { minGpus: 3, vendor: 'dma-bangalore', maxCpuLoad15: 10, minFreeGpuMemory: 48e9 }, node: { maxGpuUtilisation: 90, minFreeGpuMemory: 16e9 } },
    needs: { gpuMemory: 14e9, ram: 8 * GiB, cpus: 2 },
    count: 3
  },
  {
    name: 'detector-yolo-88 (5 instances)',
    policy: { cluster: { minGpus: 5, vendor: 'dma-bangalore', maxCpuLoad15: 10, minFreeGpuMemory: 9e9 }, node: { maxGpuUtilisation: 80, minFreeGpuMemory: 5e9 } },
    needs: { gpuMemory: 2e9, ram: GiB, cpus: 1 },
    count: 5
  },
  {
    name: 'vllm-chat, CPU only (2 instances)',
    policy: { cluster: {}, node: { minCpus: 2, minRam: 2 * GiB } },
    needs: { gpuMemory: 0, ram: GiB, cpus: 1 },
    count: 2
  },
  {
    name: 'impossible (1,000,000 GPUs)',
    policy: { cluster: { minGpus: 1_000_000 }, node: {} },
    needs: { gpuMemory: 0, ram: 0, cpus: 0 },
    count: 1
  }
]

/**
 * A deterministic simulated mesh: ~100 nodes per cluster, each cluster
 * mostly one vendor (one in eight mixed), 0-8 GPUs of four sizes per node,
 * a per-cluster load level with per-node noise, a few unknown readings and
 * a few nodes already running the block.
 */
export function simulatedMesh (size: number, seed: number): NodeView[] {
  const rng = new Rng(seed)
  const clusters = Math.max(1, Math.round(size / NODES_PER_CLUSTER))
  const levels = Array.from({ length: clusters }, () => ({ vendor: pickOne(rng, VENDORS), mixed: rng.next() < 0.125, load: rng.next() * 12 }))
  const totalWeight = GPU_MODELS.reduce((s, m) => s + m.weight, 0)
  const nodes: NodeView[] = []
  for (let i = 0; i < size; i++) {
    const c = i % clusters
    const level = levels[c]
    const gpus: NodeView['gpus'] = []
    const gpuCount = rng.next() < 0.3 ? 0 : 1 + Math.floor(rng.next() * 8)
    let w = rng.next() * totalWeight
    const model = GPU_MODELS.find(m => (w -= m.weight) < 0) ?? GPU_MODELS[0]
    for (let g = 0; g < gpuCount; g++) {
      const total = model.memoryGiB * GiB
      gpus.push({
        memoryTotalBytes: total,
        memoryFreeBytes: rng.next() < 0.05 ? null : Math.round(total * rng.next()),
        utilisation: rng.next() < 0.05 ? null : Math.round(rng.next() * 100)
      })
    }
    nodes.push({
      peerId: `12D3KooW${(i * 2654435761 >>> 0).toString(36).padStart(7, '0')}${i}`,
      name: `node-${i}`,
      cluster: `cluster-${String(c).padStart(3, '0')}`,
      vendor: level.mixed ? pickOne(rng, VENDORS) : level.vendor,
      cpus: pickOne(rng, [4, 8, 16, 32, 64]),
      load15: Math.round(Math.max(0, level.load + (rng.next() - 0.5) * 4) * 100) / 100,
      ramAvailable: Math.round(rng.next() * 256 * GiB),
      gpus,
      instances: rng.next() < 0.02 ? 1 : 0
    })
  }
  return nodes
}

function pickOne<T> (rng: Rng, xs: readonly T[]): T {
  return xs[Math.floor(rng.next() * xs.length)]
}

function describe (r: PlacementResult, count: number): string {
  if (!r.ok) return `refused: ${r.reasons.map(x => x.message).join('; ')}`
  return `${r.cluster}: ${r.placements.length} of ${count} placed`
}

/** Times `schedule` on 1,000- and 10,000-node meshes; returns a Markdown body (method sentence and table). */
export async function runSchedulerBench (opts: { quick: boolean, log: (s: string) => void }): Promise<string> {
  const rows: string[] = []
  const warmup = opts.quick ? 20 : 100
  for (const size of [1_000, 10_000]) {
    const nodes = simulatedMesh(size, 88)
    const decisions = (opts.quick ? 50 : 500) * (size < 10_000 ? 4 : 1)
    for (const c of CASES) {
      const request = { policy: c.policy, needs: c.needs, count: c.count }
      let result = schedule(request, nodes)
      for (let i = 0; i < warmup; i++) result = schedule(request, nodes)
      const times: number[] = []
      for (let i = 0; i < decisions; i++) {
        const t0 = performance.now()
        result = schedule(request, nodes)
        times.push(performance.now() - t0)
      }
      const med = median(times)
      const p99 = percentile(times, 99)
      opts.log(`scheduler: ${size} nodes, ${c.name}: median ${med.toFixed(3)} ms, p99 ${p99.toFixed(3)} ms`)
      rows.push(`| ${size.toLocaleString('en-US')} | ${c.name} | ${decisions} | ${med.toFixed(2)} | ${p99.toFixed(2)} | ${describe(result, c.count).replaceAll('|', '\\|')} |`)
      await new Promise(resolve => setImmediate(resolve))
    }
  }
  const cpu = cpus()
  return [
    `Each row times one call of \`schedule()\` (agent/scheduler/schedule.ts) with \`performance.now()\`, the same request decided repeatedly after ${warmup} warm-up calls, ` +
      `over a simulated mesh built from a fixed seed (~${NODES_PER_CLUSTER} nodes per cluster, 0–8 GPUs per node, four vendors, per-cluster load levels), ` +
      `in one Node ${process.version} process on ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}. The goal is ≤ 20 ms for one decision over 10,000 nodes.`,
    '',
    '| nodes | policy | decisions | median ms | p99 ms | result |',
    '| ---: | --- | ---: | ---: | ---: | --- |',
    ...rows
  ].join('\n')
}
