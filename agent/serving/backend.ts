/**
 * What serves one OpenAI request, and the choice of it.
 *
 * Five backends behind one interface (shaped like vLLM's engine client: the serving above does not
 * care where tokens come from):
 *   local    a ready onnx instance on this agent
 *   peer     a peer's onnx instance, token by token over /blockmesh/generate/1.0.0
 *   vdag     a split model, driven stage by stage (VdagDriver) by the host of its first stage when that is a
 *            peer (over /blockmesh/generate/1.1.0, so each token crosses one link fewer; driven here if
 *            that peer is lost or refuses), else from here
 *        — these three are token sources: the serving tokenizes, samples' text, streams (openai-serving.ts);
 *          local and peer ones are wrapped in MigratingSource, so a request whose instance dies goes on elsewhere
 *   external an external OpenAI-compatible system run as an instance here, proxied
 *   tunnel   a peer's instance that cannot be served token by token (an external system there, an older
 *            agent, a tokenizer that does not load here): the request goes through the byte tunnel and the
 *            answer, streamed or not, comes back as it was written there
 *        — these two take the request as a whole and write the answer themselves.
 *
 * chooseBackend() routes: a service's name to the unit (block or vDAG) serving it now; a vDAG of that name first; else the router's pick; a peer's instance token by
 * token when possible, else through the tunnel (another instance when the tunnel fails before
 * answering); else this agent's own instance. Failures are OpenAIErrors (404 unknown model, 503 nothing
 * ready or reachable), the rest are return values.
 */
import type { Logger } from 'pino'
import type { MeshNode } from '../../mesh/node.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { AgentMetrics } from '../metrics.ts'
import type { BlockOwner } from '../blocks/owner.ts'
import { ModelNotReadyError } from '../blocks/host.ts'
import type { InstanceHost, LocalServing } from '../blocks/host.ts'
import type { Route, Router } from '../blocks/router.ts'
import type { Component } from '../registry/components.ts'
import type { Tokenizers } from '../model/tokenizers/load.ts'
import type { VdagStore } from '../vdag/registry.ts'
import type { PipelineClient, RouteHop } from '../vdag/pipeline.ts'
import { VdagDriver } from '../vdag/driver.ts'
import type { TokenSource } from '../openai/generate.ts'
import { OpenAIError, modelNotFound } from '../openai/errors.ts'
import { INSTANCE_HEADER, SERVED_BY_HEADER } from '../openai/infer-protocol.ts'
import type { GenerateService, HostedEngine } from './generate-service.ts'
import { DEFAULT_MIGRATION_SETTINGS, MigratingSource } from './migrate.ts'
import type { MigrationSettings } from './migrate.ts'
import { declineDriving, migrating, offersDriving, peerProtocolsFrom, remoteInstance, speaksGenerate } from './instances.ts'
import type { InstanceServingContext } from './instances.ts'
import type { ResponseSink } from '../http/sink.ts'
import type { CommonBody, EndpointPath } from './endpoints.ts'
import { openPeerTunnel } from './tunnel-client.ts'
import { RemoteEngine } from './remote-engine.ts'

/** What serving requests needs of the agent (the HTTP API's context has all of it). */
export interface ServingDeps {
  mesh: MeshNode
  gossip: CapacityGossip
  router: Router
  host: Pick<InstanceHost, 'serving'>
  owner: Pick<BlockOwner, 'has' | 'get'>
  /** components by URI (a ComponentCache on the request path) */
  components: { get: (uri: string) => Component }
  vdags: Pick<VdagStore, 'find'>
  /** the vDAG pipeline (drivers of requests served here open their sequences through it) */
  pipeline: PipelineClient
  tokenizers: Pick<Tokenizers, 'get'>
  /** token-level generation on peers' instances; absent: requests to peers are tunnelled */
  generate?: GenerateService
  /** request migration limits (absent: the defaults) */
  migration?: MigrationSettings
  /** where a vDAG request arriving here is driven (default: on its first stage's host) */
  vdagDriver?: 'first-stage' | 'here'
  metrics: AgentMetrics
  log: Logger
}

export type BackendKind = 'local' | 'peer' | 'vdag' | 'external' | 'tunnel'

interface BackendBase {
  readonly kind: BackendKind
  /** response headers: the instance that serves (x-blockmesh-instance) and the agent it runs on (x-blockmesh-served-by) */
  readonly headers: Record<string, string>
}

/** Tokens from an engine, here or on peers: the serving makes the OpenAI answer. */
export interface TokenBackend extends BackendBase {
  readonly kind: 'local' | 'peer' | 'vdag'
  readonly engine: TokenSource & { provider: { name: string } }
  /** the model's component (tokenizer, chat template, context, defaults); a vDAG's is made up from its spec */
  readonly component: Component
}

/** The request as a whole to a system that answers it itself: its answer is written onto the sink as it comes. */
export interface ProxyBackend extends BackendBase {
  readonly kind: 'external' | 'tunnel'
  forward: (sink: ResponseSink) => Promise<void>
}

export type Backend = TokenBackend | ProxyBackend

/** Whether the backend takes the request whole (TypeScript does not narrow a union by a discriminant that is itself a union). */
export function isProxy (b: Backend): b is ProxyBackend {
  return b.kind === 'external' || b.kind === 'tunnel'
}

/** One request, as routing sees it. */
export interface BackendRequest {
  path: EndpointPath
  /** the validated body (what a proxy forwards) */
  body: CommonBody
  /** session affinity key: `user`, else the x-session-id header */
  session?: string
  /** arrived through the tunnel: served here, never routed again */
  routed: boolean
  /** aborts when the client goes away */
  signal: AbortSignal
}

/** Choosing and resuming instances for this agent's requests (null: no generate service, requests to peers are tunnelled). */
export function instanceContext (deps: ServingDeps): InstanceServingContext | null {
  if (deps.generate == null) return null
  return {
    self: deps.mesh.peerId.toString(),
    router: deps.router,
    host: deps.host,
    gossip: deps.gossip,
    components: deps.components,
    tokenizers: deps.tokenizers,
    generate: deps.generate,
    peerProtocols: peerProtocolsFrom(deps.mesh.libp2p),
    settings: deps.migration ?? DEFAULT_MIGRATION_SETTINGS,
    onMigration: (result) => { deps.metrics.requestMigrations.inc({ kind: 'instance', result }) },
    log: deps.log.child({ mod: 'serving' })
  }
}

/** Routes requests to backends; one per agent (holds the instance context built once). */
export class BackendRouter {
  private readonly deps: ServingDeps
  private readonly instances: InstanceServingContext | null
  private readonly self: string

  constructor (deps: ServingDeps) {
    this.deps = deps
    this.instances = instanceContext(deps)
    this.self = deps.mesh.peerId.toString()
  }

  /** The backend for a request (see the module comment for the order). */
  async choose (req: BackendRequest): Promise<Backend> {
    // a service's name → the block or vDAG serving it now (the answer keeps the name asked for)
    const model = this.deps.router.resolve(req.body.model)
    const vdag = await this.vdag(model, req)
    if (vdag != null) {
      this.deps.metrics.routedRequests.inc({ target: 'vdag' })
      return vdag
    }
    let r = this.route(model, req.session, req.routed)
    // a peer's instance: token by token, else through the tunnel; a tunnel that fails before answering gets one more pick
    for (let attempt = 0; r.kind === 'remote'; attempt++) {
      const peer = await this.peer(model, req.session, r, req.signal)
      if (peer != null) {
        this.deps.metrics.routedRequests.inc({ target: 'remote' })
        return peer
      }
      // the peer is told the unit chosen here, not the service name (which may have moved on by the time it reads it)
      const tunnel = await openPeerTunnel(this.deps, model === req.body.model ? req : { ...req, body: { ...req.body, model } }, r)
      if (tunnel != null) {
        this.deps.metrics.routedRequests.inc({ target: 'remote' })
        return tunnel
      }
      const next = this.deps.router.pick(model, req.session)
      if (next == null || (attempt >= 1 && next.kind === 'remote')) throw new OpenAIError(503, `no reachable instance of ${model}`, 'model_not_ready')
      r = next
    }
    this.deps.metrics.routedRequests.inc({ target: 'local' })
    return this.local(model, req)
  }

  /** Where the router sends a request (a tunnelled one stays here); 503/404 when there is nowhere. */
  private route (model: string, session: string | undefined, routed: boolean): Route {
    if (routed) return { kind: 'local', instance: '' }
    const r = this.deps.router.pick(model, session)
    if (r != null) return r
    if (this.deps.owner.has(model)) {
      const b = this.deps.owner.get(model)
      throw new OpenAIError(503, `block ${model} has no ready instance (${b.status}${b.error != null ? `: ${b.error}` : ''})`, 'model_not_ready')
    }
    if (this.deps.router.known(model)) throw new OpenAIError(503, `no instance of ${model} is ready yet`, 'model_not_ready')
    throw modelNotFound(model)
  }

  /** A peer's instance token by token (with migration), or null when that path does not apply to it. */
  private async peer (model: string, session: string | undefined, r: Route & { kind: 'remote' }, signal: AbortSignal): Promise<TokenBackend | null> {
    const ictx = this.instances
    if (ictx == null) return null
    const remote = await remoteInstance(ictx, model, r, signal)
    if (remote == null) return null
    return {
      kind: 'peer',
      engine: migrating(ictx, model, session, remote.choice, remote.provider),
      component: remote.component,
      headers: { [INSTANCE_HEADER]: r.instance, [SERVED_BY_HEADER]: r.peer }
    }
  }

  /** This agent's own instance of `model`: an onnx engine (with migration), or an external system proxied. */
  private local (model: string, req: BackendRequest): Backend {
    const serving = localServing(this.deps, model)
    const headers = { [INSTANCE_HEADER]: serving.instance, [SERVED_BY_HEADER]: this.self }
    if (serving.kind === 'external') {
      const { backend } = serving
      return { kind: 'external', headers, forward: async (sink) => { await backend.forward(req.path, req.body, model, sink, req.signal, headers) } }
    }
    if (serving.kind === 'stage') throw new OpenAIError(400, `${model} is one stage of a split model; ask for its vDAG's model name`, 'model_is_stage', 'invalid_request_error', 'model')
    if (serving.kind !== 'onnx') throw new OpenAIError(500, 'unexpected serving kind', 'internal_error')
    const ictx = this.instances
    const engine = ictx != null
      ? migrating(ictx, model, req.session, { source: serving.engine, peer: this.self, instance: serving.instance }, serving.engine.provider.name)
      : serving.engine
    return { kind: 'local', engine, component: serving.component, headers }
  }

  /**
   * A vDAG's backend, or null when `model` is no vDAG. The ring runs driver → stage 0 → … → last stage →
   * driver, so a driver on stage 0's host saves a link crossing per token: a request that arrives
   * elsewhere is driven there (over the generate protocol, the tokens coming back as they are made),
   * unless it arrived through the tunnel, that host does not speak the protocol, or the agent is told to
   * drive here (`--vdag-driver here`). When that host is
   * lost, or refuses (an older agent, a vDAG it does not know yet), the request goes on here with the
   * tokens generated so far (MigratingSource, within the replay cap; the hand-over counts as a migration
   * and is allowed even with migrations switched off: it is the serving path's own move, not a retry).
   */
  private async vdag (model: string, req: Pick<BackendRequest, 'session' | 'routed'>): Promise<TokenBackend | null> {
    const { router } = this.deps
    const v = router.vdag(model)
    if (v == null) return null
    const route = router.vdagRoute(v, req.session)
    if (route == null) throw new OpenAIError(503, `vDAG ${model} has a stage with no ready instance`, 'model_not_ready')
    const component = this.vdagComponent(model, v)
    const head = route[0].peer
    const ictx = this.instances
    if (!req.routed && ictx != null && head !== this.self && this.deps.vdagDriver !== 'here' && offersDriving(head, model) && await speaksGenerate(ictx, head)) {
      const engine = new MigratingSource({
        first: { source: new RemoteEngine(ictx.generate, head, model, 'vdag', req.session), peer: head, instance: model },
        provider: 'vdag',
        limits: { max: Math.max(1, ictx.settings.max), maxTokens: ictx.settings.maxTokens },
        next: async () => ({ source: this.vdagDriver(model, req.session, null), peer: this.self, instance: model }),
        onMigration: (result, d) => {
          if (d.generated === 0) {
            // declined (an older agent, a view without the vDAG or a ready route) or unreachable before the
            // first token: driven here, and for a while this vDAG's requests are not offered to that host
            declineDriving(head, model)
            this.deps.metrics.requestMigrations.inc({ kind: 'driver', result: result === 'resumed' ? 'declined' : result })
            this.deps.log.info({ vdag: model, host: d.from.peer, err: d.error }, 'the first stage\'s host did not take the vDAG\'s driving; driving it here')
            return
          }
          this.deps.metrics.requestMigrations.inc({ kind: 'driver', result })
          this.deps.log.warn({ vdag: model, from: d.from.peer, generated: d.generated, err: d.error }, result === 'resumed' ? 'the vDAG\'s driver on its first stage\'s host was lost; driving the request here' : 'the vDAG\'s driver on its first stage\'s host was lost; the request could not go on here')
        }
      })
      return { kind: 'vdag', engine, component, headers: { [INSTANCE_HEADER]: model, [SERVED_BY_HEADER]: head } }
    }
    return { kind: 'vdag', engine: this.vdagDriver(model, req.session, route), component, headers: { [INSTANCE_HEADER]: model, [SERVED_BY_HEADER]: this.self } }
  }

  /**
   * What a peer's generate request for `block` runs on here (the peer serves the client): this agent's
   * instance of it, else, when `block` names a vDAG, a driver of it here. Throws as the host does when
   * there is neither.
   */
  hosted (block: string, session?: string): HostedEngine {
    try {
      return this.deps.host.serving(block)
    } catch (err) {
      const vdag = this.hostedVdag(block, session)
      if (vdag != null) return vdag
      throw err
    }
  }

  /**
   * A vDAG driven on this agent for a peer's generate request, or null when `model` is no vDAG known
   * here. Never handed on again. Throws (model_not_ready) when a stage has no ready instance in this
   * agent's view, so that the peer, whose view said otherwise, drives it itself.
   */
  private hostedVdag (model: string, session?: string): Extract<HostedEngine, { kind: 'onnx' }> | null {
    const v = this.deps.router.vdag(model)
    if (v == null) return null
    const route = this.deps.router.vdagRoute(v, session)
    if (route == null) throw new OpenAIError(503, `vDAG ${model} has a stage with no ready instance here`, 'model_not_ready')
    // the first stage here, where this agent runs a ready instance of it: that is why it was asked to drive
    try {
      if (this.deps.host.serving(route[0].block).kind === 'stage') route[0] = { ...route[0], peer: this.self }
    } catch { /* not ready here after all: the router's pick stands */ }
    return { kind: 'onnx', engine: this.vdagDriver(model, session, route), component: this.vdagComponent(model, v), instance: model }
  }

  /** The component a vDAG is served as (its tokenizer, context and defaults). */
  private vdagComponent (model: string, v: NonNullable<ReturnType<Router['vdag']>>): Component {
    const spec = this.deps.vdags.find(model)?.spec
    return {
      uri: `vdag:${model}`,
      createdAt: new Date(0).toISOString(),
      spec: { name: model, version: 'vdag', runtime: 'onnx', tokenizer: spec?.tokenizer ?? v.tokenizer ?? { type: 'byte' }, contextLength: v.contextLength, defaults: spec?.defaults ?? { maxTokens: 256, temperature: 0.7, topP: 0.95 }, resources: {} }
    }
  }

  /** A driver of `model` on this agent: `first` as its first route (null: asks the router), then the router's. */
  private vdagDriver (model: string, session: string | undefined, first: RouteHop[] | null): TokenSource & { provider: { name: string } } {
    const { router } = this.deps
    const settings = this.deps.migration ?? DEFAULT_MIGRATION_SETTINGS
    const log = this.deps.log.child({ mod: 'vdag', vdag: model })
    let pending = first
    const driver = new VdagDriver(this.deps.pipeline, {
      // the route checked by the caller first; a migrating sequence asks the router again (the vDAG may have been re-placed)
      route: () => {
        if (pending != null) { const r = pending; pending = null; return r }
        const now = router.vdag(model)
        return now == null ? null : router.vdagRoute(now, session)
      },
      markFailure: (peer) => { router.markFailure(peer, 15_000) }
    }, {
      ...settings,
      onMigration: (result) => { this.deps.metrics.requestMigrations.inc({ kind: 'stage', result }) }
    }, (obj, msg) => { log.warn(obj, msg) })
    return { provider: driver.provider, generate: params => driver.generate(params) }
  }
}

/** The local instance for a request (503 when it exists here but is not ready). */
function localServing (deps: ServingDeps, model: string): LocalServing {
  try {
    return deps.host.serving(model)
  } catch (err) {
    if (err instanceof ModelNotReadyError) throw new OpenAIError(503, err.message, 'model_not_ready')
    throw modelNotFound(model)
  }
}
