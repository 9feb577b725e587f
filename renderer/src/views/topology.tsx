import { useEffect, useMemo, useRef } from 'preact/hooks'
import cytoscape from 'cytoscape'
import type { Core, ElementDefinition } from 'cytoscape'
import { useStore } from '../store.ts'
import { live } from '../live.ts'
import type { Peer } from '../types.ts'
import { shortId } from '../format.ts'

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
  for (const v of vdags) {
    for (let i = 0; i + 1 < v.stages.length; i++) {
      for (const from of v.stages[i].peers) {
        for (const to of v.stages[i + 1].peers) {
          els.push({ data: { id: `vdag:${v.name}:${i}:${from.peerId}:${to.peerId}`, source: from.peerId, target: to.peerId, label: `${v.name} ${i}→${i + 1}` }, classes: 'vdag' })
        }
      }
    }
  }
  return els
}

const STYLE: cytoscape.StylesheetJson = [
  { selector: 'node.cluster', style: { label: 'data(label)', 'text-valign': 'top', 'text-halign': 'center', 'background-color': '#f1f5f9', 'border-color': '#94a3b8', 'border-width': 1, shape: 'round-rectangle', 'font-size': 12, color: '#334155', padding: '18px' } },
  { selector: 'node.peer', style: { label: 'data(label)', 'text-wrap': 'wrap', 'text-valign': 'bottom', 'text-margin-y': 4, 'font-size': 11, 'background-color': '#3b82f6', width: 28, height: 28 } },
  { selector: 'node.self', style: { 'background-color': '#10b981', 'border-width': 3, 'border-color': '#065f46' } },
  { selector: 'edge.link', style: { width: 1.5, 'line-color': '#94a3b8', 'curve-style': 'bezier' } },
  { selector: 'edge.vdag', style: { width: 2.5, 'line-color': '#f59e0b', 'target-arrow-color': '#f59e0b', 'target-arrow-shape': 'triangle', 'curve-style': 'bezier', 'control-point-step-size': 60, label: 'data(label)', 'font-size': 9, 'text-rotation': 'autorotate', color: '#92400e', 'text-background-color': '#fff', 'text-background-opacity': 0.8, 'text-background-padding': '2px' } }
]

export function TopologyView () {
  const state = useStore(live.state)
  const box = useRef<HTMLDivElement>(null)
  const cy = useRef<Core | null>(null)
  const shape = useRef('')
  const peers = state.peers
  const vdags = useMemo(() => vdagLayouts(peers), [peers])
  const elements = useMemo(() => graphElements(peers, vdags), [peers, vdags])

  useEffect(() => {
    if (box.current == null) return
    cy.current = cytoscape({ container: box.current, style: STYLE, minZoom: 0.2, maxZoom: 3 })
    return () => { cy.current?.destroy(); cy.current = null; shape.current = '' }
  }, [])

  useEffect(() => {
    const c = cy.current
    if (c == null) return
    const key = elements.map(e => e.data.id).sort().join('|')
    if (key === shape.current) {
      // same graph: refresh labels only, so nodes do not jump every heartbeat
      for (const e of elements) c.getElementById(e.data.id as string).data('label', e.data.label)
      return
    }
    shape.current = key
    c.elements().remove()
    c.add(elements)
    c.layout({ name: 'preset', fit: true, padding: 40 }).run()
    if (c.zoom() > 1.4) { c.zoom(1.4); c.center() }
  }, [elements])

  const clusters = [...new Set(peers.map(p => p.cluster))]
  return (
    <section class="topology">
      <div class="graph card" ref={box} data-testid="topology-graph" role="img" aria-label={`mesh graph: ${peers.length} peers in ${clusters.length} clusters`} />
      <aside class="side">
        <div class="card">
          <h2>Peers <span class="badge" data-testid="peer-count">{peers.length}</span></h2>
          {clusters.map(cl => (
            <div key={cl} class="cluster-list">
              <h3>cluster {cl}</h3>
              <ul>
                {peers.filter(p => p.cluster === cl).map(p => (
                  <li key={p.peerId} data-testid="topology-peer" data-peer={p.peerId}>
                    <span class={`dot ${p.self || p.connected ? 'ok' : 'warn'}`} title={p.self ? 'this agent' : p.connected ? 'connected' : 'known by gossip, not connected directly'} />
                    <strong>{p.name}</strong>{p.self && <span class="badge">this agent</span>}
                    <span class="muted mono" title={p.peerId}> {shortId(p.peerId)}</span>
                    <span class="muted"> · {(p.links ?? []).length} links · {p.instances.length} instances</span>
                  </li>
                ))}
              </ul>
            </div>
          ))}
        </div>
        <div class="card">
          <h2>vDAGs</h2>
          {vdags.length === 0 && <p class="muted">No vDAGs yet (Split → deploy a plan).</p>}
          {vdags.map(v => (
            <div key={v.name} class="vdag" data-testid="topology-vdag">
              <strong>{v.name}</strong> <span class="muted">owned by {v.owner}</span>
              <ol>
                {v.stages.map((s, i) => <li key={i}>stage {i}: <span class="mono">{s.block}</span> on {s.peers.length === 0 ? <em>no ready instance</em> : s.peers.map(p => p.name).join(', ')}</li>)}
              </ol>
            </div>
          ))}
        </div>
      </aside>
    </section>
  )
}
