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
