import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { MeshNode, MeshLogger } from '../node.ts'
import { parseMultiaddr, silentLogger } from '../node.ts'
import { CapacityFrameError, offenceOf } from '../errors.ts'
import type { RejectReason } from '../errors.ts'
import type { PeerScore } from '../peer-score.ts'
import {
  CAPACITY_TOPIC, MAX_CONTENT_FETCHING, MAX_CONTENT_HELD, MAX_LINKS, MAX_PROVIDERS, MAX_RECONCILES, compareRecords, decodeCapacityRecord, encodeCapacityRecord
} from './record.ts'
import type { CapacityRecord, ContentReport, InstanceReport, ProviderStatus, Readings, ReconcileReport, VdagReport } from './record.ts'

export interface CapacityIdentity {
  name: string
  cluster: string
  vendor: string
}

/** Hooks for metrics; every one optional. */
export interface CapacityObserver {
  published?: () => void
  accepted?: (peer: string) => void
  rejected?: (reason: RejectReason | 'unsigned', source: string) => void
  /** not-allowed: the record's author is banned here, or not on the allow-list; full: MAX_REMEMBERED_PEERS live peers are known */
  ignored?: (reason: 'stale' | 'self' | 'not-allowed' | 'full', source: string) => void
  heartbeatLag?: (ms: number) => void
  /** a rejected frame cost its forwarder; `score`: the peer's score after it (0 once banned) */
  penalised?: (peer: string, score: number) => void
  /** a rejected frame got its forwarder banned (the score's own listeners hear of every ban, whatever the protocol) */
  banned?: (peer: string) => void
  expired?: (peer: string) => void
}

export interface CapacityGossipInit {
  identity: CapacityIdentity
  /** Incremented by the caller at each start, persisted. */
  epoch: number
  heartbeatMs?: number
  /** A peer expires after this many heartbeats (its own interval) without a record. */
  expiryHeartbeats?: number
  /**
   * Where a rejected frame counts against its forwarder: the node's one peer score (the default), so bad
   * gossip and bad requests on other protocols add up to one ban.
   */
  score?: PeerScore
  /** Direct connections the gossip opens to peers it hears of, at most. */
  maxAutoDial?: number
  readings: () => Readings
  /** block instances this node runs, for its record */
  instances?: () => InstanceReport[]
  /** vDAGs this node owns, for its record */
  vdags?: () => VdagReport[]
  /** execution providers that load here (and why the others do not), for its record */
  providers?: () => ProviderStatus[]
  /** digest of the desired state held here, for its record */
  state?: () => string
  /** blocks reconciled here, for its record */
  reconciles?: () => ReconcileReport[]
  /** model files held and being fetched here, for its record */
  content?: () => ContentReport
  observer?: CapacityObserver
  log?: MeshLogger
  now?: () => number
}

export type PeerStatus = 'live' | 'expired'

export interface PeerView {
  record: CapacityRecord
  /** Receiver's clock when the newest record arrived. */
  lastSeen: number
  expiresAt: number
  status: PeerStatus
}

/** A content report cut to the record's bounds. */
function boundContent (c: ContentReport): ContentReport {
  return { held: c.held.slice(0, MAX_CONTENT_HELD), fetching: c.fetching.slice(0, MAX_CONTENT_FETCHING) }
}

/** Entries kept for expired peers (for "last seen" listings), oldest dropped first. */
const MAX_REMEMBERED_PEERS = 4096

/**
 * Publishes this node's signed capacity record every heartbeat on a
 * gossipsub topic, validates every inbound record (size, signature, schema,
 * signer = named peer, freshness), keeps the table of peers with expiry,
 * and reports peers that forward bad frames to the node's one peer score
 * (which bans them through the gate).
 */
export class CapacityGossip {
  private readonly node: MeshNode
  private readonly init: Required<Omit<CapacityGossipInit, 'observer' | 'log' | 'now' | 'score' | 'instances' | 'vdags' | 'providers' | 'state' | 'reconciles' | 'content'>> & Pick<CapacityGossipInit, 'instances' | 'vdags' | 'providers' | 'state' | 'reconciles' | 'content'>
  private readonly observer: CapacityObserver
  private readonly log: MeshLogger
  private readonly now: () => number
  private readonly table = new Map<string, PeerView>()
  private readonly score: PeerScore
  private readonly listeners = new Set<(peer: string, view: PeerView) => void>()
  private readonly waitingDial = new Map<string, number>()
  private seq = 0
  private own: CapacityRecord | undefined
  private timer: NodeJS.Timeout | undefined
  private nextBeatAt = 0
  private running = false
  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => { this.suspect(evt.detail.toString()) }

  constructor (node: MeshNode, init: CapacityGossipInit) {
    this.node = node
    this.init = {
      heartbeatMs: 2000,
      expiryHeartbeats: 3,
      maxAutoDial: 64,
      ...init
    }
    this.observer = init.observer ?? {}
    this.log = init.log ?? silentLogger
    this.now = init.now ?? Date.now
    this.score = init.score ?? node.score
  }

  get heartbeatMs (): number { return this.init.heartbeatMs }

  /** The latest record this node published (undefined before the first heartbeat). */
  localRecord (): CapacityRecord | undefined { return this.own }

  /** Sequence number the next heartbeat will carry. */
  nextSeq (): number { return this.seq }

  peers (): PeerView[] {
    this.sweep()
    return [...this.table.values()]
  }

  peer (id: string): PeerView | undefined {
    this.sweep()
    return this.table.get(id)
  }

  onChange (fn: (peer: string, view: PeerView) => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  /** Restores peers known from an earlier run, as expired, and dials them. */
  remember (entries: Array<{ record: CapacityRecord, lastSeen: number }>): void {
    for (const { record, lastSeen } of entries) {
      if (record.peerId === this.node.peerId.toString() || this.table.has(record.peerId)) continue
      this.table.set(record.peerId, { record, lastSeen, expiresAt: lastSeen, status: 'expired' })
      // stored peers: keep dialling them for a while, whoever we are, so a restart finds the mesh
      this.node.seed(record.peerId, this.addrsOf(record), 10 * 60_000)
    }
  }

  async start (): Promise<void> {
    const pubsub = this.node.libp2p.services.pubsub
    pubsub.topicValidators.set(CAPACITY_TOPIC, async (source, msg) => await this.validate(source, msg))
    pubsub.subscribe(CAPACITY_TOPIC)
    this.node.libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    this.running = true
    this.nextBeatAt = this.now()
    await this.beat()
  }

  stop (): void {
    this.running = false
    this.node.libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    clearTimeout(this.timer)
    const pubsub = this.node.libp2p.services.pubsub
    pubsub.topicValidators.delete(CAPACITY_TOPIC)
  }

  /** Publishes a heartbeat now (used after a local reading changed), keeping the schedule. */
  async publishNow (): Promise<CapacityRecord | undefined> {
    return await this.publish()
  }

  private async beat (): Promise<void> {
    if (!this.running) return
    const lag = this.now() - this.nextBeatAt
    this.observer.heartbeatLag?.(Math.max(0, lag))
    await this.publish()
    this.sweep()
    // schedule from the intended time, not from now, so lag does not accumulate
    this.nextBeatAt += this.init.heartbeatMs
    const wait = Math.max(0, this.nextBeatAt - this.now())
    if (!this.running) return
    this.timer = setTimeout(() => { void this.beat() }, wait)
  }

  private async publish (): Promise<CapacityRecord | undefined> {
    const record: CapacityRecord = {
      v: 1,
      peerId: this.node.peerId.toString(),
      ...this.init.identity,
      addrs: this.node.multiaddrs().slice(0, 16),
      epoch: this.init.epoch,
      seq: this.seq++,
      ts: Date.now(),
      heartbeatMs: this.init.heartbeatMs,
      readings: this.init.readings(),
      instances: (this.init.instances?.() ?? []).slice(0, 64),
      vdags: (this.init.vdags?.() ?? []).slice(0, 16),
      links: this.node.connectedPeers().slice(0, MAX_LINKS),
      providers: (this.init.providers?.() ?? []).slice(0, MAX_PROVIDERS),
      ...(this.init.state != null ? { state: this.init.state() } : {}),
      reconciles: (this.init.reconciles?.() ?? []).slice(0, MAX_RECONCILES),
      ...(this.init.content != null ? { content: boundContent(this.init.content()) } : {})
    }
    try {
      const frame = await encodeCapacityRecord(record, this.node.privateKey)
      this.own = record
      await this.node.libp2p.services.pubsub.publish(CAPACITY_TOPIC, frame)
      this.observer.published?.()
      return record
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'capacity publish failed')
      return undefined
    }
  }

  private async validate (source: PeerId, msg: Message): Promise<TopicValidatorResult> {
    const from = source.toString()
    if (msg.type !== 'signed') {
      this.reject('unsigned', from, 'unsigned gossip message')
      return TopicValidatorResult.Reject
    }
    let record: CapacityRecord
    try {
      record = await decodeCapacityRecord(msg.data)
    } catch (err) {
      // decodeCapacityRecord throws CapacityFrameError for every refusal; anything else is a frame it could not even open
      const reason = err instanceof CapacityFrameError ? err.reason : 'bad-envelope'
      this.reject(reason, from, (err as Error).message)
      return TopicValidatorResult.Reject
    }
    if (record.peerId !== msg.from.toString()) {
      this.reject('peer-mismatch', from, `gossip author ${msg.from.toString()} relays a record of ${record.peerId}`)
      return TopicValidatorResult.Reject
    }
    if (record.peerId === this.node.peerId.toString()) {
      this.observer.ignored?.('self', from)
      return TopicValidatorResult.Ignore
    }
    // an author this agent would not let connect (banned, or off the allow-list) is neither remembered nor
    // dialled, whoever relays its record (not an offence of the relay: its allow-list may differ)
    if (!this.node.gate.permits(record.peerId)) {
      this.observer.ignored?.('not-allowed', from)
      return TopicValidatorResult.Ignore
    }
    const known = this.table.get(record.peerId)
    if (known != null && compareRecords(record, known.record) <= 0) {
      this.observer.ignored?.('stale', from)
      return TopicValidatorResult.Ignore
    }
    if (known == null && this.table.size >= MAX_REMEMBERED_PEERS) {
      // new identities cost nothing to make: past the bound, a new author waits until a known peer expires
      this.trim()
      if (this.table.size >= MAX_REMEMBERED_PEERS) {
        this.observer.ignored?.('full', from)
        return TopicValidatorResult.Ignore
      }
    }
    this.accept(record)
    return TopicValidatorResult.Accept
  }

  private accept (record: CapacityRecord): void {
    const now = this.now()
    const view: PeerView = {
      record,
      lastSeen: now,
      expiresAt: now + this.init.expiryHeartbeats * record.heartbeatMs + Math.floor(record.heartbeatMs / 2),
      status: 'live'
    }
    this.table.delete(record.peerId) // re-insert: Map order = recency, for trimming
    this.table.set(record.peerId, view)
    this.observer.accepted?.(record.peerId)
    this.emit(record.peerId, view)
    this.dialPeer(record)
    this.trim()
  }

  /**
   * Opens a direct connection to a peer heard of through gossip. To avoid both sides dialling at
   * once (two connections per pair), the smaller peer ID dials first; the other side dials too
   * only if still unconnected two heartbeats later (the smaller side may not reach it).
   */
  private dialPeer (record: CapacityRecord): void {
    if (this.node.libp2p.getConnections().length >= this.init.maxAutoDial) return
    if (this.node.isConnected(record.peerId)) {
      this.waitingDial.delete(record.peerId)
      return
    }
    if (this.node.peerId.toString() > record.peerId) {
      const since = this.waitingDial.get(record.peerId)
      if (since == null) {
        this.waitingDial.set(record.peerId, this.now())
        return
      }
      if (this.now() - since < 2 * this.init.heartbeatMs) return
    }
    void this.node.ensureConnected(this.addrsOf(record), record.peerId)
  }

  private addrsOf (record: CapacityRecord): Multiaddr[] {
    const addrs: Multiaddr[] = []
    for (const a of record.addrs) {
      try {
        const ma = parseMultiaddr(a)
        addrs.push(ma.getComponents().some(c => c.name === 'p2p') ? ma : ma.encapsulate(`/p2p/${record.peerId}`))
      } catch { /* a bad address is skipped; the record itself was valid */ }
    }
    return addrs
  }

  private reject (reason: RejectReason | 'unsigned', from: string, message: string): void {
    this.observer.rejected?.(reason, from)
    const banned = this.score.strike(from, `capacity frame ${reason}: ${message}`, offenceOf(reason))
    this.observer.penalised?.(from, this.score.score(from))
    if (banned) this.observer.banned?.(from)
  }

  /**
   * A live peer's last connection closed. A process that died (kill -9, crash) closes its sockets at once;
   * waiting the full expiry (3 heartbeats) would leave its blocks unreconciled that long. So: one redial
   * after half a heartbeat; if it fails, the peer expires now. A peer that is only reachable through
   * others comes back live with its next record, as after any expiry.
   */
  private suspect (peer: string): void {
    const view = this.table.get(peer)
    if (!this.running || view == null || view.status !== 'live') return
    setTimeout(() => {
      if (!this.running || this.node.isConnected(peer)) return
      void this.node.ensureConnected(this.addrsOf(view.record), peer).then(() => {
        const now = this.table.get(peer)
        if (!this.running || this.node.isConnected(peer) || now !== view || view.status !== 'live') return
        this.log.info({ peer, name: view.record.name }, 'peer unreachable since its connection closed')
        view.expiresAt = this.now()
        this.sweep()
      })
    }, Math.floor(this.init.heartbeatMs / 2)).unref()
  }

  private sweep (): void {
    const now = this.now()
    for (const [id, view] of this.table) {
      if (view.status === 'live' && view.expiresAt <= now) {
        view.status = 'expired'
        this.observer.expired?.(id)
        this.waitingDial.delete(id)
        this.log.info({ peer: id, name: view.record.name }, 'peer expired')
        this.emit(id, view)
      }
    }
  }

  private trim (): void {
    if (this.table.size < MAX_REMEMBERED_PEERS) return
    for (const [id, view] of this.table) {
      if (this.table.size < MAX_REMEMBERED_PEERS) break
      if (view.status === 'expired') this.table.delete(id)
    }
  }

  private emit (peer: string, view: PeerView): void {
    for (const fn of this.listeners) {
      try { fn(peer, view) } catch (err) { this.log.warn({ err: (err as Error).message }, 'capacity listener failed') }
    }
  }
}
