/**
 * The placement scheduler (seed 000): a cluster filter picks the cluster, a
 * node filter picks nodes inside it. `schedule` is pure and deterministic:
 * the same request and the same set of nodes (in any order) give the same
 * result. One decision reads every node once to group and total the
 * clusters, once more to test the nodes of the clusters that pass, and sorts
 * only the usable nodes of the chosen cluster. GPUs marked simulated count
 * only when the request allows them (allowSimulatedGpus); otherwise they are
 * left out as if absent, and a refusal names the nodes that had them.
 *
 * This file holds the decision and the placement (which cluster, which
 * nodes, which GPUs). The limits and checks are in checks.ts, the reasons
 * for a refusal in explain.ts, simulated GPUs in simulated.ts, the wording
 * helpers in text.ts.
 */
import type { NodeView, Placement, PlacementRequest, PlacementResult } from './policy.ts'
import { clusterChecksFor, countUsable, gpuQualifies, groupClusters, nodeChecksFor, nodeLimits } from './checks.ts'
import type { Check, ClusterFilter, ClusterView, NodeLimits } from './checks.ts'
import { clusterReasons, explain, nodeScope } from './explain.ts'
import { hideSimulatedGpus, simulatedReason } from './simulated.ts'
import type { HiddenGpus } from './simulated.ts'
import { compareText } from './text.ts'

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
