import { z } from 'zod'
import { OpenAIError } from './errors.ts'

/** choices per request */
export const MAX_N = 8
/** alternatives per token in logprobs */
export const MAX_TOP_LOGPROBS = 20

const stop = z.union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).max(4)]).nullish()
const common = {
  model: z.string().min(1).max(256),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  max_tokens: z.number().int().min(1).max(1_000_000).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop,
  n: z.number().int().min(1).max(MAX_N, `n is at most ${MAX_N}`).nullish(),
  user: z.string().max(256).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  /** not OpenAI's: Hugging Face's (and vLLM's) multiplicative penalty on tokens already seen, 1 = off */
  repetition_penalty: z.number().gt(0).max(10).nullish(),
  response_format: z.discriminatedUnion('type', [
    z.object({ type: z.literal('text') }),
    z.object({ type: z.literal('json_object') }),
    z.object({
      type: z.literal('json_schema'),
      json_schema: z.object({
        name: z.string().min(1).max(64).regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, "_" and "-"'),
        description: z.string().optional(),
        schema: z.unknown().optional(),
        strict: z.boolean().nullish()
      })
    })
  ]).nullish()
}

const contentPart = z.object({ type: z.literal('text'), text: z.string() }).passthrough()
export const ChatMessageSchema = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(contentPart)]).nullable(),
  name: z.string().max(64).optional()
}).passthrough()

/** POST /v1/chat/completions — the fields this server honours; other known fields are refused only if set to something it cannot do. */
export const ChatCompletionRequestSchema = z.object({
  ...common,
  messages: z.array(ChatMessageSchema).min(1).max(4096),
  max_completion_tokens: z.number().int().min(1).max(1_000_000).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  // tools and functions are not supported: refused unless empty
  tools: z.array(z.unknown()).max(0, 'tools are not supported').nullish(),
  tool_choice: z.enum(['none', 'auto'], { message: 'tools are not supported' }).nullish(),
  functions: z.array(z.unknown()).max(0, 'functions are not supported').nullish(),
  function_call: z.literal('none', { message: 'functions are not supported' }).nullish()
}).passthrough()
export type ChatCompletionRequest = z.output<typeof ChatCompletionRequestSchema>

/** POST /v1/completions */
export const CompletionRequestSchema = z.object({
  ...common,
  prompt: z.union([z.string(), z.array(z.string()).length(1, 'only one prompt per request is supported')]),
  /** the top `logprobs` alternatives with each token's logprob */
  logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  best_of: z.number().int().min(1).max(1, 'best_of is not supported').nullish(),
  echo: z.literal(false).nullish(),
  suffix: z.null().optional()
}).passthrough()
export type CompletionRequest = z.output<typeof CompletionRequestSchema>

export function stopList (s: string | string[] | null | undefined): string[] {
  return s == null ? [] : Array.isArray(s) ? s : [s]
}

export function messageText (content: z.output<typeof ChatMessageSchema>['content']): string {
  if (content == null) return ''
  return typeof content === 'string' ? content : content.map(p => p.text).join('')
}

/** A request body checked against an endpoint's schema; the first problem is a 400 naming its field (OpenAI's `param`). */
export function parseRequest<T> (schema: { safeParse: (v: unknown) => { success: true, data: T } | { success: false, error: { issues: Array<{ path: PropertyKey[], message: string }> } } }, body: unknown): T {
  const r = schema.safeParse(body)
  if (r.success) return r.data
  const first = r.error.issues[0]
  const param = first.path.map(String).join('.') || null
  throw new OpenAIError(400, `${param ?? 'body'}: ${first.message}`, null, 'invalid_request_error', param)
}
