import { createHash } from 'node:crypto'
import { createLibp2p } from 'libp2p'
import type { Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { tunedNoise } from './noise-tuning.ts'
import { halfWindowUpdates } from './yamux-window.ts'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { Identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import type { Ping } from '@libp2p/ping'
import { gossipsub } from '@libp2p/gossipsub'
import type { GossipSub, GossipsubOpts } from '@libp2p/gossipsub'
import { preSharedKey } from '@libp2p/pnet'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { PeerGate } from './gater.ts'
import { InvalidMultiaddrError, InvalidPeerIdError } from './errors.ts'
import { PeerScore } from './peer-score.ts'
import type { PeerScoreInit } from './peer-score.ts'

export type MeshServices = {
  identify: Identify
  ping: Ping
  pubsub: GossipSub
}
export type MeshLibp2p = Libp2p<MeshServices>

/** Largest gossip message gossipsub will even decode; our own validators bound frames far tighter. */
export const GOSSIP_MAX_DATA_BYTES = 1024 * 1024

export interface MeshLogger {
  debug: (obj: object | string, msg?: string) => void
  info: (obj: object | string, msg?: string) => void
  warn: (obj: object | string, msg?: string) => void
}

export const silentLogger: MeshLogger = { debug () {}, info () {}, warn () {} }

export interface MeshNodeInit {
  privateKey: PrivateKey
  /** Multiaddrs to listen on, e.g. /ip4/127.0.0.1/tcp/0 */
  listen: string[]
  /** Multiaddrs to keep dialing until connected; /p2p/ID is optional. */
  bootstrap?: string[]
  /** pnet swarm key bytes: only nodes with the same key can connect. */
  swarmKey?: Uint8Array
  /** Only these peer IDs may connect (empty or absent: anyone with the swarm key, if any). */
  allow?: string[]
  gossip?: Partial<GossipsubOpts>
  /** How often unconnected bootstrap addresses are dialled again. */
  redialMs?: number
  /** The peer score's weights and limits (mesh/peer-score.ts); it logs through `log`. */
  score?: Omit<PeerScoreInit, 'log'>
  log?: MeshLogger
}

export function parseMultiaddr (text: string): Multiaddr {
  try {
    return multiaddr(text)
  } catch (err) {
    throw new InvalidMultiaddrError(`not a multiaddr: ${JSON.stringify(text)} (${(err as Error).message})`, { cause: err })
  }
}

export function parsePeerId (text: string): PeerId {
  try {
    return peerIdFromString(text)
  } catch (err) {
    throw new InvalidPeerIdError(`not a peer ID: ${JSON.stringify(text)}`, { cause: err })
  }
}

/** sha1 over the raw gossip message's author, sequence number and data: for de-duplication only. */
export function fastMessageId (msg: { from?: Uint8Array, seqno?: Uint8Array, data?: Uint8Array }): string {
  const h = createHash('sha1')
  if (msg.from != null) h.update(msg.from)
  if (msg.seqno != null) h.update(msg.seqno)
  if (msg.data != null) h.update(msg.data)
  return h.digest('base64')
}

/**
 * A libp2p 3 node with TCP, Noise, Yamux, identify, ping and gossipsub;
 * optional private network (pnet) and allow-list gate; the one peer score
 * every protocol reports offences to (a ban goes through the gate, which
 * disconnects); a bootstrap dialer that keeps reconnecting to its seeds.
 */
export class MeshNode {
  readonly libp2p: MeshLibp2p
  readonly gate: PeerGate
  /** Offences of peers on every protocol of this node add up here; at the threshold the peer is banned. */
  readonly score: PeerScore
  readonly privateKey: PrivateKey
  private readonly bootstrap: Multiaddr[]
  private readonly redialMs: number
  private readonly log: MeshLogger
  private redialTimer: NodeJS.Timeout | undefined
  private readonly dialing = new Set<string>()
  /** Bootstrap addresses without /p2p/: the peer each one turned out to be. */
  private readonly learned = new Map<string, string>()
  /** Peers known from an earlier run: redialled like bootstrap addresses until connected or expired. */
  private readonly seeds = new Map<string, { addrs: Multiaddr[], until: number }>()
  private stopped = false

  private constructor (libp2p: MeshLibp2p, privateKey: PrivateKey, gate: PeerGate, bootstrap: Multiaddr[], redialMs: number, log: MeshLogger, score: Omit<PeerScoreInit, 'log'> = {}) {
    this.libp2p = libp2p
    this.privateKey = privateKey
    this.gate = gate
    this.score = new PeerScore(this, { ...score, log })
    this.bootstrap = bootstrap
    this.redialMs = redialMs
    this.log = log
  }

  static async create (init: MeshNodeInit): Promise<MeshNode> {
    const listen = init.listen.map(a => parseMultiaddr(a).toString())
    const bootstrap = (init.bootstrap ?? []).map(parseMultiaddr)
    for (const p of init.allow ?? []) parsePeerId(p)
    let node: MeshLibp2p | undefined
    // a ban closes the peer's connections at once; the gater then refuses it until the ban ends
    const gate = new PeerGate({ allow: init.allow, disconnect: async (peer) => { await node?.hangUp(parsePeerId(peer)) } })
    const libp2p = await createLibp2p({
      privateKey: init.privateKey,
      start: false,
      addresses: { listen },
      transports: [tcp()],
      // Noise, each encrypted message written to the socket as one buffer and messages cut without throwing (mesh/noise-tuning.ts)
      connectionEncrypters: [tunedNoise(noise())],
      // Yamux, its window updates sent once half a stream's window is used (mesh/yamux-window.ts)
      streamMuxers: [halfWindowUpdates(yamux())],
      connectionProtector: init.swarmKey != null ? preSharedKey({ psk: init.swarmKey }) : undefined,
      connectionGater: gate.connectionGater(),
      // inbound connections per second from one address: js-libp2p's default of 5 refused peers when several
      // agents behind one address (one box, a NAT, the demo, the tests' loopback meshes) dialled at once
      connectionManager: { maxConnections: 256, dialTimeout: 10_000, inboundConnectionThreshold: 32 },
      services: {
        identify: identify(),
        ping: ping(),
        pubsub: gossipsub({
          allowPublishToZeroTopicPeers: true,
          emitSelf: false,
          maxInboundDataLength: GOSSIP_MAX_DATA_BYTES,
          // No IP-colocation penalty (gossipsub score P6): with its defaults, more than 10 peers
          // behind one IP (a NAT, one box running several agents, a local demo) are graylisted and
          // the mesh splits. Admission is the swarm key and allow-list; bad frames cost strikes.
          scoreParams: { IPColocationFactorWeight: 0 },
          // a cheap id of the raw message lets gossipsub drop the copies every message arrives in
          // (flood publish + mesh forwarding) before their signatures are checked again
          fastMsgIdFn: fastMessageId,
          ...init.gossip
        })
      }
    })
    node = libp2p
    return new MeshNode(libp2p, init.privateKey, gate, bootstrap, init.redialMs ?? 3000, init.log ?? silentLogger, init.score)
  }

  get peerId (): PeerId {
    return this.libp2p.peerId
  }

  multiaddrs (): string[] {
    return this.libp2p.getMultiaddrs().map(a => a.toString())
  }

  async start (): Promise<void> {
    await this.libp2p.start()
    this.redial()
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearTimeout(this.redialTimer)
    await this.libp2p.stop()
  }

  isConnected (peer: string): boolean {
    return this.libp2p.getConnections(parsePeerId(peer)).length > 0
  }

  /** Peers with at least one open connection to this node (each once). */
  connectedPeers (): string[] {
    return [...new Set(this.libp2p.getConnections().map(c => c.remotePeer.toString()))]
  }

  /** Dials a peer once (best effort) unless connected, refused by the gate, or a dial is under way. */
  async ensureConnected (target: Multiaddr | Multiaddr[], peer?: string): Promise<string | undefined> {
    const targets = Array.isArray(target) ? target : [target]
    if (targets.length === 0 || this.stopped) return
    const key = peer ?? targets[0].toString()
    if (peer != null && (peer === this.peerId.toString() || !this.gate.permits(peer) || this.isConnected(peer))) return
    if (this.dialing.has(key)) return
    this.dialing.add(key)
    try {
      const conn = await this.libp2p.dial(targets.length === 1 ? targets[0] : targets, { signal: AbortSignal.timeout(10_000) })
      return conn.remotePeer.toString()
    } catch (err) {
      this.log.debug({ target: key, err: (err as Error).message }, 'dial failed')
    } finally {
      this.dialing.delete(key)
    }
  }

  /** Keeps dialling a known peer (every redial period) until connected, for at most `forMs`. */
  seed (peer: string, addrs: Multiaddr[], forMs: number): void {
    if (addrs.length === 0 || peer === this.peerId.toString()) return
    this.seeds.set(peer, { addrs, until: Date.now() + forMs })
    void this.ensureConnected(addrs, peer)
  }

  private redial (): void {
    if (this.stopped) return
    const now = Date.now()
    for (const [peer, s] of this.seeds) {
      if (s.until <= now || this.isConnected(peer)) { this.seeds.delete(peer); continue }
      void this.ensureConnected(s.addrs, peer)
    }
    for (const addr of this.bootstrap) {
      const key = addr.toString()
      const peer = addr.getComponents().findLast(c => c.name === 'p2p')?.value ?? this.learned.get(key)
      if (peer != null && this.isConnected(peer)) continue
      void this.ensureConnected(addr, peer).then(found => {
        if (found != null) this.learned.set(key, found)
      })
    }
    this.redialTimer = setTimeout(() => { this.redial() }, this.redialMs)
    this.redialTimer.unref()
  }
}
