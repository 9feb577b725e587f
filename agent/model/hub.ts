/**
 * Models from the Hugging Face hub (`hf://ORG/REPO[@REVISION][/PATH]`), over the hub's own HTTP API:
 * `GET /api/models/{repo}/revision/{rev}` (the commit), `GET /api/models/{repo}/tree/{commit}?recursive=true`
 * (sizes and LFS SHA-256s), `GET /{repo}/resolve/{commit}/{path}` (the file; LFS files answer with a 302 to a
 * CDN, carrying `X-Linked-Etag` = the SHA-256 and `X-Linked-Size`). The token (option or `HF_TOKEN`) goes to
 * the hub only: redirects are followed by hand and it is dropped once a hop leaves the hub's origin.
 *
 * Files are stored like huggingface_hub's cache, by commit: `destDir/{org}--{name}/{commit}/{path}`, with
 * `refs/{revision}` holding the commit a revision pointed at and `trees/{commit}.json` the commit's file list,
 * so a second resolution of a complete snapshot needs no download, and none at all offline. Downloads reuse
 * source.ts (`.part`, Range resume, retries, size limit, progress, AbortSignal); LFS files are verified
 * against their SHA-256 and only then renamed into place.
 */
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import { ValidationError } from '../errors.ts'
import {
  DEFAULT_ATTEMPTS, ModelSourceError, RETRY_BACKOFF_MS, displayUrl, downloadToPart, fetchFollowing, formatBytes, hashFile, statOrNull, withLock
} from './source.ts'
import { pickHubFiles } from './hub-pick.ts'
import type { HubFile, HubListing } from './hub-pick.ts'

export { GGUF_PREFERENCE, ONNX_PREFERENCE, ONNX_SIDE_FILES, ggufQuant, pickHubFiles } from './hub-pick.ts'
export type { HubFile, HubListing, HubPick } from './hub-pick.ts'

export const DEFAULT_HF_ENDPOINT = 'https://huggingface.co'
/** Bound on one JSON answer of the hub API (a tree page is ~1000 entries). */
export const MAX_API_BYTES = 16 * 1024 * 1024

export interface HubUri { repo: string, revision: string, path?: string }

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


export interface HubDownloadOptions extends HubOptions {
  /** refuse files larger than this; default no limit */
  maxBytes?: number
  onProgress?: (p: { receivedBytes: number, totalBytes: number | null }) => void
  /** expected SHA-256 (hex), e.g. the tree API's lfs.oid; the `X-Linked-Etag` the hub sends is checked as well */
  sha256?: string
  /** expected size in bytes */
  size?: number
  /** use only what is on disk (default: env HF_HUB_OFFLINE) */
  offline?: boolean
}
export interface HubDownloaded { path: string, commit: string, sizeBytes: number, sha256: string, downloaded: boolean }

export interface ResolveHubOptions extends HubOptions {
  destDir: string
  /** GGUF quantization ('q4_k_m', 'Q8_0', …, matched case-insensitively) or ONNX dtype ('fp32', 'fp16', 'q4', 'int8', 'quantized', 'q4f16', …) */
  variant?: string
  /** a model file of the repo by path (or base name) */
  file?: string
  maxBytes?: number
  offline?: boolean
  onProgress?: (p: { file: string, receivedBytes: number, totalBytes: number | null }) => void
}

/** A model made available from the hub. `files.model` is the model file (the first shard of a split GGUF); every other file is keyed by its repo path; `sha256` has the same keys. */
export interface HubModel {
  kind: 'gguf' | 'onnx'
  repo: string
  revision: string
  commit: string
  /** the quantization or dtype picked, e.g. 'Q4_K_M' or 'fp16' */
  variant: string
  /** the snapshot directory: every file lies at join(dir, repoPath) */
  dir: string
  /** repo path of the model file */
  modelFile: string
  files: { model: string } & Record<string, string>
  sha256: { model: string } & Record<string, string>
  sizeBytes: number
  /** whether this call downloaded anything */
  downloaded: boolean
}


const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/
const REF_SEGMENT = /^[A-Za-z0-9._-]+$/
const COMMIT = /^[0-9a-f]{40}$/
const SHA256 = /^[0-9a-f]{64}$/

function checkName (part: string, what: string, uri: string): void {
  if (!NAME.test(part) || part.length > 96 || part.endsWith('.git')) {
    throw new ValidationError(`${uri}: the ${what} "${part}" is not a hub name (letters, digits, '.', '_' and '-', starting with a letter or digit)`)
  }
}

function decode (s: string, uri: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    throw new ValidationError(`${uri}: "${s}" is not valid percent-encoding`)
  }
}

/** A repo path safe to join under a directory: relative, '/'-separated, no '.', '..' or empty segments, no backslash or control characters. */
export function isSafeRepoPath (path: string): boolean {
  if (path === '' || path.length > 1024 || /[\\\u0000-\u001f]/.test(path)) return false
  return path.split('/').every(s => s !== '' && s !== '.' && s !== '..')
}

function checkRevision (revision: string, uri: string): void {
  if (revision.length > 255 || !revision.split('/').every(s => REF_SEGMENT.test(s) && s !== '.' && s !== '..')) {
    throw new ValidationError(`${uri}: the revision "${revision}" is not a branch, tag or commit name`)
  }
}

/** Parses `hf://ORG/REPO[@REVISION][/PATH]` (revision default 'main'; a revision with slashes is written percent-encoded, `@refs%2Fpr%2F1`). */
export function parseHubUri (uri: string): HubUri {
  const m = /^hf:\/\/(.*)$/i.exec(uri)
  if (m === null) throw new ValidationError(`"${uri}" is not a hub model: write hf://ORG/REPO[@REVISION][/PATH]`)
  if (/[?#]/.test(m[1])) throw new ValidationError(`${uri}: a hub model URI has no query or fragment`)
  const parts = m[1].split('/')
  if (parts.length < 2 || parts[0] === '' || parts[1] === '') throw new ValidationError(`${uri}: write hf://ORG/REPO[@REVISION][/PATH], e.g. hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF`)
  const at = parts[1].indexOf('@')
  const org = parts[0]
  const name = at < 0 ? parts[1] : parts[1].slice(0, at)
  checkName(org, 'organisation', uri)
  checkName(name, 'repo name', uri)
  let revision = 'main'
  if (at >= 0) {
    revision = decode(parts[1].slice(at + 1), uri)
    if (revision === '') throw new ValidationError(`${uri}: the revision after '@' is empty`)
    checkRevision(revision, uri)
  }
  const rest = parts.slice(2)
  while (rest.length > 0 && rest[rest.length - 1] === '') rest.pop()
  if (rest.length === 0) return { repo: `${org}/${name}`, revision }
  const path = rest.map(s => decode(s, uri)).join('/')
  if (!isSafeRepoPath(path)) throw new ValidationError(`${uri}: the path "${path}" is not a plain relative path in the repo`)
  return { repo: `${org}/${name}`, revision, path }
}

function checkRepo (repo: string): void {
  const parts = repo.split('/')
  if (parts.length !== 2) throw new ValidationError(`"${repo}" is not a hub repo: write ORG/NAME`)
  checkName(parts[0], 'organisation', repo)
  checkName(parts[1], 'repo name', repo)
}

interface Ctx { endpoint: string, origin: string, host: string, token: string | undefined, signal: AbortSignal | undefined, attempts: number }

function context (opts: HubOptions): Ctx {
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

function isOffline (opt: boolean | undefined): boolean {
  return opt ?? /^(1|true|yes|on)$/i.test(process.env.HF_HUB_OFFLINE ?? '')
}

function headers (ctx: Ctx): Record<string, string> {
  return ctx.token === undefined ? {} : { authorization: `Bearer ${ctx.token}` }
}

const enc = (s: string): string => encodeURIComponent(s)
const encPath = (p: string): string => p.split('/').map(enc).join('/')

function isAborted (signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}

function abortedError (what: string, signal: AbortSignal | undefined): ModelSourceError {
  return new ModelSourceError('aborted', `${what} was aborted`, undefined, { cause: signal?.reason })
}

/** The hub's 4xx answers, in words an operator can act on (`X-Error-Code` says which thing is missing when the hub sends it). */
function statusError (ctx: Ctx, status: number, errorCode: string | null, what: string, repo: string, revision: string, cause?: unknown): ModelSourceError {
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
        throw abortedError(what, ctx.signal)
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
      if (isAborted(ctx.signal)) throw abortedError(what, ctx.signal)
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

const RevisionInfo = z.object({ sha: z.string().regex(COMMIT), siblings: z.array(z.object({ rfilename: z.string() })).optional() })
const TreeEntry = z.object({
  type: z.string(),
  path: z.string(),
  size: z.number().int().nonnegative().optional(),
  lfs: z.object({ oid: z.string(), size: z.number().int().nonnegative().optional() }).nullish()
})
const TreePage = z.array(TreeEntry)
const CachedTree = z.object({ repo: z.string(), commit: z.string().regex(COMMIT), files: z.array(z.object({ path: z.string(), size: z.number().nullable(), sha256: z.string().regex(SHA256).optional() })) })

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

async function revisionCommit (ctx: Ctx, repo: string, revision: string): Promise<z.infer<typeof RevisionInfo>> {
  const url = `${ctx.endpoint}/api/models/${encPath(repo)}/revision/${enc(revision)}`
  return (await apiGet(ctx, url, `listing ${repo}@${revision}`, repo, revision, RevisionInfo)).data
}

async function treeFiles (ctx: Ctx, repo: string, commit: string, siblings?: Array<{ rfilename: string }>): Promise<HubFile[]> {
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

function repoDir (destDir: string, repo: string): string {
  return join(destDir, repo.replace('/', '--'))
}


async function writeAtomic (path: string, text: string): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true })
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
  await writeFile(tmp, text)
  await rename(tmp, path)
}

async function readRef (dir: string, revision: string): Promise<string | undefined> {
  if (COMMIT.test(revision)) return revision
  try {
    const sha = (await readFile(join(dir, 'refs', enc(revision)), 'utf8')).trim()
    return COMMIT.test(sha) ? sha : undefined
  } catch {
    return undefined
  }
}

async function readTree (dir: string, repo: string, commit: string): Promise<HubFile[] | undefined> {
  try {
    const parsed = CachedTree.safeParse(JSON.parse(await readFile(join(dir, 'trees', `${commit}.json`), 'utf8')))
    if (!parsed.success || parsed.data.repo !== repo || parsed.data.commit !== commit || !parsed.data.files.every(f => isSafeRepoPath(f.path))) return undefined
    return parsed.data.files
  } catch {
    return undefined
  }
}

/**
 * The listing of `revision`, from the hub, or from disk when offline, when the revision is a commit already
 * listed, or when the hub cannot be reached and an earlier call recorded where the revision pointed.
 */
async function cachedListing (ctx: Ctx, destDir: string, repo: string, revision: string, offline: boolean): Promise<HubListing> {
  const dir = repoDir(destDir, repo)
  const fromDisk = async (): Promise<HubListing | undefined> => {
    const commit = await readRef(dir, revision)
    const files = commit === undefined ? undefined : await readTree(dir, repo, commit)
    return commit !== undefined && files !== undefined ? { repo, revision, commit, files } : undefined
  }
  if (offline || COMMIT.test(revision)) {
    const hit = await fromDisk()
    if (hit !== undefined) return hit
    if (offline) throw new ModelSourceError('not_found', `${repo}@${revision} is not in ${destDir} and the hub is not to be asked (offline)`, { repo, revision })
  }
  let info: z.infer<typeof RevisionInfo>
  try {
    info = await revisionCommit(ctx, repo, revision)
  } catch (err) {
    if (err instanceof ModelSourceError && (err.reason === 'network' || statusOf(err) >= 500)) {
      const hit = await fromDisk()
      if (hit !== undefined) return hit
    }
    throw err
  }
  let files = await readTree(dir, repo, info.sha)
  if (files === undefined) {
    files = await treeFiles(ctx, repo, info.sha, info.siblings)
    await writeAtomic(join(dir, 'trees', `${info.sha}.json`), JSON.stringify({ repo, commit: info.sha, files }))
  }
  if (!COMMIT.test(revision)) await writeAtomic(join(dir, 'refs', enc(revision)), info.sha)
  return { repo, revision, commit: info.sha, files }
}

/** The HTTP status a ModelSourceError carries, or 0. */
function statusOf (err: unknown): number {
  const status = err instanceof ModelSourceError ? (err.details as { status?: unknown } | undefined)?.status : undefined
  return typeof status === 'number' ? status : 0
}

function linkedSha (v: string | null): string | undefined {
  const s = v?.replace(/^W\//, '').replace(/"/g, '').trim().toLowerCase()
  return s !== undefined && SHA256.test(s) ? s : undefined
}

/** Brings one file of `commit` into the snapshot directory (no request when it is already there); verifies LFS files' SHA-256. */
async function fetchFile (ctx: Ctx, destDir: string, repo: string, commit: string, file: HubFile, opts: HubDownloadOptions & { offline: boolean }): Promise<HubDownloaded> {
  const path = join(repoDir(destDir, repo), commit, ...file.path.split('/'))
  const what = `download of ${repo}/${file.path}@${commit.slice(0, 12)}`
  const expected = opts.sha256?.toLowerCase() ?? file.sha256
  if (expected !== undefined && !SHA256.test(expected)) throw new ValidationError(`expected SHA-256 "${expected}" is not 64 hexadecimal digits`)
  const maxBytes = opts.maxBytes ?? Number.MAX_SAFE_INTEGER
  return await withLock(path, async () => {
    const have = await statOrNull(path)
    const size = opts.size ?? file.size
    if (have?.isFile() === true && (size === null || have.size === size)) {
      // only verified files are ever renamed into place: an LFS file's hash from the listing is trusted; other files
      // (and any hash the caller asks for) are hashed again, and a copy that does not match is fetched anew
      const sha = opts.sha256 === undefined && expected !== undefined ? expected : await hashFile(path, 'sha256', ctx.signal)
      if (expected === undefined || sha === expected) return { path, commit, sizeBytes: have.size, sha256: sha, downloaded: false }
    }
    if (opts.offline) throw new ModelSourceError('not_found', `${repo}/${file.path}@${commit} is not in ${destDir} and the hub is not to be asked (offline)`, { repo, commit, path: file.path })
    if (size !== null && size > maxBytes) {
      throw new ModelSourceError('too_large', `${what}: the file is ${formatBytes(size)}: the limit is ${formatBytes(maxBytes)}`, { repo, path: file.path, sizeBytes: size, maxBytes })
    }
    const url = new URL(`${ctx.endpoint}/${encPath(repo)}/resolve/${commit}/${encPath(file.path)}`)
    let linked: string | undefined
    let linkedSize: number | undefined
    let errorCode: string | null = null
    const part = `${path}.part`
    try {
      await downloadToPart(url, part, {
        maxBytes,
        signal: ctx.signal,
        attempts: ctx.attempts,
        headers: headers(ctx),
        onProgress: opts.onProgress,
        onResponse: (res, at) => {
          if (at.origin !== ctx.origin) return
          linked = linkedSha(res.headers.get('x-linked-etag')) ?? linked
          const ls = res.headers.get('x-linked-size')
          if (ls !== null && /^\d+$/.test(ls)) linkedSize = Number(ls)
          errorCode = res.headers.get('x-error-code') ?? errorCode
        }
      })
    } catch (err) {
      const status = statusOf(err)
      if (err instanceof ModelSourceError && err.reason === 'http_status' && status >= 400 && status < 500) throw statusError(ctx, status, errorCode, what, repo, commit, err)
      throw err
    }
    const sizeBytes = (await stat(part)).size
    for (const claim of [size, linkedSize]) {
      if (claim !== null && claim !== undefined && claim !== sizeBytes) {
        await rm(part, { force: true })
        throw new ModelSourceError('corrupt', `${what} is ${sizeBytes} bytes but the hub lists ${claim}`, { repo, path: file.path, expected: claim, actual: sizeBytes })
      }
    }
    const actual = await hashFile(part, 'sha256', ctx.signal)
    for (const [claim, by] of [[expected, 'the listing'], [linked, 'the hub (X-Linked-Etag)']] as const) {
      if (claim !== undefined && claim !== actual) {
        await rm(part, { force: true })
        throw new ModelSourceError('sha256_mismatch', `${what} has SHA-256 ${actual} but ${by} says ${claim}`, { repo, path: file.path, expected: claim, actual })
      }
    }
    await rename(part, path)
    return { path, commit, sizeBytes, sha256: actual, downloaded: true }
  })
}

/**
 * Downloads `path` of `repo` at `revision` to `destDir/{org}--{name}/{commit}/{path}` (see the module comment),
 * unless it is already there. The commit is asked of the hub (and remembered in refs/) unless `revision` is one.
 */
export async function downloadFile (repo: string, revision: string, path: string, destDir: string, opts: HubDownloadOptions = {}): Promise<HubDownloaded> {
  checkRepo(repo)
  checkRevision(revision, repo)
  if (!isSafeRepoPath(path)) throw new ValidationError(`"${path}" is not a plain relative path in the repo`)
  const ctx = context(opts)
  const offline = isOffline(opts.offline)
  const dir = repoDir(destDir, repo)
  let commit = await readRef(dir, revision)
  if (!offline && !COMMIT.test(revision)) {
    try {
      commit = (await revisionCommit(ctx, repo, revision)).sha
      await writeAtomic(join(dir, 'refs', enc(revision)), commit)
    } catch (err) {
      if (!(err instanceof ModelSourceError && err.reason === 'network') || commit === undefined) throw err
    }
  }
  if (commit === undefined) throw new ModelSourceError('not_found', `${repo}@${revision} is not in ${destDir} and the hub is not to be asked (offline)`, { repo, revision })
  const known = (await readTree(dir, repo, commit))?.find(f => f.path === path)
  return await fetchFile(ctx, destDir, repo, commit, { path, size: opts.size ?? known?.size ?? null, sha256: known?.sha256 }, { ...opts, offline })
}

/**
 * Makes a hub model available on disk. `hf://ORG/REPO[@REV][/PATH]`: a PATH naming a file fetches that file (a
 * folder narrows the search); otherwise a repo with `.gguf` files gives one quantization (`variant`, `file`, else
 * Q4_K_M, Q4_0, Q4_1, Q8_0, else the smallest; a split GGUF brings all its shards), and an ONNX export gives one
 * dtype of its model (`variant` fp32 (default), fp16, q4, int8/quantized, q4f16, …) with its external data files
 * and the side files (config, tokenizer, chat template) the repo has. Nothing is downloaded that is already in
 * the snapshot; offline (option or HF_HUB_OFFLINE), or when the hub cannot be reached, the snapshot a revision
 * last pointed at is used without any request.
 */
export async function resolveHubModel (uri: string, opts: ResolveHubOptions): Promise<HubModel> {
  const { repo, revision, path } = parseHubUri(uri)
  const ctx = context(opts)
  const offline = isOffline(opts.offline)
  const listing = await cachedListing(ctx, opts.destDir, repo, revision, offline)
  const pick = pickHubFiles(listing, { path, variant: opts.variant, file: opts.file })
  const files: Record<string, string> = {}
  const sha256: Record<string, string> = {}
  let sizeBytes = 0
  let downloaded = false
  for (const f of [pick.model, ...pick.extras]) {
    if (isAborted(ctx.signal)) throw abortedError(`resolution of ${uri}`, ctx.signal)
    const got = await fetchFile(ctx, opts.destDir, repo, listing.commit, f, {
      maxBytes: opts.maxBytes,
      offline,
      onProgress: opts.onProgress === undefined ? undefined : p => opts.onProgress?.({ file: f.path, ...p })
    })
    const key = f === pick.model ? 'model' : f.path
    files[key] = got.path
    sha256[key] = got.sha256
    sizeBytes += got.sizeBytes
    downloaded ||= got.downloaded
  }
  return {
    kind: pick.kind,
    repo,
    revision,
    commit: listing.commit,
    variant: pick.variant,
    dir: join(repoDir(opts.destDir, repo), listing.commit),
    modelFile: pick.model.path,
    files: files as HubModel['files'],
    sha256: sha256 as HubModel['sha256'],
    sizeBytes,
    downloaded
  }
}
