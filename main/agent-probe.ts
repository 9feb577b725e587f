/** The URL does not answer like a Blockmesh agent (down, wrong port, another server). */
export class AgentUnreachableError extends Error {
  readonly origin: string
  constructor (origin: string, reason: string, options?: ErrorOptions) {
    super(`${origin} is not a reachable Blockmesh agent: ${reason}`, options)
    this.name = 'AgentUnreachableError'
    this.origin = origin
  }
}

/** A health answer is a few hundred bytes; read no more than this of whatever answers. */
const MAX_BODY_BYTES = 64 * 1024

/**
 * Asks `origin`/api/health (no token needed) before the window goes there, so
 * a typo or a stopped agent is an error on the connect page rather than a
 * browser error page. Redirects are not followed (the window may only be on
 * the origin the user chose), the answer is bounded in time and size.
 */
export async function probeAgent (origin: string, opts: { timeoutMs?: number, fetch?: typeof fetch } = {}): Promise<{ name: string, version?: string }> {
  const doFetch = opts.fetch ?? fetch
  let res: Response
  try {
    res = await doFetch(new URL('/api/health', origin), { redirect: 'manual', signal: AbortSignal.timeout(opts.timeoutMs ?? 5000), headers: { accept: 'application/json' } })
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code
    const reason = (err as Error).name === 'TimeoutError' ? `no answer within ${opts.timeoutMs ?? 5000} ms` : cause ?? (err as Error).message
    throw new AgentUnreachableError(origin, reason, { cause: err })
  }
  if (res.status !== 200) {
    await res.body?.cancel()
    throw new AgentUnreachableError(origin, `GET /api/health answered ${res.status}`)
  }
  const text = await readBounded(res, MAX_BODY_BYTES)
  if (text == null) throw new AgentUnreachableError(origin, `GET /api/health answered more than ${MAX_BODY_BYTES} bytes`)
  let body: { status?: unknown, name?: unknown, version?: unknown }
  try { body = JSON.parse(text) } catch { throw new AgentUnreachableError(origin, 'GET /api/health did not answer JSON') }
  if (body?.status !== 'ok' || typeof body.name !== 'string') throw new AgentUnreachableError(origin, 'GET /api/health did not answer like an agent')
  return { name: body.name, ...(typeof body.version === 'string' ? { version: body.version } : {}) }
}

/** The body as text, or null (and the stream cancelled) past `max` bytes. */
async function readBounded (res: Response, max: number): Promise<string | null> {
  if (res.body == null) return ''
  const reader = res.body.getReader()
  const chunks: Uint8Array[] = []
  let total = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    total += value.byteLength
    if (total > max) {
      await reader.cancel()
      return null
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString('utf8')
}
