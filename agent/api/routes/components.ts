import type { FastifyInstance } from 'fastify'
import type { ApiContext } from '../context.ts'
import { ComponentSpecSchema } from '../../registry/components.ts'
import { parseWith } from '../validate.ts'
import { filesOf } from '../../content/files.ts'
import type { Component, ComponentsAnswer, DeletedAnswer } from '../../../contracts/api.ts'

export function registerComponentRoutes (app: FastifyInstance, ctx: ApiContext): void {
  app.post('/api/components', async (req, reply) => {
    const spec = parseWith(ComponentSpecSchema, req.body)
    // an existing name:version is refused before anything else happens
    ctx.components.assertNew(spec)
    // its files on this machine join the content store, so hosts elsewhere fetch them from here: first, so a
    // file the store fails to take (an I/O error) fails the request before the component exists anywhere
    const shared = await ctx.content.share(filesOf(spec))
    const component = await ctx.components.create(spec)
    ctx.log.info({ component: component.uri, shared: shared.added.length, ...(shared.skipped.length > 0 ? { notShared: shared.skipped } : {}) }, 'component created')
    return await reply.status(201).send(component)
  })
  app.get('/api/components', async (): Promise<ComponentsAnswer> => ({ components: ctx.components.list() }))
  app.get<{ Params: { uri: string } }>('/api/components/:uri', async (req): Promise<Component> => ctx.components.get(req.params.uri))
  app.delete<{ Params: { uri: string } }>('/api/components/:uri', async (req): Promise<DeletedAnswer> => {
    await ctx.components.delete(req.params.uri)
    return { deleted: req.params.uri }
  })
}
