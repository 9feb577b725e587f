/**
 * One HTTP GET with redirects followed by hand (fetchFollowing): http(s) only, a bounded number of hops, and
 * credentials never sent to another origin than the first URL's.
 */
import { displayUrl } from './display.ts'
import { ModelSourceError } from './source-error.ts'

/** Request headers never sent to another origin than the one they were meant for. */
export const SENSITIVE_HEADERS: readonly string[] = ['authorization', 'cookie', 'proxy-authorization']
/** Redirects followed by `fetchFollowing` before it gives up. */
export const MAX_REDIRECTS = 10

/**
 * GET `url`, following redirects by hand: relative or absolute, http(s) only, at most MAX_REDIRECTS, and
 * SENSITIVE_HEADERS dropped for good once a hop leaves the first URL's origin (a token for the hub never reaches
 * its CDN). Returns the final response, its body unread. Network errors reject as fetch does; a redirect without
 * a usable Location, or too many, throw ModelSourceError 'http_status'.
 */
export async function fetchFollowing (url: URL, init: { headers?: Record<string, string>, signal?: AbortSignal, onResponse?: (res: Response, url: URL) => void } = {}): Promise<{ res: Response, url: URL }> {
  const headers: Record<string, string> = {}
  for (const [k, v] of Object.entries(init.headers ?? {})) headers[k.toLowerCase()] = v
  let current = url
  for (let hop = 0; ; hop++) {
    if (current.origin !== url.origin) for (const h of SENSITIVE_HEADERS) delete headers[h]
    const res = await fetch(current, { headers, signal: init.signal, redirect: 'manual' })
    init.onResponse?.(res, current)
    if (![301, 302, 303, 307, 308].includes(res.status)) return { res, url: current }
    await discard(res)
    const location = res.headers.get('location')
    let next: URL | undefined
    try {
      next = location === null ? undefined : new URL(location, current)
    } catch {}
    if (next === undefined || (next.protocol !== 'http:' && next.protocol !== 'https:')) {
      throw new ModelSourceError('http_status', `${displayUrl(current)} answered HTTP ${res.status} without a usable Location`,
        { url: displayUrl(current), status: res.status })
    }
    if (hop >= MAX_REDIRECTS) {
      throw new ModelSourceError('http_status', `${displayUrl(url)} redirected more than ${MAX_REDIRECTS} times`, { url: displayUrl(url), status: res.status })
    }
    current = next
  }
}

/** Drops a response's unread body. */
export async function discard (res: Response): Promise<void> {
  try {
    await res.body?.cancel()
  } catch {}
}
