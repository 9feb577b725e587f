import { z } from 'zod'
import type { FastifyInstance } from 'fastify'
import type { ApiContext } from '../context.ts'
import { parseWith } from '../validate.ts'
import { ComponentSpecSchema } from '../../registry/components.ts'
import type { ComponentSpecInput } from '../../registry/components.ts'
import { importModel } from '../../model/import.ts'
import type { ImportProgress } from '../../model/import.ts'
import { AgentError } from '../../errors.ts'
import { filesOf } from '../../content/files.ts'
import type { AddModelEvent, Component, ModelsAnswer } from '../../../contracts/api.ts'
import { slugOf } from '../../model/names.ts'

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
function alreadyInMesh (ctx: ApiContext, body: AddModelBody): Component | undefined {
  if (!/^(hf|https?):\/\//i.test(body.source)) return undefined
  return ctx.components.list().find(c => {
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
 * hub a second time). Used by POST /api/models and by template deployments (agent/api/routes/templates.ts).
 * `defaults` (generation defaults) apply to a component this call creates.
 */
export async function addModel (ctx: ApiContext, body: AddModelBody, opts: { onProgress?: (p: ImportProgress) => void, signal?: AbortSignal, defaults?: ComponentSpecInput['defaults'] } = {}): Promise<AddedModel> {
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

/**
 * Models as components: POST /api/models onboards a model from a source (download, conversion) and
 * registers it; with `Accept: application/x-ndjson` the answer streams progress lines, then the result.
 * Adding the same model again returns the existing component.
 */
export function registerModelRoutes (app: FastifyInstance, ctx: ApiContext): void {
  app.get('/api/models', async (): Promise<ModelsAnswer> => ({
    models: ctx.components.list().filter(c => c.spec.modelInfo != null || c.spec.model != null).map(c => ({
      uri: c.uri,
      name: c.spec.name,
      version: c.spec.version,
      createdAt: c.createdAt,
      contextLength: c.spec.contextLength ?? null,
      info: c.spec.modelInfo ?? null,
      files: [
        ...(c.spec.model != null ? [{ role: 'model' as const, md5: c.spec.model.md5, sizeBytes: c.spec.model.sizeBytes ?? ctx.content.store.get(c.spec.model.md5)?.size ?? null, holders: ctx.content.holders(c.spec.model.md5) }] : []),
        ...(c.spec.tokenizer.type === 'bundle' ? [{ role: 'tokenizer' as const, md5: c.spec.tokenizer.md5, sizeBytes: ctx.content.store.get(c.spec.tokenizer.md5)?.size ?? null, holders: ctx.content.holders(c.spec.tokenizer.md5) }] : [])
      ]
    }))
  }))

  app.post('/api/models', async (req, reply) => {
    const body = parseWith(AddModelBodySchema, req.body)
    const ac = new AbortController()
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) ac.abort() })
    const streaming = /application\/x-ndjson/.test(req.headers.accept ?? '')
    const send = (e: AddModelEvent): void => { if (!reply.raw.destroyed) reply.raw.write(JSON.stringify(e) + '\n') }
    let lastAt = 0
    const onProgress = (p: ImportProgress): void => {
      if (!streaming) return
      const now = Date.now()
      const final = 'done' in p ? p.done === p.total : p.receivedBytes === p.totalBytes
      if (!final && now - lastAt < 250) return
      lastAt = now
      send({ type: 'progress', progress: p })
    }
    if (streaming) {
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-cache' })
    }
    try {
      const result = { type: 'done' as const, ...await addModel(ctx, body, { onProgress, signal: ac.signal }) }
      if (!streaming) return await reply.status(result.existed ? 200 : 201).send(result)
      send(result)
    } catch (err) {
      if (!streaming) throw err
      const e = err instanceof AgentError ? { code: err.code, message: err.message } : { code: 'internal_error', message: (err as Error).message }
      ctx.log.warn({ source: body.source, err: e.message }, 'model add failed')
      send({ type: 'error', error: e })
    } finally {
      if (streaming && !reply.raw.destroyed) reply.raw.end()
    }
  })
}
