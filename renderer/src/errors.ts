/** A field the API refused, as its validation errors name it ("policy.node.minRam"). */
export interface FieldError { field: string, message: string }

/** An answer other than 2xx, whichever of the agent's error shapes it came in. */
export class ApiError extends Error {
  override readonly name = 'ApiError'
  readonly status: number
  readonly code: string
  readonly fields: FieldError[]
  constructor (status: number, code: string, message: string, fields: FieldError[] = []) {
    super(message)
    this.status = status
    this.code = code
    this.fields = fields
  }

  /** The message for one field, or for any field under it. */
  field (name: string): string | undefined {
    return this.fields.find(f => f.field === name || f.field.startsWith(name + '.'))?.message
  }
}

function asFields (details: unknown): FieldError[] {
  if (!Array.isArray(details)) return []
  return details.filter((d): d is FieldError => typeof d?.field === 'string' && typeof d?.message === 'string')
}

/**
 * The agent answers errors as { error: { code, message, details } } on /api,
 * { success: false, error } on the seed routes (/tasks, registries), and
 * OpenAI's { error: { message, type, code, param } } on /v1.
 */
export function errorOf (status: number, body: any): ApiError {
  const e = body?.error
  if (typeof e === 'string') return new ApiError(status, body?.code ?? 'error', e, asFields(body?.details))
  if (e != null && typeof e === 'object') {
    const fields = asFields(e.details)
    if (fields.length === 0 && typeof e.param === 'string') fields.push({ field: e.param, message: String(e.message) })
    return new ApiError(status, String(e.code ?? e.type ?? 'error'), String(e.message ?? `HTTP ${status}`), fields)
  }
  return new ApiError(status, 'http_error', `HTTP ${status}${typeof body === 'string' && body !== '' ? `: ${body.slice(0, 200)}` : ''}`)
}
