/**
 * One transfer's view of its sources (the fetcher's bookkeeping, apart from its I/O): which chunks are held
 * here and which are asked for, which chunks each source has, how many sources have each chunk, each
 * source's state (active, dropped until a retry, refused for the transfer), and the rarest-first choice of
 * the next chunk to ask a source for.
 */
import { fullBitmap, hasBit } from './protocol.ts'

/** An unreachable source is retried (if the directory still lists it) after this, doubled per failure, at most MAX_SOURCE_FAILURES times. */
export const RETRY_MS = 1000
export const MAX_SOURCE_FAILURES = 3

export interface Source {
  peer: string
  /** chunks it has (null: not known yet); counted in the transfer's availability while active */
  bitmap: Uint8Array | null
  complete: boolean
  state: 'active' | 'dropped' | 'refused'
  inFlight: number
  backoffUntil: number
  busy: number
  failures: number
  retryAt: number
  haveInFlight: boolean
  ticks: number
  /** struck already in this transfer (a source is struck once per transfer) */
  struck: boolean
}

export class Swarm {
  /** chunks of the file */
  readonly n: number
  /** chunks held here (the store's bitmap, updated as chunks are written) */
  readonly have: Uint8Array
  /** 1: asked of some source now */
  readonly requested: Uint8Array
  /** how many active sources have each chunk */
  readonly avail: Uint16Array
  readonly sources = new Map<string, Source>()
  private readonly admit: (peer: string) => boolean
  private readonly refused: Set<string>

  /** `admit`: whether a peer may become a source (not this node, not banned, under the source limit); `refused`: peers refused for this transfer (shared with the caller) */
  constructor (n: number, have: Uint8Array, admit: (peer: string) => boolean, refused: Set<string>) {
    this.n = n
    this.have = have
    this.requested = new Uint8Array(n)
    this.avail = new Uint16Array(n)
    this.admit = admit
    this.refused = refused
  }

  /** Sets what a source has, keeping the availability counts. */
  setBitmap (s: Source, bitmap: Uint8Array | null): void {
    for (let i = 0; i < this.n; i++) {
      const before = s.bitmap != null && hasBit(s.bitmap, i) ? 1 : 0
      const after = bitmap != null && hasBit(bitmap, i) ? 1 : 0
      if (before !== after) this.avail[i] += after - before
    }
    s.bitmap = bitmap
  }

  /** Adds a source (or marks a known active one complete). */
  add (peer: string, complete: boolean): void {
    const known = this.sources.get(peer)
    if (known != null) {
      if (complete && !known.complete && known.state === 'active') { known.complete = true; this.setBitmap(known, fullBitmap(this.n)) }
      return
    }
    if (this.refused.has(peer) || !this.admit(peer)) return
    const s: Source = { peer, bitmap: null, complete, state: 'active', inFlight: 0, backoffUntil: 0, busy: 0, failures: 0, retryAt: 0, haveInFlight: false, ticks: 0, struck: false }
    this.sources.set(peer, s)
    if (complete) this.setBitmap(s, fullBitmap(this.n))
  }

  /** Drops a source: for this transfer (`refuse`), or until its retry time (while the directory lists it). Returns false when it was refused already. */
  drop (s: Source, refuse: boolean): boolean {
    if (s.state === 'refused') return false
    if (refuse) {
      s.state = 'refused'
      this.refused.add(s.peer)
    } else if (s.state === 'active') {
      s.failures++
      s.state = s.failures > MAX_SOURCE_FAILURES ? 'refused' : 'dropped'
      s.retryAt = Date.now() + RETRY_MS * 2 ** (s.failures - 1)
    }
    this.setBitmap(s, null)
    return true
  }

  /** Rarest first among the chunks `s` has that are missing here and not requested (ties at random); -1 when none. */
  pick (s: Source): number {
    const bitmap = s.bitmap
    if (bitmap == null) return -1
    const { n, requested, have, avail } = this
    let best = -1
    let bestAvail = Infinity
    const start = Math.floor(Math.random() * n)
    for (let k = 0; k < n; k++) {
      const i = (start + k) % n
      if (requested[i] === 1 || hasBit(have, i) || !hasBit(bitmap, i)) continue
      if (avail[i] < bestAvail) {
        best = i
        bestAvail = avail[i]
        if (bestAvail <= 1) break
      }
    }
    return best
  }
}
