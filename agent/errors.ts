/** Typed agent errors: a stable `code` and an HTTP status for the API layer. */
export class AgentError extends Error {
  readonly code: string
  readonly status: number
  readonly details?: unknown
  constructor (message: string, code: string, status = 500, details?: unknown, options?: ErrorOptions) {
    super(message, options)
    this.name = 'AgentError'
    this.code = code
    this.status = status
    this.details = details
  }
}

export class ValidationError extends AgentError {
  constructor (message: string, details?: unknown) {
    super(message, 'invalid_request', 400, details)
    this.name = 'ValidationError'
  }
}

export class UnauthorizedError extends AgentError {
  constructor (message = 'missing or wrong bearer token') {
    super(message, 'unauthorized', 401)
    this.name = 'UnauthorizedError'
  }
}

export class NotFoundError extends AgentError {
  constructor (message: string) {
    super(message, 'not_found', 404)
    this.name = 'NotFoundError'
  }
}

/** Something too large to keep or to send to peers (a desired-state object past what peers accept). */
export class TooLargeError extends AgentError {
  constructor (message: string) {
    super(message, 'too_large', 413)
    this.name = 'TooLargeError'
  }
}

export class ConfigError extends AgentError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'invalid_config', 2, undefined, options)
    this.name = 'ConfigError'
  }
}

/** Formats zod issues as "field.path: message" lines. */
export function formatIssues (issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>, message: string }>): Array<{ field: string, message: string }> {
  return issues.map(i => ({ field: i.path.map(String).join('.') || '(root)', message: i.message }))
}
