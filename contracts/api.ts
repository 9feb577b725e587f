/**
 * The agent's HTTP API answers, as one set of types that the agent's routes, the CLI (agent/cli) and the
 * dashboard (renderer/src) all use, so a field renamed on one side fails to type-check on the others
 * instead of drifting (the dashboard once kept a hand-made copy).
 *
 * Types only. Where the agent has the shape already (a zod schema, a record type), it is imported from
 * there, never restated; what is stated here is the answers' envelopes and the few views built only for
 * the API. Everyone imports this module with `import type`: nothing of the agent is bundled into the
 * dashboard, and nothing here is needed at run time (the desktop app ships agent/ and mesh/ only;
 * scripts/import-cycles.ts checks). Imports flow one way: renderer → contracts → agent → mesh; the agent's
 * rooms never import contracts (only its API routes and CLI do), so no folder cycle can go through here.
 */
import type { CapacityRecord, GpuReading, InstanceReport, ProviderStatus, Readings, ReconcileReport, VdagReport } from '../mesh/capacity/record.ts'
import type { StatsSample } from '../agent/stats/history.ts'
import type { Component, ComponentSpec, ModelInfo } from '../agent/registry/components.ts'
import type { BlockView, InstanceStatus, InstanceView } from '../agent/blocks/views.ts'
import type { Vdag } from '../agent/vdag/registry.ts'
import type { Task } from '../agent/tasks/store.ts'
import type { SplitBalance, SplitTaskResult } from '../agent/splitter/program.ts'
import type { ModelPlan, PlanStage } from '../agent/splitter/plan.ts'
import type { ImportProgress } from '../agent/model/import.ts'
import type { HolderView } from '../agent/content/directory.ts'
import type { ContentEntry, TransferProgress } from '../agent/content/types.ts'

export type { BlockView, Component, ContentEntry, HolderView, TransferProgress, ComponentSpec, GpuReading, ImportProgress, InstanceReport, InstanceStatus, InstanceView, ModelInfo, ProviderStatus, Readings, ReconcileReport, ModelPlan, PlanStage, SplitBalance, SplitTaskResult, StatsSample, Task, Vdag, VdagReport }

// ---- mesh: GET /api/node, /api/peers, /api/peers/:id, /api/state, /api/events

/** A peer's capacity record as the API shows it (GET /api/peers/:id), with what this agent knows of the peer. */
export interface PeerJson extends Omit<CapacityRecord, 'v' | 'ts'> {
  /** the agent answering */
  self: boolean
  status: 'live' | 'expired'
  connected: boolean
  lastSeen: string
  lastSeenAgoMs: number
  /** the peer's offence score here (0: none; decays by half every 10 minutes; banned at 25), see mesh/peer-score.ts */
  score: number
}

/** GET /api/peers: this node first, then the peers it knows, by cluster and name. */
export interface PeersAnswer { self: string, heartbeatMs: number, peers: PeerJson[] }

/** GET /api/node: this agent's own record, with its next sequence number and allow-list (null: open mesh). */
export interface NodeAnswer extends PeerJson { heartbeatMs: number, nextSeq: number, allowList: string[] | null }

/** GET /api/state: the replicated desired state held here (equal digests, equal states); objects per collection (components, blocks, vdags, plans). */
export interface StateAnswer { digest: string, changes: number, actors: number, objects: Record<string, number> }

/** GET /api/events, event `hello`: the peers now and every peer's recent samples. */
export interface EventsHello extends PeersAnswer { history: Record<string, StatsSample[]> }
/** GET /api/events, event `peers` (every heartbeat): the peers now and the new sample of each that sent a record. */
export interface EventsPeers extends PeersAnswer { samples: Record<string, StatsSample> }

// ---- system: GET /api/health, /api/auth

export interface HealthAnswer { status: 'ok', name: string, peerId: string, version: string, uptimeSeconds: number, connections: number }
export type AuthAnswer = { authenticated: true } | { authenticated: false, needed: string }

// ---- components and models: /api/components, /api/models

export interface ComponentsAnswer { components: Component[] }

/** An entry of GET /api/models: a component that is a model, with what the model is when it was added. */
export interface ModelSummary {
  uri: string
  name: string
  version: string
  createdAt: string
  contextLength: number | null
  info: ModelInfo | null
  /** the model's files (the ONNX model and its tokenizer bundle) and which agents hold them (this one first) */
  files: ModelFileSummary[]
}
/** A file of a model, by MD5, and where it is in the mesh. */
export interface ModelFileSummary { role: 'model' | 'tokenizer', md5: string, sizeBytes: number | null, holders: HolderView[] }

// ---- content store: /api/content

/** GET /api/content: this agent's content store and the transfers it has in progress. */
export interface ContentAnswer {
  usage: { bytes: number, capBytes: number }
  files: ContentEntry[]
  transfers: TransferProgress[]
}
/** POST /api/content/fetch: the file now held here, and where its bytes came from. */
export interface ContentFetchAnswer { file: ContentEntry, bySource: Record<string, number> }
/** POST /api/content/fetch: each file fetched (or already here), with the bytes that came from each source */
export interface ContentFetchFilesAnswer { files: ContentFetchAnswer[] }
export interface ModelsAnswer { models: ModelSummary[] }

/** One line of the NDJSON answer of POST /api/models when progress is asked for (the last is done or error). */
export type AddModelEvent =
  | { type: 'progress', progress: ImportProgress }
  | { type: 'done', component: Component, cached: boolean, existed: boolean }
  | { type: 'error', error: { code: string, message: string } }

// ---- blocks: /api/blocks

export interface BlocksAnswer { blocks: BlockView[] }

/** DELETE of a component, block or vDAG. */
export interface DeletedAnswer { deleted: string }

// ---- vDAGs: /api/vdags

/** A vDAG in GET /api/vdags: ready when every stage has a ready instance somewhere. */
export interface VdagListed extends Vdag { ready: boolean }
export interface VdagsAnswer { vdags: VdagListed[] }

/** GET /api/vdags/:name: with the route a request would take now (null while a stage has no ready instance). */
export interface VdagAnswer extends VdagListed { route: Array<{ peer: string, block: string }> | null }

/** POST /api/vdags/deploy: the vDAG and its stage blocks, each created or reused (already running). */
export interface VdagDeployAnswer { vdag: Vdag, blocks: Array<{ id: string, reused: boolean }> }

// ---- split tasks and seed registries: /start_model_split_job, /tasks, /split-runner(s), /model-layer(s)

/** Success body of the seed 002 routes. */
export interface RegistrySuccessBody<T> { success: true, data: T }

/** Error body of the seed 002 routes. */
export interface RegistryErrorBody {
  success: false
  error: string
  code: string
  details?: Array<{ field: string, message: string }>
}

export interface SplitJobStarted { success: true, task_id: string }
export type TasksAnswer = RegistrySuccessBody<Task[]>
export type TaskAnswer = RegistrySuccessBody<Task>

// ---- OpenAI-compatible: GET /v1/models

/**
 * A /v1/models entry: OpenAI's fields (created = when the model's component was registered, owned_by = the
 * agent that owns its block), plus the context length and, for added models, what the model is.
 */
export interface ModelCard {
  id: string
  object: 'model'
  created: number
  owned_by: string
  context_length?: number
  model_info?: ModelInfo
}
export interface ModelCardsAnswer { object: 'list', data: ModelCard[] }

// ---- model templates (issue 16): /api/templates, /api/mlservices

export type { TemplateVersionView } from '../agent/templates/store.ts'
export type { Availability, CatalogueSource } from '../agent/templates/catalogue.ts'
export type { VersionEstimate, Decision as DeployDecision } from '../agent/templates/sizing.ts'
export type { FieldNote } from '../agent/templates/mlservice.ts'

/** A template: built-in (catalogue) or stored, with its versions (oldest first) and memory per quantization of its latest version. */
export interface TemplateAnswer {
  name: string
  description: string
  builtin: boolean
  /** the hub repo it was created from */
  hf: string | null
  /** NAME-vN of the latest version */
  latest: string
  license: string | null
  parameters: number | null
  /** the model's own context length */
  contextLength: number | null
  /** GGUF files by quantization */
  sources: Array<import('../agent/templates/catalogue.ts').CatalogueSource>
  /** built-ins: in the weight cache, through PyPI, or only from the hub (computed at request time) */
  availability: import('../agent/templates/catalogue.ts').Availability | null
  /** at the latest version's context length and concurrency; null when the parameter count is unknown */
  estimates: Array<{ quantization: string, totalBytes: number | null, detail: import('../agent/templates/sizing.ts').VersionEstimate | null }>
  versions: Array<import('../agent/templates/store.ts').TemplateVersionView>
}
export interface TemplatesAnswer { templates: TemplateAnswer[] }
export interface TemplateUpdateAnswer { template: TemplateAnswer, version: import('../agent/templates/store.ts').TemplateVersionView }

/** POST /api/templates/:name/deploy (and the deployment of an MLService): the decision with its numbers, and what was done. */
export interface TemplateDeployAnswer {
  template: string
  /** NAME-vN deployed */
  version: string
  /** the block and /v1 model name */
  model: string
  /** what model add was given */
  source: string
  estimate: import('../agent/templates/sizing.ts').VersionEstimate | null
  /** whole / split / refused from the live peers' free memory; null without an estimate */
  decision: import('../agent/templates/sizing.ts').Decision | null
  replicas: number
  maxReplicas: number
  /** false: a dry run; true: deployed whole (`block`), or split (the split task `task` runs, then its plan is deployed as the vDAG `model`) */
  deployed: boolean
  note?: string
  component?: string
  block?: BlockView
  /** a split deployment's split task */
  task?: string
}

/** A service (seed 004's MLService): a template version served under a name, and its rollout to another version, if any. */
export type MLServiceRecord = import('../agent/templates/services.ts').ServiceRecord
export type MLServiceRollout = import('../agent/templates/services.ts').Rollout
export type MLServiceView = MLServiceRecord & { createdAt: string, ready: boolean }
export interface MLServiceAnswer { service: MLServiceView, deployment: TemplateDeployAnswer, explanation: Array<import('../agent/templates/mlservice.ts').FieldNote> }
export interface MLServicesAnswer { services: MLServiceView[] }
/** POST /api/mlservices/:name/rollout, PUT /api/mlservices/:name: the service with its rollout recorded (rolling: false when already at that version). */
export interface MLServiceRollAnswer { service: MLServiceView, rolling: boolean }
export interface MLServiceDeletedAnswer { deleted: string, units: string[] }
