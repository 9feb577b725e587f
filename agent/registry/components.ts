import { z } from 'zod'
import type { DesiredState } from '../state/replica.ts'
import { AgentError, NotFoundError } from '../errors.ts'
import { SizeSchema } from '../units.ts'

const slug = z.string().min(1).max(64).regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-", starting with a letter or digit')

const ArtifactUrl = z.string().min(1).max(4096)
const Md5 = z.string().regex(/^[a-fA-F0-9]{32}$/, '32 hex digits').transform(s => s.toLowerCase())

/**
 * How a model's text is tokenized: `byte` for the generated models; `bundle` for real models — a
 * tokenizer bundle file (tokenizer.json, stop ids, chat template; agent/model/tokenizers/bundle.ts)
 * fetched like a model file by whichever agent tokenizes.
 */
export const TokenizerSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('byte') }).strict(),
  z.object({ type: z.literal('bundle'), url: ArtifactUrl, md5: Md5 }).strict()
])
export type TokenizerSpec = z.output<typeof TokenizerSchema>

/** What a model is, recorded when it is added (blockmesh model add). */
export const ModelInfoSchema = z.object({
  format: z.enum(['gguf', 'onnx', 'generated']),
  architecture: z.string().max(64),
  name: z.string().max(256).optional(),
  parameters: z.number().int().min(0),
  quantization: z.string().max(64),
  contextLength: z.number().int().min(1),
  vocabSize: z.number().int().min(1),
  layers: z.number().int().min(1).optional(),
  hidden: z.number().int().min(1).optional(),
  heads: z.number().int().min(1).optional(),
  kvHeads: z.number().int().min(1).optional(),
  /** the model brings its own chat template (else the documented fallback format is used) */
  chatTemplate: z.boolean(),
  /** what the user named: a path, hf://…, ollama://…, a URL */
  source: z.string().max(4096),
  /** digest of the source file, e.g. sha256:… */
  digest: z.string().max(128),
  converter: z.string().max(64).optional()
}).strict()
export type ModelInfo = z.output<typeof ModelInfoSchema>

export const GenerationDefaultsSchema = z.object({
  maxTokens: z.number().int().min(1).max(1_000_000).default(256),
  temperature: z.number().min(0).max(2).default(0.7),
  topP: z.number().gt(0).max(1).default(0.95)
}).strict()

/** An OpenAI-compatible server the block forwards to (seed 000: external system, e.g. vLLM). */
export const ExternalSchema = z.object({
  /** base URL; absent: the init process's endpoint */
  url: z.string().url().max(2048).optional(),
  /** the model name the server serves */
  model: z.string().min(1).max(256),
  apiKey: z.string().max(4096).optional(),
  healthPath: z.string().startsWith('/').max(256).default('/v1/models')
}).strict()

/** A process the agent starts before the block and stops with it (seed 000: init container). */
export const InitSchema = z.object({
  /** executable: absolute path, a name on PATH, or `node` (the agent's own Node) */
  command: z.string().min(1).max(4096),
  /** ${PORT} is replaced by a free port chosen for the process */
  args: z.array(z.string().max(4096)).max(256).default([]),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names'), z.string().max(8192)).default({}),
  /** path polled on the process's URL (or a full URL) until it answers 2xx */
  readiness: z.string().min(1).max(2048).default('/health'),
  timeoutSeconds: z.number().int().min(1).max(3600).default(120)
}).strict()

/**
 * A deployable unit (seed 000: "component"): what to run and what it needs.
 * Its URI is name:version. Runtime `onnx` runs a model file on this mesh;
 * runtime `external` forwards to an OpenAI-compatible server.
 */
export const ComponentSpecSchema = z.object({
  name: slug,
  version: z.string().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9._+-]*$/, 'letters, digits, ".", "_", "+" and "-"'),
  description: z.string().max(2000).optional(),
  runtime: z.enum(['onnx', 'external']),
  model: z.object({
    /** a local path, file:// URL, http(s):// URL or s3://BUCKET/KEY */
    url: ArtifactUrl,
    md5: Md5,
    sizeBytes: z.number().int().positive().optional(),
    /**
     * files the ONNX model keeps its weights in (external data, e.g. `model.onnx_data`), by the name the
     * model gives them: a host puts each beside the model before loading it
     */
    externalData: z.array(z.object({
      name: z.string().min(1).max(255).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a file name (no folders)'),
      url: ArtifactUrl,
      md5: Md5,
      sizeBytes: z.number().int().positive().optional()
    }).strict()).max(64).optional()
  }).strict().optional(),
  external: ExternalSchema.optional(),
  init: InitSchema.optional(),
  /** a pipeline stage of a split model (its model file is one stage; a vDAG chains the stages) */
  stage: z.object({
    index: z.number().int().min(0).max(255),
    worldSize: z.number().int().min(1).max(256),
    layers: z.tuple([z.number().int().min(0), z.number().int().min(1)]),
    /** MD5 of the model the stage was cut from */
    source: z.string().regex(/^[a-f0-9]{32}$/)
  }).strict().optional(),
  tokenizer: TokenizerSchema.default({ type: 'byte' }),
  modelInfo: ModelInfoSchema.optional(),
  /** positions the model supports: prompt + completion (onnx) */
  contextLength: z.number().int().min(16).max(1_048_576).optional(),
  defaults: GenerationDefaultsSchema.default({ maxTokens: 256, temperature: 0.7, topP: 0.95 }),
  resources: z.object({
    gpuMemory: SizeSchema.optional(),
    cpus: z.number().min(0).max(4096).optional(),
    ram: SizeSchema.optional()
  }).strict().default({}),
  metadata: z.record(z.string().max(128), z.unknown()).optional()
}).strict().superRefine((s, ctx) => {
  const need = (path: string, message: string): void => { ctx.addIssue({ code: 'custom', path: [path], message }) }
  if (s.runtime === 'onnx') {
    if (s.model == null) need('model', 'required for runtime onnx: { url, md5 }')
    if (s.contextLength == null) need('contextLength', 'required for runtime onnx')
    if (s.external != null) need('external', 'only for runtime external')
  } else {
    if (s.external == null) need('external', 'required for runtime external: { url, model }')
    else if (s.external.url == null && s.init == null) ctx.addIssue({ code: 'custom', path: ['external', 'url'], message: 'required unless an init process provides the endpoint' })
    if (s.model != null) need('model', 'only for runtime onnx')
  }
})
export type ComponentSpec = z.output<typeof ComponentSpecSchema>
export type ComponentSpecInput = z.input<typeof ComponentSpecSchema>

export interface Component { uri: string, spec: ComponentSpec, createdAt: string }

export function componentUri (spec: Pick<ComponentSpec, 'name' | 'version'>): string {
  return `${spec.name}:${spec.version}`
}

export class ConflictError extends AgentError {
  constructor (message: string) {
    super(message, 'conflict', 409)
    this.name = 'ConflictError'
  }
}

/**
 * Components, in the mesh's replicated desired state (agent/state): a component registered on any agent
 * is known to every agent. A component version is immutable: publish a new version to change it.
 */
export class ComponentRegistry {
  private readonly state: DesiredState
  constructor (state: DesiredState) { this.state = state }

  /** Refuses a name:version that exists (a version is immutable). */
  assertNew (spec: ComponentSpec): void {
    if (this.state.get('components', componentUri(spec)) != null) throw new ConflictError(`component ${componentUri(spec)} exists; publish a new version instead`)
  }

  async create (spec: ComponentSpec): Promise<Component> {
    const uri = componentUri(spec)
    const e = await this.state.put('components', uri, spec, () => { this.assertNew(spec) })
    return { uri, spec, createdAt: new Date(e.created).toISOString() }
  }

  find (uri: string): Component | undefined {
    const e = this.state.get<unknown>('components', uri)
    if (e == null) return undefined
    const parsed = ComponentSpecSchema.safeParse(e.value)
    return parsed.success ? { uri, spec: parsed.data, createdAt: new Date(e.created).toISOString() } : undefined
  }

  /** Who wrote the component (the replicated state checks a value's writer against its signed change). */
  author (uri: string): string | undefined {
    return this.state.get<unknown>('components', uri)?.writer
  }

  get (uri: string): Component {
    const c = this.find(uri)
    if (c == null) throw new NotFoundError(`no component ${uri}`)
    return c
  }

  list (): Component[] {
    return this.state.list<unknown>('components')
      .map(e => this.find(e.id))
      .filter((c): c is Component => c != null)
      .sort((a, b) => a.spec.name.localeCompare(b.spec.name) || a.createdAt.localeCompare(b.createdAt))
  }

  async delete (uri: string): Promise<void> {
    this.get(uri)
    await this.state.remove('components', uri, () => {
      const users = this.state.list<{ spec: { component: string } }>('blocks').filter(b => b.value?.spec?.component === uri).map(b => b.id)
      if (users.length > 0) throw new ConflictError(`component ${uri} is used by block(s) ${users.join(', ')}; delete them first`)
    })
  }
}
