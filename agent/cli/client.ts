import { AgentError } from '../errors.ts'

/** Calls an agent's HTTP API; an error answer becomes an AgentError with the API's code and message. */
export async function apiRequest<T> (base: string, path: string, init: { method?: string, body?: unknown, token?: string, timeoutMs?: number } = {}): Promise<T> {
  let res: Response
  try {
    res = await fetch(base + path, {
      method: init.method ?? 'GET',
      headers: {
        ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(init.token != null ? { authorization: `Bearer ${init.token}` } : {})
      },
      body: init.body !== undefined ? JSON.stringify(init.body) : undefined,
      signal: AbortSignal.timeout(init.timeoutMs ?? 30_000)
    })
  } catch (err) {
    throw new AgentError(`cannot reach the agent API at ${base}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message} (is an agent running? start one with: npm start)`, 'unreachable', 1)
  }
  const text = await res.text()
  let json: unknown
  try { json = text === '' ? null : JSON.parse(text) } catch { json = null }
  if (!res.ok) {
    // the API's shape { error: { code, message } }, or the seed registries' { success: false, error, code, details }
    const body = json as { error?: string | { code?: string, message?: string }, code?: string, details?: Array<{ field: string, message: string }> } | null
    const code = typeof body?.error === 'object' ? body.error.code : body?.code
    const message = typeof body?.error === 'object' ? body.error.message : body?.error
    const details = Array.isArray(body?.details) ? body.details.map(d => `\n  ${d.field}: ${d.message}`).join('') : ''
    throw new AgentError(`${res.status} ${code ?? 'error'}: ${message ?? text.slice(0, 200)}${details}`, code ?? 'http_error', 1)
  }
  return json as T
}

export async function apiGet<T> (base: string, path: string): Promise<T> {
  return await apiRequest<T>(base, path)
}

/** The JSON lines of a streamed NDJSON answer, parsed, as they arrive. */
export async function * ndjsonLines<T = unknown> (body: AsyncIterable<Uint8Array>): AsyncGenerator<T> {
  const decoder = new TextDecoder()
  let buf = ''
  for await (const chunk of body) {
    buf += decoder.decode(chunk, { stream: true })
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim()
      buf = buf.slice(nl + 1)
      if (line !== '') yield JSON.parse(line) as T
    }
  }
  if (buf.trim() !== '') yield JSON.parse(buf) as T
}
