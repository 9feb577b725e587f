/**
 * The OpenAI serving: one request of either endpoint, from a validated body to an answer — a JSON body,
 * or a stream that writes its SSE events (or a proxied answer) onto a ResponseSink. Independent of
 * Fastify and of how the request came: the HTTP route (agent/api/routes/openai.ts) and the inference
 * tunnel's server (tunnel-server.ts) both call it.
 *
 * Chat and completions differ only in their Endpoint (endpoints.ts): the prompt and the shape of a
 * choice. The rest is shared: the backend choice (backend.ts), the sampling controls, n choices run
 * concurrently (their sequences batch in the engine; the first failure cancels the others), usage,
 * streaming with include_usage and [DONE], errors mid-stream as an error event.
 */
import { randomBytes } from 'node:crypto'
import type { DesiredState } from '../state/replica.ts'
import type { ComponentRegistry } from '../registry/components.ts'
import { completionBudget, generateText } from '../openai/generate.ts'
import type { TextRequest, TextResult, TokenInfo } from '../openai/generate.ts'
import { grammarFromResponseFormat } from '../openai/json-schema.ts'
import type { JsonGrammar } from '../openai/json-schema.ts'
import { stopList } from '../openai/schemas.ts'
import type { TextTokenizer } from '../model/tokenizer.ts'
import { BackendRouter, isProxy } from './backend.ts'
import type { HostedEngine } from './generate-service.ts'
import type { ServingDeps, TokenBackend } from './backend.ts'
import { ComponentCache } from './catalog.ts'
import type { CommonBody, Endpoint, Prompt } from './endpoints.ts'
import { RawJson, SseWriter, chunkTemplate } from '../http/sse.ts'
import type { ResponseSink } from '../http/sink.ts'

/** An answer: a whole JSON body, or one that writes itself (status line, headers, body) onto a sink. */
export type ServingResponse =
  | { kind: 'json', headers: Record<string, string>, body: object }
  | { kind: 'stream', headers: Record<string, string>, writeTo: (sink: ResponseSink) => Promise<void> }

export interface ServeOptions {
  /** session affinity key: the body's `user`, else the x-session-id header */
  session?: string
  /** arrived through the inference tunnel: served by this agent's own instance, never routed again */
  routed?: boolean
  /** aborts when the client goes away: generation stops and its sequences are freed */
  signal: AbortSignal
}

type Usage = { prompt_tokens: number, completion_tokens: number, total_tokens: number }

/** The prompt once, the completions of every choice. */
function usage (promptTokens: number, rs: TextResult[]): Usage {
  const completion = rs.reduce((a, r) => a + r.completionTokens, 0)
  return { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion }
}

/** Runs the n choices of a request concurrently; the first failure cancels the others. */
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

/** One request's generation, ready to run: what both the whole and the streamed answer need. */
interface Job {
  ep: Endpoint<CommonBody>
  body: CommonBody
  backend: TokenBackend
  tokenizer: TextTokenizer
  prompt: Prompt
  base: TextRequest
  top: number | null
  n: number
  /** the fields every answer and chunk starts with */
  head: { id: string, object: string, created: number, model: string, system_fingerprint?: string }
}

export class OpenAIServing {
  private readonly deps: ServingDeps
  private readonly backends: BackendRouter

  constructor (deps: ServingDeps) {
    this.deps = deps
    this.backends = new BackendRouter(deps)
  }

  /** What a peer's generate request for `block` runs on here (generate-service.ts): its instance, else a vDAG driven here. */
  hosted (block: string, session?: string): HostedEngine {
    return this.backends.hosted(block, session)
  }

  /** Serves one request whose body `ep.parse` accepted. Errors before the answer starts are thrown (OpenAIError with its status). */
  async serve (ep: Endpoint<CommonBody>, body: CommonBody, opts: ServeOptions): Promise<ServingResponse> {
    // a response_format that cannot be followed is refused before anything is routed
    const json = grammarFromResponseFormat(body.response_format)
    const backend = await this.backends.choose({ path: ep.path, body, session: opts.session, routed: opts.routed === true, signal: opts.signal })
    if (isProxy(backend)) {
      return { kind: 'stream', headers: backend.headers, writeTo: async (sink) => { await backend.forward(sink) } }
    }
    const job = await this.prepare(ep, body, backend, json, opts.signal)
    if (body.stream === true) return { kind: 'stream', headers: backend.headers, writeTo: async (sink) => { await this.stream(job, sink, opts.signal) } }
    return { kind: 'json', headers: backend.headers, body: await this.whole(job, opts.signal) }
  }

  /** Tokenizer, prompt and budget: a prompt over the context is refused (400) before any answer starts. */
  private async prepare (ep: Endpoint<CommonBody>, body: CommonBody, backend: TokenBackend, json: JsonGrammar | null, signal: AbortSignal): Promise<Job> {
    const { component, engine } = backend
    const tokenizer = await this.deps.tokenizers.get(component.spec.tokenizer, signal)
    const prompt = ep.prompt(body, tokenizer)
    const top = ep.topLogprobs(body)
    const base: TextRequest = {
      prompt: prompt.ids,
      maxTokens: completionBudget(component, prompt.ids.length, ep.maxTokens(body)),
      temperature: body.temperature,
      topP: body.top_p,
      seed: body.seed,
      stop: stopList(body.stop),
      topLogprobs: top,
      presencePenalty: body.presence_penalty,
      frequencyPenalty: body.frequency_penalty,
      repetitionPenalty: body.repetition_penalty,
      json
    }
    const head: Job['head'] = { id: `${ep.idPrefix}-${randomBytes(12).toString('hex')}`, object: ep.object, created: Math.floor(Date.now() / 1000), model: body.model }
    if (ep.fingerprint) head.system_fingerprint = `blockmesh-${engine.provider.name}`
    return { ep, body, backend, tokenizer, prompt, base, top, n: body.n ?? 1, head }
  }

  /** Choice i of n: the request's seed + i, so a seed reproduces every choice and the choices differ. */
  private choice (job: Job, i: number): TextRequest {
    return { ...job.base, seed: job.body.seed != null ? job.body.seed + i : null }
  }

  private observe (block: string, r: TextResult): void {
    const { metrics } = this.deps
    if (r.firstTokenMs != null) metrics.timeToFirstToken.observe({ block }, r.firstTokenMs / 1000)
    if (r.completionTokens > 1 && r.decodeMs > 0) metrics.requestTokensPerSecond.observe({ block }, (r.completionTokens - 1) / (r.decodeMs / 1000))
  }

  private async whole (job: Job, signal: AbortSignal): Promise<object> {
    const { ep, backend, tokenizer, top } = job
    const outs = Array.from({ length: job.n }, () => ({ text: '', tokens: [] as TokenInfo[] }))
    const rs = await runChoices(job.n, signal, async (i, s) => await generateText(backend.engine, backend.component, tokenizer, this.choice(job, i), (d, tokens) => {
      outs[i].text += d
      if (top != null) outs[i].tokens.push(...tokens)
    }, s))
    for (const r of rs) this.observe(job.body.model, r)
    return {
      ...job.head,
      choices: rs.map((r, i) => ep.choice(i, outs[i].text, top != null ? ep.logprobs(tokenizer, job.prompt)(outs[i].tokens) : null, r.finishReason)),
      usage: usage(job.prompt.ids.length, rs)
    }
  }

  private async stream (job: Job, sink: ResponseSink, signal: AbortSignal): Promise<void> {
    const { ep, backend, tokenizer, top } = job
    const chunkHead = { ...job.head, object: ep.chunkObject }
    const chunk = (choice: object): object => ({ ...chunkHead, choices: [choice] })
    const sse = new SseWriter(sink, { headers: backend.headers }).keepAlive()
    try {
      if (ep.opening != null) for (let i = 0; i < job.n; i++) await sse.send(chunk(ep.opening(i)))
      // per token only the text is encoded (the chunk around it once per choice)
      const deltas = Array.from({ length: job.n }, (_, i) => chunkTemplate(chunk(ep.delta(i, '\u0000', null, null)), '\u0000'))
      const rs = await runChoices(job.n, signal, async (i, s) => {
        const logprobs = top != null ? ep.logprobs(tokenizer, job.prompt) : null
        const r = await generateText(backend.engine, backend.component, tokenizer, this.choice(job, i), async (d, tokens) => {
          await sse.send(logprobs == null ? new RawJson(deltas[i](d)) : chunk(ep.delta(i, d, logprobs(tokens), null)))
        }, s)
        this.observe(job.body.model, r)
        if (!r.cancelled) await sse.send(chunk(ep.delta(i, null, null, r.finishReason)))
        return r
      })
      if (!rs.some(r => r.cancelled)) {
        if (job.body.stream_options?.include_usage === true) {
          const { system_fingerprint: _, ...plain } = chunkHead
          await sse.send({ ...plain, choices: [], usage: usage(job.prompt.ids.length, rs) })
        }
        await sse.send('[DONE]')
      }
    } catch (err) {
      await sse.send({ error: { message: (err as Error).message, type: 'server_error', param: null, code: (err as { code?: string }).code ?? null } })
    } finally {
      sse.end()
    }
  }
}

/**
 * The serving of an agent: its components looked up through a cache kept current by the desired
 * state (ComponentRegistry parses on every lookup).
 */
export function openAIServing (deps: Omit<ServingDeps, 'components'> & { components: Pick<ComponentRegistry, 'find'>, state: Pick<DesiredState, 'onChange'> }): OpenAIServing {
  return new OpenAIServing({ ...deps, components: new ComponentCache(deps.components, deps.state) })
}
