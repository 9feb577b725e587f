/**
 * The HTTP downloader of the model sources (plain http(s) URLs and the hub): streams a URL into a `.part` file
 * with its size bounded, resumes it with Range requests (If-Range on a strong validator), retries network
 * errors, 5xx and truncated bodies with backoff, and reports progress. Verifying the .part and renaming it into
 * place is the caller's.
 */
import { createWriteStream } from 'node:fs'
import type { WriteStream } from 'node:fs'
import { mkdir, rm, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { ReadableStream as NodeReadableStream } from 'node:stream/web'
import { setTimeout as sleep } from 'node:timers/promises'
import { displayUrl, formatBytes } from './display.ts'
import { DEFAULT_ATTEMPTS, RETRY_BACKOFF_MS, progressReporter } from './download-policy.ts'
import type { ProgressCallback, ProgressReporter } from './download-policy.ts'
import { statOrNull } from './file-hash.ts'
import { discard, fetchFollowing } from './http-fetch.ts'
import { ModelSourceError, aborted, isAborted } from './source-error.ts'

/** How `downloadToPart` fetches: the limits of source.ts's `MaterializeOptions`, plus request headers and a look at each response. */
export interface DownloadOptions {
  /** refuse (and delete the .part of) a body larger than this many bytes */
  maxBytes: number
  onProgress?: ProgressCallback
  signal?: AbortSignal
  /** attempts (network errors, 5xx, truncated body); default DEFAULT_ATTEMPTS */
  attempts?: number
  /** request headers for the URL's origin; SENSITIVE_HEADERS among them are dropped once a redirect leaves that origin */
  headers?: Record<string, string>
  /** sees every response before its body is read, redirects included (the hub puts a file's hash on its 302) */
  onResponse?: (res: Response, url: URL) => void
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
