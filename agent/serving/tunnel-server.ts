/**
 * /blockmesh/infer/1.0.0, the server side: a peer's agent tunnels an OpenAI request here for an instance
 * of this agent that it cannot serve token by token (tunnel-client.ts). The request is checked with the
 * endpoint's own schema and served by the OpenAI serving directly — the same function the HTTP route
 * calls — with `routed` set, so it is answered by this agent's instance and never routed again. The
 * answer (JSON, or SSE events as they are written) streams back through the tunnel; aborting the tunnel
 * cancels the generation.
 *
 * (Before, the tunnel fetched this agent's own HTTP API on loopback with the admin token: the body was
 * parsed twice and serialised three times, and the API's auth was a detour.)
 *
 * Shaped like js-libp2p's protocol services: `tunnelServer(init)(components)`, with start/stop.
 */
import { tunnelService } from '../../mesh/tunnel.ts'
import type { TunnelOptions, TunnelRequest, TunnelResponse, TunnelService } from '../../mesh/tunnel.ts'
import type { ProtocolComponents } from '../../mesh/rpc.ts'
import { INFER_PROTOCOL, TUNNELLED_PATHS } from '../openai/infer-protocol.ts'
import { OpenAIError, openAIErrorBody, openAIErrorFrom } from '../openai/errors.ts'
import { endpointAt } from './endpoints.ts'
import type { CommonBody, Endpoint } from './endpoints.ts'
import type { OpenAIServing } from './openai-serving.ts'
import { TunnelSink, writeWhole } from '../http/sink.ts'

/** Largest tunnelled request body: the HTTP API's own body limit. */
export const TUNNEL_MAX_BODY_BYTES = 1024 * 1024

/** The libp2p registrar the protocol is handled on, the peer score offences go to (unless onInvalid), and the serving. */
export interface TunnelServerComponents extends ProtocolComponents {
  serving: Pick<OpenAIServing, 'serve'>
  /** told about peers that sent frames that do not parse (instead of the score) */
  onInvalid?: TunnelOptions['onInvalid']
  log?: { warn: (obj: object, msg: string) => void }
}

export interface TunnelServerInit {
  protocol?: string
  maxBodyBytes?: number
}

export interface TunnelServer {
  readonly protocol: string
  start: () => Promise<void>
  stop: () => Promise<void>
  isStarted: () => boolean
}

function body (text: string): AsyncIterable<Uint8Array> {
  const bytes = new TextEncoder().encode(text)
  return (async function * () { yield bytes })()
}

/** The OpenAI side of the tunnel over mesh/tunnel.ts's TunnelService (the frames, bounds and offences). */
class InferTunnel implements TunnelServer {
  readonly protocol: string
  private readonly components: TunnelServerComponents
  private readonly service: TunnelService

  constructor (components: TunnelServerComponents, init: TunnelServerInit) {
    this.components = components
    this.protocol = init.protocol ?? INFER_PROTOCOL
    this.service = tunnelService({
      protocol: this.protocol,
      handler: async (req, ctx) => await this.handle(req, ctx),
      onInvalid: components.onInvalid,
      maxBodyBytes: init.maxBodyBytes ?? TUNNEL_MAX_BODY_BYTES
    })(components)
  }

  readonly [Symbol.toStringTag] = '@blockmesh/infer-tunnel'

  async start (): Promise<void> { await this.service.start() }

  /** Unhandles the protocol; tunnels in flight are aborted (their generations cancelled). */
  async stop (): Promise<void> { await this.service.stop() }

  isStarted (): boolean { return this.service.isStarted() }

  private async handle (req: TunnelRequest, { signal }: { peer: string, signal: AbortSignal }): Promise<TunnelResponse> {
    const ep = TUNNELLED_PATHS.has(req.target) ? endpointAt(req.target) : undefined
    if (ep == null) {
      return { status: 404, headers: { 'content-type': 'application/json' }, body: body(JSON.stringify(openAIErrorBody(404, `not tunnelled: ${req.target}`, 'not_found'))) }
    }
    const sink = new TunnelSink()
    // the peer closing the tunnel (its client left) ends the answer: writes stop, the generation is cancelled
    const onAbort = (): void => { sink.destroy() }
    signal.addEventListener('abort', onAbort, { once: true })
    sink.once('close', () => { signal.removeEventListener('abort', onAbort) })
    void this.answer(ep, req, sink, signal)
    const head = await sink.head
    return { status: head.status, headers: head.headers, body: sink }
  }

  /** Serves the request onto the sink; whatever fails before the answer started is answered as OpenAI's error. */
  private async answer (ep: Endpoint<CommonBody>, req: TunnelRequest, sink: TunnelSink, signal: AbortSignal): Promise<void> {
    const fail = (err: unknown): void => {
      const e = openAIErrorFrom(err)
      if (e.internal && !signal.aborted) this.components.log?.warn({ path: req.target, err: (err as Error).message }, 'tunnelled request failed')
      writeWhole(sink, e.status, {}, JSON.stringify(e.body))
    }
    try {
      let raw: unknown
      try {
        raw = JSON.parse(Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength).toString('utf8'))
      } catch {
        throw new OpenAIError(400, 'body: not valid JSON', null)
      }
      const parsed = ep.parse(raw)
      const session = parsed.user ?? req.headers['x-session-id']
      const res = await this.components.serving.serve(ep, parsed, { session, routed: true, signal })
      if (res.kind === 'json') {
        writeWhole(sink, 200, res.headers, JSON.stringify(res.body))
        return
      }
      await res.writeTo(sink)
    } catch (err) {
      if (!sink.headersSent) { fail(err); return }
      this.components.log?.warn({ path: req.target, err: (err as Error).message }, 'tunnelled answer broke off')
      if (!sink.destroyed) sink.end()
    }
  }
}

/** The tunnel server as a service factory, js-libp2p style: `tunnelServer(init)(components)`. */
export function tunnelServer (init: TunnelServerInit = {}): (components: TunnelServerComponents) => TunnelServer {
  return (components) => new InferTunnel(components, init)
}
