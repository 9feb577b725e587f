import { lpStream } from '@libp2p/utils'
import type { LengthPrefixedStream } from '@libp2p/utils'
import type { MessageStream, Stream } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { z } from 'zod'
import type { MeshNode } from './node.ts'
import { parsePeerId } from './node.ts'
import { MeshError } from './errors.ts'

/** A request answered with an error frame by the remote peer, or no answer that parses. */
export class RemoteError extends MeshError {
  readonly remoteCode: string
  constructor (remoteCode: string, message: string, options?: ErrorOptions) {
    super(message, 'ERR_REMOTE', options)
    this.name = 'RemoteError'
    this.remoteCode = remoteCode
  }
}

export interface RpcOptions {
  /** frames larger than this are refused (both directions) */
  maxFrameBytes?: number
  /** a whole exchange must finish within this */
  timeoutMs?: number
  /** concurrent inbound streams per connection for this protocol */
  maxInboundStreams?: number
  /** told about peers that sent something unparseable (for strikes) */
  onInvalid?: (peer: string, reason: string) => void
}

const enc = new TextEncoder()
const dec = new TextDecoder('utf-8', { fatal: true })

export function encodeJson (v: unknown): Uint8Array {
  return enc.encode(JSON.stringify(v))
}

export function decodeJson (bytes: Uint8Array): unknown {
  return JSON.parse(dec.decode(bytes))
}

/** A frame's length prefix is longer than any allowed length needs. */
export class FrameLengthError extends MeshError {
  constructor (message: string) {
    super(message, 'ERR_FRAME_LENGTH')
    this.name = 'FrameLengthError'
  }
}

/**
 * A length-prefixed view of a stream whose length prefix cannot run on. @libp2p/utils' lpStream reads
 * the varint a byte at a time and takes "cannot decode yet" for "need more bytes" even past the
 * longest prefix `maxDataLength` needs, so a peer sending bytes that all have the continuation bit
 * set was buffered, a byte at a time, until the stream's timeout (or for good where there is none).
 * This decoder fails as soon as the prefix is longer than that.
 */
export function lengthPrefixed<T extends MessageStream> (stream: T, maxDataLength: number): LengthPrefixedStream<T> {
  let maxLengthLength = 1
  for (let v = maxDataLength; v >= 128; v = Math.floor(v / 128)) maxLengthLength++
  return lpStream(stream, {
    maxDataLength,
    maxLengthLength,
    lengthDecoder: (data: Uint8ArrayList): number => {
      let value = 0
      let scale = 1
      for (let i = 0; i < data.byteLength; i++) {
        const b = data.get(i)
        value += (b & 0x7f) * scale
        if (b < 0x80) return value
        scale *= 128
      }
      if (data.byteLength >= maxLengthLength) throw new FrameLengthError(`length prefix longer than ${maxLengthLength} bytes (frames are at most ${maxDataLength} bytes)`)
      throw new RangeError('incomplete length prefix') // lpStream reads another byte
    }
  })
}

/** Reason text of the first zod issue, for error frames. */
export function firstIssue (err: z.ZodError): string {
  const i = err.issues[0]
  return `${i.path.map(String).join('.') || '(root)'}: ${i.message}`
}

/**
 * Serves a request/response protocol: one length-prefixed JSON request
 * frame in, one JSON response frame out ({ ok: true, result } or
 * { ok: false, error: { code, message } }). Requests are validated with
 * `schema`; a malformed one is answered with bad_request, reported through
 * onInvalid, and the stream closed. Bounded in size and time.
 */
export async function serveJson<S extends z.ZodType> (node: MeshNode, protocol: string, schema: S, handler: (req: z.output<S>, ctx: { peer: string, signal: AbortSignal }) => Promise<unknown>, opts: RpcOptions = {}): Promise<void> {
  const maxFrame = opts.maxFrameBytes ?? 1024 * 1024
  const timeoutMs = opts.timeoutMs ?? 30_000
  await node.libp2p.handle(protocol, async (stream, connection) => {
    const peer = connection.remotePeer.toString()
    const signal = AbortSignal.timeout(timeoutMs)
    const lp = lengthPrefixed(stream, maxFrame)
    const reply = async (body: unknown): Promise<void> => {
      await lp.write(encodeJson(body), { signal })
      await stream.close({ signal })
    }
    try {
      let raw: unknown
      try {
        raw = decodeJson((await lp.read({ signal })).subarray())
      } catch (err) {
        opts.onInvalid?.(peer, `unreadable ${protocol} request: ${(err as Error).message}`)
        await reply({ ok: false, error: { code: 'bad_request', message: 'request is not a JSON frame within the size limit' } })
        return
      }
      const parsed = schema.safeParse(raw)
      if (!parsed.success) {
        opts.onInvalid?.(peer, `invalid ${protocol} request: ${firstIssue(parsed.error)}`)
        await reply({ ok: false, error: { code: 'bad_request', message: firstIssue(parsed.error) } })
        return
      }
      try {
        const result = await handler(parsed.data, { peer, signal })
        await reply({ ok: true, result })
      } catch (err) {
        const e = err as Error & { code?: string }
        await reply({ ok: false, error: { code: typeof e.code === 'string' ? e.code : 'error', message: e.message } })
      }
    } catch (err) {
      stream.abort(err as Error)
    }
  }, { maxInboundStreams: opts.maxInboundStreams ?? 32 })
}

/** Sends one request and returns the validated result; RemoteError when the peer answers with an error. */
export async function requestJson<S extends z.ZodType> (node: MeshNode, peer: string, protocol: string, request: unknown, schema: S, opts: RpcOptions & { signal?: AbortSignal } = {}): Promise<z.output<S>> {
  const maxFrame = opts.maxFrameBytes ?? 1024 * 1024
  const signal = AbortSignal.any([AbortSignal.timeout(opts.timeoutMs ?? 30_000), ...(opts.signal != null ? [opts.signal] : [])])
  const stream: Stream = await node.libp2p.dialProtocol(parsePeerId(peer), protocol, { signal })
  try {
    const lp = lengthPrefixed(stream, maxFrame)
    await lp.write(encodeJson(request), { signal })
    const raw = decodeJson((await lp.read({ signal })).subarray()) as { ok?: boolean, result?: unknown, error?: { code?: string, message?: string } }
    await stream.close({ signal }).catch(() => {})
    if (raw?.ok !== true) throw new RemoteError(raw?.error?.code ?? 'error', raw?.error?.message ?? 'the peer refused the request')
    const parsed = schema.safeParse(raw.result)
    if (!parsed.success) throw new RemoteError('bad_response', `unexpected ${protocol} answer: ${firstIssue(parsed.error)}`)
    return parsed.data
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}
