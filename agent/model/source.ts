/**
 * Where model files come from: a local path, a file:// URL or an http(s):// URL (s3://BUCKET/KEY: s3.ts), made
 * available on local disk with its size bounded and its MD5 checked. Downloads stream to
 * `<cache>/<md5>.bin.part`, resume with HTTP Range requests, retry transient failures (http-download.ts), and
 * become `<md5>.bin` by an atomic rename only once complete and verified. The pieces this builds on (the error,
 * hashing, the downloader, the lock) are re-exported here for the modules that import them from source.ts.
 */
import { createHash } from 'node:crypto'
import { mkdir, rename, rm } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ValidationError } from '../errors.ts'
import { displayUrl, formatBytes } from './display.ts'
import type { ProgressCallback } from './download-policy.ts'
import { md5File, statOrNull } from './file-hash.ts'
import { downloadToPart } from './http-download.ts'
import { withLock } from './lock.ts'
import { ModelSourceError, aborted, isAborted } from './source-error.ts'

export { ModelSourceError } from './source-error.ts'
export type { ModelSourceReason } from './source-error.ts'
export { DEFAULT_ATTEMPTS, PROGRESS_INTERVAL_MS, RETRY_BACKOFF_MS } from './download-policy.ts'
export type { ProgressCallback } from './download-policy.ts'
export { displayUrl, formatBytes } from './display.ts'
export { hashFile, md5File, statOrNull } from './file-hash.ts'
export type { HashAlgorithm } from './file-hash.ts'
export { MAX_REDIRECTS, SENSITIVE_HEADERS, fetchFollowing } from './http-fetch.ts'
export { downloadToPart } from './http-download.ts'
export type { DownloadOptions } from './http-download.ts'
export { withLock } from './lock.ts'

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
  onProgress?: ProgressCallback
  signal?: AbortSignal
  /** attempts for a download (network errors, 5xx, truncated body); default 3, with short backoff (e.g. 200 ms, 400 ms...) */
  attempts?: number
}

/** A model file on local disk: its path, lowercase hex MD5, size, and whether this call downloaded it. */
export interface Materialized { path: string, md5: string, sizeBytes: number, downloaded: boolean }

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
