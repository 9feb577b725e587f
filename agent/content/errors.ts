/** One error class per way a content operation fails (issue 15); detected by class, never by message text. */
import { AgentError } from '../errors.ts'

/** The file (or the chunk asked for) is not held here. */
export class ContentNotFoundError extends AgentError {
  constructor (message: string) {
    super(message, 'content_not_found', 404)
    this.name = 'ContentNotFoundError'
  }
}

/** A chunk's SHA-256 is not the one its manifest lists (the source that sent it served bad bytes). */
export class ChunkHashError extends AgentError {
  readonly md5: string
  readonly index: number
  constructor (md5: string, index: number, message = `chunk ${index} of ${md5} does not match its manifest`) {
    super(message, 'chunk_hash_mismatch', 422, { md5, index })
    this.name = 'ChunkHashError'
    this.md5 = md5
    this.index = index
  }
}

/** A whole file's MD5 or SHA-256 is not the one expected (a forged manifest, or a file changed on disk). */
export class ContentDigestError extends AgentError {
  constructor (message: string, details?: Record<string, unknown>) {
    super(message, 'content_digest_mismatch', 422, details)
    this.name = 'ContentDigestError'
  }
}

/** The file is used by a running block and cannot be removed. */
export class ContentInUseError extends AgentError {
  constructor (md5: string, users: number) {
    super(`${md5} is in use by ${users} block instance(s)`, 'content_in_use', 409, { md5, users })
    this.name = 'ContentInUseError'
  }
}

/** A manifest that does not parse, is not signed, or does not describe the file asked for. */
export class ManifestError extends AgentError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'bad_manifest', 422, undefined, options)
    this.name = 'ManifestError'
  }
}

/** The store would go over its cap with nothing left it may evict. */
export class ContentCapError extends AgentError {
  constructor (message: string, details?: Record<string, unknown>) {
    super(message, 'content_cap', 507, details)
    this.name = 'ContentCapError'
  }
}

/** No peer holds the file and there is no origin to fall back to (or every source failed). */
export class NoSourceError extends AgentError {
  constructor (message: string, details?: Record<string, unknown>) {
    super(message, 'no_source', 404, details)
    this.name = 'NoSourceError'
  }
}

/** A file larger than this agent takes (--max-model-bytes), as its manifest says: refused before any byte is fetched or room is made. */
export class ContentTooLargeError extends AgentError {
  constructor (message: string, details?: Record<string, unknown>) {
    super(message, 'content_too_large', 413, details)
    this.name = 'ContentTooLargeError'
  }
}
