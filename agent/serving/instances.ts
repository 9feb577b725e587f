import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import { parsePeerId } from '../../mesh/node.ts'
import type { InstanceHost } from '../blocks/host.ts'
import type { Route, Router } from '../blocks/router.ts'
import { componentUri } from '../registry/components.ts'
import type { Component, ComponentRegistry } from '../registry/components.ts'
import type { TextTokenizer } from '../model/tokenizer.ts'
import type { TokenizerSpec } from '../registry/components.ts'
import type { TokenSource } from '../openai/generate.ts'
import type { GenerateService } from './generate-service.ts'
import { RemoteEngine } from './remote-engine.ts'
import { MigratingSource } from './migrate.ts'
import type { InstanceChoice, MigrationSettings } from './migrate.ts'

/** What choosing and resuming block instances needs of the agent. */
export interface InstanceServingContext {
  /** this agent's peer id */
  self: string
  router: Pick<Router, 'pick' | 'markFailure'>
  host: Pick<InstanceHost, 'serving'>
  gossip: Pick<CapacityGossip, 'peers'>
  components: Pick<ComponentRegistry, 'get'>
  tokenizers: { get: (spec: TokenizerSpec, signal?: AbortSignal) => Promise<TextTokenizer> }
  generate: Pick<GenerateService, 'generate' | 'describe' | 'protocol'>
  /** the protocols a peer announced (identify), when known */
  peerProtocols?: (peer: string) => Promise<string[]>
  settings: MigrationSettings
  onMigration?: (result: 'resumed' | 'failed') => void
  log: { info: (obj: object, msg: string) => void, warn: (obj: object, msg: string) => void }
}

/** How long a peer whose instance was lost is skipped by the router. */
const LOST_PEER_MS = 15_000

/** Component specs learnt from hosts (describe), by component URI. */
const described = new Map<string, Component>()
/**
 * Peers that answered on the generate protocol. identify tells peers about a node's protocols when they
 * connect, and the protocol may be registered a moment after the first connections: those peers are
 * asked (describe) once, not on every request.
 */
const speakers = new Set<string>()
/** Peers whose describe failed (an older agent, say), until when: tunnelled without asking again meanwhile. */
const mute = new Map<string, number>()
const MUTE_MS = 60_000
const remember = <T>(m: { size: number, delete: (k: T) => boolean, keys: () => IterableIterator<T> }): void => {
  if (m.size > 1024) m.delete(m.keys().next().value as T)
}

/**
 * First stages' hosts that did not take a vDAG's driving ("peer vdag" → until when): its requests are
 * driven where they arrive meanwhile, as `mute` does for peers whose describe failed.
 */
const declined = new Map<string, number>()
const DECLINED_MS = 60_000

/** Remembers that `peer` did not take the driving of `vdag` (refused or unreachable before the first token). */
export function declineDriving (peer: string, vdag: string): void {
  declined.set(`${peer} ${vdag}`, Date.now() + DECLINED_MS)
  remember(declined)
}

/** Whether `peer` is to be offered the driving of `vdag` (it did not decline it within the last minute). */
export function offersDriving (peer: string, vdag: string): boolean {
  const key = `${peer} ${vdag}`
  if ((declined.get(key) ?? 0) > Date.now()) return false
  declined.delete(key)
  return true
}

/** Whether `peer` serves /blockmesh/generate/1.0.0: it answered on it before, or announced it (identify). */
export async function speaksGenerate (ctx: Pick<InstanceServingContext, 'generate' | 'peerProtocols'>, peer: string): Promise<boolean> {
  if (speakers.has(peer)) return true
  if ((mute.get(peer) ?? 0) > Date.now()) return false
  try { return (await ctx.peerProtocols?.(peer))?.includes(ctx.generate.protocol) === true } catch { return false }
}

/** The gossiped report of `instance` on `peer`. */
function reportOf (ctx: InstanceServingContext, peer: string, instance: string): { component: string, provider: string | null } | undefined {
  return ctx.gossip.peers().find(p => p.record.peerId === peer)?.record.instances.find(i => i.instance === instance)
}

/**
 * A block instance on a peer as a token source on this agent, with the component it runs (for the
 * tokenizer, chat template, context): from this agent's registry when it has the component, else from
 * the host itself (describe). Null when the token-level path cannot be used — the instance is an
 * external system, the peer does not speak /blockmesh/generate/1.0.0 (an older agent), its component
 * cannot be had, or its tokenizer does not load here — and the caller tunnels the request instead
 * (no migration then; logged).
 */
export async function remoteInstance (ctx: InstanceServingContext, block: string, route: Route & { kind: 'remote' }, signal: AbortSignal): Promise<{ choice: InstanceChoice, component: Component, provider: string } | null> {
  const report = reportOf(ctx, route.peer, route.instance)
  if (report?.provider === 'external') return null
  const why = (reason: string): null => {
    ctx.log.info({ block, peer: route.peer, reason }, 'serving the request through the byte tunnel: no token-level path (no migration if the instance dies)')
    return null
  }
  if ((mute.get(route.peer) ?? 0) > Date.now()) return null
  let component: Component | undefined
  if (report != null) {
    try { component = ctx.components.get(report.component) } catch { component = described.get(report.component) }
  }
  let speaks = await speaksGenerate(ctx, route.peer)
  let provider = report?.provider ?? 'remote'
  if (component == null || !speaks) {
    try {
      const d = await ctx.generate.describe(route.peer, block, { signal })
      const uri = componentUri(d.spec)
      component ??= { uri, spec: d.spec, createdAt: new Date(0).toISOString() }
      described.set(uri, component)
      remember(described)
      speakers.add(route.peer)
      remember(speakers)
      provider = d.provider
    } catch (err) {
      signal.throwIfAborted()
      const cause = (err as Error).cause as Error | undefined
      if (cause?.name === 'UnsupportedProtocolError') {
        mute.set(route.peer, Date.now() + MUTE_MS)
        remember(mute)
        return why(`the peer does not speak ${ctx.generate.protocol}`)
      }
      if (component == null) return why(`the host did not describe the instance: ${(err as Error).message}`)
      // the component is known here and the peer is unreachable or its instance not ready right now:
      // the token-level path still applies, and MigratingSource moves on to another instance
    }
  }
  // external systems are proxied by their host; a pipeline stage answers only inside its vDAG (the host says so)
  if (component.spec.runtime !== 'onnx' || component.spec.stage != null || provider === 'external' || provider === 'stage') return null
  try {
    await ctx.tokenizers.get(component.spec.tokenizer, signal)
  } catch (err) {
    signal.throwIfAborted()
    return why(`the model's tokenizer does not load here: ${(err as Error).message}`)
  }
  return { choice: { source: new RemoteEngine(ctx.generate, route.peer, block, provider), peer: route.peer, instance: route.instance }, component, provider }
}

/**
 * Another ready instance of `block` for a generation that lost `failed`: the lost peer is skipped by
 * the router for a while, and the router is asked (every 250 ms, up to settings.waitMs) until it names
 * an instance other than the lost one.
 */
export async function nextInstance (ctx: InstanceServingContext, block: string, session: string | undefined, failed: InstanceChoice, signal: AbortSignal): Promise<InstanceChoice | null> {
  if (failed.peer !== ctx.self) ctx.router.markFailure(failed.peer, LOST_PEER_MS)
  const deadline = Date.now() + ctx.settings.waitMs
  while (Date.now() < deadline) {
    signal.throwIfAborted()
    const r = ctx.router.pick(block, session)
    if (r != null) {
      const peer = r.kind === 'local' ? ctx.self : r.peer
      if (!(peer === failed.peer && r.instance === failed.instance)) {
        if (r.kind === 'remote') {
          return { source: new RemoteEngine(ctx.generate, r.peer, block, reportOf(ctx, r.peer, r.instance)?.provider ?? 'remote'), peer: r.peer, instance: r.instance }
        }
        try {
          const s = ctx.host.serving(block)
          if (s.kind === 'onnx') return { source: s.engine, peer: ctx.self, instance: s.instance }
        } catch { /* not ready after all: ask again */ }
      }
    }
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, 250)
      const onAbort = (): void => { clearTimeout(t); reject(signal.reason) }
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }
  return null
}

/** The token source for a request served by a block instance: `first`, resumed elsewhere if it is lost. */
export function migrating (ctx: InstanceServingContext, block: string, session: string | undefined, first: InstanceChoice, provider: string): TokenSource & { provider: { name: string } } {
  return new MigratingSource({
    first,
    provider,
    limits: ctx.settings,
    next: async (failed, signal) => await nextInstance(ctx, block, session, failed, signal),
    onMigration: (result, d) => {
      ctx.onMigration?.(result)
      if (result === 'resumed') ctx.log.warn({ block, from: `${d.from.instance}@${d.from.peer}`, to: `${d.to?.instance ?? '?'}@${d.to?.peer ?? '?'}`, generated: d.generated, err: d.error }, 'instance lost mid-generation; request resumed on another instance')
      else ctx.log.warn({ block, from: `${d.from.instance}@${d.from.peer}`, generated: d.generated, err: d.error }, 'instance lost mid-generation; request could not be resumed')
    }
  })
}

/** The protocols `peer` announced, from the libp2p peer store (empty when unknown). */
export function peerProtocolsFrom (libp2p: { peerStore: { get: (id: ReturnType<typeof parsePeerId>) => Promise<{ protocols: string[] }> } }): (peer: string) => Promise<string[]> {
  return async (peer) => {
    try { return (await libp2p.peerStore.get(parsePeerId(peer))).protocols } catch { return [] }
  }
}
