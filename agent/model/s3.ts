/**
 * Model files on S3 or an S3-compatible store (MinIO, Ceph, s3rver): `s3://BUCKET/KEY`, read with the AWS
 * SDK. Credentials come from the SDK's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles,
 * instance roles); AWS_REGION (default us-east-1); AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for an
 * S3-compatible store (path-style addressing). A download streams into `<file>.part` with its size bounded,
 * resumes a part left by an earlier attempt with a Range request, retries transient failures, and is
 * renamed only once its MD5 is checked.
 */
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, rename, rm } from 'node:fs/promises'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { GetObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3'
import { formatBytes } from './display.ts'
import { DEFAULT_ATTEMPTS, PROGRESS_INTERVAL_MS, RETRY_BACKOFF_MS } from './download-policy.ts'
import { md5File, statOrNull } from './file-hash.ts'
import { ModelSourceError } from './source-error.ts'
import type { MaterializeOptions, Materialized } from './source.ts'

export interface S3Location { bucket: string, key: string }

/** `s3://BUCKET/KEY` → its bucket and key; ModelSourceError('not_found') when it is not one. */
export function parseS3Url (url: string): S3Location {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/(.+)$/i.exec(url)
  if (m == null) throw new ModelSourceError('not_found', `${url} is not an S3 URL (s3://BUCKET/KEY)`, { url })
  return { bucket: m[1], key: m[2] }
}

/** A client for the store the environment names (AWS's endpoint unless AWS_ENDPOINT_URL[_S3] is set). */
export function s3ClientFromEnv (env: NodeJS.ProcessEnv = process.env): S3Client {
  const endpoint = env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL
  return new S3Client({
    region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    ...(endpoint != null && endpoint !== ''
      ? { endpoint, forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' }
      : {})
  })
}

function transient (err: unknown): boolean {
  if (err instanceof S3ServiceException) return (err.$metadata.httpStatusCode ?? 0) >= 500
  return !(err instanceof ModelSourceError)
}

/** Downloads `url` (s3://) to `finalPath` (through `finalPath.part`), MD5-checked when `md5` is given. */
export async function materializeS3 (url: string, finalPath: string, md5: string | undefined, opts: MaterializeOptions, client: S3Client = s3ClientFromEnv()): Promise<Materialized> {
  const { bucket, key } = parseS3Url(url)
  const signal = opts.signal
  await mkdir(opts.cacheDir, { recursive: true })
  const cached = await statOrNull(finalPath)
  if (cached?.isFile() === true) {
    const actual = await md5File(finalPath, signal)
    if (md5 === undefined || actual === md5) return { path: finalPath, md5: actual, sizeBytes: cached.size, downloaded: false }
    await rm(finalPath, { force: true })
  }
  const partPath = `${finalPath}.part`
  const attempts = opts.attempts ?? DEFAULT_ATTEMPTS
  let total: number | null = null
  for (let attempt = 1; ; attempt++) {
    const have = (await statOrNull(partPath))?.size ?? 0
    try {
      const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, ...(have > 0 ? { Range: `bytes=${have}-` } : {}) }), { abortSignal: signal })
      const ranged = have > 0 && res.ContentRange != null
      if (have > 0 && !ranged) await rm(partPath, { force: true }) // the store ignored the range: start again
      const start = ranged ? have : 0
      total = res.ContentLength != null ? start + res.ContentLength : null
      if (total != null && total > opts.maxBytes) {
        throw new ModelSourceError('too_large', `${url} is ${formatBytes(total)}: the limit is ${formatBytes(opts.maxBytes)}`, { url, sizeBytes: total, maxBytes: opts.maxBytes })
      }
      let received = start
      let lastProgress = 0
      const count = new Transform({
        transform (chunk: Buffer, _enc, done) {
          received += chunk.length
          if (received > opts.maxBytes) { done(new ModelSourceError('too_large', `${url} is over ${formatBytes(opts.maxBytes)}`, { url, maxBytes: opts.maxBytes })); return }
          const now = Date.now()
          if (now - lastProgress >= PROGRESS_INTERVAL_MS) { lastProgress = now; opts.onProgress?.({ receivedBytes: received, totalBytes: total }) }
          done(null, chunk)
        }
      })
      await pipeline(res.Body as Readable, count, createWriteStream(partPath, { flags: start > 0 ? 'a' : 'w' }), { signal })
      if (total != null && received !== total) throw new Error(`${url}: ${received} of ${total} bytes arrived`)
      opts.onProgress?.({ receivedBytes: received, totalBytes: total ?? received })
      break
    } catch (err) {
      if (signal?.aborted === true) throw new ModelSourceError('aborted', `download of ${url} aborted`, { url }, { cause: err })
      if (err instanceof S3ServiceException && (err.$metadata.httpStatusCode === 404 || err.name === 'NoSuchKey' || err.name === 'NoSuchBucket')) {
        throw new ModelSourceError('not_found', `${url} does not exist (${err.name})`, { url }, { cause: err })
      }
      if (err instanceof S3ServiceException && !transient(err)) {
        throw new ModelSourceError('http_status', `${url}: ${err.name} (HTTP ${err.$metadata.httpStatusCode ?? '?'})`, { url, status: err.$metadata.httpStatusCode }, { cause: err })
      }
      if (!transient(err)) throw err
      if (attempt >= attempts) throw new ModelSourceError('network', `download of ${url} failed after ${attempts} attempts: ${(err as Error).message}`, { url }, { cause: err })
      await sleep(RETRY_BACKOFF_MS * 2 ** (attempt - 1))
    }
  }
  const hash = createHash('md5')
  await pipeline(createReadStream(partPath), hash)
  const actual = hash.digest('hex')
  if (md5 !== undefined && actual !== md5) {
    await rm(partPath, { force: true })
    throw new ModelSourceError('md5_mismatch', `download of ${url} has MD5 ${actual} but the component expects ${md5}`, { url, expected: md5, actual })
  }
  const size = (await statOrNull(partPath))?.size ?? 0
  await rename(partPath, finalPath)
  return { path: finalPath, md5: actual, sizeBytes: size, downloaded: true }
}
