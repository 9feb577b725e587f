/**
 * Rolling a service to another template version without dropping a request (issue 16):
 *
 *   starting  the new version is deployed as a unit of its own (`NAME-vN`, whole or split as the mesh
 *             decides now) beside the old one, which goes on answering; the rollout waits until the new
 *             unit serves (every replica ready, or every stage of its vDAG);
 *   switch    the service's `target` moves to the new unit: every agent's router sends the name there
 *             from the moment the change reaches it (replicated desired state);
 *   draining  after the change has had time to reach every agent (two heartbeats), the old unit is
 *             deleted; its hosts stop taking requests for it and let those in flight finish (up to the
 *             drain time) before they unload;
 *   done      no host runs the old unit any more.
 *
 * A new unit that does not become ready in time is removed again and the service stays where it was
 * (`failed`, with the reason). The agent that was asked runs the rollout and records each phase in the
 * service's record, so every agent shows it. When that agent dies (gone from the live peers), one live
 * agent — the one with the lowest peer ID, the same choice everywhere — takes the rollout over: one still
 * `starting` is given up (its new unit removed, `failed`, the service where it was); one `draining` is
 * finished (the old unit removed, `done`).
 */
import type { Logger } from 'pino'
import { setTimeout as sleep } from 'node:timers/promises'
import { AgentError, NotFoundError } from '../errors.ts'
import type { TemplateStore } from './store.ts'
import type { ServiceRecord, ServiceStore } from './services.ts'
import { decide, deployUnit, removeUnit, unitBlocks, unitExists, unitReady, unitRunning } from './deploy.ts'
import type { DeployDeps } from './deploy.ts'

export interface RolloutDeps extends DeployDeps {
  services: ServiceStore
  templates: TemplateStore
  /** this agent's peer ID */
  self: string
  heartbeatMs: number
  /** how long hosts let a deleted block's requests finish (agent --drain-ms); the wait for the old unit to go is this and a margin */
  drainMs: number
  log: Logger
}

export interface RolloutOptions {
  /** how long the new unit may take to serve (download, conversion, a split task, loading) before the rollout gives up */
  readyTimeoutMs?: number
}

/** A unit name for version `n` of service `name`: `NAME-vN` (the name shortened to fit 64 characters), `-2`, `-3`… when taken. */
export function nextUnitName (name: string, n: number, taken: (unit: string) => boolean): string {
  for (let k = 1; ; k++) {
    const suffix = `-v${n}${k > 1 ? `-${k}` : ''}`
    const unit = `${name.slice(0, 64 - suffix.length)}${suffix}`
    if (!taken(unit)) return unit
  }
}

/** Rollouts run by this agent (one per service at a time). */
export class Rollouts {
  private readonly deps: RolloutDeps
  private readonly running = new Map<string, { abort: AbortController, done: Promise<void> }>()
  private timer: NodeJS.Timeout | undefined

  constructor (deps: RolloutDeps) {
    this.deps = deps
    // rollouts whose agent died are looked for a few times per expiry period of a peer
    const every = Math.max(1000, 2 * deps.heartbeatMs)
    const tick = (): void => {
      void this.sweep().catch((err: Error) => { deps.log.warn({ err: err.message }, 'rollout takeover failed') })
        .finally(() => { if (this.timer != null) this.timer = setTimeout(tick, every).unref() })
    }
    this.timer = setTimeout(tick, every).unref()
  }

  /**
   * Takes over the rollouts whose agent is gone, when this agent is the live one with the lowest peer ID:
   * a `starting` one is given up (its new unit removed), a `draining` one finished (the old unit removed).
   */
  async sweep (): Promise<void> {
    const { services, gossip, self, log } = this.deps
    const live = [self, ...gossip.peers().filter(p => p.status === 'live').map(p => p.record.peerId)]
    if (live.some(id => id < self)) return
    for (const { record: s } of services.list()) {
      const r = s.rollout
      if (r == null || (r.phase !== 'starting' && r.phase !== 'draining') || this.running.has(s.name) || this.alive(s)) continue
      if (r.by === self) continue // this agent's own, from before a restart: superseded by the next rollout asked for
      log.warn({ service: s.name, by: r.by, phase: r.phase }, 'the agent running this rollout is gone: taking it over')
      const abort = new AbortController()
      const done = this.takeOver(s, r).catch((err: Error) => { log.warn({ service: s.name, err: err.message }, 'rollout takeover ended with an error') })
        .finally(() => { this.running.delete(s.name) })
      this.running.set(s.name, { abort, done })
    }
  }

  private async takeOver (s: ServiceRecord, r: NonNullable<ServiceRecord['rollout']>): Promise<void> {
    const { services } = this.deps
    const finish = async (change: Partial<NonNullable<ServiceRecord['rollout']>>): Promise<void> => {
      await services.update(s.name, cur => ({ ...cur, rollout: cur.rollout == null ? null : { ...cur.rollout, ...change, by: this.deps.self, finishedAt: new Date().toISOString() } }))
    }
    if (r.phase === 'starting') {
      if (r.to.unit !== s.target && unitExists(this.deps, r.to.unit)) await removeUnit(this.deps, r.to.unit)
      await finish({ phase: 'failed', error: `the agent running the rollout (${r.by}) went away before ${r.to.unit} served; it was removed and the service stays on ${s.version}` })
      return
    }
    // draining: the switch was made; the old unit goes, drained by its hosts
    const oldBlocks = unitBlocks(this.deps, r.from.unit)
    if (r.from.unit !== s.target && unitExists(this.deps, r.from.unit)) await removeUnit(this.deps, r.from.unit)
    const deadline = Date.now() + this.deps.drainMs + Math.max(30_000, 10 * this.deps.heartbeatMs)
    while (unitRunning(this.deps, oldBlocks) && Date.now() < deadline) await sleep(250)
    await finish({ phase: 'done', error: `finished by ${this.deps.self}: the agent running the rollout (${r.by}) went away while ${r.from.unit} drained` })
  }

  /** Whether the rollout recorded in `s` still has an agent running it (this one, or a live peer). */
  private alive (s: ServiceRecord): boolean {
    const r = s.rollout
    if (r == null || r.phase === 'done' || r.phase === 'failed') return false
    if (r.by === this.deps.self) return this.running.has(s.name)
    return this.deps.gossip.peers().some(p => p.status === 'live' && p.record.peerId === r.by)
  }

  /**
   * Starts rolling service `name` to the version `ref` (NAME-vN, or a template name for its latest version).
   * Answers once the rollout is recorded; it goes on in the background (the service's record shows its phase).
   */
  async start (name: string, ref: string, opts: RolloutOptions = {}): Promise<ServiceRecord> {
    const { services, templates } = this.deps
    const s = services.get(name)
    if (this.alive(s)) throw new AgentError(`service ${name} is already rolling to ${s.rollout?.to.version ?? '?'} (${s.rollout?.phase ?? '?'})`, 'conflict', 409)
    const { version } = templates.version(ref)
    if (version.name === s.version && s.target !== '' && unitExists(this.deps, s.target)) throw new AgentError(`service ${name} runs ${version.name} already`, 'conflict', 409)
    const { estimate, decision } = decide(this.deps, version.spec)
    if (decision?.kind === 'refused') throw new AgentError(`${version.name} fits nowhere: ${decision.reason}`, 'does_not_fit', 422, { estimate, decision })
    // a rollout whose agent died may have left its new unit behind
    const stale = s.rollout
    if (stale != null && stale.phase === 'starting' && stale.to.unit !== s.target && unitExists(this.deps, stale.to.unit)) await removeUnit(this.deps, stale.to.unit)
    const unit = nextUnitName(name, version.version, u => u === s.target || unitExists(this.deps, u))
    const replicas = s.replicas ?? version.spec.deploymentConfig.replicas
    const maxReplicas = Math.max(replicas, s.maxReplicas ?? version.spec.deploymentConfig.maxReplicas ?? replicas)
    const record = await services.put({
      ...s,
      rollout: { from: { version: s.version, unit: s.target }, to: { version: version.name, unit }, phase: 'starting', by: this.deps.self, startedAt: new Date().toISOString(), switchedAt: null, finishedAt: null, error: null, task: null }
    })
    const abort = new AbortController()
    const done = this.run(record, { unit, version: version.name, spec: version.spec, decision, replicas, maxReplicas }, opts, abort.signal)
      .catch((err: Error) => { this.deps.log.warn({ service: name, err: err.message }, 'rollout ended with an error') })
      .finally(() => { this.running.delete(name) })
    this.running.set(name, { abort, done })
    this.deps.log.info({ service: name, from: s.version, to: version.name, unit, decision: decision?.kind ?? null }, 'rollout started')
    return record
  }

  /** Stops this agent's rollout of `name` (the service is being deleted); resolves when it has stopped. */
  async cancel (name: string): Promise<void> {
    const r = this.running.get(name)
    if (r == null) return
    r.abort.abort()
    await r.done
  }

  /** Waits for every rollout this agent runs (tests, shutdown). */
  async settle (): Promise<void> {
    await Promise.all([...this.running.values()].map(async r => { await r.done }))
  }

  /** Deletes a service: its rollout stopped, its units drained and removed (deleteService). */
  async deleteService (name: string): Promise<string[]> {
    return await deleteService(this.deps, this, name)
  }

  async close (): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    for (const r of this.running.values()) r.abort.abort()
    await this.settle()
  }

  private async run (s: ServiceRecord, next: { unit: string, version: string, spec: Parameters<typeof deployUnit>[1]['spec'], decision: ReturnType<typeof decide>['decision'], replicas: number, maxReplicas: number }, opts: RolloutOptions, signal: AbortSignal): Promise<void> {
    const { services, log } = this.deps
    const name = s.name
    const phase = async (change: (r: NonNullable<ServiceRecord['rollout']>) => Partial<NonNullable<ServiceRecord['rollout']>>, rest: Partial<ServiceRecord> = {}): Promise<void> => {
      await services.update(name, cur => ({ ...cur, ...rest, rollout: cur.rollout == null ? null : { ...cur.rollout, ...change(cur.rollout) } }))
    }
    const from = s.rollout?.from ?? { version: s.version, unit: s.target }

    // starting: the new unit beside the old one, until it serves
    try {
      const d = await deployUnit(this.deps, { spec: next.spec, version: next.version, unit: next.unit, decision: next.decision, replicas: next.replicas, maxReplicas: next.maxReplicas })
      if (d.task != null) await phase(() => ({ task: d.task }))
      let failed: Error | null = null
      d.vdagDeployed?.catch((err: Error) => { failed = err })
      const deadline = Date.now() + (opts.readyTimeoutMs ?? 30 * 60_000)
      while (!unitReady(this.deps, next.unit, next.replicas)) {
        if (signal.aborted) throw new Error('cancelled: the service is being deleted')
        if (failed != null) throw failed
        if (Date.now() > deadline) {
          const why = this.deps.owner.has(next.unit) ? ` (block ${next.unit}: ${this.deps.owner.get(next.unit).status}${this.deps.owner.get(next.unit).error != null ? `: ${this.deps.owner.get(next.unit).error as string}` : ''})` : ''
          throw new Error(`${next.unit} did not become ready in ${Math.round((opts.readyTimeoutMs ?? 30 * 60_000) / 1000)} s${why}`)
        }
        await sleep(250)
      }
    } catch (err) {
      log.warn({ service: name, unit: next.unit, err: (err as Error).message }, 'rollout failed: the new version is removed, the service stays where it was')
      await removeUnit(this.deps, next.unit).catch(() => {})
      if (services.has(name)) await phase(() => ({ phase: 'failed', error: (err as Error).message.slice(0, 2000), finishedAt: new Date().toISOString() }))
      return
    }

    // switch: the service's name goes to the new unit on every agent
    const decision = next.decision?.kind ?? null
    await phase(() => ({ phase: 'draining', switchedAt: new Date().toISOString() }), { target: next.unit, version: next.version, modelTemplateVersionRef: { name: next.version }, decision, deployed: true })
    log.info({ service: name, unit: next.unit, version: next.version }, 'rollout switched: the service answers from the new version')

    // draining: once every agent has had the change, the old unit goes; its hosts let requests in flight finish
    await sleep(Math.max(1000, 2 * this.deps.heartbeatMs))
    const oldBlocks = unitBlocks(this.deps, from.unit)
    if (from.unit !== next.unit) await removeUnit(this.deps, from.unit)
    const deadline = Date.now() + this.deps.drainMs + Math.max(30_000, 10 * this.deps.heartbeatMs)
    while (unitRunning(this.deps, oldBlocks) && Date.now() < deadline) await sleep(250)
    const lingering = unitRunning(this.deps, oldBlocks)
    await phase(() => ({ phase: 'done', finishedAt: new Date().toISOString(), error: lingering ? `${from.unit} was still reported running when the drain time ran out` : null }))
    log.info({ service: name, from: from.version, to: next.version }, 'rollout done')
  }
}

/** Deletes a service: its rollout here stopped, its unit (and a rollout's new one) removed, drained by their hosts. */
export async function deleteService (deps: RolloutDeps, rollouts: Rollouts, name: string): Promise<string[]> {
  const s = deps.services.find(name)
  if (s == null) throw new NotFoundError(`no service ${name}`)
  await rollouts.cancel(name)
  const units = [s.target, ...(s.rollout != null && s.rollout.to.unit !== s.target ? [s.rollout.to.unit] : [])].filter(u => unitExists(deps, u))
  for (const u of units) await removeUnit(deps, u)
  await deps.services.remove(name)
  return units
}
