/**
 * What a placement asks, and the filters that test it: the node limits one
 * instance needs, the clusters grouped and totalled, the GPU tests, and the
 * cluster and node checks. Each check both decides (pass) and describes
 * itself (wanted, score, show) so that a refusal can be explained
 * (explain.ts) from the same checks that made it.
 */
import type { NodeView, PlacementRequest, Policy } from './policy.ts'
import { gib, num, plural } from './text.ts'

export type ClusterFilter = Policy['cluster']
type Gpu = NodeView['gpus'][number]

/** What one instance asks of a node: the node filter and the instance's needs together. */
export interface NodeLimits {
  /** GPUs per instance, each qualifying */
  gpus: number
  /** a qualifying GPU is below this utilisation (%); null: no limit, unknown utilisation allowed */
  maxGpuUtilisation: number | null
  /** a qualifying GPU has at least this many bytes free */
  gpuMemory: number
  cpus: number
  /** bytes of available RAM */
  ram: number
  maxCpuLoad15: number | null
  exclude: ReadonlySet<string>
  /** only nodes with these names; null: any */
  names: ReadonlySet<string> | null
}

/** A cluster's nodes (its vendor's only, when the policy names one) and their totals. */
export interface ClusterView {
  name: string
  nodes: NodeView[]
  gpus: number
  /** bytes; unknown free memory counts as 0 */
  freeGpuMemory: number
  /** mean 15-minute load average of its nodes */
  load15: number
  /** nodes that could take an instance now (set once the cluster passes) */
  usable: number
}

/** One filter, usable both to decide and to explain a refusal. */
export interface Check<T> {
  filter: string
  /** what passing looks like, in words: "≥ 3 GPUs" */
  wanted: string
  pass: (t: T) => boolean
  /** how close an item comes (higher is closer), to name the best candidate */
  score: (t: T) => number
  /** the item's value in words */
  show: (t: T) => string
  /** nested checks share a group; a refusal names only the outermost one nobody passes */
  group?: string
  /** the message when no item passes, when the default "no X with …: best was …" reads badly */
  none?: (scope: string, total: number) => string
  /** the phrase for "k of m items fail this", when the default reads badly */
  some?: (k: number, m: number) => string
}

/** Resolves the node filter and the instance's needs into one set of limits. */
export function nodeLimits (req: PlacementRequest): NodeLimits {
  const f = req.policy.node ?? {}
  const needs = req.needs
  const gpuMemory = Math.max(Number(f.minFreeGpuMemory ?? 0), needs.gpuMemory ?? 0)
  const anyGpuFilter = f.maxGpuUtilisation != null || f.minFreeGpuMemory != null || gpuMemory > 0
  return {
    gpus: f.gpus ?? (anyGpuFilter ? 1 : 0),
    maxGpuUtilisation: f.maxGpuUtilisation ?? null,
    gpuMemory,
    cpus: Math.max(f.minCpus ?? 0, needs.cpus ?? 0),
    ram: Number(f.minRam ?? 0) + (needs.ram ?? 0),
    maxCpuLoad15: f.maxCpuLoad15 ?? null,
    exclude: new Set(req.exclude ?? []),
    names: f.names != null ? new Set(f.names) : null
  }
}

/** Groups the counted nodes (named clusters only, the vendor's nodes only) by cluster, totalling as it goes. */
export function groupClusters (nodes: NodeView[], f: ClusterFilter): Map<string, ClusterView> {
  const names = f.names != null ? new Set(f.names) : null
  const groups = new Map<string, ClusterView & { loadMilli: number }>()
  for (const n of nodes) {
    if (names != null && !names.has(n.cluster)) continue
    if (f.vendor != null && n.vendor !== f.vendor) continue
    let c = groups.get(n.cluster)
    if (c == null) {
      c = { name: n.cluster, nodes: [], gpus: 0, freeGpuMemory: 0, load15: 0, usable: 0, loadMilli: 0 }
      groups.set(n.cluster, c)
    }
    c.nodes.push(n)
    c.gpus += n.gpus.length
    for (const g of n.gpus) c.freeGpuMemory += g.memoryFreeBytes ?? 0
    // integer milli-load: the sum, and so the mean, do not depend on the nodes' order
    c.loadMilli += Math.round(n.load15 * 1000)
  }
  for (const c of groups.values()) c.load15 = c.loadMilli / c.nodes.length / 1000
  return groups
}

/** Whether a GPU is under the utilisation limit (unknown utilisation passes only when there is none). */
export function gpuUnderUtilisation (g: Gpu, lim: NodeLimits): boolean {
  return lim.maxGpuUtilisation == null || (g.utilisation != null && g.utilisation < lim.maxGpuUtilisation)
}

/** Whether a GPU can hold one instance's share: under the utilisation limit with enough free memory. */
export function gpuQualifies (g: Gpu, lim: NodeLimits): boolean {
  return gpuUnderUtilisation(g, lim) && (g.memoryFreeBytes ?? 0) >= lim.gpuMemory
}

/** The cluster filter as checks on a cluster's totals. */
export function clusterChecksFor (f: ClusterFilter): Array<Check<ClusterView>> {
  const from = f.vendor != null ? ` from ${f.vendor}` : ''
  const checks: Array<Check<ClusterView>> = []
  if (f.minGpus != null) {
    const min = f.minGpus
    checks.push({ filter: 'cluster.minGpus', wanted: `≥ ${min} GPUs${from}`, pass: c => c.gpus >= min, score: c => c.gpus, show: c => String(c.gpus) })
  }
  if (f.minFreeGpuMemory != null) {
    const min = Number(f.minFreeGpuMemory)
    checks.push({ filter: 'cluster.minFreeGpuMemory', wanted: `≥ ${gib(min)} free GPU memory${from}`, pass: c => c.freeGpuMemory >= min, score: c => c.freeGpuMemory, show: c => gib(c.freeGpuMemory) })
  }
  if (f.maxCpuLoad15 != null) {
    const max = f.maxCpuLoad15
    checks.push({ filter: 'cluster.maxCpuLoad15', wanted: `15-minute CPU load < ${num(max)}`, pass: c => c.load15 < max, score: c => -c.load15, show: c => num(c.load15) })
  }
  return checks
}

/** The node limits as checks on one node, in the order a refusal names them. */
export function nodeChecksFor (lim: NodeLimits): Array<Check<NodeView>> {
  const checks: Array<Check<NodeView>> = []
  if (lim.exclude.size > 0) {
    checks.push({
      filter: 'exclude', wanted: 'not excluded', pass: n => !lim.exclude.has(n.peerId), score: () => 0, show: () => 'excluded',
      none: (where, total) => `every node of cluster ${where} is excluded by the request (${total} ${plural(total, 'node')})`,
      some: (k, m) => `${k} of ${m} nodes ${k === 1 ? 'is' : 'are'} excluded by the request`
    })
  }
  if (lim.names != null) {
    const names = lim.names
    checks.push({
      filter: 'node.names', wanted: `one of ${[...names].join(', ')}`, pass: n => names.has(n.name), score: () => 0, show: n => n.name,
      none: (where, total) => `no node of cluster ${where} is named ${[...names].join(' or ')} (${total} ${plural(total, 'node')})`,
      some: (k, m) => `${k} of ${m} nodes ${k === 1 ? 'is' : 'are'} not named ${[...names].join(' or ')}`
    })
  }
  checks.push({
    filter: 'node.spread', wanted: 'no instance of this block yet', pass: n => n.instances <= 0, score: n => -n.instances, show: n => `${n.instances} ${plural(n.instances, 'instance')}`,
    none: (where, total) => `every node of cluster ${where} already runs an instance of this block (${total} ${plural(total, 'node')}; at most one per node)`,
    some: (k, m) => `${k} of ${m} nodes already ${k === 1 ? 'runs' : 'run'} an instance of this block`
  })
  if (lim.cpus > 0) {
    checks.push({ filter: 'node.minCpus', wanted: `≥ ${lim.cpus} CPUs`, pass: n => n.cpus >= lim.cpus, score: n => n.cpus, show: n => String(n.cpus) })
  }
  if (lim.ram > 0) {
    checks.push({ filter: 'node.minRam', wanted: `≥ ${gib(lim.ram)} available RAM`, pass: n => n.ramAvailable >= lim.ram, score: n => n.ramAvailable, show: n => gib(n.ramAvailable) })
  }
  if (lim.maxCpuLoad15 != null) {
    const max = lim.maxCpuLoad15
    checks.push({ filter: 'node.maxCpuLoad15', wanted: `15-minute CPU load < ${num(max)}`, pass: n => n.load15 < max, score: n => -n.load15, show: n => num(n.load15) })
  }
  if (lim.gpus > 0) checks.push(...gpuChecks(lim))
  return checks
}

/** GPU checks, nested: enough GPUs, then enough under the utilisation limit, then enough of those with the memory. */
function gpuChecks (lim: NodeLimits): Array<Check<NodeView>> {
  const g = lim.gpus
  const some = g === 1 ? 'a GPU' : `${g} GPUs`
  const checks: Array<Check<NodeView>> = [{
    filter: 'node.gpus', group: 'gpu', wanted: `≥ ${g} ${plural(g, 'GPU')}`, pass: n => n.gpus.length >= g, score: n => n.gpus.length, show: n => String(n.gpus.length)
  }]
  const under = lim.maxGpuUtilisation != null ? ` under ${num(lim.maxGpuUtilisation)}% utilisation` : ''
  if (lim.maxGpuUtilisation != null) {
    checks.push({
      filter: 'node.maxGpuUtilisation',
      group: 'gpu',
      wanted: `${some}${under}`,
      pass: n => countGpus(n, x => gpuUnderUtilisation(x, lim)) >= g,
      score: n => -(leastBusy(n.gpus, g)[g - 1] ?? 1000),
      show: n => {
        const utils = leastBusy(n.gpus, g).map(u => u === 1000 ? 'unknown' : `${num(u)}%`)
        return utils.length === 0 ? 'no GPU' : `${utils.length === 1 ? 'a GPU' : 'GPUs'} at ${utils.join(', ')}`
      }
    })
  }
  if (lim.gpuMemory > 0) {
    checks.push({
      filter: 'node.minFreeGpuMemory',
      group: 'gpu',
      wanted: `${some}${under}${under !== '' ? ' and' : ' with'} ≥ ${gib(lim.gpuMemory)} free${g > 1 ? ' each' : ''}`,
      pass: n => countGpus(n, x => gpuQualifies(x, lim)) >= g,
      score: n => mostFree(n.gpus, g, lim)[g - 1] ?? -1,
      show: n => {
        const free = mostFree(n.gpus, g, lim)
        return free.length === 0 ? 'no such GPU' : `${free.map(gib).join(', ')} free`
      }
    })
  }
  return checks
}

function countGpus (n: NodeView, ok: (g: Gpu) => boolean): number {
  let k = 0
  for (const g of n.gpus) if (ok(g)) k++
  return k
}

/** The `k` lowest utilisations (unknown as 1000), lowest first. */
function leastBusy (gpus: Gpu[], k: number): number[] {
  return gpus.map(g => g.utilisation ?? 1000).sort((a, b) => a - b).slice(0, k)
}

/** The `k` largest free memories among the GPUs under the utilisation limit, largest first. */
function mostFree (gpus: Gpu[], k: number, lim: NodeLimits): number[] {
  return gpus.filter(g => gpuUnderUtilisation(g, lim)).map(g => g.memoryFreeBytes ?? 0).sort((a, b) => b - a).slice(0, k)
}

/** How many of the nodes pass every check. */
export function countUsable (nodes: NodeView[], checks: Array<Check<NodeView>>): number {
  let k = 0
  for (const n of nodes) if (checks.every(c => c.pass(n))) k++
  return k
}
