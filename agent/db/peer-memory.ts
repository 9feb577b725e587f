import type { CapacityRecord } from '../../mesh/capacity/record.ts'
import type { PeerView } from '../../mesh/capacity/gossip.ts'
import { PeerStore } from './peer-store.ts'
import type { Db } from './database.ts'

/** Peers last heard from within this long are dialled again after a restart. */
const REMEMBER_MS = 24 * 3600_000
/** Every live peer's record is written this often. */
const PERSIST_EVERY_MS = 10_000

/** What PeerMemory needs of the capacity gossip. */
export interface GossipPeers {
  peers: () => PeerView[]
  onChange: (fn: (peer: string, view: PeerView) => void) => () => void
  remember: (entries: Array<{ record: CapacityRecord, lastSeen: number }>) => void
}

/**
 * The agent's memory of the mesh across restarts: at start, the peers heard from in the last day go back
 * into the gossip table (to be dialled); a peer met for the first time (or back from expiry) is written at
 * once, so even an agent killed a moment later finds it again; every live peer is refreshed every
 * PERSIST_EVERY_MS and once more at stop. Write failures are logged, never fatal.
 */
export class PeerMemory {
  private readonly store: PeerStore
  private readonly log: { warn: (obj: object, msg: string) => void }
  private gossip: GossipPeers | undefined
  private timer: NodeJS.Timeout | undefined
  private unsubscribe: (() => void) | undefined

  constructor (db: Db, log: { warn: (obj: object, msg: string) => void }) {
    this.store = new PeerStore(db)
    this.log = log
  }

  /** Restores the remembered peers into `gossip` and starts writing; returns how many were remembered. */
  start (gossip: GossipPeers, now = Date.now()): number {
    this.gossip = gossip
    const remembered = this.store.load(now - REMEMBER_MS)
    gossip.remember(remembered)
    const seen = new Set<string>()
    this.unsubscribe = gossip.onChange((peer, view) => {
      if (view.status === 'expired') { seen.delete(peer); return }
      if (seen.has(peer)) return
      seen.add(peer)
      this.save([view], 'could not store peer')
    })
    this.timer = setInterval(() => { this.persist() }, PERSIST_EVERY_MS)
    this.timer.unref()
    return remembered.length
  }

  /** Writes every live peer now (also at stop). */
  persist (): void {
    if (this.gossip == null) return
    this.save(this.gossip.peers().filter(p => p.status === 'live'), 'could not persist peers')
  }

  /** Stops the timer and writes the live peers a last time. */
  stop (): void {
    clearInterval(this.timer)
    this.unsubscribe?.()
    this.persist()
  }

  private save (views: Array<{ record: CapacityRecord, lastSeen: number }>, what: string): void {
    try {
      this.store.saveAll(views)
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, what)
    }
  }
}
