import type { Stream } from '@libp2p/interface'
import { z } from 'zod'
import type { MeshNode } from './node.ts'
import { parsePeerId } from './node.ts'
import { RemoteError, decodeJson, encodeJson, firstIssue, lengthPrefixed } from './rpc.ts'
import type { RpcOptions } from './rpc.ts'
import { PeerStreamSlots, releaseOnClose } from './tensor.ts'

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
}

export async function serveTunnel (node: MeshNode, protocol: string, handler: (req: TunnelRequest, ctx: { peer: string, signal: AbortSignal }) => Promise<TunnelResponse>, opts: TunnelOptions = {}): Promise<void> {
  const maxBody = opts.maxBodyBytes ?? 1024 * 1024
  const chunk = opts.chunkBytes ?? 64 * 1024
  await node.libp2p.handle(protocol, async (stream, connection) => {
    const peer = connection.remotePeer.toString()
    // one controller and a cleared timer: AbortSignal.timeout would keep every closed stream in memory until it fired
    const abort = new AbortController()
    const signal = abort.signal
    const timer = setTimeout(() => { abort.abort(new Error('tunnel timed out')) }, opts.timeoutMs ?? 30 * 60_000)
    timer.unref()
    stream.addEventListener('close', () => { clearTimeout(timer); abort.abort() })
    // a length prefix that never ends is refused at once (lpStream would wait for more bytes)
    const lp = lengthPrefixed(stream, Math.max(maxBody, 64 * 1024))
    try {
      let head: z.output<typeof TunnelRequestSchema>
      let body: Uint8Array
      try {
        const parsed = TunnelRequestSchema.safeParse(decodeJson((await lp.read({ signal })).subarray()))
        if (!parsed.success) throw new Error(firstIssue(parsed.error))
        head = parsed.data
        body = (await lp.read({ signal })).subarray()
        if (body.length > maxBody) throw new Error(`body of ${body.length} bytes is over ${maxBody}`)
      } catch (err) {
        opts.onInvalid?.(peer, `invalid ${protocol} request: ${(err as Error).message}`)
        stream.abort(new Error('invalid request'))
        return
      }
      const res = await handler({ ...head, body }, { peer, signal })
      await lp.write(encodeJson({ status: res.status, headers: res.headers }), { signal })
      for await (const part of res.body) {
        for (let i = 0; i < part.length; i += chunk) await lp.write(part.subarray(i, i + chunk), { signal })
      }
      await stream.close({ signal })
    } catch (err) {
      if (stream.status === 'open') stream.abort(err as Error)
    }
  }, {
    maxInboundStreams: opts.maxInboundStreams ?? TUNNEL_MAX_STREAMS,
    // libp2p takes a handled protocol's outbound limit from here, not from dialProtocol's options
    maxOutboundStreams: TUNNEL_MAX_STREAMS
  })
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
  const onAbort = (): void => { stream.abort(new Error('aborted by the client')) }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    const lp = lengthPrefixed(stream, Math.max(maxBody, 64 * 1024))
    await lp.write(encodeJson({ target: req.target, headers: req.headers }))
    await lp.write(req.body)
    const head = ResponseHeadSchema.safeParse(decodeJson((await lp.read({ signal })).subarray()))
    if (!head.success) throw new RemoteError('bad_response', `unexpected tunnel answer: ${firstIssue(head.error)}`)
    async function * body (): AsyncGenerator<Uint8Array> {
      try {
        while (true) {
          let frame
          try {
            frame = await lp.read({ signal })
          } catch (err) {
            if (stream.readStatus === 'closed' || /end of|EOF|unexpected end/i.test((err as Error).message)) return
            throw err
          }
          yield frame.subarray()
        }
      } finally {
        signal.removeEventListener('abort', onAbort)
        if (stream.status === 'open') stream.abort(new Error('reader done'))
      }
    }
    return { status: head.data.status, headers: head.data.headers, body: body() }
  } catch (err) {
    signal.removeEventListener('abort', onAbort)
    stream.abort(err as Error)
    throw err
  }
}
