/**
 * The placement scheduler (seed 000): a cluster filter picks the cluster, a
 * node filter picks nodes inside it. `schedule` is pure and deterministic:
 * the same request and the same set of nodes (in any order) give the same
 * result. One decision reads every node once to group and total the
 * clusters, once more to test the nodes of the clusters that pass, and sorts
 * only the usable nodes of the chosen cluster. GPUs marked simulated count
 * only when the request allows them (allowSimulatedGpus); otherwise they are
 * left out as if absent, and a refusal names the nodes that had them.
 */
import type { NodeView, Placement, PlacementRequest, PlacementResult, Policy } from './policy.ts'

const GiB = 2 ** 30

type Reason = Extract<PlacementResult, { ok: false }>['reasons'][number]
type ClusterFilter = Policy['cluster']
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

/**
 * Places `req.count` instances of a block, at most one per node, in one
 * cluster. Refuses (ok: false, with a reason per failing filter) when no
 * cluster passes the cluster filter or the passing clusters have no usable
 * node; places fewer than asked when no cluster can host them all.
 */
export function schedule (req: PlacementRequest, allNodes: NodeView[]): PlacementResult {
  const clusterFilter = req.policy.cluster ?? {}
  const limits = nodeLimits(req)
  const hidden = req.allowSimulatedGpus === true ? new Map<NodeView, HiddenGpus>() : hideSimulatedGpus(allNodes)
  const nodes = hidden.size === 0 ? allNodes : allNodes.map(n => hidden.get(n)?.view ?? n)
  const result = decide(req, nodes, clusterFilter, limits)
  if (hidden.size === 0) return result
  if (result.ok) {
    // indexes into the node's own GPU list, simulated ones included
    const slots = new Map([...hidden.values()].map(h => [h.view.peerId, h.slots]))
    return { ...result, placements: result.placements.map(p => ({ ...p, gpuIndexes: p.gpuIndexes.map(i => slots.get(p.peerId)?.[i] ?? i) })) }
  }
  const usesGpus = limits.gpus > 0 || clusterFilter.minGpus != null || clusterFilter.minFreeGpuMemory != null
  const counted = groupClusters(nodes, clusterFilter)
  const note = usesGpus ? simulatedReason([...counted.values()].flatMap(c => c.nodes), hidden) : null
  return note == null ? result : { ok: false, reasons: [note, ...result.reasons] }
}

function decide (req: PlacementRequest, nodes: NodeView[], clusterFilter: ClusterFilter, limits: NodeLimits): PlacementResult {
  const groups = groupClusters(nodes, clusterFilter)
  const clusterChecks = clusterChecksFor(clusterFilter)
  const nodeChecks = nodeChecksFor(limits)
  const passing: ClusterView[] = []
  for (const c of groups.values()) {
    if (!clusterChecks.every(check => check.pass(c))) continue
    c.usable = countUsable(c.nodes, nodeChecks)
    passing.push(c)
  }
  const count = req.count > 0 ? Math.floor(req.count) : 0
  if (count === 0) return { ok: true, cluster: bestCluster(passing, 0, req.preferCluster)?.name ?? '', placements: [] }
  if (nodes.length === 0) return { ok: false, reasons: [{ filter: 'mesh', message: 'no live nodes' }] }
  if (passing.length === 0) return { ok: false, reasons: clusterReasons(nodes, [...groups.values()], clusterFilter, clusterChecks) }
  const chosen = bestCluster(passing.filter(c => c.usable > 0), count, req.preferCluster)
  if (chosen == null) {
    const best = bestCluster(passing, 0, req.preferCluster) as ClusterView
    return { ok: false, reasons: explain(best.nodes, nodeChecks, nodeScope(best.name)) }
  }
  return { ok: true, cluster: chosen.name, placements: place(chosen.nodes, nodeChecks, limits, count, req.preferNode) }
}

/** A node seen without its simulated GPUs: `slots[i]` is the index in the node's own list of `view.gpus[i]`. */
interface HiddenGpus { view: NodeView, slots: number[], simulated: number }

/** For each node with GPUs marked simulated, a view of it without them (keyed by the original). */
function hideSimulatedGpus (nodes: NodeView[]): Map<NodeView, HiddenGpus> {
  const hidden = new Map<NodeView, HiddenGpus>()
  for (const n of nodes) {
    if (!n.gpus.some(g => g.simulated === true)) continue
    const slots: number[] = []
    n.gpus.forEach((g, i) => { if (g.simulated !== true) slots.push(i) })
    hidden.set(n, { view: { ...n, gpus: slots.map(i => n.gpus[i]) }, slots, simulated: n.gpus.length - slots.length })
  }
  return hidden
}

/** The refusal's note on simulated GPUs left out, for the counted nodes that had some (by name, at most 5 named). */
function simulatedReason (counted: NodeView[], hidden: Map<NodeView, HiddenGpus>): Reason | null {
  const byView = new Map([...hidden.values()].map(h => [h.view, h]))
  const parts: Array<{ label: string, text: string }> = []
  for (const n of counted) {
    const h = byView.get(n)
    if (h == null) continue
    const label = n.name !== '' ? n.name : n.peerId
    const total = h.simulated + h.slots.length
    parts.push({
      label,
      text: h.slots.length === 0
        ? `node ${label}: its only ${total === 1 ? 'GPU is' : `${total} GPUs are`} simulated`
        : `node ${label}: ${h.simulated} of its ${total} GPUs ${h.simulated === 1 ? 'is' : 'are'} simulated and not counted`
    })
  }
  if (parts.length === 0) return null
  parts.sort((a, b) => compareText(a.label, b.label) || compareText(a.text, b.text))
  const shown = parts.slice(0, 5).map(p => p.text)
  if (parts.length > 5) shown.push(`and ${parts.length - 5} more ${plural(parts.length - 5, 'node')} with simulated GPUs`)
  return { filter: 'gpu.simulated', message: `${shown.join('; ')}; start the agent with --allow-simulated-gpus to place on them` }
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

/** One filter, usable both to decide and to explain a refusal. */
interface Check<T> {
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

interface Scope<T> {
  /** "no cluster with" / "cluster lab-a has no node with" */
  none: string
  /** "no cluster passes every cluster filter" */
  all: string
  /** "clusters" / "nodes" */
  noun: string
  /** the cluster for per-node messages */
  where: string
  label: (t: T) => string
  /** a unique key, to break ties between equally good candidates */
  key: (t: T) => string
}

function clusterChecksFor (f: ClusterFilter): Array<Check<ClusterView>> {
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

function nodeChecksFor (lim: NodeLimits): Array<Check<NodeView>> {
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

function countUsable (nodes: NodeView[], checks: Array<Check<NodeView>>): number {
  let k = 0
  for (const n of nodes) if (checks.every(c => c.pass(n))) k++
  return k
}

/**
 * The cluster to place in: the one hosting the most of `count` instances;
 * among those the preferred cluster, else the most free GPU memory, the most
 * usable nodes, the name.
 */
function bestCluster (clusters: ClusterView[], count: number, prefer: string | undefined): ClusterView | undefined {
  let best: ClusterView | undefined
  let bestHosts = -1
  for (const c of clusters) {
    const hosts = Math.min(c.usable, count)
    if (best == null || hosts > bestHosts || (hosts === bestHosts && clusterBefore(c, best, prefer))) {
      best = c
      bestHosts = hosts
    }
  }
  return best
}

function clusterBefore (a: ClusterView, b: ClusterView, prefer: string | undefined): boolean {
  if ((a.name === prefer) !== (b.name === prefer)) return a.name === prefer
  if (a.freeGpuMemory !== b.freeGpuMemory) return a.freeGpuMemory > b.freeGpuMemory
  if (a.usable !== b.usable) return a.usable > b.usable
  return a.name < b.name
}

interface Candidate { node: NodeView, free: number }

/** Picks up to `count` usable nodes, one instance each, and each instance's GPUs. */
function place (nodes: NodeView[], checks: Array<Check<NodeView>>, lim: NodeLimits, count: number, preferNode: string | undefined): Placement[] {
  const candidates: Candidate[] = []
  for (const node of nodes) {
    if (!checks.every(c => c.pass(node))) continue
    let free = 0
    for (const g of node.gpus) if (gpuQualifies(g, lim)) free += g.memoryFreeBytes ?? 0
    candidates.push({ node, free })
  }
  candidates.sort((a, b) => compareCandidates(a, b, preferNode))
  const placements: Placement[] = []
  const used = new Set<string>()
  for (const { node } of candidates) {
    if (placements.length >= count) break
    if (used.has(node.peerId)) continue
    used.add(node.peerId)
    placements.push({ peerId: node.peerId, name: node.name, gpuIndexes: pickGpus(node, lim) })
  }
  return placements
}

function compareCandidates (a: Candidate, b: Candidate, preferNode: string | undefined): number {
  const pa = a.node.peerId === preferNode
  const pb = b.node.peerId === preferNode
  if (pa !== pb) return pa ? -1 : 1
  return b.free - a.free ||
    b.node.ramAvailable - a.node.ramAvailable ||
    a.node.load15 - b.node.load15 ||
    compareText(a.node.peerId, b.node.peerId) ||
    compareText(a.node.name, b.node.name)
}

/** The instance's GPUs: the qualifying ones with the most free memory (lowest index on ties), in index order. */
export function pickGpus (node: NodeView, lim: NodeLimits): number[] {
  if (lim.gpus === 0) return []
  const qualifying: number[] = []
  node.gpus.forEach((g, i) => { if (gpuQualifies(g, lim)) qualifying.push(i) })
  const free = (i: number): number => node.gpus[i].memoryFreeBytes ?? 0
  return qualifying.sort((a, b) => free(b) - free(a) || a - b).slice(0, lim.gpus).sort((a, b) => a - b)
}

/** Why no cluster passes: the vendor or names filter when nothing is left, else each cluster filter. */
function clusterReasons (nodes: NodeView[], clusters: ClusterView[], f: ClusterFilter, checks: Array<Check<ClusterView>>): Reason[] {
  const names = f.names != null ? ` in ${plural(f.names.length, 'cluster')} ${f.names.join(', ')}` : ''
  if (clusters.length === 0) {
    const inNames = f.names == null || nodes.some(n => (f.names as string[]).includes(n.cluster))
    if (!inNames) return [{ filter: 'cluster.names', message: `no live nodes${names}` }]
    return [{ filter: 'cluster.vendor', message: `no live nodes from vendor ${f.vendor ?? '?'}${names}` }]
  }
  return explain(clusters, checks, {
    none: 'no cluster with', all: 'no cluster passes every cluster filter', noun: 'clusters', where: '', label: c => c.name, key: c => c.name
  })
}

function nodeScope (cluster: string): Scope<NodeView> {
  return {
    none: `cluster ${cluster} has no node with`,
    all: `cluster ${cluster} has no node that passes every node filter`,
    noun: 'nodes',
    where: cluster,
    label: n => n.name !== '' ? n.name : n.peerId,
    key: n => n.peerId
  }
}

interface Tally<T> { passes: number, best: T | undefined, failing: number, bestFailing: T | undefined }

/**
 * Explains why none of `items` passes every check. A check that no item
 * passes is named with the best candidate and its value; when each check
 * alone is passed by some item, every check that ruled items out is named.
 */
function explain<T> (items: T[], checks: Array<Check<T>>, scope: Scope<T>): Reason[] {
  const tallies: Array<Tally<T>> = checks.map(() => ({ passes: 0, best: undefined, failing: 0, bestFailing: undefined }))
  const better = (c: Check<T>, a: T, b: T | undefined): boolean =>
    b === undefined || c.score(a) > c.score(b) || (c.score(a) === c.score(b) && scope.key(a) < scope.key(b))
  for (const item of items) {
    const failedGroups = new Set<string>()
    checks.forEach((c, i) => {
      const t = tallies[i]
      if (better(c, item, t.best)) t.best = item
      if (c.pass(item)) { t.passes++; return }
      if (c.group != null) {
        if (failedGroups.has(c.group)) return
        failedGroups.add(c.group)
      }
      t.failing++
      if (better(c, item, t.bestFailing)) t.bestFailing = item
    })
  }
  const reasons: Reason[] = []
  const emptyGroups = new Set<string>()
  checks.forEach((c, i) => {
    const t = tallies[i]
    if (t.passes > 0 || t.best === undefined) return
    if (c.group != null) {
      if (emptyGroups.has(c.group)) return
      emptyGroups.add(c.group)
    }
    const message = c.none?.(scope.where, items.length) ?? `${scope.none} ${c.wanted}: best was ${scope.label(t.best)} with ${c.show(t.best)}`
    reasons.push({ filter: c.filter, message })
  })
  if (reasons.length > 0) return reasons
  checks.forEach((c, i) => {
    const t = tallies[i]
    if (t.failing === 0 || t.bestFailing === undefined) return
    const phrase = c.some?.(t.failing, items.length) ??
      `${c.wanted} rules out ${t.failing} of ${items.length} ${scope.noun} (best of them: ${scope.label(t.bestFailing)} with ${c.show(t.bestFailing)})`
    reasons.push({ filter: c.filter, message: `${scope.all}: ${phrase}` })
  })
  return reasons
}

/** Bytes as GiB with one decimal: "44.7 GiB". */
export function gib (bytes: number): string {
  return `${(bytes / GiB).toFixed(1)} GiB`
}

function num (x: number): string {
  return String(Math.round(x * 100) / 100)
}

function plural (n: number, word: string): string {
  return n === 1 ? word : `${word}s`
}

function compareText (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
