import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import type { ApiContext } from '../context.ts'
import { VdagSpecSchema } from '../../vdag/registry.ts'
import { deployPlan, queryBlocks } from '../../vdag/deploy.ts'
import { VdagDriver } from '../../vdag/driver.ts'
import type { ModelPlan } from '../../splitter/plan.ts'
import { DeployablePlanSchema } from '../../splitter/plan.ts'
import { parseWith } from '../validate.ts'
import { AgentError, NotFoundError, ValidationError } from '../../errors.ts'
import type { DeletedAnswer, VdagAnswer, VdagDeployAnswer, VdagsAnswer } from '../../../contracts/api.ts'

const DeployBody = z.union([
  z.object({ task_id: z.string().min(1).max(64), name: z.string().min(1).max(64).optional() }).strict(),
  z.object({ plan: z.record(z.string(), z.unknown()), name: z.string().min(1).max(64).optional() }).strict()
])

const ProbeBody = z.object({ prompt: z.string().max(65_536), max_tokens: z.number().int().min(1).max(256).default(8) }).strict()

const QueryBody = z.object({ component: z.string().max(130).optional(), model_layer_hash: z.string().regex(/^[a-fA-F0-9]{32}$/).optional() }).strict()

export function registerVdagRoutes (app: FastifyInstance, ctx: ApiContext): void {
  app.post('/api/vdags', async (req, reply) => {
    const spec = parseWith(VdagSpecSchema, req.body)
    const first = spec.nodes.find(n => !spec.edges.some(e => e.to === n.id))?.block
    let contextLength = spec.contextLength
    if (contextLength == null && first != null && ctx.owner.has(first)) contextLength = ctx.components.get(ctx.owner.get(first).component).spec.contextLength
    if (contextLength == null) throw new ValidationError('contextLength is required (the first stage block is unknown)', [{ field: 'contextLength', message: 'required' }])
    return await reply.status(201).send(await ctx.vdags.create(spec, contextLength))
  })
  app.get('/api/vdags', async (): Promise<VdagsAnswer> => ({ vdags: ctx.vdags.list().map(v => ({ ...v, ready: ctx.router.models().includes(v.name) })) }))
  app.get<{ Params: { name: string } }>('/api/vdags/:name', async (req): Promise<VdagAnswer> => {
    const v = ctx.vdags.get(req.params.name)
    return { ...v, ready: ctx.router.models().includes(v.name), route: ctx.router.vdagRoute({ name: v.name, stages: v.stages, contextLength: v.contextLength }) }
  })
  app.delete<{ Params: { name: string } }>('/api/vdags/:name', async (req): Promise<DeletedAnswer> => {
    await ctx.vdags.delete(req.params.name)
    return { deleted: req.params.name }
  })

  /** Deploys a split task's model plan (or a plan given inline): stage blocks (reused when running) and the vDAG. */
  app.post('/api/vdags/deploy', async (req, reply) => {
    const body = parseWith(DeployBody, req.body)
    let plan: ModelPlan
    if ('task_id' in body) {
      // a task run here, or the replicated plan of one run on any agent
      const replicated = ctx.plans.get(body.task_id)
      if (replicated != null && ctx.tasks.store.find(body.task_id) == null) plan = replicated
      else {
        const task = ctx.tasks.store.get(body.task_id)
        if (task.status !== 'complete') throw new AgentError(`task ${task.task_id} is ${task.status}; a plan is there once it is complete`, 'task_not_complete', 409)
        plan = (task.result as { plan?: ModelPlan } | null)?.plan as ModelPlan
        if (plan == null) throw new ValidationError(`task ${task.task_id} has no plan in its result`)
      }
    } else {
      plan = parseWith(DeployablePlanSchema, body.plan) as unknown as ModelPlan
    }
    const res = await deployPlan(plan, { owner: ctx.owner, components: ctx.components, vdags: ctx.vdags, router: ctx.router, gossip: ctx.gossip, host: ctx.host }, { vdagName: body.name })
    return await reply.status(201).send(res satisfies VdagDeployAnswer)
  })

  /**
   * Runs a short greedy generation through a vDAG and returns the tokens and
   * each step's logits (from the last stage): for checking a deployed split
   * against the model it came from.
   */
  app.post<{ Params: { name: string } }>('/api/vdags/:name/probe', async (req) => {
    const body = parseWith(ProbeBody, req.body)
    const v = ctx.router.vdag(req.params.name)
    if (v == null) throw new NotFoundError(`no vDAG ${req.params.name}`)
    const route = ctx.router.vdagRoute(v)
    if (route == null) throw new AgentError(`vDAG ${v.name} has a stage with no ready instance`, 'model_not_ready', 503)
    const logits: number[][] = []
    const tokenizer = await ctx.tokenizers.get(ctx.vdags.find(v.name)?.spec.tokenizer ?? v.tokenizer ?? { type: 'byte' })
    const g = new VdagDriver(ctx.pipeline, () => route).generate(
      { prompt: tokenizer.encode(body.prompt, { bos: true }), maxTokens: body.max_tokens, temperature: 0, topP: 1, seed: 0, stopTokens: [] },
      { returnLogits: true, onLogits: (_step, l) => { logits.push(Array.from(l)) } })
    const tokens: number[] = []
    for await (const t of g.tokens) tokens.push(t)
    const done = await g.done
    if (done.reason === 'error') throw new AgentError(`probe failed: ${done.error ?? ''}`, 'probe_failed', 502)
    return { tokens, logits, route }
  })

  /** Blocks in the mesh running a component (and model file MD5) — seed 002: Blocks.query. */
  app.post('/api/blocks/query', async (req) => {
    const q = parseWith(QueryBody, req.body)
    return { blocks: queryBlocks({ gossip: ctx.gossip, host: ctx.host, components: ctx.components }, q.component, q.model_layer_hash) }
  })
}
