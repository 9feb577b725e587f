/**
 * The hub's HTTP API client: where the hub is and how to authenticate (HubOptions: endpoint, HF_TOKEN), JSON
 * answers read with a bound and validated, retries, the hub's 4xx in operator words, and the listing of a
 * revision: its commit (`/api/models/{repo}/revision/{rev}`) and its files (`/tree/{commit}`, page by page).
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import { ValidationError } from '../errors.ts'
import { displayUrl, formatBytes } from './display.ts'
import { DEFAULT_ATTEMPTS, RETRY_BACKOFF_MS } from './download-policy.ts'
import { fetchFollowing } from './http-fetch.ts'
import type { HubFile, HubListing } from './hub-pick.ts'
import { COMMIT, SHA256, checkRepo, checkRevision, isSafeRepoPath } from './hub-uri.ts'
import { ModelSourceError, aborted, isAborted } from './source-error.ts'

export const DEFAULT_HF_ENDPOINT = 'https://huggingface.co'
/** Bound on one JSON answer of the hub API (a tree page is ~1000 entries). */
export const MAX_API_BYTES = 16 * 1024 * 1024

/** How to reach the hub. */
export interface HubOptions {
  /** default: env HF_ENDPOINT, else https://huggingface.co */
  endpoint?: string
  /** default: env HF_TOKEN; sent as `Authorization: Bearer` to the endpoint's origin only, never logged */
  token?: string
  signal?: AbortSignal
  /** attempts per request (network errors, 5xx); default DEFAULT_ATTEMPTS */
  attempts?: number
}

/** How one call reaches the hub: its endpoint, origin and host, the token, the signal and the attempts per request. */
export interface Ctx { endpoint: string, origin: string, host: string, token: string | undefined, signal: AbortSignal | undefined, attempts: number }

/** The Ctx of `opts`: the endpoint (option, env HF_ENDPOINT, else DEFAULT_HF_ENDPOINT) and the token (option, env HF_TOKEN). */
export function context (opts: HubOptions): Ctx {
  const raw = opts.endpoint ?? process.env.HF_ENDPOINT ?? DEFAULT_HF_ENDPOINT
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new ValidationError(`hub endpoint "${raw}" is not a URL`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ValidationError(`hub endpoint "${raw}" is not an http(s) URL`)
  const token = opts.token ?? process.env.HF_TOKEN
  return {
    endpoint: `${url.origin}${url.pathname.replace(/\/+$/, '')}`,
    origin: url.origin,
    host: url.host,
    token: token !== undefined && token !== '' ? token : undefined,
    signal: opts.signal,
    attempts: Math.max(1, Math.floor(opts.attempts ?? DEFAULT_ATTEMPTS))
  }
}

/** The request headers for the hub: the token, when there is one. */
export function headers (ctx: Ctx): Record<string, string> {
  return ctx.token === undefined ? {} : { authorization: `Bearer ${ctx.token}` }
}

/** A name, or each '/'-separated segment of a path, percent-encoded for a hub URL. */
export const enc = (s: string): string => encodeURIComponent(s)
export const encPath = (p: string): string => p.split('/').map(enc).join('/')

/** The hub's 4xx answers, in words an operator can act on (`X-Error-Code` says which thing is missing when the hub sends it). */
export function statusError (ctx: Ctx, status: number, errorCode: string | null, what: string, repo: string, revision: string, cause?: unknown): ModelSourceError {
  const details = { repo, revision, status, errorCode: errorCode ?? undefined }
  const tokenHint = ctx.token === undefined
    ? 'set HF_TOKEN to a Hugging Face access token that can read it'
    : 'the token in HF_TOKEN is not accepted for it (wrong, expired, or without access)'
  if (errorCode === 'GatedRepo') {
    return new ModelSourceError('http_status', `${what}: ${repo} is gated: accept its conditions on ${ctx.endpoint}/${repo} and ${tokenHint}`, details, { cause })
  }
  if (errorCode === 'RepoNotFound') {
    return new ModelSourceError('not_found', `${what}: no model repo ${repo} on ${ctx.host}${status === 401 ? ` (or it is private or gated: ${tokenHint})` : ''}`, details, { cause })
  }
  if (errorCode === 'RevisionNotFound') return new ModelSourceError('not_found', `${what}: ${repo} has no revision "${revision}"`, details, { cause })
  if (errorCode === 'EntryNotFound') return new ModelSourceError('not_found', `${what}: no such file in ${repo}@${revision}`, details, { cause })
  if (status === 401 || status === 403) {
    return new ModelSourceError('http_status', `${what} was refused (HTTP ${status}): ${repo} is private or gated: ${tokenHint}`, details, { cause })
  }
  if (status === 404) return new ModelSourceError('not_found', `${what}: the hub answered HTTP 404: no such repo, revision or file`, details, { cause })
  return new ModelSourceError('http_status', `${what} failed: the hub answered HTTP ${status}`, details, { cause })
}

async function readBounded (res: Response, limit: number, what: string): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? NaN)
  if (declared > limit) {
    await res.body?.cancel().catch(() => {})
    throw new ModelSourceError('too_large', `${what}: the answer is ${formatBytes(declared)}, over the ${formatBytes(limit)} limit`)
  }
  if (res.body === null) return ''
  const reader = res.body.getReader()
  const chunks: Uint8Array[] = []
  let n = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    n += value.length
    if (n > limit) {
      await reader.cancel().catch(() => {})
      throw new ModelSourceError('too_large', `${what}: the answer is over the ${formatBytes(limit)} limit`)
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/** GET a JSON document of the hub API, retrying network errors and 5xx; validates it with `schema`. */
async function apiGet<T> (ctx: Ctx, url: string, what: string, repo: string, revision: string, schema: z.ZodType<T>): Promise<{ data: T, link: string | null }> {
  const shown = displayUrl(new URL(url))
  let last: { reason: 'network' | 'http_status', why: string, status?: number, cause?: unknown } | undefined
  for (let attempt = 1; attempt <= ctx.attempts; attempt++) {
    if (attempt > 1) {
      try {
        await sleep(RETRY_BACKOFF_MS * 2 ** (attempt - 2), undefined, { signal: ctx.signal })
      } catch {
        throw aborted(what, ctx.signal)
      }
    }
    let text: string
    let link: string | null
    try {
      const { res } = await fetchFollowing(new URL(url), { headers: { ...headers(ctx), accept: 'application/json' }, signal: ctx.signal })
      if (res.status >= 500 || res.status === 429) { // 429: rate limited, worth the backoff
        await res.body?.cancel().catch(() => {})
        last = { reason: 'http_status', why: `the hub answered HTTP ${res.status}`, status: res.status }
        continue
      }
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => {})
        throw statusError(ctx, res.status, res.headers.get('x-error-code'), what, repo, revision)
      }
      link = res.headers.get('link')
      text = await readBounded(res, MAX_API_BYTES, what)
    } catch (err) {
      if (isAborted(ctx.signal)) throw aborted(what, ctx.signal)
      if (err instanceof ModelSourceError || err instanceof ValidationError) throw err
      last = { reason: 'network', why: (err as Error).message, cause: err }
      continue
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (err) {
      throw new ModelSourceError('corrupt', `${what}: ${shown} did not answer JSON`, { url: shown }, { cause: err })
    }
    const parsed = schema.safeParse(json)
    if (!parsed.success) {
      throw new ModelSourceError('corrupt', `${what}: ${shown} answered unexpected JSON: ${parsed.error.issues.slice(0, 3).map(i => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`, { url: shown })
    }
    return { data: parsed.data, link }
  }
  const l = last ?? { reason: 'network' as const, why: 'no attempt was made' }
  throw new ModelSourceError(l.reason, `${what} failed after ${ctx.attempts} attempt${ctx.attempts === 1 ? '' : 's'}: ${l.why}`, { url: shown, status: l.status }, { cause: l.cause })
}

/** The revision API's answer (the commit, and the file names), as far as it is used here. */
export const RevisionInfo = z.object({ sha: z.string().regex(COMMIT), siblings: z.array(z.object({ rfilename: z.string() })).optional() })
const TreeEntry = z.object({
  type: z.string(),
  path: z.string(),
  size: z.number().int().nonnegative().optional(),
  lfs: z.object({ oid: z.string(), size: z.number().int().nonnegative().optional() }).nullish()
})
const TreePage = z.array(TreeEntry)

function nextLink (link: string | null): string | undefined {
  return /<([^>]+)>\s*;\s*rel="?next"?/.exec(link ?? '')?.[1]
}

function checkListed (path: string, repo: string): string {
  if (!isSafeRepoPath(path)) throw new ModelSourceError('corrupt', `the hub lists a file "${path}" in ${repo} that cannot be stored safely`, { repo, path })
  return path
}

/** The commit `revision` of `repo` points at, and its files (with sizes and LFS SHA-256s when the tree API answers). */
export async function listFiles (repo: string, revision: string, opts: HubOptions = {}): Promise<HubListing> {
  checkRepo(repo)
  checkRevision(revision, repo)
  const ctx = context(opts)
  const commit = await revisionCommit(ctx, repo, revision)
  return { repo, revision, commit: commit.sha, files: await treeFiles(ctx, repo, commit.sha, commit.siblings) }
}

/** The commit `revision` of `repo` points at (and its file names), from the revision API. */
export async function revisionCommit (ctx: Ctx, repo: string, revision: string): Promise<z.infer<typeof RevisionInfo>> {
  const url = `${ctx.endpoint}/api/models/${encPath(repo)}/revision/${enc(revision)}`
  return (await apiGet(ctx, url, `listing ${repo}@${revision}`, repo, revision, RevisionInfo)).data
}

/** The files of `commit`, page by page from the tree API; a mirror without it falls back to `siblings`. Sorted by path. */
export async function treeFiles (ctx: Ctx, repo: string, commit: string, siblings?: Array<{ rfilename: string }>): Promise<HubFile[]> {
  const files: HubFile[] = []
  let url: string | undefined = `${ctx.endpoint}/api/models/${encPath(repo)}/tree/${commit}?recursive=true&expand=false`
  try {
    for (let page = 0; url !== undefined; page++) {
      if (page >= 1000) throw new ModelSourceError('corrupt', `listing ${repo}@${commit}: the tree has more than 1000 pages`)
      if (new URL(url).origin !== ctx.origin) throw new ModelSourceError('corrupt', `listing ${repo}@${commit}: the next page is on another host`)
      const { data, link } = await apiGet(ctx, url, `listing ${repo}@${commit}`, repo, commit, TreePage)
      for (const e of data) {
        if (e.type !== 'file') continue
        const sha = e.lfs?.oid.toLowerCase()
        files.push({ path: checkListed(e.path, repo), size: e.lfs?.size ?? e.size ?? null, ...(sha !== undefined && SHA256.test(sha) ? { sha256: sha } : {}) })
      }
      url = nextLink(link)
    }
  } catch (err) {
    // a mirror without the tree API: the revision's file names, sizes unknown
    if (!(err instanceof ModelSourceError && err.reason === 'not_found') || siblings === undefined) throw err
    return siblings.map(s => ({ path: checkListed(s.rfilename, repo), size: null }))
  }
  return files.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0)
}

/** The HTTP status a ModelSourceError carries, or 0. */
export function statusOf (err: unknown): number {
  const status = err instanceof ModelSourceError ? (err.details as { status?: unknown } | undefined)?.status : undefined
  return typeof status === 'number' ? status : 0
}
