import { randomBytes } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ApiContext } from '../context.ts'
import { EventStream, RawJson, chunkTemplate, clientGone } from '../sse.ts'
import { chatLogprobs, completionLogprobs } from '../../openai/logprobs.ts'
import { ChatCompletionRequestSchema, CompletionRequestSchema, messageText, stopList } from '../../openai/schemas.ts'
import { OpenAIError, modelNotFound } from '../../openai/errors.ts'
import { completionBudget, generateText } from '../../openai/generate.ts'
import type { TextRequest, TextResult, TokenInfo, TokenSource } from '../../openai/generate.ts'
import { grammarFromResponseFormat } from '../../openai/json-schema.ts'
import type { ResponseFormat } from '../../openai/json-schema.ts'
import { VdagDriver } from '../../vdag/driver.ts'
import type { Component } from '../../registry/components.ts'
import { INFER_PROTOCOL, INSTANCE_HEADER, ROUTED_HEADER } from '../../openai/infer-protocol.ts'
import { openTunnel } from '../../../mesh/tunnel.ts'
import { StreamsBusyError } from '../../../mesh/tensor.ts'
import { ModelNotReadyError } from '../../blocks/host.ts'
import type { LocalServing } from '../../blocks/host.ts'
import type { Route } from '../../blocks/router.ts'
import { DEFAULT_MIGRATION_SETTINGS } from '../../serving/migrate.ts'
import { migrating, peerProtocolsFrom, remoteInstance } from '../../serving/instances.ts'
import type { InstanceServingContext } from '../../serving/instances.ts'

/** Response header naming the peer whose instance answered (this agent's own for a local one). */
const SERVED_BY_HEADER = 'x-blockmesh-served-by'

/** Choosing and resuming instances for this agent's requests (null: no generate service, requests to peers are tunnelled). */
function instanceContext (ctx: ApiContext): InstanceServingContext | null {
  if (ctx.generate == null) return null
  return {
    self: ctx.mesh.peerId.toString(),
    router: ctx.router,
    host: ctx.host,
    gossip: ctx.gossip,
    components: ctx.components,
    tokenizers: ctx.tokenizers,
    generate: ctx.generate,
    peerProtocols: peerProtocolsFrom(ctx.mesh.libp2p),
    settings: ctx.migration ?? DEFAULT_MIGRATION_SETTINGS,
    onMigration: (result) => { ctx.metrics.requestMigrations.inc({ kind: 'instance', result }) },
    log: ctx.log.child({ mod: 'serving' })
  }
}

/** The local instance for a request (503 when it exists here but is not ready). */
function localServing (ctx: ApiContext, model: string): LocalServing {
  try {
    return ctx.host.serving(model)
  } catch (err) {
    if (err instanceof ModelNotReadyError) throw new OpenAIError(503, err.message, 'model_not_ready')
    throw modelNotFound(model)
  }
}

/** A vDAG served through a driver on this agent: the token source and a component-like view of the model. */
function vdagServing (ctx: ApiContext, model: string, session: string | undefined): { engine: VdagDriver, component: Component } | null {
  const v = ctx.router.vdag(model)
  if (v == null) return null
  const route = ctx.router.vdagRoute(v, session)
  if (route == null) throw new OpenAIError(503, `vDAG ${model} has a stage with no ready instance`, 'model_not_ready')
  const spec = ctx.vdags.find(model)?.spec
  const component: Component = {
    uri: `vdag:${model}`,
    createdAt: new Date(0).toISOString(),
    spec: { name: model, version: 'vdag', runtime: 'onnx', tokenizer: spec?.tokenizer ?? v.tokenizer ?? { type: 'byte' }, contextLength: v.contextLength, defaults: spec?.defaults ?? { maxTokens: 256, temperature: 0.7, topP: 0.95 }, resources: {} }
  }
  const settings = ctx.migration ?? DEFAULT_MIGRATION_SETTINGS
  const log = ctx.log.child({ mod: 'vdag', vdag: model })
  let first: typeof route | null = route
  const engine = new VdagDriver(ctx.mesh, ctx.stages, {
    // the route checked above first; a migrating sequence asks the router again (the vDAG may have been re-placed)
    route: () => {
      if (first != null) { const r = first; first = null; return r }
      const now = ctx.router.vdag(model)
      return now == null ? null : ctx.router.vdagRoute(now, session)
    },
    markFailure: (peer) => { ctx.router.markFailure(peer, 15_000) }
  }, {
    ...settings,
    onMigration: (result) => { ctx.metrics.requestMigrations.inc({ kind: 'stage', result }) }
  }, (obj, msg) => { log.warn(obj, msg) })
  return { engine, component }
}

/** A local, ready onnx engine (not a stage: a stage serves only inside its vDAG). */
function localEngine (serving: LocalServing, model: string): { engine: TokenSource & { provider: { name: string } }, component: Component } {
  if (serving.kind === 'stage') throw new OpenAIError(400, `${model} is one stage of a split model; ask for its vDAG's model name`, 'model_is_stage', 'invalid_request_error', 'model')
  if (serving.kind !== 'onnx') throw new OpenAIError(500, 'unexpected serving kind', 'internal_error')
  return { engine: serving.engine, component: serving.component }
}

/** Where to serve a request: tunnelled requests stay here; others go wherever the router says. */
function route (ctx: ApiContext, req: FastifyRequest, model: string, session: string | undefined): Route {
  if (req.headers[ROUTED_HEADER] === '1') return { kind: 'local', instance: '' }
  const r = ctx.router.pick(model, session)
  if (r != null) return r
  if (ctx.owner.has(model)) {
    const b = ctx.owner.get(model)
    throw new OpenAIError(503, `block ${model} has no ready instance (${b.status}${b.error != null ? `: ${b.error}` : ''})`, 'model_not_ready')
  }
  if (ctx.router.known(model)) throw new OpenAIError(503, `no instance of ${model} is ready yet`, 'model_not_ready')
  throw modelNotFound(model)
}

/** Forwards the request to a peer's instance through the libp2p tunnel and streams its answer back as is. */
async function forwardRemote (ctx: ApiContext, req: FastifyRequest, reply: FastifyReply, path: string, body: unknown, model: string, session: string | undefined, first: Route & { kind: 'remote' }, gone: AbortController): Promise<void> {
  let target: Route | null = first
  for (let attempt = 0; attempt < 2 && target != null && target.kind === 'remote'; attempt++) {
    let res
    try {
      res = await openTunnel(ctx.mesh, target.peer, INFER_PROTOCOL, {
        target: path,
        headers: { 'content-type': 'application/json', ...(session != null ? { 'x-session-id': session } : {}) },
        body: new TextEncoder().encode(JSON.stringify(body))
      }, { signal: gone.signal })
    } catch (err) {
      if (gone.signal.aborted) return
      ctx.log.warn({ peer: target.peer, model, err: (err as Error).message }, 'tunnel to peer failed; trying another instance')
      // a peer whose streams all stayed busy is loaded, not broken: other requests may still go there
      if (!(err instanceof StreamsBusyError)) ctx.router.markFailure(target.peer)
      target = ctx.router.pick(model, session)
      continue
    }
    ctx.metrics.routedRequests.inc({ target: 'remote' })
    reply.hijack()
    const raw = reply.raw
    const headers: Record<string, string> = {}
    for (const k of ['content-type', 'cache-control', INSTANCE_HEADER]) if (res.headers[k] != null) headers[k] = res.headers[k]
    raw.writeHead(res.status, { ...headers, [SERVED_BY_HEADER]: target.peer })
    try {
      for await (const chunk of res.body) {
        if (raw.destroyed) break
        if (!raw.write(chunk)) await new Promise<void>(resolve => { raw.once('drain', resolve); raw.once('close', resolve) })
      }
    } catch (err) {
      ctx.log.warn({ peer: target.peer, err: (err as Error).message }, 'tunnel broke mid-answer')
    } finally {
      if (!raw.destroyed) raw.end()
    }
    return
  }
  if (target == null) throw new OpenAIError(503, `no reachable instance of ${model}`, 'model_not_ready')
  // the retry picked this agent's own instance
  throw new LocalFallback()
}

class LocalFallback extends Error {}

function parse<T> (schema: { safeParse: (v: unknown) => { success: true, data: T } | { success: false, error: { issues: Array<{ path: PropertyKey[], message: string }> } } }, body: unknown): T {
  const r = schema.safeParse(body)
  if (r.success) return r.data
  const first = r.error.issues[0]
  const param = first.path.map(String).join('.') || null
  throw new OpenAIError(400, `${param ?? 'body'}: ${first.message}`, null, 'invalid_request_error', param)
}

/** The prompt once, the completions of every choice. */
function usage (promptTokens: number, rs: TextResult[]): { prompt_tokens: number, completion_tokens: number, total_tokens: number } {
  const completion = rs.reduce((a, r) => a + r.completionTokens, 0)
  return { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion }
}

/**
 * Runs the n choices of a request concurrently (their sequences batch in the engine); the first
 * failure cancels the others.
 */
async function runChoices (n: number, gone: AbortSignal, run: (index: number, signal: AbortSignal) => Promise<TextResult>): Promise<TextResult[]> {
  const failed = new AbortController()
  const signal = AbortSignal.any([gone, failed.signal])
  return await Promise.all(Array.from({ length: n }, async (_, i) => {
    try {
      return await run(i, signal)
    } catch (err) {
      failed.abort()
      throw err
    }
  }))
}

/** Choice i of n: the request's seed + i, so a seed reproduces every choice and the choices differ. */
function choiceRequest (base: TextRequest, seed: number | null | undefined, i: number): TextRequest {
  return { ...base, seed: seed != null ? seed + i : null }
}

/** The request's sampling controls, for every endpoint. */
function controls (body: { presence_penalty?: number | null, frequency_penalty?: number | null, repetition_penalty?: number | null, response_format?: ResponseFormat | null }): Pick<TextRequest, 'presencePenalty' | 'frequencyPenalty' | 'repetitionPenalty' | 'json'> {
  return {
    presencePenalty: body.presence_penalty,
    frequencyPenalty: body.frequency_penalty,
    repetitionPenalty: body.repetition_penalty,
    json: grammarFromResponseFormat(body.response_format)
  }
}

function observe (ctx: ApiContext, block: string, r: TextResult): void {
  if (r.firstTokenMs != null) ctx.metrics.timeToFirstToken.observe({ block }, r.firstTokenMs / 1000)
  if (r.completionTokens > 1 && r.decodeMs > 0) ctx.metrics.requestTokensPerSecond.observe({ block }, (r.completionTokens - 1) / (r.decodeMs / 1000))
}

/** Where a request's tokens come from: a vDAG, a block instance here or on a peer; or null once it is answered elsewhere (tunnelled to a peer, an external system). */
interface Served { engine: TokenSource & { provider: { name: string } }, component: Component, headers: Record<string, string>, gone: AbortController }

/**
 * Routes one /v1 request, the same way for both endpoints: a vDAG of that name is driven from here;
 * otherwise the router picks an instance. An onnx instance, here or on a peer (over
 * /blockmesh/generate/1.0.0), is a token source wrapped in MigratingSource, so the request is resumed
 * on another instance if this one dies; a peer's instance that cannot be served token by token (an
 * external system, an older agent, a tokenizer this agent cannot load) gets the request through the
 * byte tunnel (falling back to a local instance when the peer fails before answering), and an
 * external system here is proxied.
 */
async function serve (ctx: ApiContext, req: FastifyRequest, reply: FastifyReply, path: '/v1/chat/completions' | '/v1/completions', body: { model: string, user?: string | null }): Promise<Served | null> {
  const session = body.user ?? (typeof req.headers['x-session-id'] === 'string' ? req.headers['x-session-id'] : undefined)
  const gone = clientGone(req, reply)
  const vdag = vdagServing(ctx, body.model, session)
  if (vdag != null) {
    ctx.metrics.routedRequests.inc({ target: 'vdag' })
    return { ...vdag, headers: { [INSTANCE_HEADER]: body.model }, gone }
  }
  const ictx = instanceContext(ctx)
  const r = route(ctx, req, body.model, session)
  if (r.kind === 'remote') {
    const remote = ictx != null ? await remoteInstance(ictx, body.model, r, gone.signal) : null
    if (remote != null && ictx != null) {
      ctx.metrics.routedRequests.inc({ target: 'remote' })
      const headers = { [INSTANCE_HEADER]: r.instance, [SERVED_BY_HEADER]: r.peer }
      for (const [k, v] of Object.entries(headers)) void reply.header(k, v)
      return { engine: migrating(ictx, body.model, session, remote.choice, remote.provider), component: remote.component, headers, gone }
    }
    try {
      await forwardRemote(ctx, req, reply, path, body, body.model, session, r, gone)
      return null
    } catch (err) {
      if (!(err instanceof LocalFallback)) throw err
    }
  }
  ctx.metrics.routedRequests.inc({ target: 'local' })
  const serving = localServing(ctx, body.model)
  void reply.header(INSTANCE_HEADER, serving.instance)
  if (serving.kind === 'external') {
    reply.hijack()
    reply.raw.setHeader(INSTANCE_HEADER, serving.instance)
    await serving.backend.forward(path, body, body.model, reply.raw, gone.signal)
    return null
  }
  const local = localEngine(serving, body.model)
  const self = ctx.mesh.peerId.toString()
  const headers = { [INSTANCE_HEADER]: serving.instance, [SERVED_BY_HEADER]: self }
  void reply.header(SERVED_BY_HEADER, self)
  const engine = ictx != null
    ? migrating(ictx, body.model, session, { source: local.engine, peer: self, instance: serving.instance }, local.engine.provider.name)
    : local.engine
  return { engine, component: local.component, headers, gone }
}

/**
 * A /v1/models entry: OpenAI's fields (created = when the model's component was registered, owned_by =
 * the agent that owns its block), plus `context_length` and, for added models, what the model is.
 * Facts come from this agent's registry; a model owned elsewhere shows what its records carry.
 */
function modelCard (ctx: ApiContext, id: string): Record<string, unknown> {
  const card: Record<string, unknown> = { id, object: 'model', created: 0, owned_by: 'blockmesh' }
  const vdag = ctx.router.vdag(id)
  const uri = vdag != null ? undefined : ctx.owner.has(id) ? ctx.owner.get(id).component : [...ctx.host.reports(), ...ctx.gossip.peers().flatMap(p => p.record.instances)].find(r => r.block === id)?.component
  if (vdag != null) card.context_length = vdag.contextLength
  if (ctx.owner.has(id) || ctx.vdags.find(id) != null) card.owned_by = ctx.name
  if (uri == null) return card
  try {
    const c = ctx.components.get(uri)
    card.created = Math.floor(Date.parse(c.createdAt) / 1000)
    if (c.spec.contextLength != null) card.context_length = c.spec.contextLength
    if (c.spec.modelInfo != null) card.model_info = c.spec.modelInfo
  } catch { /* registered on another agent */ }
  return card
}

export function registerOpenAIRoutes (app: FastifyInstance, ctx: ApiContext): void {
  /** Every model with a ready instance anywhere in the mesh. */
  app.get('/v1/models', async () => ({
    object: 'list',
    data: ctx.router.models().map(id => modelCard(ctx, id))
  }))

  app.get<{ Params: { model: string } }>('/v1/models/:model', async (req) => {
    if (!ctx.router.models().includes(req.params.model)) throw modelNotFound(req.params.model)
    return modelCard(ctx, req.params.model)
  })

  app.post('/v1/chat/completions', async (req, reply) => {
    const body = parse(ChatCompletionRequestSchema, req.body)
    if (body.top_logprobs != null && body.logprobs !== true) throw new OpenAIError(400, 'top_logprobs: logprobs must be true when top_logprobs is set', null, 'invalid_request_error', 'top_logprobs')
    const top = body.logprobs === true ? (body.top_logprobs ?? 0) : null
    const extra = controls(body)
    const served = await serve(ctx, req, reply, '/v1/chat/completions', body)
    if (served == null) return
    const { engine, component, headers, gone } = served
    const tokenizer = await ctx.tokenizers.get(component.spec.tokenizer, gone.signal)
    const prompt = tokenizer.chatPrompt(body.messages.map(m => ({ role: m.role, content: messageText(m.content) })))
    const base: TextRequest = {
      prompt,
      maxTokens: completionBudget(component, prompt.length, body.max_completion_tokens ?? body.max_tokens),
      temperature: body.temperature,
      topP: body.top_p,
      seed: body.seed,
      stop: stopList(body.stop),
      topLogprobs: top,
      ...extra
    }
    const n = body.n ?? 1
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`
    const created = Math.floor(Date.now() / 1000)
    const fingerprint = `blockmesh-${engine.provider.name}`
    if (body.stream !== true) {
      const outs = Array.from({ length: n }, () => ({ content: '', tokens: [] as TokenInfo[] }))
      const rs = await runChoices(n, gone.signal, async (i, signal) => await generateText(engine, component, tokenizer, choiceRequest(base, body.seed, i), (d, tokens) => {
        outs[i].content += d
        if (top != null) outs[i].tokens.push(...tokens)
      }, signal))
      for (const r of rs) observe(ctx, body.model, r)
      return {
        id, object: 'chat.completion', created, model: body.model, system_fingerprint: fingerprint,
        choices: rs.map((r, i) => ({ index: i, message: { role: 'assistant', content: outs[i].content }, logprobs: top != null ? chatLogprobs(tokenizer, outs[i].tokens) : null, finish_reason: r.finishReason })),
        usage: usage(prompt.length, rs)
      }
    }
    const chunk = (index: number, delta: Record<string, string>, finish: string | null, logprobs: object | null = null): object => ({
      id, object: 'chat.completion.chunk', created, model: body.model, system_fingerprint: fingerprint,
      choices: [{ index, delta, logprobs, finish_reason: finish }]
    })
    const sse = new EventStream(reply, headers).keepAlive()
    for (let i = 0; i < n; i++) await sse.send(chunk(i, { role: 'assistant', content: '' }, null))
    const deltas = Array.from({ length: n }, (_, i) => chunkTemplate(chunk(i, { content: '\u0000' }, null), '\u0000'))
    try {
      const rs = await runChoices(n, gone.signal, async (i, signal) => {
        const r = await generateText(engine, component, tokenizer, choiceRequest(base, body.seed, i), async (d, tokens) => {
          await sse.send(top == null ? new RawJson(deltas[i](d)) : chunk(i, { content: d }, null, chatLogprobs(tokenizer, tokens)))
        }, signal)
        observe(ctx, body.model, r)
        if (!r.cancelled) await sse.send(chunk(i, {}, r.finishReason))
        return r
      })
      if (!rs.some(r => r.cancelled)) {
        if (body.stream_options?.include_usage === true) await sse.send({ id, object: 'chat.completion.chunk', created, model: body.model, choices: [], usage: usage(prompt.length, rs) })
        await sse.send('[DONE]')
      }
    } catch (err) {
      await sse.send({ error: { message: (err as Error).message, type: 'server_error', param: null, code: (err as OpenAIError).code ?? null } })
    } finally {
      sse.end()
    }
  })

  app.post('/v1/completions', async (req, reply) => {
    const body = parse(CompletionRequestSchema, req.body)
    const top = body.logprobs ?? null
    const extra = controls(body)
    const served = await serve(ctx, req, reply, '/v1/completions', body)
    if (served == null) return
    const { engine, component, headers, gone } = served
    const tokenizer = await ctx.tokenizers.get(component.spec.tokenizer, gone.signal)
    const promptText = Array.isArray(body.prompt) ? body.prompt[0] : body.prompt
    const prompt = tokenizer.encode(promptText, { bos: true })
    const base: TextRequest = {
      prompt,
      maxTokens: completionBudget(component, prompt.length, body.max_tokens),
      temperature: body.temperature,
      topP: body.top_p,
      seed: body.seed,
      stop: stopList(body.stop),
      topLogprobs: top,
      ...extra
    }
    const n = body.n ?? 1
    const id = `cmpl-${randomBytes(12).toString('hex')}`
    const created = Math.floor(Date.now() / 1000)
    if (body.stream !== true) {
      const outs = Array.from({ length: n }, () => ({ text: '', tokens: [] as TokenInfo[] }))
      const rs = await runChoices(n, gone.signal, async (i, signal) => await generateText(engine, component, tokenizer, choiceRequest(base, body.seed, i), (d, tokens) => {
        outs[i].text += d
        if (top != null) outs[i].tokens.push(...tokens)
      }, signal))
      for (const r of rs) observe(ctx, body.model, r)
      return {
        id, object: 'text_completion', created, model: body.model,
        choices: rs.map((r, i) => ({ index: i, text: outs[i].text, logprobs: top != null ? completionLogprobs(tokenizer, outs[i].tokens, promptText.length) : null, finish_reason: r.finishReason })),
        usage: usage(prompt.length, rs)
      }
    }
    const sse = new EventStream(reply, headers).keepAlive()
    const chunk = (index: number, text: string, finish: string | null, logprobs: object | null = null): object => ({ id, object: 'text_completion', created, model: body.model, choices: [{ index, text, logprobs, finish_reason: finish }] })
    const deltas = Array.from({ length: n }, (_, i) => chunkTemplate(chunk(i, '\u0000', null), '\u0000'))
    try {
      const rs = await runChoices(n, gone.signal, async (i, signal) => {
        let offset = promptText.length
        const r = await generateText(engine, component, tokenizer, choiceRequest(base, body.seed, i), async (d, tokens) => {
          if (top == null) { await sse.send(new RawJson(deltas[i](d))); return }
          const lp = completionLogprobs(tokenizer, tokens, offset)
          offset += lp.tokens.reduce((a, t) => a + t.length, 0)
          await sse.send(chunk(i, d, null, lp))
        }, signal)
        observe(ctx, body.model, r)
        if (!r.cancelled) await sse.send(chunk(i, '', r.finishReason))
        return r
      })
      if (!rs.some(r => r.cancelled)) {
        if (body.stream_options?.include_usage === true) await sse.send({ id, object: 'text_completion', created, model: body.model, choices: [], usage: usage(prompt.length, rs) })
        await sse.send('[DONE]')
      }
    } catch (err) {
      await sse.send({ error: { message: (err as Error).message, type: 'server_error', param: null, code: (err as OpenAIError).code ?? null } })
    } finally {
      sse.end()
    }
  })
}
