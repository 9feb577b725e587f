/**
 * The wire form of /blockmesh/content/1.0.0 (see ./service.ts for the server, ./fetcher.ts for the client's
 * algorithm). One stream per exchange, every frame length-prefixed:
 *
 *   fetcher → holder   one JSON frame: { op: 'manifest', md5 } | { op: 'have', md5 } | { op: 'chunk', md5, index, chunkSize? }
 *   holder → fetcher   one JSON header frame, { ok: false, error: { code, message } } or:
 *                      manifest: { ok: true, size }, then the signed manifest envelope (one raw frame of `size` bytes)
 *                      have:     { ok: true, chunks, chunkSize, bitmap (base64), complete, peers }
 *                      chunk:    { ok: true, size }, then the chunk (one raw frame of `size` bytes)
 *
 * `chunkSize` in a chunk request is the chunking of the fetcher's manifest: two adders may have cut the same
 * file (same MD5) into chunks of different sizes, and a holder whose chunking differs answers not_found
 * instead of serving bytes the fetcher would take for forged. Error codes: not_found (not held here),
 * busy (over a concurrency limit: try later or elsewhere), bad_request (the request broke the protocol),
 * error (the holder failed). Every read is bounded in bytes (per frame) and in time (per exchange).
 */
import type { PeerId, Stream } from '@libp2p/interface'
import { z } from 'zod'
import { FrameError, MeshError, TruncatedFrameError } from '../../mesh/errors.ts'
import type { Offence } from '../../mesh/errors.ts'
import { decodeJson, encodeJson, firstIssue, lengthPrefixed } from '../../mesh/rpc.ts'
import type { FramedStream } from '../../mesh/rpc.ts'
import { parsePeerId } from '../../mesh/node.ts'
import { CONTENT_PROTOCOL, MAX_CHUNKS, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, MIN_CHUNK_BYTES, Md5Hex } from './types.ts'

export { CONTENT_PROTOCOL } from './types.ts'

/** A request frame is at most this many bytes (an op, an MD5, an index). */
export const MAX_REQUEST_BYTES = 512
/** An answer's header frame is at most this many bytes (a `have` bitmap of MAX_CHUNKS bits is 2732 base64 characters). */
export const MAX_HEADER_BYTES = 16 * 1024
/** Other fetchers a `have` answer names, at most. */
export const MAX_HAVE_PEERS = 16
/** Streams of this protocol per connection, each way. */
export const CONTENT_MAX_STREAMS = 64
/** Codes of an error answer. */
export const CONTENT_ERROR_CODES = ['not_found', 'busy', 'bad_request', 'error'] as const
export type ContentErrorCode = typeof CONTENT_ERROR_CODES[number]

const ChunkIndex = z.number().int().min(0).max(MAX_CHUNKS - 1)
const ChunkSize = z.number().int().min(MIN_CHUNK_BYTES).max(MAX_CHUNK_BYTES)

export const ContentRequestSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('manifest'), md5: Md5Hex }).strict(),
  z.object({ op: z.literal('have'), md5: Md5Hex }).strict(),
  z.object({ op: z.literal('chunk'), md5: Md5Hex, index: ChunkIndex, chunkSize: ChunkSize.optional() }).strict()
])
export type ContentRequest = z.output<typeof ContentRequestSchema>

export const ErrorAnswerSchema = z.object({
  ok: z.literal(false),
  // codes beyond CONTENT_ERROR_CODES (a later version's) are read as 'error'
  error: z.object({ code: z.string().max(64), message: z.string().max(2000) }).strict()
}).strict()
export type ErrorAnswer = z.output<typeof ErrorAnswerSchema>

export const ManifestAnswerSchema = z.object({ ok: z.literal(true), size: z.number().int().min(1).max(MAX_MANIFEST_BYTES) }).strict()
export const ChunkAnswerSchema = z.object({ ok: z.literal(true), size: z.number().int().min(1).max(MAX_CHUNK_BYTES) }).strict()
export const HaveAnswerSchema = z.object({
  ok: z.literal(true),
  chunks: z.number().int().min(1).max(MAX_CHUNKS),
  chunkSize: ChunkSize,
  /** one bit per chunk, bit i of byte i>>3 is (i & 7), base64 */
  bitmap: z.string().max(Math.ceil(MAX_CHUNKS / 8 / 3) * 4).regex(/^[A-Za-z0-9+/]*={0,2}$/, 'base64'),
  complete: z.boolean(),
  /** other peers fetching this file from the holder lately (a tracker hint) */
  peers: z.array(z.string().min(1).max(128)).max(MAX_HAVE_PEERS)
}).strict().superRefine((a, ctx) => {
  if (Buffer.from(a.bitmap, 'base64').length !== Math.ceil(a.chunks / 8)) ctx.addIssue({ code: 'custom', path: ['bitmap'], message: `not ${Math.ceil(a.chunks / 8)} bytes for ${a.chunks} chunks` })
})
export type HaveAnswer = z.output<typeof HaveAnswerSchema>

/** What a fetcher learns from a holder's `have` answer. */
export interface Have { chunks: number, chunkSize: number, bitmap: Uint8Array, complete: boolean, peers: string[] }

// ---------------------------------------------------------------- typed errors (client side)

/** The holder answered not_found: it does not hold the file (or the chunk, or holds it cut in chunks of another size). */
export class ContentNotHeldError extends MeshError {
  readonly peer: string
  constructor (peer: string, message: string, options?: ErrorOptions) {
    super(message, 'ERR_CONTENT_NOT_HELD', options)
    this.name = 'ContentNotHeldError'
    this.peer = peer
  }
}

/** The holder answered busy: over its concurrency limits; ask again later or elsewhere. */
export class ContentBusyError extends MeshError {
  readonly peer: string
  constructor (peer: string, message: string, options?: ErrorOptions) {
    super(message, 'ERR_CONTENT_BUSY', options)
    this.name = 'ContentBusyError'
    this.peer = peer
  }
}

/** The holder refused the request (bad_request) or failed serving it (error, or a code this version does not know). */
export class ContentRefusedError extends MeshError {
  readonly peer: string
  readonly remoteCode: string
  constructor (peer: string, remoteCode: string, message: string, options?: ErrorOptions) {
    super(message, 'ERR_CONTENT_REFUSED', options)
    this.name = 'ContentRefusedError'
    this.peer = peer
    this.remoteCode = remoteCode
  }
}

/** The holder's answer breaks the protocol (not JSON, fails its schema, over its bound, a body of the wrong length); `offence` is what it costs the holder. */
export class ContentAnswerError extends FrameError {
  readonly peer: string
  constructor (peer: string, message: string, offence: Offence, options?: ErrorOptions) {
    super(message, 'ERR_CONTENT_ANSWER', offence, options)
    this.name = 'ContentAnswerError'
    this.peer = peer
  }
}

/** The holder could not be reached or the exchange broke (dial failed, stream reset or cut short, no answer in time): no fault proven. */
export class ContentUnreachableError extends MeshError {
  readonly peer: string
  constructor (peer: string, message: string, options?: ErrorOptions) {
    super(message, 'ERR_CONTENT_UNREACHABLE', options)
    this.name = 'ContentUnreachableError'
    this.peer = peer
  }
}

// ---------------------------------------------------------------- bitmaps

// a `have` answer's bitmap: one bit per chunk (./bitmap.ts)
export { clearBit, fullBitmap, hasBit, setBit } from './bitmap.ts'

// ---------------------------------------------------------------- client side

/** How the client dials: the libp2p node (narrowed). */
export interface ContentDialer {
  dialProtocol: (peer: PeerId, protocol: string, options?: { signal?: AbortSignal, maxOutboundStreams?: number }) => Promise<Stream>
}

export interface ExchangeOptions {
  signal?: AbortSignal
  /** the whole exchange (dial included) must finish within this; default 60 s */
  timeoutMs?: number
  protocol?: string
}

/** The first frame of an answer, checked against `schema`; typed errors for the holder's refusals and faults. */
async function exchange<S extends z.ZodType, R> (dialer: ContentDialer, peer: string, request: ContentRequest, schema: S, maxBodyBytes: number, opts: ExchangeOptions, body: (head: z.output<S>, lp: FramedStream<Stream>, signal: AbortSignal) => Promise<R>): Promise<R> {
  const protocol = opts.protocol ?? CONTENT_PROTOCOL
  const what = `${protocol} ${request.op}`
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? 60_000)
  const signal = opts.signal != null ? AbortSignal.any([opts.signal, timeout]) : timeout
  let stream: Stream
  try {
    stream = await dialer.dialProtocol(parsePeerId(peer), protocol, { signal, maxOutboundStreams: CONTENT_MAX_STREAMS })
  } catch (err) {
    opts.signal?.throwIfAborted()
    throw new ContentUnreachableError(peer, `cannot open ${protocol} to ${peer}: ${(err as Error).message}`, { cause: err })
  }
  try {
    const lp = lengthPrefixed(stream, Math.max(MAX_HEADER_BYTES, maxBodyBytes))
    const read = async (): Promise<Uint8Array> => {
      try {
        const frame = await lp.readFrame({ signal })
        if (frame == null) throw new TruncatedFrameError(`${peer} closed the ${what} stream before answering`)
        return frame
      } catch (err) {
        opts.signal?.throwIfAborted()
        if (err instanceof FrameError && !(err instanceof TruncatedFrameError)) throw new ContentAnswerError(peer, `unreadable ${what} answer: ${err.message}`, err.offence, { cause: err })
        // cut short, reset, or no answer in time: the peer may be gone, which is no offence
        throw new ContentUnreachableError(peer, `the ${what} exchange with ${peer} broke: ${(err as Error).message}`, { cause: err })
      }
    }
    try {
      await lp.write(encodeJson(request), { signal })
    } catch (err) {
      opts.signal?.throwIfAborted()
      throw new ContentUnreachableError(peer, `cannot send the ${what} request to ${peer}: ${(err as Error).message}`, { cause: err })
    }
    const headBytes = await read()
    if (headBytes.length > MAX_HEADER_BYTES) throw new ContentAnswerError(peer, `${what} answer header of ${headBytes.length} bytes is over ${MAX_HEADER_BYTES}`, 'oversized')
    let raw: unknown
    try {
      raw = decodeJson(headBytes)
    } catch (err) {
      throw new ContentAnswerError(peer, `${what} answer header: ${(err as Error).message}`, 'malformed', { cause: err })
    }
    if ((raw as { ok?: unknown } | null)?.ok === false) {
      const e = ErrorAnswerSchema.safeParse(raw)
      if (!e.success) throw new ContentAnswerError(peer, `${what} error answer: ${firstIssue(e.error)}`, 'malformed')
      const { code, message } = e.data.error
      if (code === 'not_found') throw new ContentNotHeldError(peer, `${peer}: ${message}`)
      if (code === 'busy') throw new ContentBusyError(peer, `${peer}: ${message}`)
      throw new ContentRefusedError(peer, code, `${peer} answered ${code}: ${message}`)
    }
    const head = schema.safeParse(raw)
    if (!head.success) throw new ContentAnswerError(peer, `${what} answer: ${firstIssue(head.error)}`, 'malformed')
    const result = await body(head.data, lp, signal)
    await stream.close({ signal }).catch(() => {})
    return result
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}

/** Reads the raw frame of `size` bytes that follows an answer's header. */
async function rawFrame (peer: string, what: string, lp: FramedStream<Stream>, size: number, signal: AbortSignal, outer?: AbortSignal): Promise<Uint8Array> {
  let frame: Uint8Array | null
  try {
    frame = await lp.readFrame({ signal })
  } catch (err) {
    outer?.throwIfAborted()
    if (err instanceof FrameError && !(err instanceof TruncatedFrameError)) throw new ContentAnswerError(peer, `unreadable ${what}: ${err.message}`, err.offence, { cause: err })
    throw new ContentUnreachableError(peer, `the ${what} from ${peer} broke off: ${(err as Error).message}`, { cause: err })
  }
  if (frame == null) throw new ContentUnreachableError(peer, `${peer} closed the stream before the ${what}`)
  if (frame.length !== size) throw new ContentAnswerError(peer, `${what} of ${frame.length} bytes where the header said ${size}`, 'malformed')
  return frame
}

/** The signed manifest envelope `peer` holds for `md5` (unverified: the caller opens it). */
export async function requestManifest (dialer: ContentDialer, peer: string, md5: string, opts: ExchangeOptions = {}): Promise<Uint8Array> {
  return await exchange(dialer, peer, { op: 'manifest', md5 }, ManifestAnswerSchema, MAX_MANIFEST_BYTES, opts,
    async (head, lp, signal) => await rawFrame(peer, 'manifest', lp, head.size, signal, opts.signal))
}

/** Which chunks of `md5` `peer` holds, and who else fetches it from there. */
export async function requestHave (dialer: ContentDialer, peer: string, md5: string, opts: ExchangeOptions = {}): Promise<Have> {
  return await exchange(dialer, peer, { op: 'have', md5 }, HaveAnswerSchema, MAX_HEADER_BYTES, opts,
    async (head) => ({ chunks: head.chunks, chunkSize: head.chunkSize, bitmap: new Uint8Array(Buffer.from(head.bitmap, 'base64')), complete: head.complete, peers: head.peers }))
}

/**
 * Chunk `index` of `md5` as `peer` serves it, unverified (the store checks it against the manifest).
 * `chunkSize` is the fetcher's manifest's; `expectBytes` bounds the read (the chunk's length per the manifest).
 */
export async function requestChunk (dialer: ContentDialer, peer: string, md5: string, index: number, chunkSize: number, expectBytes: number, opts: ExchangeOptions = {}): Promise<Uint8Array> {
  return await exchange(dialer, peer, { op: 'chunk', md5, index, chunkSize }, ChunkAnswerSchema, Math.min(expectBytes, MAX_CHUNK_BYTES), opts,
    async (head, lp, signal) => {
      // not the chunk the manifest describes: bad bytes, like a chunk that fails its hash
      if (head.size !== expectBytes) throw new ContentAnswerError(peer, `chunk ${index} of ${head.size} bytes where the manifest says ${expectBytes}`, 'forged')
      return await rawFrame(peer, `chunk ${index}`, lp, head.size, signal, opts.signal)
    })
}

// ---------------------------------------------------------------- server side

/** An error answer (the message cut to the schema's bound). */
export function errorAnswer (code: ContentErrorCode, message: string): ErrorAnswer {
  return { ok: false, error: { code, message: message.slice(0, 2000) } }
}
