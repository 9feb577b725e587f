import type { FastifyInstance } from 'fastify'
import type { ApiContext } from '../context.ts'
import { BlockSpecSchema } from '../../registry/blocks.ts'
import { parseWith } from '../validate.ts'

export function registerBlockRoutes (app: FastifyInstance, ctx: ApiContext): void {
  app.post('/api/blocks', async (req, reply) => {
    const spec = parseWith(BlockSpecSchema, req.body)
    const block = ctx.blocks.create(spec)
    ctx.log.info({ block: block.id, component: block.component }, 'block created')
    return await reply.status(201).send(ctx.blocks.get(block.id))
  })
  app.get('/api/blocks', async () => ({ blocks: ctx.blocks.list() }))
  app.get<{ Params: { id: string } }>('/api/blocks/:id', async (req) => ctx.blocks.get(req.params.id))
  app.delete<{ Params: { id: string } }>('/api/blocks/:id', async (req) => {
    await ctx.blocks.delete(req.params.id)
    return { deleted: req.params.id }
  })
}
