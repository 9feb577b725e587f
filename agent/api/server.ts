import Fastify from 'fastify'
import type { IncomingMessage } from 'node:http'
import type { FastifyInstance, FastifyError, FastifyBaseLogger } from 'fastify'
import type { ApiContext } from './context.ts'
import { AgentError } from '../errors.ts'
import { checkBearer, hostAllowed, isLoopbackAddress, isStateChanging } from './auth.ts'
import { registerSystemRoutes } from './routes/system.ts'
import { registerMeshRoutes } from './routes/mesh.ts'
import { registerHardwareRoutes } from './routes/hardware.ts'
import { registerDashboardRoutes } from './routes/dashboard.ts'
import { CSP } from './csp.ts'
import { registerEventRoutes } from './routes/events.ts'
import { registerComponentRoutes } from './routes/components.ts'
import { registerModelRoutes } from './routes/models.ts'
import { registerContentRoutes } from './routes/content.ts'
import { registerBlockRoutes } from './routes/blocks.ts'
import { registerOpenAIRoutes } from './routes/openai.ts'
import { openAIErrorBody, openAIErrorFrom } from '../openai/errors.ts'
import { registerRegistryRoutes } from './routes/registries.ts'
import { registerTaskRoutes } from './routes/tasks.ts'
import { registerVdagRoutes } from './routes/vdags.ts'
import { registerTemplateRoutes } from './routes/templates.ts'

/** JSON error body used by every /api route: { error: { code, message, details? } } */
export function errorBody (code: string, message: string, details?: unknown): { error: { code: string, message: string, details?: unknown } } {
  return { error: details === undefined ? { code, message } : { code, message, details } }
}

export interface ApiOptions {
  host: string
  /** Request bodies larger than this are refused with 413. */
  bodyLimit?: number
}

/** Bodies declared over the limit but under this are let in and discarded after the 413, so that the client reads the answer. */
const DRAIN_BYTES = 16 * 1024 * 1024
/** How long an over-limit body is read and discarded before the 413 goes out regardless. */
const DRAIN_MS = 10_000

/** Reads a request's body to its end and drops it; resolves at the end, on close or error, or after `ms`. */
async function discardBody (raw: IncomingMessage, ms: number): Promise<void> {
  if (raw.complete) return
  await new Promise<void>(resolve => {
    const done = (): void => {
      clearTimeout(timer)
      raw.off('end', done).off('close', done).off('error', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    raw.on('end', done).on('close', done).on('error', done)
    raw.resume()
  })
}

export async function buildApi (ctx: ApiContext, opts: ApiOptions): Promise<FastifyInstance> {
  const bodyLimit = opts.bodyLimit ?? 1024 * 1024
  const app = Fastify({
    // per-request lines only at debug: the API logger starts at warn unless the agent runs at debug/trace
    loggerInstance: ctx.log.child({ mod: 'api' }, { level: ['debug', 'trace'].includes(ctx.log.level) ? ctx.log.level : 'warn' }) as FastifyBaseLogger,
    bodyLimit,
    return503OnClosing: true
  })
  const loopback = isLoopbackAddress(opts.host)

  app.addHook('onRequest', async (req, reply) => {
    // by route pattern, so the label stays bounded (paths carry ids)
    ctx.metrics.httpRequests.inc({ method: req.method, route: req.routeOptions.url ?? 'none' })
    reply.header('content-security-policy', CSP)
    reply.header('x-content-type-options', 'nosniff')
    reply.header('referrer-policy', 'no-referrer')
    if (!hostAllowed(req.headers.host, loopback)) {
      throw new AgentError(`Host ${JSON.stringify(req.headers.host ?? '')} is not a loopback name; this API listens on loopback only`, 'forbidden_host', 403)
    }
    if (isStateChanging(req.method)) {
      try {
        checkBearer(req.headers.authorization, ctx.token)
      } catch (err) {
        // a split task's own token, for its status updates and registry writes
        const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1]
        if (bearer == null || !ctx.tasks.authorizes(bearer, req.method, req.url.split('?')[0])) throw err
      }
    }
    // a body whose declared length is over the limit is refused without being parsed. Fastify's own check, and
    // Node when the client asked for `Connection: close`, close the socket as soon as the answer is written, and a
    // client still sending then loses the answer to a reset (EPIPE). So a body up to DRAIN_BYTES is read and
    // discarded first (bounded in time), and the 413 goes out once the client has finished sending; a larger
    // one is answered at once and its connection closed.
    const declared = Number(req.headers['content-length'] ?? NaN)
    if (Number.isFinite(declared) && declared > bodyLimit) {
      if (declared > DRAIN_BYTES) reply.header('connection', 'close')
      else await discardBody(req.raw, DRAIN_MS)
      throw new AgentError(`the request body is ${declared} bytes; this API takes at most ${bodyLimit}`, 'body_too_large', 413)
    }
  })

  app.setErrorHandler((err: FastifyError | AgentError, req, reply) => {
    if (req.url.startsWith('/v1/')) {
      // OpenAI clients expect OpenAI's error shape (the inference tunnel answers with the same)
      const e = openAIErrorFrom(err)
      if (e.internal) req.log.error({ err }, 'request failed')
      void reply.status(e.status).send(e.body)
      return
    }
    if (err instanceof AgentError) {
      void reply.status(err.status).send(errorBody(err.code, err.message, err.details))
      return
    }
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500
    if (status >= 500) req.log.error({ err }, 'request failed')
    const code = status === 413 ? 'body_too_large' : status === 415 ? 'unsupported_media_type' : status < 500 ? 'invalid_request' : 'internal_error'
    void reply.status(status).send(errorBody(code, status < 500 ? err.message : 'internal error'))
  })
  app.setNotFoundHandler((req, reply) => {
    const message = `no route ${req.method} ${req.url.split('?')[0]}`
    void reply.status(404).send(req.url.startsWith('/v1/') ? openAIErrorBody(404, message, 'not_found') : errorBody('not_found', message))
  })

  registerSystemRoutes(app, ctx)
  registerMeshRoutes(app, ctx)
  registerHardwareRoutes(app, ctx)
  registerComponentRoutes(app, ctx)
  registerModelRoutes(app, ctx)
  registerContentRoutes(app, ctx)
  registerBlockRoutes(app, ctx)
  registerOpenAIRoutes(app, ctx)
  registerVdagRoutes(app, ctx)
  registerTaskRoutes(app, ctx)
  registerTemplateRoutes(app, ctx)
  registerRegistryRoutes(app, { runners: ctx.splitRunners, layers: ctx.modelLayers, log: ctx.log })
  registerEventRoutes(app, ctx)
  registerDashboardRoutes(app)
  return app
}
