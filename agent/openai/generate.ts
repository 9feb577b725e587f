import { randomInt } from 'node:crypto'
import type { GenerateParams, Generation } from '../executor/engine.ts'

/** Anything that generates tokens: a local engine, a peer's instance (RemoteEngine), a vDAG driver, or MigratingSource around either of the first two. */
export interface TokenSource { generate: (params: GenerateParams) => Generation }
import type { Component } from '../registry/components.ts'
import type { TextTokenizer } from '../model/tokenizer.ts'
import { StopMatcher } from './stop.ts'
import { OpenAIError } from './errors.ts'
import { tokenVocab } from './json-schema.ts'
import type { JsonGrammar } from './json-schema.ts'

export interface TextRequest {
  prompt: number[]
  /** resolved with completionBudget() before the response starts */
  maxTokens: number
  temperature: number | null | undefined
  topP: number | null | undefined
  seed: number | null | undefined
  stop: string[]
  presencePenalty?: number | null
  frequencyPenalty?: number | null
  repetitionPenalty?: number | null
  /** 0..20 alternatives with each token's logprob; null/absent: no logprobs */
  topLogprobs?: number | null
  /** constrained decoding (response_format json_object / json_schema) */
  json?: JsonGrammar | null
}

/** A generated token with its logprob and the top alternatives ([id, logprob], best first). */
export interface TokenInfo { id: number, logprob: number, top: Array<[number, number]> }

export interface TextResult {
  finishReason: 'stop' | 'length'
  promptTokens: number
  completionTokens: number
  /** ms from the call to the first token (null if none) */
  firstTokenMs: number | null
  /** ms from the first to the last token */
  decodeMs: number
  cancelled: boolean
}

/** Resolves max_tokens against the component's defaults and context length. */
export function completionBudget (component: Component, promptTokens: number, requested: number | null | undefined): number {
  const ctx = component.spec.contextLength ?? Number.MAX_SAFE_INTEGER
  if (promptTokens >= ctx) throw new OpenAIError(400, `The prompt is ${promptTokens} tokens; this model's context is ${ctx} tokens`, 'context_length_exceeded', 'invalid_request_error', 'messages')
  if (requested != null) {
    if (promptTokens + requested > ctx) {
      throw new OpenAIError(400, `This model's context is ${ctx} tokens; the prompt (${promptTokens}) plus max_tokens (${requested}) exceeds it`, 'context_length_exceeded', 'invalid_request_error', 'max_tokens')
    }
    return requested
  }
  return Math.min(component.spec.defaults.maxTokens, ctx - promptTokens)
}

/** The engine's parameters for a request; the extra controls only when they do something. */
export async function generateParams (component: Component, tokenizer: TextTokenizer, req: TextRequest): Promise<GenerateParams> {
  const d = component.spec.defaults
  const params: GenerateParams = {
    prompt: req.prompt,
    maxTokens: req.maxTokens,
    temperature: req.temperature ?? d.temperature,
    topP: req.topP ?? d.topP,
    seed: req.seed != null ? (req.seed >>> 0) : randomInt(0, 2 ** 32),
    stopTokens: tokenizer.eosIds
  }
  if (req.presencePenalty != null && req.presencePenalty !== 0) params.presencePenalty = req.presencePenalty
  if (req.frequencyPenalty != null && req.frequencyPenalty !== 0) params.frequencyPenalty = req.frequencyPenalty
  if (req.repetitionPenalty != null && req.repetitionPenalty !== 1) params.repetitionPenalty = req.repetitionPenalty
  if (req.topLogprobs != null) params.topLogprobs = req.topLogprobs
  if (req.json != null) {
    const v = await tokenVocab(tokenizer)
    params.constraint = { grammar: req.json.grammar, grammarKey: req.json.key, vocab: { key: v.key, size: v.size, texts: v.texts } }
  }
  return params
}

/**
 * Runs one generation and hands out text deltas as they become safe to show
 * (whole UTF-8 characters, never part of a stop string), each with the tokens
 * (and logprobs, when asked for) read since the last delta. Aborting `signal`
 * (the client went away) cancels the sequence and frees its cache.
 */
export async function generateText (engine: TokenSource, component: Component, tokenizer: TextTokenizer, req: TextRequest, onText: (delta: string, tokens: TokenInfo[]) => void | Promise<void>, signal?: AbortSignal): Promise<TextResult> {
  const t0 = performance.now()
  const g = engine.generate(await generateParams(component, tokenizer, req))
  const withLogprobs = req.topLogprobs != null
  const pending: TokenInfo[] = []
  const onAbort = (): void => { g.cancel() }
  if (signal?.aborted === true) g.cancel()
  signal?.addEventListener('abort', onAbort, { once: true })
  const decoder = tokenizer.decoder()
  const matcher = new StopMatcher(req.stop)
  let firstAt: number | null = null
  let lastAt = t0
  let tokens = 0
  let stopped = false
  try {
    for await (const token of g.tokens) {
      const now = performance.now()
      firstAt ??= now
      lastAt = now
      tokens++
      if (withLogprobs) {
        const lp = g.logprobs[tokens - 1]
        pending.push({ id: token, logprob: lp?.logprob ?? 0, top: lp?.top ?? [] })
      }
      const { emit, stopped: hit } = matcher.push(decoder.push(token))
      if (emit !== '') await onText(emit, pending.splice(0))
      if (hit) { stopped = true; break }
    }
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
  const result = await g.done
  if (result.reason === 'error') {
    // migration_limit / migration_failed / model_not_ready: the service, not the request (503)
    const code = result.code ?? 'generation_failed'
    throw new OpenAIError(code === 'generation_failed' ? 500 : code === 'invalid_request' ? 400 : 503, `generation failed: ${result.error ?? 'unknown error'}`, code)
  }
  let rest = ''
  if (!stopped) {
    const tail = matcher.push(decoder.end())
    rest = tail.emit
    if (tail.stopped) stopped = true
    else rest += matcher.flush()
  }
  if (rest !== '' || pending.length > 0) await onText(rest, pending.splice(0))
  return {
    finishReason: stopped || result.reason === 'stop' ? 'stop' : result.reason === 'length' ? 'length' : 'stop',
    promptTokens: req.prompt.length,
    completionTokens: Math.max(tokens, stopped ? tokens : result.completionTokens),
    firstTokenMs: firstAt == null ? null : firstAt - t0,
    decodeMs: firstAt == null ? 0 : lastAt - firstAt,
    cancelled: result.reason === 'cancelled' && !stopped
  }
}
