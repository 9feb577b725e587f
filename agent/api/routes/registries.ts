import { z } from 'zod'
import type { FastifyError, FastifyInstance } from 'fastify'
import type { Logger } from '../../log.ts'
import { AgentError } from '../../errors.ts'
import { parseWith } from '../validate.ts'
import { DOCUMENT_LIMITS } from '../../registry/documents.ts'
import { CreateSplitRunnerSchema } from '../../registry/split-runners.ts'
import type { SplitRunnerRegistry } from '../../registry/split-runners.ts'
import { ModelLayerSchema } from '../../registry/model-layers.ts'
import type { ModelLayerRegistry } from '../../registry/model-layers.ts'
import type { RegistryErrorBody, RegistrySuccessBody } from '../../../contracts/api.ts'

function ok<T> (data: T): RegistrySuccessBody<T> {
  return { success: true, data }
}

/** The seed's error envelope for an error thrown on a registry route. */
export function registryErrorBody (err: FastifyError | AgentError): { status: number, body: RegistryErrorBody } {
  if (err instanceof AgentError) {
    const body: RegistryErrorBody = { success: false, error: err.message, code: err.code }
    if (Array.isArray(err.details)) body.details = err.details as RegistryErrorBody['details']
    return { status: err.status, body }
  }
  const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500
  const code = status === 413 ? 'body_too_large' : status === 415 ? 'unsupported_media_type' : status < 500 ? 'invalid_request' : 'internal_error'
  return { status, body: { success: false, error: status < 500 ? err.message : 'internal error', code } }
}

const FindQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(DOCUMENT_LIMITS.maxLimit).optional()
})

/**
 * Seed 002 registries over HTTP, with the seed's paths and bodies:
 * split runners (`/split-runner`, `/split-runners`) and model layers (`/model-layer`,
 * `/model-layers`). Answers are `{ success: true, data }`; errors `{ success: false, error, code,
 * details? }` (400 bad body/filter/update, 404 unknown id, 409 duplicate hash), from an error
 * handler scoped to these routes so the rest of the API keeps its own error shape.
 * Queries (`POST /split-runners`, `POST /model-layers`) take the MongoDB-style filter as the body
 * and `?limit=N` (1–1000, default 1000). A split runner's kubeconfig is never returned.
 */
export function registerRegistryRoutes (app: FastifyInstance, deps: { runners: SplitRunnerRegistry, layers: ModelLayerRegistry, log: Logger }): void {
  const { runners, layers, log } = deps

  void app.register(async (scope) => {
    scope.setErrorHandler((err: FastifyError | AgentError, req, reply) => {
      const { status, body } = registryErrorBody(err)
      if (status >= 500) req.log.error({ err }, 'request failed')
      void reply.status(status).send(body)
    })

    // split runners
    scope.post('/split-runner', async (req, reply) => {
      const input = parseWith(CreateSplitRunnerSchema, req.body)
      const runner = runners.create(input)
      log.info({ splitRunner: runner.split_runner_id, host: runner.split_runner_public_host }, 'split runner registered')
      return await reply.status(201).send(ok({ message: 'SplitRunner created', id: runner.split_runner_id }))
    })
    scope.get<{ Params: { runner_id: string } }>('/split-runner/:runner_id', async (req) => ok(runners.get(req.params.runner_id)))
    scope.put<{ Params: { runner_id: string } }>('/split-runner/:runner_id', async (req) => {
      runners.update(req.params.runner_id, req.body)
      return ok({ message: 'SplitRunner updated' })
    })
    scope.delete<{ Params: { runner_id: string } }>('/split-runner/:runner_id', async (req) => {
      runners.delete(req.params.runner_id)
      log.info({ splitRunner: req.params.runner_id }, 'split runner deleted')
      return ok({ message: 'SplitRunner deleted' })
    })
    scope.post('/split-runners', async (req) => {
      const { limit } = parseWith(FindQuerySchema, req.query, 'query')
      return ok(runners.query(req.body, { limit }))
    })

    // model layers
    scope.post('/model-layer', async (req, reply) => {
      const layer = layers.create(parseWith(ModelLayerSchema, req.body))
      log.info({ modelLayer: layer.model_layer_hash, asset: layer.model_asset_id, rank: layer.model_layer_rank }, 'model layer registered')
      return await reply.status(201).send(ok(layer))
    })
    scope.get<{ Params: { hash: string } }>('/model-layer/:hash', async (req) => ok(layers.get(req.params.hash)))
    scope.put<{ Params: { hash: string } }>('/model-layer/:hash', async (req) => {
      layers.update(req.params.hash, req.body)
      return ok({ message: 'ModelLayer updated' })
    })
    scope.delete<{ Params: { hash: string } }>('/model-layer/:hash', async (req) => {
      layers.delete(req.params.hash)
      log.info({ modelLayer: req.params.hash }, 'model layer deleted')
      return ok({ message: 'ModelLayer deleted' })
    })
    scope.post('/model-layers', async (req) => {
      const { limit } = parseWith(FindQuerySchema, req.query, 'query')
      return ok(layers.query(req.body, { limit }))
    })
  })
}
