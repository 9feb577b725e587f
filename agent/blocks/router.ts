import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { VdagReport } from '../../mesh/capacity/record.ts'
import type { InstanceHost } from './host.ts'

/** Where a request goes: this agent's own instance, or a peer's. */
export type Route = { kind: 'local', instance: string } | { kind: 'remote', peer: string, instance: string }

interface Candidate { peer: string, instance: string, load: number, affinity: boolean, sessionTtl: number }

/**
 * Picks an instance for each request: any ready instance of the model in
 * the mesh (this agent's first in the candidate list only by peer order),
 * round-robin, with session affinity (the same session goes to the same
 * instance while it is ready and the session is fresh). Peers that just
 * failed a request are skipped for a short while.
 */
export class Router {
  private readonly self: string
  private readonly gossip: CapacityGossip
  private readonly host: InstanceHost
  private readonly counters = new Map<string, number>()
  private readonly sessions = new Map<string, { peer: string, instance: string, expires: number }>()
  private readonly failing = new Map<string, number>()

  private readonly localVdags: () => VdagReport[]
  private readonly services: () => ReadonlyMap<string, string>
  private readonly previousUnits: () => ReadonlyMap<string, string>

  /**
   * `services`: names served by a unit of another name (a service rolled to a new version: its name → the
   * block or vDAG that serves it now), kept in memory by its owner (agent/templates/services.ts); `previousUnits`:
   * the units those names were switched from while the old ones drain.
   */
  constructor (init: { self: string, gossip: CapacityGossip, host: InstanceHost, vdags?: () => VdagReport[], services?: () => ReadonlyMap<string, string>, previousUnits?: () => ReadonlyMap<string, string> }) {
    this.self = init.self
    this.gossip = init.gossip
    this.host = init.host
    this.localVdags = init.vdags ?? (() => [])
    this.services = init.services ?? (() => new Map())
    this.previousUnits = init.previousUnits ?? (() => new Map())
  }

  /**
   * The block or vDAG that serves `name` now: a service's current unit, else the name itself. Just after a
   * rollout's switch, while no ready instance of the new unit has reached this agent's view yet (capacity
   * records travel apart from the desired state) and the old unit still serves, the old unit.
   */
  resolve (name: string): string {
    const target = this.services().get(name) ?? name
    const previous = this.previousUnits().get(name)
    if (previous != null && previous !== target && !this.servable(target) && this.servable(previous)) return previous
    return target
  }

  /** Whether `unit` has a ready instance in this agent's view (a vDAG: every stage). */
  servable (unit: string): boolean {
    const v = this.vdag(unit)
    if (v != null) return v.stages.every(b => this.candidates(b).length > 0)
    return this.candidates(unit).length > 0
  }

  /** A vDAG served under `name`, owned here or by a live peer. */
  vdag (name: string): VdagReport | undefined {
    const own = this.localVdags().find(v => v.name === name)
    if (own != null) return own
    for (const p of this.gossip.peers()) {
      if (p.status !== 'live') continue
      const v = p.record.vdags.find(x => x.name === name)
      if (v != null) return v
    }
    return undefined
  }

  /** One ready instance per stage (round-robin per stage, the session sticking to its stages), or null if a stage has none. */
  vdagRoute (v: VdagReport, session?: string): Array<{ peer: string, block: string }> | null {
    const hops = []
    for (const block of v.stages) {
      const r = this.pick(block, session)
      if (r == null) return null
      hops.push({ peer: r.kind === 'local' ? this.self : r.peer, block })
    }
    return hops
  }

  private allVdags (): VdagReport[] {
    const out = [...this.localVdags()]
    for (const p of this.gossip.peers()) if (p.status === 'live') out.push(...p.record.vdags)
    return out
  }

  /** Ready instances of `model` in the mesh, in a stable order. */
  candidates (model: string): Candidate[] {
    const out: Candidate[] = []
    for (const r of this.host.reports()) {
      if (r.block === model && r.status === 'ready') out.push({ peer: this.self, instance: r.instance, load: r.active + r.queued, affinity: r.affinity, sessionTtl: r.sessionTtl })
    }
    const now = Date.now()
    for (const p of this.gossip.peers()) {
      if (p.status !== 'live' || (this.failing.get(p.record.peerId) ?? 0) > now) continue
      for (const r of p.record.instances) {
        if (r.block === model && r.status === 'ready') out.push({ peer: p.record.peerId, instance: r.instance, load: r.active + r.queued, affinity: r.affinity, sessionTtl: r.sessionTtl })
      }
    }
    return out.sort((a, b) => a.peer.localeCompare(b.peer) || a.instance.localeCompare(b.instance))
  }

  /** Every model with a ready instance somewhere in the mesh, every vDAG whose stages all have one, and every service whose unit is one of those. */
  models (): string[] {
    const set = new Set<string>()
    for (const r of this.host.reports()) if (r.status === 'ready') set.add(r.block)
    for (const p of this.gossip.peers()) {
      if (p.status !== 'live') continue
      for (const r of p.record.instances) if (r.status === 'ready') set.add(r.block)
    }
    for (const v of this.allVdags()) if (v.stages.every(b => set.has(b))) set.add(v.name)
    for (const [name, unit] of this.services()) if (set.has(unit)) set.add(name)
    return [...set].sort()
  }

  /** Whether any instance of the model exists (ready or not) — to tell "not ready" from "unknown". */
  known (model: string): boolean {
    if (this.host.has(model)) return true
    return this.gossip.peers().some(p => p.status === 'live' && p.record.instances.some(r => r.block === model))
  }

  pick (model: string, session?: string): Route | null {
    const list = this.candidates(model)
    if (list.length === 0) return null
    const now = Date.now()
    const key = session != null ? `${model}\u0000${session}` : null
    if (key != null) {
      const s = this.sessions.get(key)
      if (s != null && s.expires > now) {
        const still = list.find(c => c.peer === s.peer && c.instance === s.instance)
        if (still != null) {
          s.expires = now + still.sessionTtl * 1000
          return this.route(still)
        }
      }
    }
    const n = this.counters.get(model) ?? 0
    this.counters.set(model, n + 1)
    const chosen = list[n % list.length]
    if (key != null && chosen.affinity) {
      this.sessions.set(key, { peer: chosen.peer, instance: chosen.instance, expires: now + chosen.sessionTtl * 1000 })
      if (this.sessions.size > 100_000) this.prune(now)
    }
    return this.route(chosen)
  }

  /** A peer that failed a request is skipped for `ms`. */
  markFailure (peer: string, ms = 5000): void {
    this.failing.set(peer, Date.now() + ms)
  }

  private route (c: Candidate): Route {
    return c.peer === this.self ? { kind: 'local', instance: c.instance } : { kind: 'remote', peer: c.peer, instance: c.instance }
  }

  private prune (now: number): void {
    for (const [k, s] of this.sessions) if (s.expires <= now) this.sessions.delete(k)
  }
}
