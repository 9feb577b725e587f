/**
 * Where model files come from: a local path, a file:// URL or an http(s):// URL, made available on local
 * disk with its size bounded and its MD5 checked. Downloads stream to `<cache>/<md5>.bin.part`, resume
 * with HTTP Range requests, retry transient failures, and become `<md5>.bin` by an atomic rename only
 * once complete and verified. The download itself (`downloadToPart`, `fetchFollowing`) is shared with
 * the Hugging Face hub source (hub.ts).
 */
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import type { Stats, WriteStream } from 'node:fs'
import { mkdir, rename, rm, stat } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { ReadableStream as NodeReadableStream } from 'node:stream/web'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { AgentError, ValidationError } from '../errors.ts'

export interface ModelSource {
  /** 'file:///abs/path', a plain filesystem path, or an http(s):// URL */
  url: string
  /** expected MD5 (hex, lowercase or uppercase accepted) — optional for local files */
  md5?: string
}

export interface MaterializeOptions {
  /** directory for downloaded files (created if missing) */
  cacheDir: string
  /** refuse files larger than this many bytes */
  maxBytes: number
  /** called as bytes arrive (throttled to at most ~5 calls per second, plus a final call); total is null when unknown */
  onProgress?: (p: { receivedBytes: number, totalBytes: number | null }) => void
  signal?: AbortSignal
  /** attempts for a download (network errors, 5xx, truncated body); default 3, with short backoff (e.g. 200 ms, 400 ms...) */
  attempts?: number
}

/** A model file on local disk: its path, lowercase hex MD5, size, and whether this call downloaded it. */
export interface Materialized { path: string, md5: string, sizeBytes: number, downloaded: boolean }

/**
 * Why a model file could not be made available. 'corrupt': something malformed where a model should be
 * (an unreadable manifest or hub answer, a file of the wrong size or format).
 */
export type ModelSourceReason = 'not_found' | 'md5_mismatch' | 'sha256_mismatch' | 'corrupt' | 'too_large' | 'http_status' | 'network' | 'unsupported_scheme' | 'aborted'

/** A model file could not be made available; `reason` says why, `details` carries the facts (hashes, sizes, status). */
export class ModelSourceError extends AgentError {
  readonly reason: ModelSourceReason
  constructor (reason: ModelSourceReason, message: string, details?: Record<string, unknown>, options?: ErrorOptions) {
    super(message, 'model_source', reason === 'aborted' ? 499 : 422, { reason, ...details }, options)
    this.name = 'ModelSourceError'
    this.reason = reason
  }
}

/** Default number of attempts for a download. */
export const DEFAULT_ATTEMPTS = 3
/** Backoff before the second attempt; doubles for each further attempt. */
export const RETRY_BACKOFF_MS = 200
/** Minimum interval between two progress calls (the final call is never held back). */
export const PROGRESS_INTERVAL_MS = 200

const READ_CHUNK = 1 << 20

/** Lowercase MD5 or undefined; refuses anything that is not 32 hex digits (it becomes a file name). */
function normaliseMd5 (md5: string | undefined): string | undefined {
  if (md5 === undefined) return undefined
  if (!/^[0-9a-fA-F]{32}$/.test(md5)) throw new ValidationError(`model MD5 "${md5}" is not 32 hexadecimal digits`)
  return md5.toLowerCase()
}

/**
 * The path a downloaded source is cached at: `<cacheDir>/<md5>.bin` (lowercase), or
 * `<cacheDir>/<first 32 hex of sha256(url)>.bin` when no MD5 is expected. The partial download is that path plus `.part`.
 */
export function cachePathFor (source: ModelSource, cacheDir: string): string {
  const md5 = normaliseMd5(source.md5)
  return join(cacheDir, `${md5 ?? createHash('sha256').update(source.url).digest('hex').slice(0, 32)}.bin`)
}

/** Human size for operator messages: "512 B", "3.0 KiB", "2.0 MiB", "1.5 GiB". */
export function formatBytes (n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n / 1024
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${v.toFixed(1)} ${units[i]}`
}

/** A URL fit for logs: no credentials, and the query string (often a signed token) elided. */
export function displayUrl (url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}${url.search !== '' ? '?…' : ''}`
}

function aborted (what: string, signal: AbortSignal | undefined): ModelSourceError {
  return new ModelSourceError('aborted', `${what} was aborted`, undefined, { cause: signal?.reason })
}

/** A function, not an inline test, so TypeScript does not narrow `aborted` across awaits. */
function isAborted (signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}

function isMissing (err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

/** stat(), or null when the path does not exist. */
export async function statOrNull (path: string): Promise<Stats | null> {
  try {
    return await stat(path)
  } catch (err) {
    if (isMissing(err)) return null
    throw err
  }
}

/** A digest used to verify model files. */
export type HashAlgorithm = 'md5' | 'sha256'

/** Streaming MD5 of a file (reads in chunks, never the whole file in memory); honours signal. */
export async function md5File (path: string, signal?: AbortSignal): Promise<string> {
  return await hashFile(path, 'md5', signal)
}

/** Streaming digest (lowercase hex) of a file, read in chunks; honours signal. */
export async function hashFile (path: string, algorithm: HashAlgorithm, signal?: AbortSignal): Promise<string> {
  if (isAborted(signal)) throw aborted(`hashing ${path}`, signal)
  const hash = createHash(algorithm)
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: READ_CHUNK, signal })) hash.update(chunk as Buffer)
  } catch (err) {
    if (isAborted(signal)) throw aborted(`hashing ${path}`, signal)
    if (isMissing(err)) throw new ModelSourceError('not_found', `model file ${path} does not exist`, { path }, { cause: err })
    throw err
  }
  return hash.digest('hex')
}

/**
 * Makes the model file of `source` available on local disk and verifies it. Local files are used in place
 * (never copied); http(s) files are downloaded into `opts.cacheDir` (see `cachePathFor`) unless a verified
 * copy is already there. Throws ModelSourceError (or ValidationError for a malformed MD5).
 */
export async function materializeModel (source: ModelSource, opts: MaterializeOptions): Promise<Materialized> {
  const md5 = normaliseMd5(source.md5)
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(source.url)?.[1]?.toLowerCase()
  if (scheme === undefined) return await materializeLocal(resolve(source.url), md5, opts)
  if (scheme === 'file') {
    let path: string
    try {
      path = fileURLToPath(source.url)
    } catch (err) {
      throw new ModelSourceError('not_found', `model source ${source.url} is not a local file URL: ${(err as Error).message}`, { url: source.url }, { cause: err })
    }
    return await materializeLocal(path, md5, opts)
  }
  if (scheme === 'http' || scheme === 'https') {
    const url = new URL(source.url)
    const finalPath = cachePathFor({ url: source.url, md5 }, opts.cacheDir)
    return await withLock(finalPath, async () => await materializeHttp(url, finalPath, md5, opts))
  }
  if (scheme === 's3') {
    const finalPath = cachePathFor({ url: source.url, md5 }, opts.cacheDir)
    const { materializeS3 } = await import('./s3.ts')
    return await withLock(finalPath, async () => await materializeS3(source.url, finalPath, md5, opts))
  }
  throw new ModelSourceError('unsupported_scheme',
    `model source ${scheme}://… uses the scheme "${scheme}", which is not supported: use a local path, a file:// URL, an http(s):// URL or s3://BUCKET/KEY`,
    { scheme })
}

async function materializeLocal (path: string, md5: string | undefined, opts: MaterializeOptions): Promise<Materialized> {
  if (isAborted(opts.signal)) throw aborted(`reading model file ${path}`, opts.signal)
  const st = await statOrNull(path)
  if (st === null) throw new ModelSourceError('not_found', `model file ${path} does not exist`, { path })
  if (!st.isFile()) throw new ModelSourceError('not_found', `model file ${path} is not a regular file`, { path })
  if (st.size > opts.maxBytes) {
    throw new ModelSourceError('too_large', `model file ${path} is ${formatBytes(st.size)}: the limit is ${formatBytes(opts.maxBytes)}`,
      { path, sizeBytes: st.size, maxBytes: opts.maxBytes })
  }
  const actual = await md5File(path, opts.signal)
  if (md5 !== undefined && actual !== md5) {
    throw new ModelSourceError('md5_mismatch', `model file ${path} has MD5 ${actual} but the component expects ${md5}`,
      { path, expected: md5, actual })
  }
  return { path, md5: actual, sizeBytes: st.size, downloaded: false }
}

const locks = new Map<string, Promise<unknown>>()

/** Runs `fn` after every earlier call for the same key has settled (two deployments of one model share one download). */
export async function withLock<T> (key: string, fn: () => Promise<T>): Promise<T> {
  const run = (locks.get(key) ?? Promise.resolve()).then(fn, fn)
  const tail = run.then(() => undefined, () => undefined)
  locks.set(key, tail)
  try {
    return await run
  } finally {
    if (locks.get(key) === tail) locks.delete(key)
  }
}

async function materializeHttp (url: URL, finalPath: string, md5: string | undefined, opts: MaterializeOptions): Promise<Materialized> {
  const shown = displayUrl(url)
  const { signal, maxBytes } = opts
  if (isAborted(signal)) throw aborted(`download of ${shown}`, signal)
  await mkdir(opts.cacheDir, { recursive: true })

  const cached = await statOrNull(finalPath)
  if (cached !== null && cached.isFile()) {
    if (cached.size > maxBytes) {
      throw new ModelSourceError('too_large', `cached model file ${finalPath} is ${formatBytes(cached.size)}: the limit is ${formatBytes(maxBytes)}`,
        { path: finalPath, sizeBytes: cached.size, maxBytes })
    }
    const actual = await md5File(finalPath, signal)
    if (md5 === undefined || actual === md5) return { path: finalPath, md5: actual, sizeBytes: cached.size, downloaded: false }
    await rm(finalPath, { force: true }) // a damaged cached copy: fetch it again
  }

  const partPath = `${finalPath}.part`
  const { sizeBytes } = await downloadToPart(url, partPath, opts)
  const actual = await md5File(partPath, signal)
  if (md5 !== undefined && actual !== md5) {
    await rm(partPath, { force: true })
    throw new ModelSourceError('md5_mismatch', `download of ${shown} has MD5 ${actual} but the component expects ${md5}`,
      { url: shown, expected: md5, actual })
  }
  await rename(partPath, finalPath)
  return { path: finalPath, md5: actual, sizeBytes, downloaded: true }
}

/** How `downloadToPart` fetches: the limits of `MaterializeOptions`, plus request headers and a look at each response. */
export interface DownloadOptions {
  /** refuse (and delete the .part of) a body larger than this many bytes */
  maxBytes: number
  onProgress?: MaterializeOptions['onProgress']
  signal?: AbortSignal
  /** attempts (network errors, 5xx, truncated body); default DEFAULT_ATTEMPTS */
  attempts?: number
  /** request headers for the URL's origin; SENSITIVE_HEADERS among them are dropped once a redirect leaves that origin */
  headers?: Record<string, string>
  /** sees every response before its body is read, redirects included (the hub puts a file's hash on its 302) */
  onResponse?: (res: Response, url: URL) => void
}

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

/**
 * Downloads `url` into `partPath`, resuming with a Range request from whatever an earlier attempt (or call)
 * left there, retrying transient failures with backoff. Once it returns the .part is complete (as far as the
 * server says); the caller verifies it and renames it into place. Throws ModelSourceError: 'too_large' (the
 * .part is deleted), 'http_status' (4xx at once, 5xx after the attempts), 'network', 'aborted' (the .part is kept).
 */
export async function downloadToPart (url: URL, partPath: string, opts: DownloadOptions): Promise<{ sizeBytes: number }> {
  const shown = displayUrl(url)
  const { signal } = opts
  if (isAborted(signal)) throw aborted(`download of ${shown}`, signal)
  await mkdir(dirname(partPath), { recursive: true })
  const attempts = Math.max(1, Math.floor(opts.attempts ?? DEFAULT_ATTEMPTS))
  const state: DownloadState = { validator: undefined, progress: progressReporter(opts.onProgress) }
  let failure: Retryable | undefined
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) {
      try {
        await sleep(RETRY_BACKOFF_MS * 2 ** (attempt - 2), undefined, { signal })
      } catch {
        throw aborted(`download of ${shown}`, signal)
      }
    }
    failure = await downloadOnce(url, shown, partPath, opts, state)
    if (failure === undefined) break
  }
  if (failure !== undefined) {
    throw new ModelSourceError(failure.reason, `download of ${shown} failed after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${failure.why}`,
      { url: shown, attempts, status: failure.status }, { cause: failure.cause })
  }
  return { sizeBytes: (await stat(partPath)).size }
}

interface DownloadState {
  /** strong ETag or Last-Modified of the first response, sent as If-Range when resuming */
  validator: string | undefined
  progress: ProgressReporter
}

/** A failure worth another attempt. */
interface Retryable { reason: 'network' | 'http_status', why: string, status?: number, cause?: unknown }

/**
 * One HTTP exchange (two when the server forces a clean restart) appending to or replacing `partPath`.
 * Returns undefined when the .part is complete, a Retryable for transient failures; throws fatal ones.
 */
async function downloadOnce (url: URL, shown: string, partPath: string, opts: DownloadOptions, state: DownloadState): Promise<Retryable | undefined> {
  const { signal, maxBytes } = opts
  let offset = (await statOrNull(partPath))?.size ?? 0
  if (offset > maxBytes) {
    await rm(partPath, { force: true })
    offset = 0
  }
  for (;;) {
    const headers: Record<string, string> = { ...opts.headers, 'accept-encoding': 'identity' }
    if (offset > 0) {
      headers.range = `bytes=${offset}-`
      if (state.validator !== undefined) headers['if-range'] = state.validator
    }
    let res: Response
    try {
      res = (await fetchFollowing(url, { headers, signal, onResponse: opts.onResponse })).res
    } catch (err) {
      if (isAborted(signal)) throw aborted(`download of ${shown}`, signal)
      if (err instanceof ModelSourceError) throw err
      return { reason: 'network', why: describeNetworkError(err), cause: err }
    }
    const answered = `the server answered HTTP ${res.status}${res.statusText !== '' ? ` ${res.statusText}` : ''}`

    if (res.status === 416 && offset > 0) {
      await discard(res)
      // "bytes */N" with N equal to what we hold: the .part is already the whole file
      if (/^bytes \*\/(\d+)$/.exec(res.headers.get('content-range') ?? '')?.[1] === String(offset)) {
        state.progress.final(offset, offset)
        return undefined
      }
      await rm(partPath, { force: true })
      offset = 0
      continue
    }
    if (res.status >= 500) {
      await discard(res)
      return { reason: 'http_status', why: answered, status: res.status }
    }
    if (res.status !== 200 && res.status !== 206) {
      await discard(res)
      throw new ModelSourceError('http_status', `download of ${shown} failed: ${answered}`, { url: shown, status: res.status })
    }

    const length = parseLength(res.headers.get('content-length'))
    let start = 0
    let total: number | null = length
    if (res.status === 206) {
      const range = parseContentRange(res.headers.get('content-range'))
      if (range === null || range.start !== offset) {
        await discard(res)
        if (offset === 0) {
          throw new ModelSourceError('http_status', `download of ${shown} failed: ${answered} with an unusable Content-Range "${res.headers.get('content-range') ?? ''}"`,
            { url: shown, status: res.status })
        }
        await rm(partPath, { force: true })
        offset = 0
        continue
      }
      start = offset
      total = range.total ?? (length !== null ? offset + length : null)
    }
    const etag = res.headers.get('etag')
    state.validator ??= (etag !== null && !etag.startsWith('W/') ? etag : undefined) ?? res.headers.get('last-modified') ?? undefined

    if (total !== null && total > maxBytes) {
      await discard(res)
      await rm(partPath, { force: true })
      throw new ModelSourceError('too_large', `download of ${shown} is ${formatBytes(total)}: the limit is ${formatBytes(maxBytes)}`,
        { url: shown, totalBytes: total, maxBytes })
    }

    let received = start
    let fatal: unknown
    const counter = new Transform({
      transform (chunk: Buffer, _enc, cb) {
        received += chunk.length
        if (received > maxBytes) {
          fatal = new ModelSourceError('too_large', `download of ${shown} stopped at ${formatBytes(received)}: the limit is ${formatBytes(maxBytes)}`,
            { url: shown, receivedBytes: received, maxBytes })
          cb(fatal as Error)
          return
        }
        try {
          state.progress.tick(received, total)
        } catch (err) {
          fatal = err
          cb(err as Error)
          return
        }
        cb(null, chunk)
      }
    })
    const body = res.body === null ? Readable.from([]) : Readable.fromWeb(res.body as unknown as NodeReadableStream<Uint8Array>)
    const file = createWriteStream(partPath, { flags: start > 0 ? 'a' : 'w' })
    // pipeline then destroys every stream with the first error, so remember which one failed first
    let firstFailed: 'body' | 'file' | undefined
    body.once('error', () => { firstFailed ??= 'body' })
    file.once('error', () => { firstFailed ??= 'file' })
    try {
      await pipeline(body, counter, file, { signal })
    } catch (err) {
      await closed(file)
      if (fatal !== undefined) {
        if (fatal instanceof ModelSourceError) await rm(partPath, { force: true })
        throw fatal
      }
      if (isAborted(signal)) throw aborted(`download of ${shown}`, signal)
      if (firstFailed === 'file') throw err // disk full, permissions: not the network, not worth a retry
      return { reason: 'network', why: `the transfer broke at ${formatBytes(received)}: ${describeNetworkError(err)}`, cause: err }
    }
    if (length !== null && received - start < length) {
      return { reason: 'network', why: `the body ended at ${formatBytes(received)} of ${formatBytes(start + length)}` }
    }
    state.progress.final(received, total ?? received)
    return undefined
  }
}

async function discard (res: Response): Promise<void> {
  try {
    await res.body?.cancel()
  } catch {}
}

async function closed (file: WriteStream): Promise<void> {
  if (file.closed) return
  await new Promise<void>(resolve => {
    file.once('close', resolve)
    file.destroy()
  })
}

function parseLength (v: string | null): number | null {
  return v !== null && /^\d+$/.test(v.trim()) ? Number(v.trim()) : null
}

function parseContentRange (v: string | null): { start: number, total: number | null } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(v?.trim() ?? '')
  if (m === null) return null
  return { start: Number(m[1]), total: m[3] === '*' ? null : Number(m[3]) }
}

function describeNetworkError (err: unknown): string {
  const e = err as Error & { cause?: Error & { code?: string } }
  const cause = e.cause
  if (cause?.message !== undefined) return `${e.message} (${cause.code !== undefined ? `${cause.code}: ` : ''}${cause.message})`
  return e.message ?? String(err)
}

interface ProgressReporter {
  tick: (received: number, total: number | null) => void
  final: (received: number, total: number | null) => void
}

/** At most one call per PROGRESS_INTERVAL_MS while bytes arrive (the first at once), plus a final call; never the same report twice in a row. */
function progressReporter (cb: MaterializeOptions['onProgress']): ProgressReporter {
  let lastAt = -Infinity
  let last: { receivedBytes: number, totalBytes: number | null } | undefined
  const emit = (receivedBytes: number, totalBytes: number | null): void => {
    if (cb === undefined || (last?.receivedBytes === receivedBytes && last.totalBytes === totalBytes)) return
    last = { receivedBytes, totalBytes }
    cb({ receivedBytes, totalBytes })
  }
  return {
    tick (received, total) {
      const now = performance.now()
      if (now - lastAt < PROGRESS_INTERVAL_MS) return
      lastAt = now
      emit(received, total)
    },
    final (received, total) { emit(received, total) }
  }
}
