import { rmSync, writeFileSync, renameSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { MeshNode, parsePeerId } from '../mesh/node.ts'
import { CapacityGossip } from '../mesh/capacity/gossip.ts'
import { readSwarmKeyFile } from '../mesh/swarm-key.ts'
import { DB_FILE, READY_FILE } from './config.ts'
import { parseAgentOptions } from './options.ts'
import type { AgentOptions, AgentOptionsInput, ReadyInfo } from './config.ts'
import { ensureDataDir, loadOrCreateIdentity, loadOrCreateToken } from './identity.ts'
import { MetaStore, openDatabase } from './db/database.ts'
import type { Db } from './db/database.ts'
import { PeerMemory } from './db/peer-memory.ts'
import { HardwareMonitor } from './hardware/monitor.ts'
import { parseSimulatedGpus } from './hardware/gpus.ts'
import { AgentMetrics, watchContent, watchPeerScore } from './metrics.ts'
import { buildApi } from './api/server.ts'
import { createLogger } from './log.ts'
import type { Logger } from './log.ts'
import { ComponentRegistry } from './registry/components.ts'
import { Tokenizers } from './model/tokenizers/load.ts'
import { InstanceHost } from './blocks/host.ts'
import { BlockOwner } from './blocks/owner.ts'
import { Router } from './blocks/router.ts'
import { assignService } from './blocks/assign-service.ts'
import type { AssignService } from './blocks/assign-service.ts'
import { tunnelServer } from './serving/tunnel-server.ts'
import type { TunnelServer } from './serving/tunnel-server.ts'
import { openAIServing } from './serving/openai-serving.ts'
import type { OpenAIServing } from './serving/openai-serving.ts'
import { VdagStore } from './vdag/registry.ts'
import { ServiceStore } from './templates/services.ts'
import { PythonEnvs } from './python/envs.ts'
import { pipelineService } from './vdag/pipeline.ts'
import type { PipelineService } from './vdag/pipeline.ts'
import type { LocalStages } from './vdag/pipeline.ts'
import { TaskService } from './tasks/service.ts'
import type { Penalties } from '../mesh/penalties.ts'
import { ModelNotReadyError } from './blocks/host.ts'
import { ProviderProbe } from './executor/provider-probe.ts'
import { generateService } from './serving/generate-service.ts'
import type { GenerateService } from './serving/generate-service.ts'
import { DesiredState } from './state/replica.ts'
import { stateSync } from './state/sync.ts'
import type { StateSync } from './state/sync.ts'
import { importLegacyTables } from './state/legacy.ts'
import { contentService } from './content/service.ts'
import type { ContentService } from './content/service.ts'
import { stageFilesOf } from './content/files.ts'
import type { ModelFiles } from './content/files.ts'
import { agentContent } from './content/wiring.ts'
import { PlanStore, onSplitComplete } from './vdag/plans.ts'
import { SplitRunnerRegistry } from './registry/split-runners.ts'
import { ModelLayerRegistry } from './registry/model-layers.ts'
import { TemplateStore } from './templates/store.ts'
import { Rollouts } from './templates/rollout.ts'
import { DRAIN_MS } from './blocks/assign-service.ts'

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version

/**
 * One agent: identity, SQLite state, hardware readings, the libp2p mesh node,
 * capacity gossip, and the HTTP API. `Agent.start` brings all of it up and
 * writes DIR/agent.json; `stop` takes it down in reverse order.
 */
export class Agent {
  readonly options: AgentOptions
  readonly log: Logger
  readonly db: Db
  readonly splitRunners: SplitRunnerRegistry
  readonly modelLayers: ModelLayerRegistry
  readonly mesh: MeshNode
  readonly gossip: CapacityGossip
  readonly hardware: HardwareMonitor
  readonly metrics: AgentMetrics
  readonly token: string
  readonly epoch: number
  /** the mesh's desired state (components, blocks, vDAGs), replicated to every agent */
  readonly state: DesiredState
  readonly stateSync: StateSync
  readonly components: ComponentRegistry
  /** tokenizers loaded here (blocks' and vDAGs'), shared by the host and the API */
  readonly tokenizers: Tokenizers
  readonly host: InstanceHost
  readonly owner: BlockOwner
  readonly router: Router
  readonly vdags: VdagStore
  readonly plans: PlanStore
  readonly templates: TemplateStore
  private rollouts: Rollouts | undefined
  readonly services: ServiceStore
  readonly tasks: TaskService
  readonly penalties: Penalties
  /** which execution providers load here (probed in the background at start) */
  readonly providerProbe: ProviderProbe
  /** the stage engine of a block running here (throws when there is none, or it is not a ready stage) */
  readonly stages: LocalStages
  /** the content store, the fetcher of model files from peers, and who holds what (issue 15) */
  readonly content: ModelFiles
  private api: FastifyInstance | undefined
  /** /blockmesh/generate/1.0.0: token-level generation for peers serving requests (request migration) */
  private generate: GenerateService | undefined
  /** /blockmesh/infer/1.0.0: OpenAI requests peers tunnel to instances here */
  private tunnel: TunnelServer | undefined
  /** the OpenAI serving layer the tunnel and the generate protocol answer peers with */
  private openai: OpenAIServing | undefined
  /** /blockmesh/assign/1.0.0: peers reconciling blocks order instances started and stopped here */
  private assign: AssignService | undefined
  /** /blockmesh/pipeline/1.0.0: this agent's pipeline stages and the vDAG sequences it drives */
  private pipeline: PipelineService | undefined
  /** /blockmesh/content/1.0.0: peers fetch model files from this agent's content store */
  private contentServer: ContentService | undefined
  private apiUrl = ''
  private readonly peerMemory: PeerMemory
  private stopping: Promise<void> | undefined

  private constructor (init: {
    options: AgentOptions, log: Logger, db: Db, mesh: MeshNode, gossip: CapacityGossip, hardware: HardwareMonitor,
    metrics: AgentMetrics, token: string, epoch: number, providerProbe: ProviderProbe, state: DesiredState, content: ModelFiles
  }) {
    this.options = init.options
    this.log = init.log
    this.db = init.db
    this.splitRunners = new SplitRunnerRegistry(init.db)
    this.modelLayers = new ModelLayerRegistry(init.db)
    this.mesh = init.mesh
    this.gossip = init.gossip
    this.hardware = init.hardware
    this.metrics = init.metrics
    this.token = init.token
    this.epoch = init.epoch
    this.providerProbe = init.providerProbe
    this.peerMemory = new PeerMemory(init.db, init.log)
    this.state = init.state
    this.components = new ComponentRegistry(init.state)
    this.content = init.content
    this.tokenizers = new Tokenizers({ cacheDir: join(init.options.dataDir, 'models'), files: init.content })
    // Python programs (splitters, init processes) share the machine's environments, made once each
    const pythonEnvs = new PythonEnvs({ log: init.log.child({ mod: 'python' }) })
    this.host = new InstanceHost({
      pythonEnvs,
      tokenizers: this.tokenizers,
      db: init.db,
      dataDir: init.options.dataDir,
      modelsDir: join(init.options.dataDir, 'models'),
      maxModelBytes: init.options.maxModelBytes,
      intraOpThreads: init.options.inferenceThreads,
      gpus: () => {
        const real = init.hardware.readings().gpus.filter(g => !g.simulated)
        return { nvidia: real.some(g => /nvidia/i.test(`${g.vendor} ${g.model}`)), any: real.length > 0 }
      },
      log: init.log.child({ mod: 'host' }),
      metrics: init.metrics,
      files: init.content
    })
    // the mesh node's one peer score: offences on every protocol (gossip included) add up to one ban
    this.penalties = init.mesh.score
    watchPeerScore(init.metrics, this.penalties)
    this.stateSync = stateSync({
      node: init.mesh,
      state: init.state,
      gossip: init.gossip,
      penalties: this.penalties,
      log: init.log.child({ mod: 'state' }),
      observer: {
        applied: (via) => { init.metrics.stateChanges.inc({ via }) },
        rejected: (reason) => { init.metrics.stateRejected.inc({ reason }) }
      }
    })
    this.owner = new BlockOwner({
      state: init.state,
      allowSimulatedGpus: init.options.allowSimulatedGpus,
      name: init.options.name,
      acceptRemoteProcesses: init.options.acceptRemoteProcesses,
      mesh: init.mesh,
      gossip: init.gossip,
      host: this.host,
      components: this.components,
      log: init.log.child({ mod: 'owner' }),
      metrics: init.metrics
    })
    this.vdags = new VdagStore(init.state)
    this.plans = new PlanStore(init.state)
    this.templates = new TemplateStore(init.state)
    this.services = new ServiceStore(init.state)
    this.router = new Router({ self: init.mesh.peerId.toString(), gossip: init.gossip, host: this.host, vdags: () => this.vdags.reports(), services: () => this.services.targets(), previousUnits: () => this.services.previousUnits() })
    this.tasks = new TaskService({
      pythonEnvs,
      db: init.db,
      dataDir: init.options.dataDir,
      apiUrl: () => this.apiUrl,
      publicApiUrl: init.options.publicApiUrl,
      kubeconfig: init.options.kubeconfig,
      namespace: init.options.k8sNamespace,
      programs: init.options.splitters,
      log: init.log.child({ mod: 'tasks' }),
      // a split task's plan joins the desired state, so any agent can deploy it (POST /api/vdags/deploy {task_id})
      onComplete: (task) => { onSplitComplete(task, { plans: this.plans, share: async (plan) => await this.content.share(stageFilesOf(plan)), log: init.log }) }
    })
    this.stages = (block: string) => {
      const s = this.host.serving(block)
      if (s.kind !== 'stage') throw new ModelNotReadyError(block, `not a pipeline stage (${s.kind})`)
      return s.engine
    }
  }

  static async start (input: AgentOptionsInput, log?: Logger): Promise<Agent> {
    const options = parseAgentOptions(input)
    const simulatedGpus = options.simulateGpus != null ? parseSimulatedGpus(options.simulateGpus) : []
    const swarmKey = options.swarmKey != null ? readSwarmKeyFile(options.swarmKey) : undefined
    const logger = log ?? createLogger(options.logLevel, { agent: options.name })

    ensureDataDir(options.dataDir)
    rmSync(join(options.dataDir, READY_FILE), { force: true })
    const privateKey = await loadOrCreateIdentity(options.dataDir)
    const token = loadOrCreateToken(options.dataDir)
    const db = openDatabase(join(options.dataDir, DB_FILE))
    const epoch = new MetaStore(db).increment('boot_epoch')

    const hardware = new HardwareMonitor({
      intervalMs: options.heartbeatMs,
      simulatedGpus,
      onError: (what, err) => { logger.warn({ what, err: err.message }, 'hardware reading failed') }
    })
    const mesh = await MeshNode.create({
      privateKey,
      listen: options.listen,
      bootstrap: options.bootstrap,
      swarmKey,
      allow: options.allow,
      log: logger.child({ mod: 'mesh' })
    })
    const providerProbe = new ProviderProbe()
    const state = new DesiredState({ db, peerId: mesh.peerId.toString(), epoch, privateKey, log: logger.child({ mod: 'state' }) })
    let gossip: CapacityGossip | undefined
    let agentRef: Agent | undefined
    const metrics = new AgentMetrics(() => gossip?.peers().filter(p => p.status === 'live').length ?? 0)
    gossip = new CapacityGossip(mesh, {
      identity: { name: options.name, cluster: options.cluster, vendor: options.vendor },
      epoch,
      heartbeatMs: options.heartbeatMs,
      readings: () => hardware.readings(),
      instances: () => agentRef?.host.reports(block => metrics.blockRate(block)) ?? [],
      // every agent holds every vDAG (desired state); records carry them too, for the dashboard's views of any agent
      vdags: () => agentRef?.vdags.reports() ?? [],
      state: () => state.digest(),
      reconciles: () => agentRef?.owner.reports() ?? [],
      providers: () => providerProbe.current(),
      content: () => agentRef?.content.report() ?? { held: [], fetching: [] },
      // a ban is counted once, by the peer score's listener (watchPeerScore), whichever protocol caused it
      observer: { ...metrics.gossipObserver(), banned: undefined },
      log: logger.child({ mod: 'gossip' })
    })
    const content = agentContent({
      db, dataDir: options.dataDir, capBytes: options.contentCapBytes, maxModelBytes: options.maxModelBytes, privateKey, mesh,
      gossip: () => gossip, name: options.name, heartbeatMs: options.heartbeatMs, log: logger
    })
    const agent = new Agent({ options, log: logger, db, mesh, gossip, hardware, metrics, token, epoch, providerProbe, state, content })
    agentRef = agent
    try {
      await agent.bringUp()
    } catch (err) {
      await agent.stop().catch(() => {})
      throw err
    }
    return agent
  }

  private async bringUp (): Promise<void> {
    this.probeProviders()
    await this.hardware.start()
    await this.mesh.start()
    await this.serveProtocols()
    const imported = await importLegacyTables(this.db, this.state, this.mesh.peerId.toString())
    if (imported > 0) this.log.info({ objects: imported }, 'components, blocks and vDAGs of this agent moved into the replicated desired state')
    await this.stateSync.start()
    // the peers of the last run go back into the gossip table before it starts
    const remembered = this.peerMemory.start(this.gossip)
    await this.gossip.start()

    const models = { cacheDir: join(this.options.dataDir, 'models'), maxBytes: this.options.maxModelBytes }
    // rollouts of services run by this agent, and the takeover of those whose agent died
    this.rollouts = new Rollouts({
      owner: this.owner, vdags: this.vdags, router: this.router, gossip: this.gossip, host: this.host, components: this.components, tasks: this.tasks,
      models, content: this.content, services: this.services, templates: this.templates,
      self: this.mesh.peerId.toString(), heartbeatMs: this.gossip.heartbeatMs, drainMs: DRAIN_MS, log: this.log.child({ mod: 'rollouts' })
    })
    this.api = await buildApi({
      name: this.options.name,
      cluster: this.options.cluster,
      vendor: this.options.vendor,
      version: VERSION,
      token: this.token,
      startedAt: Date.now(),
      mesh: this.mesh,
      gossip: this.gossip,
      hardware: this.hardware,
      metrics: this.metrics,
      components: this.components,
      state: this.state,
      tokenizers: this.tokenizers,
      models,
      owner: this.owner,
      host: this.host,
      router: this.router,
      splitRunners: this.splitRunners,
      modelLayers: this.modelLayers,
      content: this.content,
      vdags: this.vdags,
      plans: this.plans,
      services: this.services,
      templates: this.templates,
      rollouts: this.rollouts,
      pipeline: this.started(this.pipeline, 'pipeline'),
      tasks: this.tasks,
      log: this.log,
      generate: this.generate,
      ...this.servingOptions()
    }, { host: this.options.apiHost })
    const address = await this.api.listen({ host: this.options.apiHost, port: this.options.apiPort })
    this.apiUrl = address
    this.host.resume()
    // after a restart, placement waits (a few heartbeats at most) for the peers remembered from the last run
    this.owner.start({ settleMs: remembered > 0 ? 3 * this.options.heartbeatMs : 0 })
    this.writeReadyFile()
    this.log.info({ peerId: this.mesh.peerId.toString(), api: this.apiUrl, multiaddrs: this.mesh.multiaddrs(), epoch: this.epoch }, 'agent ready')
  }

  /** Finds out in the background which execution providers load here; the capacity record carries them once known. */
  private probeProviders (): void {
    this.providerProbe.start().then(r => {
      this.log.info({ providers: r.providers.map(p => p.available ? p.name : `${p.name} (${p.reason ?? 'does not load'})`), ms: r.ms }, 'execution providers probed')
    }, (err: Error) => {
      if (this.stopping == null) this.log.warn({ err: err.message }, 'execution provider probe failed')
    })
  }

  /**
   * The agent's libp2p protocols: instance assignment (a peer that owns a
   * block asks this agent to run or stop an instance) and the inference
   * tunnel (a peer forwards an OpenAI request to an instance running here).
   */
  private async serveProtocols (): Promise<void> {
    const strike = (...offence: Parameters<Penalties['strike']>): void => { this.penalties.strike(...offence) }
    this.pipeline = pipelineService({ local: this.stages, offences: this.penalties, log: this.log.child({ mod: 'pipeline' }) })({
      self: this.mesh.peerId.toString(),
      libp2p: this.mesh.libp2p,
      isBanned: peer => this.mesh.gate.isBanned(peer),
      ping: async (peer, signal) => await this.mesh.libp2p.services.ping.ping(parsePeerId(peer), { signal })
    })
    await this.pipeline.start()
    this.generate = generateService()({ registrar: this.mesh.libp2p, dialer: this.mesh.libp2p, serving: (block, opts) => this.openai != null ? this.openai.hosted(block, opts?.session) : this.host.serving(block), tokenizers: this.tokenizers, isBanned: peer => this.mesh.gate.isBanned(peer), onInvalid: strike, log: this.log.child({ mod: 'generate' }) })
    await this.generate.start()
    this.assign = assignService({ name: this.options.name, acceptRemoteProcesses: this.options.acceptRemoteProcesses })({ node: this.mesh, host: this.host, nodeViews: block => this.owner.nodeViews(block), onInvalid: strike })
    await this.assign.start()

    // the inference tunnel: a peer's request for an instance here, served directly by the OpenAI serving
    this.openai = openAIServing({ mesh: this.mesh, gossip: this.gossip, router: this.router, host: this.host, owner: this.owner, components: this.components, state: this.state, vdags: this.vdags, pipeline: this.started(this.pipeline, 'pipeline'), tokenizers: this.tokenizers, generate: this.generate, ...this.servingOptions(), metrics: this.metrics, log: this.log })
    this.tunnel = tunnelServer()({
      registrar: this.mesh.libp2p,
      serving: this.openai,
      onInvalid: strike,
      log: this.log.child({ mod: 'tunnel' })
    })
    await this.tunnel.start()

    this.contentServer = contentService({ store: this.content.store, uploadBytesPerSecond: this.options.contentUploadRate, log: this.log.child({ mod: 'content' }) })({ registrar: this.mesh.libp2p, score: this.mesh.score })
    await this.contentServer.start()
    const server = this.contentServer
    watchContent(this.metrics, {
      usage: () => this.content.store.usage(),
      files: () => this.content.store.list().length,
      received: () => this.content.received,
      served: () => server.stats().bytes
    })
  }

  /** A service that serveProtocols() has started (bringUp wires the API only after it). */
  private started<T> (service: T | undefined, name: string): T {
    if (service == null) throw new Error(`the ${name} service is not started`)
    return service
  }

  info (): ReadyInfo {
    return {
      pid: process.pid,
      name: this.options.name,
      cluster: this.options.cluster,
      peerId: this.mesh.peerId.toString(),
      apiUrl: this.apiUrl,
      multiaddrs: this.mesh.multiaddrs(),
      startedAt: new Date().toISOString()
    }
  }

  private writeReadyFile (): void {
    const path = join(this.options.dataDir, READY_FILE)
    writeFileSync(path + '.tmp', JSON.stringify(this.info(), null, 2) + '\n', { mode: 0o600 })
    renameSync(path + '.tmp', path)
  }

  async stop (): Promise<void> {
    this.stopping ??= this.shutdown()
    return await this.stopping
  }

  /** The serving settings from the agent's options, for the HTTP API and the serving that answers peers alike. */
  private servingOptions (): { migration: { max: number, maxTokens: number, waitMs: number }, vdagDriver: 'first-stage' | 'here' } {
    return { migration: { max: this.options.migrationMax, maxTokens: this.options.migrationMaxTokens, waitMs: this.options.migrationWaitMs }, vdagDriver: this.options.vdagDriver }
  }

  private async shutdown (): Promise<void> {
    this.log.info('agent stopping')
    rmSync(join(this.options.dataDir, READY_FILE), { force: true })
    this.providerProbe.stop()
    this.gossip.stop()
    this.hardware.stop()
    // blocks first: ending generations ends the response streams that would keep the API from closing
    await this.tasks.stopAll()
    await this.owner.stop()
    await this.stateSync.stop().catch(() => {})
    await this.host.stopAll().catch((err: Error) => { this.log.warn({ err: err.message }, 'stopping instances failed') })
    await this.api?.close().catch(() => {})
    await this.rollouts?.close().catch(() => {})
    await this.generate?.stop().catch(() => {})
    await this.tunnel?.stop().catch(() => {})
    await this.assign?.stop().catch(() => {})
    await this.pipeline?.stop().catch(() => {})
    await this.contentServer?.stop().catch(() => {})
    this.peerMemory.stop()
    await this.mesh.stop().catch((err: Error) => { this.log.warn({ err: err.message }, 'mesh stop failed') })
    this.db.close()
    this.log.info('agent stopped')
  }
}
