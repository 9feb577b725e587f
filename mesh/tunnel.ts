import type { Connection, Stream, StreamHandlerOptions } from '@libp2p/interface'
import { z } from 'zod'
import type { MeshNode } from './node.ts'
import { parsePeerId } from './node.ts'
import { Exchange, StreamProtocolService, answerOffence, decodeJson, encodeJson, firstIssue, lengthPrefixed, reportOffence, requestFault } from './rpc.ts'
import type { ProtocolComponents, RpcOptions } from './rpc.ts'
import { FrameError, FrameTooLargeError, MalformedFrameError, RemoteError, StreamAbortedError, StreamTimeoutError, TruncatedFrameError } from './errors.ts'
import { PeerStreamSlots, releaseOnClose } from './stream-slots.ts'

/**
 * Tunnel streams one connection may carry at once, in each direction (libp2p's defaults are 32
 * inbound and 64 outbound). One stream is one forwarded request, served by an instance whose
 * engine decodes at most its block's maxBatch (≤ 256, agent/registry/blocks.ts) sequences at a time
 * and queues the rest; 256 lets one forwarding peer keep even the largest batch full, while the
 * server holds at most 256 request bodies (each ≤ maxBodyBytes) per connection. openTunnel never
 * goes past it: a request beyond it waits for one of that peer's tunnels to close.
 */
export const TUNNEL_MAX_STREAMS = 256

const slots = new WeakMap<MeshNode, Map<string, PeerStreamSlots>>()

/** This node's open tunnels of `protocol` per peer (each at most TUNNEL_MAX_STREAMS). */
export function tunnelSlots (node: MeshNode, protocol: string): PeerStreamSlots {
  let m = slots.get(node)
  if (m == null) { m = new Map(); slots.set(node, m) }
  let s = m.get(protocol)
  if (s == null) { s = new PeerStreamSlots(TUNNEL_MAX_STREAMS, protocol); m.set(protocol, s) }
  return s
}

/**
 * A streamed request/response tunnel over one libp2p stream:
 *   client → server: header frame (JSON { target, headers }), body frame (bytes)
 *   server → client: header frame (JSON { status, headers }), then body frames until the stream ends
 * Every frame is length-prefixed and bounded. If the client goes away the
 * server's handler sees its signal abort, so work can stop at once.
 */
export const TunnelRequestSchema = z.object({
  target: z.string().min(1).max(2048),
  headers: z.record(z.string().max(128), z.string().max(8192)).refine(h => Object.keys(h).length <= 64, 'at most 64 headers')
}).strict()
export type TunnelRequest = z.output<typeof TunnelRequestSchema> & { body: Uint8Array }

const ResponseHeadSchema = z.object({
  status: z.number().int().min(100).max(599),
  headers: z.record(z.string().max(128), z.string().max(8192))
}).strict()

export interface TunnelResponse {
  status: number
  headers: Record<string, string>
  body: AsyncIterable<Uint8Array>
}

export interface TunnelOptions extends RpcOptions {
  /** largest request body */
  maxBodyBytes?: number
  /** body chunks are sent in frames of at most this size */
  chunkBytes?: number
  /** the request (head and body) must have arrived within this long (default 10 s); the answer may take timeoutMs */
  requestTimeoutMs?: number
}

export type TunnelHandler = (req: TunnelRequest, ctx: { peer: string, signal: AbortSignal }) => Promise<TunnelResponse>

export interface TunnelInit extends TunnelOptions {
  protocol: string
  handler: TunnelHandler
}

/**
 * The server side of a tunnel protocol as a libp2p service (js-libp2p's ping shape): start() handles the
 * protocol, stop() unhandles it and aborts the tunnels in flight (their handlers' signals abort). A request
 * that breaks the rules (a head that fails TunnelRequestSchema, a body over maxBodyBytes, a broken frame, or
 * none within timeoutMs) is an offence of the peer and its stream is reset. Bounded: at most
 * maxInboundStreams (TUNNEL_MAX_STREAMS) tunnels per connection, each frame at most max(maxBodyBytes, 64 KiB).
 */
export class TunnelService extends StreamProtocolService {
  private readonly init: TunnelInit

  constructor (components: ProtocolComponents, init: TunnelInit) {
    super(components, init.protocol)
    this.init = init
  }

  readonly [Symbol.toStringTag] = '@blockmesh/tunnel'

  protected streamLimits (): StreamHandlerOptions {
    return {
      maxInboundStreams: this.init.maxInboundStreams ?? TUNNEL_MAX_STREAMS,
      // libp2p takes a handled protocol's outbound limit from here, not from dialProtocol's options
      maxOutboundStreams: TUNNEL_MAX_STREAMS
    }
  }

  protected async handle (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const { protocol } = this
    const maxBody = this.init.maxBodyBytes ?? 1024 * 1024
    const chunk = this.init.chunkBytes ?? 64 * 1024
    const exchange = new Exchange(stream, this.init.timeoutMs ?? 30 * 60_000, `a ${protocol} tunnel`)
    const untrack = this.inFlight.track(exchange)
    const { signal } = exchange
    // a length prefix that never ends is refused at once (lpStream would wait for more bytes)
    const lp = lengthPrefixed(stream, Math.max(maxBody, 64 * 1024))
    // a peer that opens tunnels and trickles their requests would hold up to a body per stream for the whole
    // answer time: the request itself has a short deadline of its own
    const requestMs = this.init.requestTimeoutMs ?? 10_000
    const requestTimer = setTimeout(() => { exchange.abort(new StreamTimeoutError(`a ${protocol} request took longer than ${requestMs} ms to arrive`)) }, requestMs)
    requestTimer.unref()
    try {
      let head: z.output<typeof TunnelRequestSchema>
      let body: Uint8Array
      try {
        const headBytes = await lp.readFrame({ signal })
        if (headBytes == null) throw new TruncatedFrameError('the stream ended before the request head')
        const parsed = TunnelRequestSchema.safeParse(decodeJson(headBytes))
        if (!parsed.success) throw new MalformedFrameError(firstIssue(parsed.error))
        head = parsed.data
        const bodyBytes = await lp.readFrame({ signal })
        if (bodyBytes == null) throw new TruncatedFrameError('the stream ended before the request body')
        if (bodyBytes.length > maxBody) throw new FrameTooLargeError(`body of ${bodyBytes.length} bytes is over ${maxBody}`)
        body = bodyBytes
        clearTimeout(requestTimer)
      } catch (err) {
        clearTimeout(requestTimer)
        const fault = requestFault(err, exchange, `${protocol} request`)
        if (fault == null) throw err
        reportOffence(this.components, this.init, peer, `invalid ${protocol} request: ${fault.message}`, fault.offence)
        if (stream.status === 'open') stream.abort(fault)
        return
      }
      const res = await this.init.handler({ ...head, body }, { peer, signal })
      await lp.write(encodeJson({ status: res.status, headers: res.headers }), { signal })
      for await (const part of res.body) {
        for (let i = 0; i < part.length; i += chunk) await lp.write(part.subarray(i, i + chunk), { signal })
      }
      await stream.close({ signal })
    } catch (err) {
      if (stream.status === 'open') stream.abort(err as Error)
    } finally {
      clearTimeout(requestTimer)
      untrack()
    }
  }
}

/** The protocol as a service factory, js-libp2p style: `tunnelService(init)(components)`. */
export function tunnelService (init: TunnelInit): (components: ProtocolComponents) => TunnelService {
  return (components) => new TunnelService(components, init)
}

/**
 * Serves a tunnel protocol on `node` (TunnelService, started). Kept for callers written before the services;
 * offences go to `opts.onInvalid` where given, else to the node's peer score.
 */
export async function serveTunnel (node: MeshNode, protocol: string, handler: TunnelHandler, opts: TunnelOptions = {}): Promise<TunnelService> {
  const service = tunnelService({ ...opts, protocol, handler })({ registrar: node.libp2p, score: node.score })
  await service.start()
  return service
}

/** Opens a tunnel to `peer`; the response body streams until the server ends it. Aborting `signal` tears the stream down. */
export async function openTunnel (node: MeshNode, peer: string, protocol: string, req: TunnelRequest, opts: TunnelOptions & { signal?: AbortSignal } = {}): Promise<TunnelResponse> {
  const maxBody = opts.maxBodyBytes ?? 1024 * 1024
  const signal = opts.signal ?? new AbortController().signal
  // beyond TUNNEL_MAX_STREAMS to this peer, wait for one of its tunnels to close
  const release = await tunnelSlots(node, protocol).acquire(peer, signal)
  let stream: Stream
  try {
    stream = await node.libp2p.dialProtocol(parsePeerId(peer), protocol, { signal: AbortSignal.any([signal, AbortSignal.timeout(opts.timeoutMs ?? 15_000)]), maxOutboundStreams: TUNNEL_MAX_STREAMS })
  } catch (err) {
    release()
    throw err
  }
  releaseOnClose(stream, release)
  const onAbort = (): void => { stream.abort(new StreamAbortedError('aborted by the client')) }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    const lp = lengthPrefixed(stream, Math.max(maxBody, 64 * 1024))
    await lp.write(encodeJson({ target: req.target, headers: req.headers }), { signal })
    await lp.write(req.body, { signal })
    let head
    try {
      const bytes = await lp.readFrame({ signal })
      if (bytes == null) throw new TruncatedFrameError(`${peer} closed the tunnel without answering`)
      head = ResponseHeadSchema.safeParse(decodeJson(bytes))
    } catch (err) {
      if (!(err instanceof FrameError)) throw err
      answerOffence(node, peer, protocol, err)
      throw new RemoteError('bad_response', `unreadable tunnel answer: ${err.message}`, { cause: err })
    }
    if (!head.success) throw new RemoteError('bad_response', `unexpected tunnel answer: ${firstIssue(head.error)}`)
    async function * body (): AsyncGenerator<Uint8Array> {
      try {
        while (true) {
          // null: the server ended the stream between frames, which is the end of the body; a frame cut short,
          // a reset or an abort rejects (the answer is incomplete)
          const frame = await lp.readFrame({ signal })
          if (frame == null) return
          yield frame
        }
      } finally {
        signal.removeEventListener('abort', onAbort)
        if (stream.status === 'open') stream.abort(new StreamAbortedError('reader done'))
      }
    }
    return { status: head.data.status, headers: head.data.headers, body: body() }
  } catch (err) {
    signal.removeEventListener('abort', onAbort)
    stream.abort(err as Error)
    throw err
  }
}
