import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { parse as parseYaml } from 'yaml'
import type { ApiContext } from '../context.ts'
import { parseWith } from '../validate.ts'
import { AgentError, NotFoundError, ValidationError } from '../../errors.ts'
import type { TemplateRecord, TemplateStore, TemplateVersionView } from '../../templates/store.ts'
import { availability } from '../../templates/catalogue.ts'
import { CreateTemplateBodySchema, DeployTemplateBodySchema, MLServiceSchema, RolloutBodySchema, UpdateTemplateBodySchema, VersionSpecSchema } from '../../templates/schemas.ts'
import { hubTemplateFacts } from '../../templates/hub-meta.ts'
import { estimateVersion } from '../../templates/sizing.ts'
import { mapMLService } from '../../templates/mlservice.ts'
import type { FieldNote } from '../../templates/mlservice.ts'
import { decide, deployUnit, unitExists } from '../../templates/deploy.ts'
import type { ServiceEntry } from '../../templates/services.ts'
import type {
  MLServiceAnswer, MLServiceDeletedAnswer, MLServiceRollAnswer, MLServicesAnswer, MLServiceView, TemplateAnswer, TemplateDeployAnswer, TemplatesAnswer, TemplateUpdateAnswer
} from '../../../contracts/api.ts'

/** A template as the API shows it: its versions, availability here (built-ins) and memory per quantization (latest version). */
function view (t: TemplateRecord): TemplateAnswer {
  const latest = t.versions.at(-1) as TemplateVersionView
  const quants = [...new Set([...(latest.spec.model.files ?? []).map(f => f.quantization), ...(latest.spec.source?.kind === 'hub' && latest.spec.source.quantization != null ? [latest.spec.source.quantization] : [])])]
  return {
    name: t.name,
    description: t.description,
    builtin: t.builtin,
    hf: t.hf,
    latest: latest.name,
    license: latest.spec.model.license ?? null,
    parameters: latest.spec.model.parameters ?? null,
    contextLength: latest.spec.model.contextLength ?? null,
    sources: t.catalogue?.sources ?? (latest.spec.model.files ?? []).map(f => ({ quantization: f.quantization, repo: latest.spec.source?.kind === 'hub' ? latest.spec.source.repo : '', file: f.file, ...(f.sizeBytes != null ? { sizeBytes: f.sizeBytes } : {}) })),
    availability: t.catalogue != null ? availability(t.catalogue) : null,
    estimates: quants.map(q => {
      const e = estimateVersion(latest.spec, q)
      return e == null ? { quantization: q, totalBytes: null, detail: null } : { quantization: q, totalBytes: e.totalBytes, detail: e }
    }),
    versions: t.versions
  }
}


/**
 * Decide whole / split / refused for a version and, unless a dry run, deploy it as the service `name`: its
 * first unit (block or vDAG) carries the service's name; the service is recorded so it can be rolled to
 * another version later (manifest: the MLService it came from).
 */
async function deploy (ctx: ApiContext, store: TemplateStore, ref: string, opts: { name?: string, replicas?: number, maxReplicas?: number, dryRun?: boolean, manifest?: { value: unknown, namespace: string, explanation: FieldNote[] } }): Promise<TemplateDeployAnswer> {
  const { template, version } = store.version(ref)
  const spec = version.spec
  const name = opts.name ?? template.name
  const replicas = opts.replicas ?? spec.deploymentConfig.replicas
  const maxReplicas = Math.max(replicas, opts.maxReplicas ?? spec.deploymentConfig.maxReplicas ?? replicas)
  const { estimate, decision } = decide(ctx, spec)
  const base = { template: template.name, version: version.name, model: name, source: version.modelSource, estimate, decision, replicas, maxReplicas }
  if (decision?.kind === 'refused') {
    throw new AgentError(`${version.name} fits nowhere: ${decision.reason}`, 'does_not_fit', 422, { ...base, deployed: false })
  }
  if (opts.dryRun === true) return { ...base, deployed: false, note: 'dry run: nothing deployed' }
  if (ctx.services.has(name)) throw new AgentError(`a service ${name} exists already; roll it to this version (blockmesh service roll ${name} ${version.name}) or deploy under another name (--name)`, 'conflict', 409)
  if (unitExists(ctx, name)) throw new AgentError(`a block or vDAG ${name} exists already; delete it or deploy under another name (--name)`, 'conflict', 409)
  const d = await deployUnit(ctx, { spec, version: version.name, unit: name, decision, replicas, maxReplicas })
  await ctx.services.put({
    name,
    namespace: opts.manifest?.namespace ?? 'default',
    modelTemplateVersionRef: { name: version.name },
    version: version.name,
    deployed: true,
    decision: decision?.kind ?? null,
    manifest: opts.manifest?.value ?? null,
    explanation: opts.manifest?.explanation ?? [],
    replicas,
    maxReplicas,
    target: name
  })
  if (d.task != null) {
    d.vdagDeployed?.catch((err: Error) => { ctx.log.warn({ model: name, task: d.task, err: err.message }, 'template split deployment failed') })
    const stages = decision?.kind === 'split' ? decision.stages.length : 0
    return { ...base, deployed: true, component: d.component, task: d.task, note: `split into ${stages} stages by task ${d.task}: the vDAG ${name} is served once the task completes and its stages load (blockmesh task get ${d.task}; blockmesh vdag get ${name})` }
  }
  return { ...base, deployed: true, component: d.component, block: d.block, ...(decision == null ? { note: 'no memory estimate (the parameter count is unknown): deployed whole, placed by policy' } : {}) }
}

/** A service as the API shows it: its record, whether its name answers now, and when it was created. */
function serviceView (ctx: ApiContext, e: ServiceEntry): MLServiceView {
  return { ...e.record, createdAt: e.createdAt, ready: ctx.router.models().includes(e.record.name) }
}

/** The stored service `name` as the API shows it (404 when there is none). */
function storedService (ctx: ApiContext, name: string): MLServiceView {
  const e = ctx.services.entry(name)
  if (e == null) throw new NotFoundError(`no service ${name}`)
  return serviceView(ctx, e)
}

export function registerTemplateRoutes (app: FastifyInstance, ctx: ApiContext): void {
  const { templates: store, rollouts } = ctx

  app.get('/api/templates', async (): Promise<TemplatesAnswer> => ({ templates: store.list().map(view) }))
  app.get<{ Params: { name: string } }>('/api/templates/:name', async (req): Promise<TemplateAnswer> => view(store.version(req.params.name).template))

  app.post('/api/templates', async (req, reply) => {
    const body = parseWith(CreateTemplateBodySchema, req.body)
    const facts = body.hf != null ? await hubTemplateFacts(body.hf, { cacheDir: join(ctx.models.cacheDir, 'hub') }) : undefined
    const name = body.name ?? (body.hf as string).split('/')[1].toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/-gguf$/, '').replace(/-v(\d+)$/, '-$1').slice(0, 56)
    const spec = parseWith(VersionSpecSchema, {
      source: body.source ?? facts?.source,
      ...(body.engine_config != null ? { engine_config: body.engine_config } : {}),
      ...(body.weights != null ? { weights: body.weights } : {}),
      contextLength: body.contextLength ?? Math.min(facts?.model.contextLength ?? body.model?.contextLength ?? 2048, 2048),
      ...(body.maxConcurrentSequences != null ? { maxConcurrentSequences: body.maxConcurrentSequences } : {}),
      ...(body.sampling != null ? { sampling: body.sampling } : {}),
      ...(body.deploymentConfig != null ? { deploymentConfig: body.deploymentConfig } : {}),
      ...(body.scalingConfig != null ? { scalingConfig: body.scalingConfig } : {}),
      ...(body.policy != null ? { policy: body.policy } : {}),
      model: { ...facts?.model, ...body.model }
    })
    const t = await store.create({ name, description: body.description ?? facts?.description, ...(body.hf != null ? { hf: body.hf } : {}) }, spec)
    ctx.log.info({ template: name, hf: body.hf }, 'template created')
    return await reply.status(201).send(view(t))
  })

  app.put<{ Params: { name: string } }>('/api/templates/:name', async (req, reply) => {
    const body = parseWith(UpdateTemplateBodySchema, req.body)
    const u = await store.update(req.params.name, body)
    ctx.log.info({ template: req.params.name, version: u.version.name }, 'template version created')
    return await reply.status(201).send({ template: view(u.template), version: u.version } satisfies TemplateUpdateAnswer)
  })

  app.post<{ Params: { name: string } }>('/api/templates/:name/deploy', async (req, reply) => {
    const body = parseWith(DeployTemplateBodySchema, req.body)
    const answer = await deploy(ctx, store, req.params.name, body)
    return await reply.status(answer.deployed ? 201 : 200).send(answer)
  })

  // the seed's MLService, as YAML (application/yaml, text/yaml) or JSON
  app.register(async scope => {
    scope.addContentTypeParser(['application/yaml', 'application/x-yaml', 'text/yaml'], { parseAs: 'string' }, (_req, text, done) => {
      try {
        done(null, parseYaml(text as string, { maxAliasCount: 64, prettyErrors: false }))
      } catch (err) {
        done(new ValidationError(`the body is not YAML: ${(err as Error).message.split('\n')[0]}`), undefined)
      }
    })
    scope.post('/api/mlservices', async (req, reply) => {
      const manifest = parseWith(MLServiceSchema, req.body)
      const m = mapMLService(manifest)
      if (ctx.services.has(m.name)) throw new AgentError(`an MLService ${m.name} exists already (PUT it to roll it to another version)`, 'conflict', 409)
      let deployed: TemplateDeployAnswer
      try {
        deployed = await deploy(ctx, store, m.versionRef, { name: m.name, replicas: m.replicas, maxReplicas: m.maxReplicas, manifest: { value: manifest, namespace: m.namespace, explanation: m.explanation } })
      } catch (err) {
        // a refusal (or any failure) still says what of the manifest would have been honoured
        if (err instanceof AgentError && err.status < 500) throw new AgentError(err.message, err.code, err.status, { ...(err.details as object ?? {}), explanation: m.explanation })
        throw err
      }
      const service = storedService(ctx, m.name)
      return await reply.status(201).send({ service, deployment: deployed, explanation: m.explanation } satisfies MLServiceAnswer)
    })
    // the manifest applied again: a changed modelTemplateVersionRef rolls the service to that version
    scope.put<{ Params: { name: string } }>('/api/mlservices/:name', async (req, reply) => {
      const manifest = parseWith(MLServiceSchema, req.body)
      const m = mapMLService(manifest)
      if (m.name !== req.params.name) throw new ValidationError(`metadata.name is ${m.name}, the path names ${req.params.name}`)
      const s = ctx.services.get(m.name)
      if (store.version(m.versionRef).version.name === s.version) return await reply.status(200).send({ service: storedService(ctx, m.name), rolling: false } satisfies MLServiceRollAnswer)
      await rollouts.start(m.name, m.versionRef)
      await ctx.services.update(m.name, cur => ({ ...cur, manifest, explanation: m.explanation }))
      return await reply.status(202).send({ service: storedService(ctx, m.name), rolling: true } satisfies MLServiceRollAnswer)
    })
  })

  app.get<{ Params: { name: string } }>('/api/mlservices/:name', async (req): Promise<MLServiceView> => {
    return storedService(ctx, req.params.name)
  })

  app.post<{ Params: { name: string } }>('/api/mlservices/:name/rollout', async (req, reply) => {
    const body = parseWith(RolloutBodySchema, req.body)
    await rollouts.start(req.params.name, body.version, { ...(body.readyTimeoutMs != null ? { readyTimeoutMs: body.readyTimeoutMs } : {}) })
    return await reply.status(202).send({ service: storedService(ctx, req.params.name), rolling: true } satisfies MLServiceRollAnswer)
  })

  app.delete<{ Params: { name: string } }>('/api/mlservices/:name', async (req): Promise<MLServiceDeletedAnswer> => {
    const units = await rollouts.deleteService(req.params.name)
    ctx.log.info({ service: req.params.name, units }, 'service deleted')
    return { deleted: req.params.name, units }
  })

  app.get('/api/mlservices', async (): Promise<MLServicesAnswer> => ({ services: ctx.services.list().map(e => serviceView(ctx, e)) }))
}
