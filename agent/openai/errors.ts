import { AgentError } from '../errors.ts'

/** OpenAI's error body: { error: { message, type, param, code } } */
export interface OpenAIErrorBody { error: { message: string, type: string, param: string | null, code: string | null } }

export class OpenAIError extends AgentError {
  readonly type: string
  readonly param: string | null
  constructor (status: number, message: string, code: string | null, type = status >= 500 ? 'server_error' : 'invalid_request_error', param: string | null = null) {
    super(message, code ?? type, status)
    this.name = 'OpenAIError'
    this.type = type
    this.param = param
  }
}

export function openAIErrorBody (status: number, message: string, code: string | null, param: string | null = null): OpenAIErrorBody {
  return { error: { message, type: status >= 500 ? 'server_error' : 'invalid_request_error', param, code } }
}

export function modelNotFound (model: string): OpenAIError {
  return new OpenAIError(404, `The model \`${model}\` does not exist or is not served by this agent`, 'model_not_found', 'invalid_request_error', 'model')
}

/**
 * Any error as OpenAI's error answer: an AgentError keeps its status and code (OpenAIError its type
 * and param); anything else is a 500 "internal error" (`internal`: worth logging), except errors that
 * carry an HTTP status of their own (Fastify's body-too-large, say). The HTTP API and the inference
 * tunnel answer with this, so a client sees the same error either way.
 */
export function openAIErrorFrom (err: unknown): { status: number, body: OpenAIErrorBody, internal: boolean } {
  const e = err as Error & { statusCode?: unknown }
  const status = err instanceof AgentError ? err.status : typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 600 ? e.statusCode : 500
  const internal = status >= 500 && !(err instanceof AgentError)
  const code = err instanceof OpenAIError
    ? (err.code === err.type ? null : err.code)
    : err instanceof AgentError ? (err.code === 'unauthorized' ? 'invalid_api_key' : err.code) : status === 413 ? 'body_too_large' : null
  return { status, body: openAIErrorBody(status, internal ? 'internal error' : String(e?.message ?? err), code, err instanceof OpenAIError ? err.param : null), internal }
}
