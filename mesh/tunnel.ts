import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { z } from 'zod'
import type { MeshNode } from './node.ts'
import { parsePeerId } from './node.ts'
import { RemoteError, decodeJson, encodeJson, firstIssue } from './rpc.ts'
import type { RpcOptions } from './rpc.ts'

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
    const abort = new AbortController()
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? 30 * 60_000)
    const signal = AbortSignal.any([abort.signal, timeout])
    stream.addEventListener('close', () => { abort.abort() })
    const lp = lpStream(stream, { maxDataLength: Math.max(maxBody, 64 * 1024) })
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
  }, { maxInboundStreams: opts.maxInboundStreams ?? 64 })
}

/** Opens a tunnel to `peer`; the response body streams until the server ends it. Aborting `signal` tears the stream down. */
export async function openTunnel (node: MeshNode, peer: string, protocol: string, req: TunnelRequest, opts: TunnelOptions & { signal?: AbortSignal } = {}): Promise<TunnelResponse> {
  const maxBody = opts.maxBodyBytes ?? 1024 * 1024
  const signal = opts.signal ?? new AbortController().signal
  const stream: Stream = await node.libp2p.dialProtocol(parsePeerId(peer), protocol, { signal: AbortSignal.any([signal, AbortSignal.timeout(opts.timeoutMs ?? 15_000)]) })
  const onAbort = (): void => { stream.abort(new Error('aborted by the client')) }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    const lp = lpStream(stream, { maxDataLength: Math.max(maxBody, 64 * 1024) })
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
