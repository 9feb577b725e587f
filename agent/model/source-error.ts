/**
 * Why a model file could not be made available: ModelSourceError, the one error class of the model sources
 * (local, http(s), S3, Ollama, the hub), and its 'aborted' form for a cancelled AbortSignal.
 */
import { AgentError } from '../errors.ts'

/**
 * Why a model file could not be made available. 'corrupt': something malformed where a model should be
 * (an unreadable manifest or hub answer, a file of the wrong size or format).
 */
export type ModelSourceReason = 'not_found' | 'md5_mismatch' | 'sha256_mismatch' | 'corrupt' | 'too_large' | 'http_status' | 'network' | 'unsupported_scheme' | 'aborted'

/** A model file could not be made available; `reason` says why, `details` carries the facts (hashes, sizes, status). */
export class ModelSourceError extends AgentError {
  readonly reason: ModelSourceReason
  constructor (reason: ModelSourceReason, message: string, details?: Record<string, unknown>, options?: ErrorOptions) {
    super(message, 'model_source', reason === 'aborted' ? 499 : 422, { reason, ...details }, options)
    this.name = 'ModelSourceError'
    this.reason = reason
  }
}

/** The 'aborted' ModelSourceError for `what` (the signal's reason as its cause). */
export function aborted (what: string, signal: AbortSignal | undefined): ModelSourceError {
  return new ModelSourceError('aborted', `${what} was aborted`, undefined, { cause: signal?.reason })
}

/** A function, not an inline test, so TypeScript does not narrow `aborted` across awaits. */
export function isAborted (signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}
