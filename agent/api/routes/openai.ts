/**
 * The OpenAI-compatible HTTP routes, thin: a body is checked with its endpoint's schema, served by the
 * OpenAI serving (agent/serving/openai-serving.ts: backend choice, generation, streaming), and the
 * answer written — a JSON body through Fastify, a stream onto the raw response.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ApiContext } from '../context.ts'
import { clientGone } from '../sse.ts'
import { modelNotFound, openAIErrorFrom } from '../../openai/errors.ts'
import { ROUTED_HEADER } from '../../openai/infer-protocol.ts'
import { CHAT, COMPLETIONS } from '../../serving/endpoints.ts'
import type { CommonBody, Endpoint } from '../../serving/endpoints.ts'
import { OpenAIServing } from '../../serving/openai-serving.ts'
import { ComponentCache } from '../../serving/catalog.ts'
import { writeWhole } from '../../http/sink.ts'

/**
 * A /v1/models entry: OpenAI's fields (created = when the model's component was registered, owned_by =
 * the agent that owns its block), plus `context_length` and, for added models, what the model is.
 * Facts come from this agent's registry; a model owned elsewhere shows what its records carry.
 */
function modelCard (ctx: ApiContext, components: ComponentCache, id: string): Record<string, unknown> {
  const card: Record<string, unknown> = { id, object: 'model', created: 0, owned_by: 'blockmesh' }
  // a service's name: the facts of the block or vDAG serving it now
  const unit = ctx.router.resolve(id)
  const vdag = ctx.router.vdag(unit)
  const owned = vdag == null && ctx.owner.has(unit)
  const uri = vdag != null ? undefined : owned ? ctx.owner.get(unit).component : [...ctx.host.reports(), ...ctx.gossip.peers().flatMap(p => p.record.instances)].find(r => r.block === unit)?.component
  if (vdag != null) card.context_length = vdag.contextLength
  if (owned || ctx.owner.has(unit) || ctx.vdags.find(unit) != null) card.owned_by = ctx.name
  if (uri == null) return card
  const c = components.find(uri)
  if (c == null) return card // registered on another agent
  card.created = Math.floor(Date.parse(c.createdAt) / 1000)
  if (c.spec.contextLength != null) card.context_length = c.spec.contextLength
  if (c.spec.modelInfo != null) card.model_info = c.spec.modelInfo
  return card
}

export function registerOpenAIRoutes (app: FastifyInstance, ctx: ApiContext): void {
  // components parsed once per change of the desired state, for the request path and the model list
  const components = new ComponentCache(ctx.components, ctx.state)
  const serving = new OpenAIServing({ ...ctx, components })
  app.addHook('onClose', async () => { components.close() })

  /** Every model with a ready instance anywhere in the mesh. */
  app.get('/v1/models', async () => ({
    object: 'list',
    data: ctx.router.models().map(id => modelCard(ctx, components, id))
  }))

  app.get<{ Params: { model: string } }>('/v1/models/:model', async (req) => {
    if (!ctx.router.models().includes(req.params.model)) throw modelNotFound(req.params.model)
    return modelCard(ctx, components, req.params.model)
  })

  /** The handler of one endpoint: parse, serve, write. */
  const handler = (ep: Endpoint<CommonBody>) => async (req: FastifyRequest, reply: FastifyReply): Promise<object | undefined> => {
    const body = ep.parse(req.body)
    const gone = clientGone(req, reply)
    const header = req.headers['x-session-id']
    let res
    try {
      res = await serving.serve(ep, body, {
        session: body.user ?? (typeof header === 'string' ? header : undefined),
        // x-blockmesh-routed: 1 asks for this agent's own instance, as a tunnelled request gets
        routed: req.headers[ROUTED_HEADER] === '1',
        signal: gone.signal
      })
    } catch (err) {
      // the client left while the request was routed: no one to answer
      if (gone.signal.aborted) { reply.hijack(); reply.raw.destroy(); return }
      throw err
    }
    if (res.kind === 'json') {
      void reply.headers(res.headers)
      return res.body
    }
    reply.hijack()
    try {
      await res.writeTo(reply.raw)
    } catch (err) {
      // the writers answer their own failures (an error event, an upstream's error); this is a bug's last resort
      req.log.error({ err }, 'answer failed')
      if (reply.raw.headersSent) { reply.raw.destroy(); return }
      const e = openAIErrorFrom(err)
      writeWhole(reply.raw, e.status, {}, JSON.stringify(e.body))
    }
  }
  // paths written out: the fuzz test (test/fuzz-http.test.ts) finds the routes in the sources
  app.post('/v1/chat/completions', handler(CHAT))
  app.post('/v1/completions', handler(COMPLETIONS))
}
