/**
 * What differs between /v1/chat/completions and /v1/completions: the request schema, how the prompt
 * is built, the shape of a choice (whole and streamed) and of logprobs. Everything else — routing,
 * sampling controls, the n choices, streaming, usage — is shared (openai-serving.ts).
 */
import { ChatCompletionRequestSchema, CompletionRequestSchema, messageText, parseRequest } from '../openai/schemas.ts'
import type { ChatCompletionRequest, CompletionRequest } from '../openai/schemas.ts'
import { OpenAIError } from '../openai/errors.ts'
import { chatLogprobs, completionLogprobs } from '../openai/logprobs.ts'
import type { TokenInfo } from '../openai/generate.ts'
import type { TextTokenizer } from '../model/tokenizer.ts'

export type EndpointPath = '/v1/chat/completions' | '/v1/completions'

/** The fields every endpoint's body has (and the serving reads). */
export type CommonBody = ChatCompletionRequest | CompletionRequest

/** A prompt as token ids, and as text where logprobs' offsets count from it. */
export interface Prompt { ids: number[], text: string }

/**
 * One endpoint. Methods, not function-typed fields: their parameters are bivariant, so either
 * endpoint is an Endpoint<CommonBody> and the shared serving takes both without casts.
 */
export interface Endpoint<B extends CommonBody> {
  readonly path: EndpointPath
  /** id prefix and `object` of a whole answer and of a streamed chunk */
  readonly idPrefix: string
  readonly object: string
  readonly chunkObject: string
  /** whether answers carry system_fingerprint (chat does) */
  readonly fingerprint: boolean
  /** the body checked against the endpoint's schema (and rules the schema cannot say); OpenAIError 400 */
  parse (raw: unknown): B
  prompt (body: B, tokenizer: TextTokenizer): Prompt
  /** the completion budget asked for (null: the model's default) */
  maxTokens (body: B): number | null | undefined
  /** alternatives per token when logprobs are asked for, else null */
  topLogprobs (body: B): number | null
  /** a choice of a whole answer */
  choice (index: number, text: string, logprobs: object | null, finish: string): object
  /** a streamed choice: a text delta (null: none, the finishing chunk) */
  delta (index: number, text: string | null, logprobs: object | null, finish: string | null): object
  /** the choice of the chunk sent before any text (chat: the assistant role), if any */
  opening? (index: number): object
  /** per choice: the logprobs of its next tokens (completions count text offsets from the prompt on) */
  logprobs (tokenizer: TextTokenizer, prompt: Prompt): (tokens: TokenInfo[]) => object
}

export const CHAT: Endpoint<ChatCompletionRequest> = {
  path: '/v1/chat/completions',
  idPrefix: 'chatcmpl',
  object: 'chat.completion',
  chunkObject: 'chat.completion.chunk',
  fingerprint: true,
  parse: (raw) => {
    const body = parseRequest(ChatCompletionRequestSchema, raw)
    if (body.top_logprobs != null && body.logprobs !== true) throw new OpenAIError(400, 'top_logprobs: logprobs must be true when top_logprobs is set', null, 'invalid_request_error', 'top_logprobs')
    return body
  },
  prompt: (body, tokenizer) => ({ ids: tokenizer.chatPrompt(body.messages.map(m => ({ role: m.role, content: messageText(m.content) }))), text: '' }),
  maxTokens: body => body.max_completion_tokens ?? body.max_tokens,
  topLogprobs: body => body.logprobs === true ? (body.top_logprobs ?? 0) : null,
  choice: (index, text, logprobs, finish) => ({ index, message: { role: 'assistant', content: text }, logprobs, finish_reason: finish }),
  delta: (index, text, logprobs, finish) => ({ index, delta: text == null ? {} : { content: text }, logprobs, finish_reason: finish }),
  opening: index => ({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }),
  logprobs: tokenizer => tokens => chatLogprobs(tokenizer, tokens)
}

export const COMPLETIONS: Endpoint<CompletionRequest> = {
  path: '/v1/completions',
  idPrefix: 'cmpl',
  object: 'text_completion',
  chunkObject: 'text_completion',
  fingerprint: false,
  parse: raw => parseRequest(CompletionRequestSchema, raw),
  prompt: (body, tokenizer) => {
    const text = Array.isArray(body.prompt) ? body.prompt[0] : body.prompt
    return { ids: tokenizer.encode(text, { bos: true }), text }
  },
  maxTokens: body => body.max_tokens,
  topLogprobs: body => body.logprobs ?? null,
  choice: (index, text, logprobs, finish) => ({ index, text, logprobs, finish_reason: finish }),
  delta: (index, text, logprobs, finish) => ({ index, text: text ?? '', logprobs, finish_reason: finish }),
  logprobs: (tokenizer, prompt) => {
    let offset = prompt.text.length
    return tokens => {
      const lp = completionLogprobs(tokenizer, tokens, offset)
      offset += lp.tokens.reduce((a, t) => a + t.length, 0)
      return lp
    }
  }
}

/** The endpoint served at `path` (the paths the tunnel carries), or undefined. */
export function endpointAt (path: string): Endpoint<CommonBody> | undefined {
  return path === CHAT.path ? CHAT : path === COMPLETIONS.path ? COMPLETIONS : undefined
}
