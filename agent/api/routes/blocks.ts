import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import type { ApiContext } from '../context.ts'
import { BlockSpecSchema } from '../../registry/blocks.ts'
import { parseWith } from '../validate.ts'
import type { BlocksAnswer, BlockView, DeletedAnswer } from '../../../contracts/api.ts'

const ScaleBody = z.object({ instances: z.number().int().min(0).max(1024) }).strict()

export function registerBlockRoutes (app: FastifyInstance, ctx: ApiContext): void {
  /** Creates a block owned by this agent and places its first instances (the answer says where, or why not). */
  app.post('/api/blocks', async (req, reply) => {
    const spec = parseWith(BlockSpecSchema, req.body)
    const block = await ctx.owner.create(spec)
    return await reply.status(201).send(block)
  })
  app.get('/api/blocks', async (): Promise<BlocksAnswer> => ({ blocks: ctx.owner.list() }))
  app.get<{ Params: { id: string } }>('/api/blocks/:id', async (req): Promise<BlockView> => ctx.owner.get(req.params.id))
  app.delete<{ Params: { id: string } }>('/api/blocks/:id', async (req): Promise<DeletedAnswer> => {
    await ctx.owner.delete(req.params.id)
    return { deleted: req.params.id }
  })
  app.put<{ Params: { id: string } }>('/api/blocks/:id/scale', async (req): Promise<BlockView> => {
    const body = parseWith(ScaleBody, req.body)
    return await ctx.owner.scale(req.params.id, body.instances)
  })
  /** Instances this agent runs, whoever owns their blocks. */
  app.get('/api/instances', async () => ({ instances: ctx.host.list() }))
}
