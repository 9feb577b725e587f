import type { FastifyInstance } from 'fastify'
import type { ApiContext } from '../context.ts'
import { parseWith } from '../validate.ts'
import type { ImportProgress } from '../../model/import.ts'
import { AgentError } from '../../errors.ts'
import type { AddModelEvent, ModelsAnswer } from '../../../contracts/api.ts'
import { AddModelBodySchema, addModel } from '../../catalog/add-model.ts'

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
