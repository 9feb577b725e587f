/**
 * Model templates, their versions and ML services (issue 16, seed 004), as stored in the mesh's replicated
 * desired state. The seed's field names are kept where it defines them (`engine_config.hf_model_id`,
 * `deploymentConfig.replicas / maxReplicas / maxConcurrentQueries`, `scalingConfig`,
 * `modelTemplateVersionRef`); the rest are Blockmesh's own:
 *
 * - `source`: where the model comes from — `{kind: "hub", repo, revision, file?, quantization?}` (a GGUF of a
 *   Hugging Face repo: `file` or else `quantization` picks it, as `model add hf://…` does) or
 *   `{kind: "uri", uri}` (anything `blockmesh model add` takes: a path, hf://, ollama://, https://).
 * - `weights`: the conversion mode of `model add` (q8 default, q4, int8, f32).
 * - `contextLength`: positions per sequence the deployment serves (prompt + completion).
 * - `maxConcurrentSequences`: sequences decoded together (the block's maxBatch); also the concurrency the
 *   memory estimate assumes for the KV cache.
 * - `sampling`: generation defaults (temperature, topP, maxTokens).
 * - `policy`: the block's placement policy (cluster and node filters), as for `POST /api/blocks`.
 * - `model`: what the model is (architecture, parameters, shape, licence, files per quantization): from the
 *   catalogue or the hub's metadata; the memory estimate reads it.
 */
import { z } from 'zod'
import { PolicySchema } from '../scheduler/policy.ts'

export const TEMPLATE_API_VERSION = 'ml.oneblock.ai/v1alpha1'

export const TemplateNameSchema = z.string().min(1).max(56).regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-", starting with a letter or digit')
  .refine(s => !/-v\d+$/.test(s), 'must not end in -vN (that is how versions are named)')
const HubRepo = z.string().min(3).max(200).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/, 'ORG/REPO')
const WeightsMode = z.enum(['q8', 'q4', 'int8', 'f32'])

export const SourceSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('hub'),
    repo: HubRepo,
    revision: z.string().min(1).max(255).regex(/^[A-Za-z0-9._/-]+$/).default('main'),
    /** a GGUF file of the repo; else `quantization` picks one; else model add's preference */
    file: z.string().min(1).max(512).optional(),
    quantization: z.string().min(1).max(32).optional()
  }).strict(),
  z.object({ kind: z.literal('uri'), uri: z.string().min(1).max(4096) }).strict()
])
export type TemplateSource = z.output<typeof SourceSchema>

export const ModelFactsSchema = z.object({
  architecture: z.string().min(1).max(64).optional(),
  parameters: z.number().int().positive().optional(),
  layers: z.number().int().min(1).max(1024).optional(),
  hidden: z.number().int().min(1).max(1 << 20).optional(),
  heads: z.number().int().min(1).max(4096).optional(),
  kvHeads: z.number().int().min(1).max(4096).optional(),
  headDim: z.number().int().min(1).max(4096).optional(),
  vocab: z.number().int().min(1).max(10_000_000).optional(),
  /** the model's own context length */
  contextLength: z.number().int().min(1).max(10_000_000).optional(),
  license: z.string().min(1).max(128).optional(),
  /** GGUF files by quantization, with sizes when the hub gives them */
  files: z.array(z.object({ quantization: z.string().min(1).max(32), file: z.string().min(1).max(512), sizeBytes: z.number().int().nonnegative().nullable() }).strict()).max(64).optional()
}).strict()
export type ModelFacts = z.output<typeof ModelFactsSchema>

/** The seed's engine_config (RayLLM / vLLM): `hf_model_id` gives the source when `source` is absent; the rest is recorded. */
export const EngineConfigSchema = z.object({
  model_id: z.string().min(1).max(256).optional(),
  hf_model_id: HubRepo.optional(),
  type: z.string().min(1).max(64).optional(),
  vLLMArgs: z.string().max(8192).optional()
}).strict()

export const DeploymentConfigSchema = z.object({
  /** instances started (block minInstances) */
  replicas: z.number().int().min(1).max(1024).default(1),
  /** the most instances autoscaling may reach (block maxInstances) */
  maxReplicas: z.number().int().min(1).max(1024).optional(),
  /** requests one instance takes at once (the block's maxBatch bounds what decodes together) */
  maxConcurrentQueries: z.number().int().min(1).max(4096).optional()
}).strict()

export const ScalingConfigSchema = z.object({
  numWorkers: z.number().int().min(1).max(256).optional(),
  numGPUsPerWorker: z.number().min(0).max(64).optional(),
  /** ONNX Runtime threads per instance (the block's `threads`) */
  numCPUsPerWorker: z.number().int().min(0).max(1024).optional()
}).strict()

export const SamplingSchema = z.object({
  temperature: z.number().min(0).max(2).default(0.7),
  topP: z.number().gt(0).max(1).default(0.95),
  maxTokens: z.number().int().min(1).max(1_000_000).default(512)
}).strict()

/** What a version holds (the body of a create or update, less the template's name and description). */
export const VersionSpecSchema = z.object({
  source: SourceSchema.optional(),
  engine_config: EngineConfigSchema.optional(),
  weights: WeightsMode.default('q8'),
  contextLength: z.number().int().min(16).max(1_048_576).default(2048),
  maxConcurrentSequences: z.number().int().min(1).max(256).default(4),
  sampling: SamplingSchema.default({ temperature: 0.7, topP: 0.95, maxTokens: 512 }),
  deploymentConfig: DeploymentConfigSchema.default({ replicas: 1 }),
  scalingConfig: ScalingConfigSchema.optional(),
  policy: PolicySchema.optional(),
  model: ModelFactsSchema.default({})
}).strict().superRefine((v, ctx) => {
  if (v.source == null && v.engine_config?.hf_model_id == null) ctx.addIssue({ code: 'custom', path: ['source'], message: 'required: {kind: "hub", repo, file?|quantization?} or {kind: "uri", uri} (or engine_config.hf_model_id)' })
  const d = v.deploymentConfig
  if (d.maxReplicas != null && d.maxReplicas < d.replicas) ctx.addIssue({ code: 'custom', path: ['deploymentConfig', 'maxReplicas'], message: 'must not be below replicas' })
})
export type VersionSpec = z.output<typeof VersionSpecSchema>
export type VersionSpecInput = z.input<typeof VersionSpecSchema>

/** The source a version deploys: `source`, else the seed's `engine_config.hf_model_id`. */
export function sourceOf (spec: VersionSpec): TemplateSource {
  if (spec.source != null) return spec.source
  return { kind: 'hub', repo: spec.engine_config?.hf_model_id as string, revision: 'main' }
}

/** `model add`'s SOURCE for a version. */
export function sourceUri (s: TemplateSource): string {
  if (s.kind === 'uri') return s.uri
  const rev = s.revision === 'main' ? '' : `@${encodeURIComponent(s.revision)}`
  return `hf://${s.repo}${rev}${s.file != null ? `/${s.file}` : ''}`
}

/** A stored template (ModelTemplate). */
export const StoredTemplateSchema = z.object({
  name: TemplateNameSchema,
  description: z.string().max(2000).optional(),
  /** the hub repo it was created from, if any */
  hf: HubRepo.optional()
}).strict()
export type StoredTemplate = z.output<typeof StoredTemplateSchema>

/** A stored version (ModelTemplateVersion): never changed once written. */
export const StoredVersionSchema = z.object({
  template: TemplateNameSchema,
  version: z.number().int().min(1).max(1_000_000),
  spec: VersionSpecSchema
}).strict()
export type StoredVersion = z.output<typeof StoredVersionSchema>

export function versionName (template: string, version: number): string {
  return `${template}-v${version}`
}

/** NAME-vN → {template, version}; a bare NAME → {template}. */
export function parseVersionRef (ref: string): { template: string, version?: number } {
  const m = /^(.+)-v(\d{1,7})$/.exec(ref)
  return m == null ? { template: ref } : { template: m[1], version: Number(m[2]) }
}

// ------------------------------------------------------------------ API bodies

/** POST /api/templates: a template from a body, or from a hub repo's metadata (`hf`; the body's fields override). */
/** What a template's body may set, when it is created and in each update. */
const EditableFields = {
  description: z.string().max(2000).optional(),
  source: SourceSchema.optional(),
  engine_config: EngineConfigSchema.optional(),
  weights: WeightsMode.optional(),
  contextLength: z.number().int().min(16).max(1_048_576).optional(),
  maxConcurrentSequences: z.number().int().min(1).max(256).optional(),
  sampling: SamplingSchema.partial().optional(),
  deploymentConfig: DeploymentConfigSchema.partial().optional(),
  scalingConfig: ScalingConfigSchema.optional(),
  policy: PolicySchema.optional(),
  model: ModelFactsSchema.optional()
}

export const CreateTemplateBodySchema = z.object({
  name: TemplateNameSchema.optional(),
  /** fill source and model facts from this hub repo's metadata */
  hf: HubRepo.optional(),
  ...EditableFields
}).strict().refine(b => b.hf != null || b.name != null, { message: 'required (or give hf: "ORG/REPO")', path: ['name'] })
  .refine(b => b.hf != null || b.source != null || b.engine_config?.hf_model_id != null, { message: 'required: {kind: "hub", repo, …} or {kind: "uri", uri} (or hf, or engine_config.hf_model_id)', path: ['source'] })
export type CreateTemplateBody = z.output<typeof CreateTemplateBodySchema>

/** PUT /api/templates/:name: the fields to change; the next version is the latest one with these changes. */
export const UpdateTemplateBodySchema = z.object(EditableFields).strict().refine(b => Object.keys(b).length > 0, { message: 'nothing to change' })
export type UpdateTemplateBody = z.output<typeof UpdateTemplateBodySchema>

/** POST /api/templates/:name/deploy (name may be NAME-vN). */
export const DeployTemplateBodySchema = z.object({
  /** instances (block minInstances); default the version's deploymentConfig.replicas */
  replicas: z.number().int().min(1).max(1024).optional(),
  /** the block / served model name; default the template's name */
  name: z.string().min(1).max(64).regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-"').optional(),
  /** only decide (whole, split or refused), deploy nothing */
  dryRun: z.boolean().optional()
}).strict()
export type DeployTemplateBody = z.output<typeof DeployTemplateBodySchema>

/** POST /api/mlservices/:name/rollout: the version to roll the service to. */
export const RolloutBodySchema = z.object({
  /** NAME-vN, or a template's name for its latest version */
  version: z.string().min(1).max(200),
  /** how long the new version may take to serve before the rollout gives up (default 30 min) */
  readyTimeoutMs: z.number().int().min(1000).max(24 * 3600_000).optional()
}).strict()

// ------------------------------------------------------------------ MLService (seed 004)

const K8sName = z.string().min(1).max(253)
const Quantity = z.union([z.string().max(64), z.number()])
const ResourceList = z.record(z.string().max(128), Quantity)
const Resources = z.object({ limits: ResourceList.optional(), requests: ResourceList.optional() }).passthrough()
const WorkerGroupSpec = z.object({
  name: z.string().max(253).optional(),
  replicas: z.number().int().min(0).max(1024).optional(),
  minReplicas: z.number().int().min(0).max(1024).optional(),
  maxReplicas: z.number().int().min(1).max(1024).optional(),
  acceleratorTypes: z.record(z.string().max(128), z.number()).optional(),
  rayStartParams: z.record(z.string().max(128), z.unknown()).optional(),
  resources: Resources.optional(),
  nodeSelector: z.record(z.string().max(253), z.string().max(253)).optional(),
  volume: z.unknown().optional()
}).passthrough()

/**
 * The seed's MLService. Unknown fields are accepted (a Kubernetes manifest carries many) and named in the
 * answer's explanation as not supported; the fields below are checked for their type.
 */
export const MLServiceSchema = z.object({
  apiVersion: z.literal(TEMPLATE_API_VERSION),
  kind: z.literal('MLService'),
  metadata: z.object({
    name: z.string().min(1).max(64).regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-" (it names the block and the served model)'),
    namespace: K8sName.optional(),
    labels: z.record(z.string().max(317), z.string().max(63)).optional(),
    annotations: z.record(z.string().max(317), z.string().max(8192)).optional()
  }).passthrough(),
  spec: z.object({
    /** NAME-vN pins a version; a bare template name takes its latest version */
    modelTemplateVersionRef: z.object({ name: z.string().min(1).max(80), namespace: K8sName.optional() }).passthrough(),
    mlClusterRef: z.object({
      name: K8sName.optional(),
      namespace: K8sName.optional(),
      rayClusterSpec: z.object({
        version: z.string().max(64).optional(),
        image: z.string().max(1024).optional(),
        headGroupSpec: z.record(z.string().max(128), z.unknown()).optional(),
        workerGroupSpec: z.array(WorkerGroupSpec).max(64).optional()
      }).passthrough().optional()
    }).passthrough().optional()
  }).passthrough()
}).passthrough()
export type MLServiceManifest = z.output<typeof MLServiceSchema>
