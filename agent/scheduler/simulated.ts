/**
 * GPUs marked simulated: unless the request allows them, the scheduler sees
 * each node without them (keeping where each remaining GPU sits in the
 * node's own list), and a refusal gets a note naming the nodes that had them.
 */
import type { NodeView } from './policy.ts'
import type { Reason } from './explain.ts'
import { compareText, plural } from './text.ts'

/** A node seen without its simulated GPUs: `slots[i]` is the index in the node's own list of `view.gpus[i]`. */
export interface HiddenGpus { view: NodeView, slots: number[], simulated: number }

/** For each node with GPUs marked simulated, a view of it without them (keyed by the original). */
export function hideSimulatedGpus (nodes: NodeView[]): Map<NodeView, HiddenGpus> {
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
export function simulatedReason (counted: NodeView[], hidden: Map<NodeView, HiddenGpus>): Reason | null {
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
