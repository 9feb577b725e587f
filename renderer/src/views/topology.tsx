import { useEffect, useMemo, useRef } from 'preact/hooks'
import cytoscape from 'cytoscape'
import type { Core } from 'cytoscape'
import { useStore } from '../store.ts'
import { live } from '../live.ts'
import { graphElements, vdagLayouts } from '../topology-model.ts'
import { shortId } from '../format.ts'

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
