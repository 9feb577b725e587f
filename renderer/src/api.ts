import { auth } from './auth.ts'

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

export interface RequestOptions {
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE'
  body?: unknown
  signal?: AbortSignal
}

/** Builds the request headers: JSON body, and the token (from memory or the desktop keychain) on state-changing calls. */
export function headersFor (method: string, hasBody: boolean): Record<string, string> {
  const headers: Record<string, string> = { accept: 'application/json' }
  if (hasBody) headers['content-type'] = 'application/json'
  const token = auth.token()
  if (token != null && method !== 'GET') headers.authorization = `Bearer ${token}`
  return headers
}

/** Calls the agent's HTTP API (same origin); throws ApiError on non-2xx. */
export async function api<T = any> (path: string, opts: RequestOptions = {}): Promise<T> {
  const method = opts.method ?? 'GET'
  const res = await fetch(path, {
    method,
    headers: headersFor(method, opts.body !== undefined),
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: opts.signal,
    credentials: 'omit',
    cache: 'no-store'
  })
  const text = await res.text()
  let body: any = text
  try { body = text === '' ? null : JSON.parse(text) } catch { /* not JSON */ }
  if (!res.ok) throw errorOf(res.status, body)
  return body as T
}

/** A short message for any thrown value. */
export function messageOf (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
