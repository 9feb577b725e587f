/**
 * Why a placement was refused: from the same checks that decided it
 * (checks.ts), the reasons no cluster passes the cluster filter, or no node
 * of the best cluster passes the node filter, each naming the filter and the
 * best candidate.
 */
import type { NodeView, PlacementResult } from './policy.ts'
import type { Check, ClusterFilter, ClusterView } from './checks.ts'
import { plural } from './text.ts'

/** One reason of a refusal: the filter that ruled out the candidates, and how, in words. */
export type Reason = Extract<PlacementResult, { ok: false }>['reasons'][number]

/** The words and labels of a refusal about one kind of candidate (clusters, or the nodes of one cluster). */
export interface Scope<T> {
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

/** Why no cluster passes: the vendor or names filter when nothing is left, else each cluster filter. */
export function clusterReasons (nodes: NodeView[], clusters: ClusterView[], f: ClusterFilter, checks: Array<Check<ClusterView>>): Reason[] {
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

/** The scope of a refusal about the nodes of one cluster. */
export function nodeScope (cluster: string): Scope<NodeView> {
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
export function explain<T> (items: T[], checks: Array<Check<T>>, scope: Scope<T>): Reason[] {
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
