/**
 * The tunnel backend: a request for a peer's instance that cannot be served token by token goes to that
 * peer whole, over /blockmesh/infer/1.0.0 (its tunnel-server.ts serves it), and the answer comes back as
 * the peer wrote it — a JSON body or an SSE stream, relayed chunk by chunk with backpressure.
 */
import { openTunnel } from '../../mesh/tunnel.ts'
import { StreamsBusyError } from '../../mesh/stream-slots.ts'
import type { Route } from '../blocks/router.ts'
import { INFER_PROTOCOL, INSTANCE_HEADER, SERVED_BY_HEADER } from '../openai/infer-protocol.ts'
import type { BackendRequest, ProxyBackend, ServingDeps } from './backend.ts'
import { writeChunk } from '../http/sink.ts'

/** Headers of the peer's answer passed on to the client (the rest are the peer's own business). */
const RELAYED_HEADERS = ['content-type', 'cache-control', INSTANCE_HEADER]

/**
 * Opens a tunnel to the peer `route` names and sends the request; the backend relays its answer. Null
 * when the tunnel could not be opened or the peer did not answer (the peer is skipped by the router for
 * a while, unless it was only busy: all its streams in use), so the caller can pick another instance.
 * Throws the signal's reason when the client left meanwhile.
 */
export async function openPeerTunnel (deps: Pick<ServingDeps, 'mesh' | 'router' | 'log'>, req: BackendRequest, route: Route & { kind: 'remote' }): Promise<ProxyBackend | null> {
  let res
  try {
    res = await openTunnel(deps.mesh, route.peer, INFER_PROTOCOL, {
      target: req.path,
      headers: { 'content-type': 'application/json', ...(req.session != null ? { 'x-session-id': req.session } : {}) },
      body: new TextEncoder().encode(JSON.stringify(req.body))
    }, { signal: req.signal })
  } catch (err) {
    req.signal.throwIfAborted()
    deps.log.warn({ peer: route.peer, model: req.body.model, err: (err as Error).message }, 'tunnel to peer failed; trying another instance')
    // a peer whose streams all stayed busy is loaded, not broken: other requests may still go there
    if (!(err instanceof StreamsBusyError)) deps.router.markFailure(route.peer)
    return null
  }
  const headers: Record<string, string> = {}
  for (const k of RELAYED_HEADERS) if (res.headers[k] != null) headers[k] = res.headers[k]
  headers[SERVED_BY_HEADER] = route.peer
  const { status, body } = res
  return {
    kind: 'tunnel',
    headers,
    forward: async (sink) => {
      sink.writeHead(status, headers)
      try {
        for await (const chunk of body) {
          if (sink.destroyed) break
          await writeChunk(sink, chunk)
        }
      } catch (err) {
        deps.log.warn({ peer: route.peer, err: (err as Error).message }, 'tunnel broke mid-answer')
      } finally {
        if (!sink.destroyed) sink.end()
      }
    }
  }
}
