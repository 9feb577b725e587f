import type { Logger } from 'pino'
import type { MeshNode } from '../../mesh/node.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { HardwareMonitor } from '../hardware/monitor.ts'
import type { AgentMetrics } from '../metrics.ts'
import type { BlockOwner } from '../blocks/owner.ts'
import type { InstanceHost } from '../blocks/host.ts'
import type { Router } from '../blocks/router.ts'
import type { SplitRunnerRegistry } from '../registry/split-runners.ts'
import type { ModelLayerRegistry } from '../registry/model-layers.ts'
import type { PipelineClient } from '../vdag/pipeline.ts'
import type { VdagStore } from '../vdag/registry.ts'
import type { DesiredState } from '../state/replica.ts'
import type { TaskService } from '../tasks/service.ts'
import type { ComponentRegistry } from '../registry/components.ts'
import type { Tokenizers } from '../model/tokenizers/load.ts'
import type { GenerateService } from '../serving/generate-service.ts'
import type { MigrationSettings } from '../serving/migrate.ts'
import type { ModelFiles } from '../content/files.ts'
import type { ServiceStore } from '../templates/services.ts'
import type { PlanStore } from '../vdag/plans.ts'
import type { TemplateStore } from '../templates/store.ts'
import type { Rollouts } from '../templates/rollout.ts'

/** What the HTTP routes may reach of the running agent. */
export interface ApiContext {
  name: string
  cluster: string
  vendor: string
  version: string
  token: string
  startedAt: number
  mesh: MeshNode
  gossip: CapacityGossip
  hardware: HardwareMonitor
  metrics: AgentMetrics
  components: ComponentRegistry
  tokenizers: Tokenizers
  /** where model add keeps downloads and conversions, and the largest model file accepted */
  models: { cacheDir: string, maxBytes: number }
  /** the content store, the fetcher of model files from peers, and who holds what */
  content: ModelFiles
  /** the mesh's desired state, replicated here */
  state: DesiredState
  /** the blocks of the mesh, and the reconciliation of those this agent reconciles */
  owner: BlockOwner
  /** instances this agent runs */
  host: InstanceHost
  router: Router
  /** the seed's split-runner and model-layer registries (SQLite, this agent's own) */
  splitRunners: SplitRunnerRegistry
  modelLayers: ModelLayerRegistry
  /** the vDAGs of the mesh */
  vdags: VdagStore
  /** split plans replicated from the agents that ran their tasks */
  plans: PlanStore
  /** model templates and their versions (seed 004) */
  templates: TemplateStore
  /** service rollouts run by this agent */
  rollouts: Rollouts
  /** ML services (template versions served under a name), and the names the router resolves through them */
  services: ServiceStore
  /** the vDAG pipeline (drivers of requests served here open their sequences through it) */
  pipeline: PipelineClient
  tasks: TaskService
  log: Logger
  /** /blockmesh/generate/1.0.0 (token-level generation on peers' instances); absent: requests to peers are tunnelled */
  generate?: GenerateService
  /** request migration limits (absent: the defaults) */
  migration?: MigrationSettings
  /** where a vDAG request arriving here is driven (default: on its first stage's host) */
  vdagDriver?: 'first-stage' | 'here'
}
