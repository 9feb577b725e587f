// Shapes of the agent's HTTP API answers the dashboard reads: the agent's own types, from the shared
// contracts (contracts/api.ts), never a copy. `import type` only: nothing of the agent is bundled.
import type * as api from '../../contracts/api.ts'

export type {
  AddModelEvent,
  Availability,
  CatalogueSource,
  DeployDecision,
  MLServiceRecord,
  MLServicesAnswer,
  MLServiceRollAnswer,
  MLServiceView,
  Component,
  ComponentSpec,
  ContentAnswer,
  ContentEntry,
  ContentFetchAnswer,
  EventsHello,
  EventsPeers,
  SplitBalance,
  AuthAnswer,
  BlocksAnswer,
  ComponentsAnswer,
  ContentFetchFilesAnswer,
  ModelCardsAnswer,
  TasksAnswer,
  VdagsAnswer,
  SplitTaskResult,
  ModelPlan,
  PlanStage,
  HolderView,
  ImportProgress,
  InstanceView,
  ModelInfo,
  ModelsAnswer,
  ModelSummary,
  ProviderStatus,
  Task,
  TemplateAnswer,
  TemplateDeployAnswer,
  TemplatesAnswer,
  TemplateVersionView,
  VdagDeployAnswer
} from '../../contracts/api.ts'

export type Gpu = api.GpuReading
export type Sample = api.StatsSample
export type Block = api.BlockView
export type Vdag = api.VdagListed
export type ModelEntry = api.ModelCard

/**
 * An instance a peer reports, as far as the dashboard reads it (a Pick: a field renamed in the agent fails
 * to type-check here); load-balancing details (affinity, session TTL, term) are the router's business.
 */
export type InstanceReport = Pick<api.InstanceReport, 'block' | 'instance' | 'owner' | 'status' | 'error' | 'provider' | 'component' | 'active' | 'queued' | 'tokensPerSecond'>

/** A peer as the dashboard reads it: the API's PeerJson, with its instances as above and providers read defensively. */
export interface Peer extends Omit<api.PeerJson, 'instances' | 'providers'> {
  instances: InstanceReport[]
  /** empty until the agent's probe ends; the view treats absent as empty */
  providers?: api.ProviderStatus[]
}

