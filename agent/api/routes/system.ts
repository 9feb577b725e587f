import type { FastifyInstance } from 'fastify'
import type { ApiContext } from '../context.ts'
import { checkBearer } from '../auth.ts'
import type { AuthAnswer, HealthAnswer } from '../../../contracts/api.ts'

export function registerSystemRoutes (app: FastifyInstance, ctx: ApiContext): void {
  app.get('/api/health', async (): Promise<HealthAnswer> => ({
    status: 'ok',
    name: ctx.name,
    peerId: ctx.mesh.peerId.toString(),
    version: ctx.version,
    uptimeSeconds: Math.round((Date.now() - ctx.startedAt) / 1000),
    connections: ctx.mesh.libp2p.getConnections().length
  }))

  /**
   * Checks a token without changing anything (the dashboard's login): 200 with
   * { authenticated: true } for the agent's token, 401 for a wrong one, and
   * { authenticated: false } without an Authorization header.
   */
  app.get('/api/auth', async (req): Promise<AuthAnswer> => {
    if (req.headers.authorization == null) return { authenticated: false, needed: 'requests that change state (POST, PUT, DELETE), including /v1 inference' }
    checkBearer(req.headers.authorization, ctx.token)
    return { authenticated: true }
  })

  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', ctx.metrics.registry.contentType)
    return await ctx.metrics.registry.metrics()
  })
}
