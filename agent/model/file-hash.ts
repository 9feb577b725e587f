/**
 * Facts about a local model file: whether it is there (statOrNull) and its digest, streamed in chunks
 * (md5File, hashFile).
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import type { Stats } from 'node:fs'
import { stat } from 'node:fs/promises'
import { ModelSourceError, aborted, isAborted } from './source-error.ts'

const READ_CHUNK = 1 << 20

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
