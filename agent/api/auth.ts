import { timingSafeEqual, createHash } from 'node:crypto'
import { UnauthorizedError } from '../errors.ts'

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

export function isStateChanging (method: string): boolean {
  return !SAFE_METHODS.has(method.toUpperCase())
}

/** Compares "Bearer <token>" against the agent token in constant time. */
export function checkBearer (header: string | undefined, token: string): void {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')
  if (m == null) throw new UnauthorizedError('this route needs the agent\'s token: send Authorization: Bearer <token> (OpenAI clients: use it as the API key; it is in the agent\'s data dir, file api-token)')
  const a = createHash('sha256').update(m[1]).digest()
  const b = createHash('sha256').update(token).digest()
  if (!timingSafeEqual(a, b)) throw new UnauthorizedError('wrong bearer token')
}

const LOOPBACK_HOST = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?$/i

/**
 * With the API bound to loopback, the Host header must name loopback too:
 * a web page on another origin cannot then reach the API via DNS rebinding.
 */
export function hostAllowed (host: string | undefined, boundToLoopback: boolean): boolean {
  if (!boundToLoopback) return true
  return host != null && LOOPBACK_HOST.test(host)
}

export function isLoopbackAddress (host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host)
}
