import type { ElementDefinition } from 'cytoscape'
import type { Peer } from './types.ts'

/** vDAG hop edges drawn at most (the vDAG list beside the graph names every stage's peers regardless). */
export const MAX_VDAG_HOPS = 400

export interface VdagLayout {
  name: string
  owner: string
  /** per stage: its block and the peers running a ready instance of it */
  stages: Array<{ block: string, peers: Peer[] }>
}

/** Each vDAG the peers report, with the peers that run each of its stages. */
export function vdagLayouts (peers: Peer[]): VdagLayout[] {
  const seen = new Map<string, VdagLayout>()
  for (const owner of peers) {
    for (const v of owner.vdags) {
      if (seen.has(v.name)) continue
      seen.set(v.name, {
        name: v.name,
        owner: owner.name,
        stages: v.stages.map(block => ({ block, peers: peers.filter(p => p.instances.some(i => i.block === block && i.status === 'ready')) }))
      })
    }
  }
  return [...seen.values()].sort((a, b) => a.name.localeCompare(b.name))
}

/**
 * Where each peer is drawn: clusters side by side, each cluster's peers on a
 * circle (this agent first), so the picture stays put as stats change.
 */
export function peerPositions (peers: Peer[]): Map<string, { x: number, y: number }> {
  const pos = new Map<string, { x: number, y: number }>()
  const clusters = [...new Set(peers.map(p => p.cluster))]
  let left = 0
  for (const cl of clusters) {
    const members = peers.filter(p => p.cluster === cl)
    const r = members.length === 1 ? 0 : Math.max(90, 40 * members.length / Math.PI)
    const cx = left + r + 60
    members.forEach((p, i) => {
      const a = -Math.PI / 2 + 2 * Math.PI * i / members.length
      pos.set(p.peerId, { x: cx + r * Math.cos(a), y: r * Math.sin(a) })
    })
    left = cx + r + 160
  }
  return pos
}

/** Graph elements: clusters (compound nodes), peers, live connections, and each vDAG's stage-to-stage hops. */
export function graphElements (peers: Peer[], vdags: VdagLayout[]): ElementDefinition[] {
  const ids = new Set(peers.map(p => p.peerId))
  const pos = peerPositions(peers)
  const els: ElementDefinition[] = []
  for (const cluster of new Set(peers.map(p => p.cluster))) els.push({ data: { id: `cluster:${cluster}`, label: cluster }, classes: 'cluster' })
  for (const p of peers) {
    const ready = p.instances.filter(i => i.status === 'ready').length
    els.push({ data: { id: p.peerId, parent: `cluster:${p.cluster}`, label: `${p.name}\n${ready} instance${ready === 1 ? '' : 's'}` }, position: pos.get(p.peerId), classes: p.self ? 'peer self' : 'peer' })
  }
  const links = new Set<string>()
  for (const p of peers) {
    for (const other of p.links ?? []) {
      if (!ids.has(other)) continue
      const [a, b] = p.peerId < other ? [p.peerId, other] : [other, p.peerId]
      links.add(`${a} ${b}`)
    }
  }
  for (const l of links) {
    const [a, b] = l.split(' ')
    els.push({ data: { id: `link:${a}:${b}`, source: a, target: b }, classes: 'link' })
  }
  // peers report the vDAGs (up to 16 each) and stages: bound the hops drawn so a big mesh cannot freeze the page
  let hops = 0
  for (const v of vdags) {
    for (let i = 0; i + 1 < v.stages.length; i++) {
      for (const from of v.stages[i].peers) {
        for (const to of v.stages[i + 1].peers) {
          if (hops++ >= MAX_VDAG_HOPS) return els
          els.push({ data: { id: `vdag:${v.name}:${i}:${from.peerId}:${to.peerId}`, source: from.peerId, target: to.peerId, label: `${v.name} ${i}→${i + 1}` }, classes: 'vdag' })
        }
      }
    }
  }
  return els
}
