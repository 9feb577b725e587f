import { z } from 'zod'

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
  n: z.number().int().min(1).max(1, 'only n=1 is supported').nullish(),
  user: z.string().max(256).nullish(),
  // accepted when they ask for nothing this server cannot do
  frequency_penalty: z.literal(0).nullish(),
  presence_penalty: z.literal(0).nullish(),
  logprobs: z.literal(false).nullish()
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
  tools: z.array(z.unknown()).max(0, 'tools are not supported').nullish(),
  response_format: z.object({ type: z.literal('text') }).nullish()
}).passthrough()
export type ChatCompletionRequest = z.output<typeof ChatCompletionRequestSchema>

/** POST /v1/completions */
export const CompletionRequestSchema = z.object({
  ...common,
  prompt: z.union([z.string(), z.array(z.string()).length(1, 'only one prompt per request is supported')]),
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
