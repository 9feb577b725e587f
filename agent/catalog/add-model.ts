/**
 * `model add`, the mesh's model catalogue's way in: a source (a .gguf, a Hugging Face ONNX export, hf://,
 * ollama://, an http(s) GGUF) becomes a registered component whose files this agent's content store shares.
 * The HTTP API (POST /api/models) and template deployments call it.
 */
import { z } from 'zod'
import type { Logger } from 'pino'
import { ComponentSpecSchema } from '../registry/components.ts'
import type { Component, ComponentRegistry, ComponentSpecInput } from '../registry/components.ts'
import { importModel } from '../model/import.ts'
import type { ImportProgress } from '../model/import.ts'
import { filesOf } from '../content/files.ts'
import type { ModelFiles } from '../content/files.ts'
import { slugOf } from '../model/names.ts'

/** What `model add` needs of the agent. */
export interface AddModelDeps {
  components: ComponentRegistry
  /** where downloads and conversions are cached, and the largest model file taken */
  models: { cacheDir: string, maxBytes: number }
  content: Pick<ModelFiles, 'share'>
  log: Logger
}

export const AddModelBodySchema = z.object({
  /** a local .gguf, a Hugging Face ONNX export directory, hf://ORG/REPO[@REV][/PATH], ollama://NAME[:TAG], or an http(s) URL of a GGUF */
  source: z.string().min(1).max(4096),
  name: z.string().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, ".", "_" and "-"').optional(),
  file: z.string().min(1).max(1024).optional(),
  variant: z.string().min(1).max(64).optional(),
  weights: z.enum(['f32', 'q4', 'q8', 'int8']).optional(),
  contextLength: z.number().int().min(16).max(1_048_576).optional()
}).strict()
export type AddModelBody = z.output<typeof AddModelBodySchema>

/**
 * The component an agent of the mesh already made from this remote source (hf://, http(s)://) with the same
 * settings, if any. Local sources (paths, ollama://) are this machine's files: they are always read.
 */
function alreadyInMesh (deps: AddModelDeps, body: AddModelBody): Component | undefined {
  if (!/^(hf|https?):\/\//i.test(body.source)) return undefined
  return deps.components.list().find(c => {
    const info = c.spec.modelInfo
    if (info?.source !== body.source || c.spec.model == null) return false
    if (body.name != null && c.spec.name !== slugOf(body.name)) return false
    if (body.contextLength != null && c.spec.contextLength !== body.contextLength) return false
    if (body.file != null) return false
    if (body.variant != null && info.quantization.toLowerCase() !== body.variant.toLowerCase()) return false
    const mode = /-(q4|q8|int8|f32)$/.exec(info.converter ?? '')?.[1]
    return info.format !== 'gguf' || mode === (body.weights ?? 'q8')
  })
}

export interface AddedModel { component: Component, cached: boolean, existed: boolean }

/**
 * `model add`: a model from a source turned into a registered component (download, conversion, its files
 * shared from this agent's content store). A model some agent already added from the same hub repo or URL
 * with the same settings is returned as it is (its files come from the peers that hold them, never from the
 * hub a second time). Used by POST /api/models and by template deployments (agent/templates/deploy.ts).
 * `defaults` (generation defaults) apply to a component this call creates.
 */
export async function addModel (ctx: AddModelDeps, body: AddModelBody, opts: { onProgress?: (p: ImportProgress) => void, signal?: AbortSignal, defaults?: ComponentSpecInput['defaults'] } = {}): Promise<AddedModel> {
  const known = alreadyInMesh(ctx, body)
  if (known != null) {
    ctx.log.info({ component: known.uri, source: body.source }, 'model already in the mesh: not downloaded again')
    return { component: known, cached: true, existed: true }
  }
  const imported = await importModel(body.source, { ...ctx.models, ...body, onProgress: opts.onProgress, signal: opts.signal })
  const spec = ComponentSpecSchema.parse(opts.defaults != null ? { ...imported.spec, defaults: opts.defaults } : imported.spec)
  // the model's files join this agent's content store (pinned), so any host in the mesh fetches them from here
  await ctx.content.share(filesOf(spec), opts.signal)
  const uri = `${spec.name}:${spec.version}`
  const existing = ctx.components.list().find(c => c.uri === uri)
  const component = existing ?? await ctx.components.create(spec)
  ctx.log.info({ component: component.uri, source: body.source, cached: imported.cached }, existing != null ? 'model already registered' : 'model added')
  return { component, cached: imported.cached, existed: existing != null }
}
