/**
 * The fetcher's choice of peers: the directory's holders of a file usable now (not this node, not banned,
 * complete holders first, each list shuffled), the strikes of sources that misbehave, and the options of
 * one exchange with a source.
 */
import type { MeshLogger, MeshNode } from '../../mesh/node.ts'
import type { OffenceSink } from '../../mesh/rpc.ts'
import { CONTENT_PROTOCOL } from './protocol.ts'
import type { ContentDialer } from './protocol.ts'
import type { ContentDirectory } from './types.ts'

/** What the fetcher needs of the mesh node: its ID, a dialer, and the one peer score (for bans). */
export type FetcherNode = Pick<MeshNode, 'peerId' | 'score'> & { libp2p: ContentDialer }

/** A holder of a file, as the directory lists it. */
export interface Holder { peer: string, complete: boolean }

export interface FetchPeersInit {
  node: FetcherNode
  directory: ContentDirectory
  /** where offences of sources go */
  score: OffenceSink
  log: MeshLogger
  protocol?: string
}

function shuffle<T> (xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const t = xs[i]; xs[i] = xs[j]; xs[j] = t
  }
  return xs
}

export class FetchPeers {
  readonly node: FetcherNode
  /** this node's peer ID */
  readonly self: string
  private readonly init: FetchPeersInit

  constructor (init: FetchPeersInit) {
    this.init = init
    this.node = init.node
    this.self = init.node.peerId.toString()
  }

  banned (peer: string): boolean {
    return this.node.score.isBanned(peer)
  }

  /** The directory's holders of `md5` usable now: complete ones first. */
  holders (md5: string): Holder[] {
    const h = this.init.directory.holders(md5)
    const seen = new Set<string>([this.self])
    const out: Holder[] = []
    for (const [list, complete] of [[h.complete, true], [h.partial, false]] as const) {
      for (const peer of shuffle([...list])) {
        if (seen.has(peer) || this.banned(peer)) continue
        seen.add(peer)
        out.push({ peer, complete })
      }
    }
    return out
  }

  strike (peer: string, reason: string, offence: 'oversized' | 'malformed' | 'forged'): void {
    this.init.log.warn({ peer, reason, offence }, 'content source misbehaved')
    this.init.score.strike(peer, reason, offence)
  }

  exchangeOpts (signal: AbortSignal, timeoutMs?: number): { signal: AbortSignal, timeoutMs?: number, protocol: string } {
    return { signal, timeoutMs, protocol: this.init.protocol ?? CONTENT_PROTOCOL }
  }
}
