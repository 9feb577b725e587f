import { auth } from './auth.ts'
import { errorOf } from './errors.ts'

export { ApiError, errorOf } from './errors.ts'
export type { FieldError } from './errors.ts'

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
