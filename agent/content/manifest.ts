/**
 * Manifests of content files (issue 15): the chunk size a file gets, one streaming pass over a file for its
 * MD5, SHA-256 and chunk hashes, and the signed envelope a manifest travels in (sealed by the adder, opened
 * and checked by every receiver).
 */
import { createHash } from 'node:crypto'
import type { Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import type { Stats } from 'node:fs'
import { stat } from 'node:fs/promises'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { EnvelopeError, envelopePayload, openEnvelope, sealPayload } from '../../mesh/envelope.ts'
import { NotFoundError, ValidationError, formatIssues } from '../errors.ts'
import { ManifestError } from './errors.ts'
import {
  DEFAULT_CHUNK_BYTES, MANIFEST_CODEC, MANIFEST_DOMAIN, MAX_CHUNKS, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, MIN_CHUNK_BYTES,
  ManifestSchema
} from './types.ts'
import type { Manifest, SignedManifest } from './types.ts'

/** The largest file a manifest can describe (MAX_CHUNKS chunks of MAX_CHUNK_BYTES). */
export const MAX_FILE_BYTES = MAX_CHUNKS * MAX_CHUNK_BYTES

/** Bytes read from disk at a time while hashing. */
const READ_BYTES = 1024 * 1024

function isPowerOfTwo (n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0
}

/**
 * The chunk size of a file of `size` bytes: DEFAULT_CHUNK_BYTES doubled until the file has at most MAX_CHUNKS
 * chunks; or `requested`, which must be a power of two in [MIN_CHUNK_BYTES, MAX_CHUNK_BYTES] that gives at
 * most MAX_CHUNKS chunks. ValidationError otherwise (and for an empty or too large file).
 */
export function chunkSizeFor (size: number, requested?: number): number {
  if (!Number.isSafeInteger(size) || size < 1) throw new ValidationError(`a content file must have at least one byte (got ${size})`)
  if (size > MAX_FILE_BYTES) throw new ValidationError(`a content file is at most ${MAX_FILE_BYTES} bytes (got ${size})`, { size, max: MAX_FILE_BYTES })
  if (requested !== undefined) {
    if (!isPowerOfTwo(requested) || requested < MIN_CHUNK_BYTES || requested > MAX_CHUNK_BYTES) {
      throw new ValidationError(`chunk size ${requested} is not a power of two between ${MIN_CHUNK_BYTES} and ${MAX_CHUNK_BYTES}`, { chunkSize: requested })
    }
    const chunks = Math.ceil(size / requested)
    if (chunks > MAX_CHUNKS) throw new ValidationError(`chunk size ${requested} gives ${chunks} chunks for ${size} bytes, more than ${MAX_CHUNKS}`, { chunkSize: requested, size })
    return requested
  }
  let chunk = DEFAULT_CHUNK_BYTES
  while (Math.ceil(size / chunk) > MAX_CHUNKS) chunk *= 2
  return chunk
}

/** What one pass over a file gives: its size, MD5 and SHA-256 (lowercase hex), and each chunk's SHA-256 (base64; empty when no chunk size was given). */
export interface FileDigests { size: number, md5: string, sha256: string, chunks: string[] }

/**
 * Reads a file once, streaming (never whole in memory), computing its MD5, its SHA-256 and, when
 * `chunkSize` is given, the SHA-256 of each chunk of that size (the last one may be shorter). A missing file
 * is a NotFoundError; an aborted signal throws its reason.
 */
export async function hashFile (path: string, opts: { chunkSize?: number, signal?: AbortSignal } = {}): Promise<FileDigests> {
  const { chunkSize, signal } = opts
  if (chunkSize !== undefined && !isPowerOfTwo(chunkSize)) throw new ValidationError(`chunk size ${chunkSize} is not a power of two`)
  signal?.throwIfAborted()
  const md5 = createHash('md5')
  const sha256 = createHash('sha256')
  const chunks: string[] = []
  let chunk: Hash | undefined = chunkSize === undefined ? undefined : createHash('sha256')
  let inChunk = 0
  let size = 0
  try {
    for await (const data of createReadStream(path, { highWaterMark: READ_BYTES, signal })) {
      const buf = data as Buffer
      md5.update(buf)
      sha256.update(buf)
      size += buf.length
      if (chunkSize === undefined || chunk === undefined) continue
      let off = 0
      while (off < buf.length) {
        const take = Math.min(chunkSize - inChunk, buf.length - off)
        chunk.update(buf.subarray(off, off + take))
        off += take
        inChunk += take
        if (inChunk === chunkSize) {
          chunks.push(chunk.digest('base64'))
          chunk = createHash('sha256')
          inChunk = 0
        }
      }
    }
  } catch (err) {
    signal?.throwIfAborted()
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new NotFoundError(`file ${path} does not exist`)
    throw err
  }
  signal?.throwIfAborted()
  if (chunk !== undefined && inChunk > 0) chunks.push(chunk.digest('base64'))
  return { size, md5: md5.digest('hex'), sha256: sha256.digest('hex'), chunks }
}

/**
 * The manifest of a local file, from one pass over it: its chunk size (chunkSizeFor), digests and chunk
 * hashes, `adder` (this agent's peer ID) and the time. `name` is cut to 256 characters.
 */
export async function buildManifest (path: string, opts: { name?: string, adder: string, chunkSize?: number, signal?: AbortSignal }): Promise<Manifest> {
  let st: Stats
  try {
    st = await stat(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new NotFoundError(`file ${path} does not exist`)
    throw err
  }
  if (!st.isFile()) throw new ValidationError(`${path} is not a regular file`)
  const chunkSize = chunkSizeFor(st.size, opts.chunkSize)
  const d = await hashFile(path, { chunkSize, signal: opts.signal })
  if (d.size !== st.size) throw new ValidationError(`${path} changed while it was hashed (${st.size} bytes, then ${d.size})`)
  const parsed = ManifestSchema.safeParse({
    v: 1,
    md5: d.md5,
    sha256: d.sha256,
    size: d.size,
    chunkSize,
    chunks: d.chunks,
    ...(opts.name === undefined ? {} : { name: opts.name.slice(0, 256) }),
    adder: opts.adder,
    created: Date.now()
  })
  if (!parsed.success) throw new ValidationError(`the manifest of ${path} is not valid`, formatIssues(parsed.error.issues))
  return parsed.data
}

/** Seals a manifest in a signed envelope by `privateKey`, which must be the key of `manifest.adder` (ManifestError otherwise). */
export async function signManifest (manifest: Manifest, privateKey: PrivateKey): Promise<SignedManifest> {
  const parsed = ManifestSchema.safeParse(manifest)
  if (!parsed.success) throw new ManifestError(`manifest is not valid: ${describeIssues(parsed.error.issues)}`)
  const signer = peerIdFromPrivateKey(privateKey).toString()
  if (parsed.data.adder !== signer) throw new ManifestError(`manifest's adder ${parsed.data.adder} is not the signer ${signer}`)
  const bytes = await sealPayload(MANIFEST_DOMAIN, MANIFEST_CODEC, new TextEncoder().encode(JSON.stringify(parsed.data)), privateKey)
  if (bytes.length > MAX_MANIFEST_BYTES) throw new ManifestError(`signed manifest is ${bytes.length} bytes, more than ${MAX_MANIFEST_BYTES}`)
  return { manifest: parsed.data, bytes }
}

/**
 * Opens a signed manifest received from a peer: at most MAX_MANIFEST_BYTES, a valid envelope of the
 * manifest domain, UTF-8 JSON that ManifestSchema accepts, signed by its `adder`, and for `expectMd5`
 * (case-insensitive) when given. ManifestError otherwise, with the reason.
 */
export async function openManifest (bytes: Uint8Array, expectMd5?: string): Promise<SignedManifest> {
  if (!(bytes instanceof Uint8Array)) throw new ManifestError('manifest is not bytes')
  if (bytes.length === 0) throw new ManifestError('manifest is empty')
  if (bytes.length > MAX_MANIFEST_BYTES) throw new ManifestError(`manifest is ${bytes.length} bytes, more than ${MAX_MANIFEST_BYTES}`)
  let opened: { signer: string, payload: Uint8Array }
  try {
    opened = await openEnvelope(bytes, MANIFEST_DOMAIN, MANIFEST_CODEC)
  } catch (err) {
    if (err instanceof EnvelopeError) throw new ManifestError(`manifest envelope refused (${err.reason}): ${err.message}`, { cause: err })
    throw new ManifestError('manifest envelope could not be opened', { cause: err })
  }
  const manifest = parsePayload(opened.payload)
  if (opened.signer !== manifest.adder) throw new ManifestError(`manifest of ${manifest.md5} is signed by ${opened.signer}, not by its adder ${manifest.adder}`)
  if (expectMd5 !== undefined && manifest.md5 !== expectMd5.toLowerCase()) throw new ManifestError(`manifest describes ${manifest.md5}, not ${expectMd5}`)
  return { manifest, bytes }
}

/**
 * The manifest of an envelope this agent already checked once (read back from its own store): parsed and
 * validated, the signature not checked again. ManifestError when it does not parse.
 */
export function storedManifest (bytes: Uint8Array): Manifest {
  let payload: Uint8Array
  try {
    payload = envelopePayload(bytes)
  } catch (err) {
    throw new ManifestError('stored manifest is not a signed envelope', { cause: err })
  }
  return parsePayload(payload)
}

function parsePayload (payload: Uint8Array): Manifest {
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload))
  } catch (err) {
    throw new ManifestError('manifest payload is not UTF-8 JSON', { cause: err })
  }
  const parsed = ManifestSchema.safeParse(json)
  if (!parsed.success) throw new ManifestError(`manifest is not valid: ${describeIssues(parsed.error.issues)}`, { cause: parsed.error })
  return parsed.data
}

function describeIssues (issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>, message: string }>): string {
  return formatIssues(issues).slice(0, 5).map(i => `${i.field}: ${i.message}`).join('; ')
}
