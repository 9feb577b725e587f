import type { FastifyInstance } from 'fastify'
import type { ApiContext } from '../context.ts'

export function registerSystemRoutes (app: FastifyInstance, ctx: ApiContext): void {
  app.get('/api/health', async () => ({
    status: 'ok',
    name: ctx.name,
    peerId: ctx.mesh.peerId.toString(),
    version: ctx.version,
    uptimeSeconds: Math.round((Date.now() - ctx.startedAt) / 1000),
    connections: ctx.mesh.libp2p.getConnections().length
  }))

  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', ctx.metrics.registry.contentType)
    return await ctx.metrics.registry.metrics()
  })
}
