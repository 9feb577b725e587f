import type { Stream } from '@libp2p/interface'
import { MeshError } from './errors.ts'

/**
 * Bounded streams per peer for protocols that open a stream per request (the inference tunnel, the
 * generate protocol): a dialer never opens more than the handler accepts per connection, and the next
 * requests wait for a stream to close instead of failing.
 */
/** How long a request waits for a free stream to a peer before it fails. */
export const STREAM_SLOT_WAIT_MS = 120_000

/** Every stream slot to a peer stayed busy for the whole wait. */
export class StreamsBusyError extends MeshError {
  constructor (message: string) {
    super(message, 'ERR_STREAMS_BUSY')
    this.name = 'StreamsBusyError'
  }
}

/**
 * At most `limit` streams of one protocol open to each peer at once (counted from before the dial
 * until the stream has closed, so never above libp2p's own per-connection count); the next ones
 * wait in order of arrival for at most `waitMs`, or until their signal aborts. Waiting costs a
 * closure; what a waiting request holds (its prompt, an HTTP connection) was bounded before.
 */
export class PeerStreamSlots {
  readonly limit: number
  readonly what: string
  readonly waitMs: number
  private readonly open = new Map<string, number>()
  private readonly queues = new Map<string, Array<() => void>>()

  constructor (limit: number, what: string, waitMs = STREAM_SLOT_WAIT_MS) {
    this.limit = limit
    this.what = what
    this.waitMs = waitMs
  }

  /** Streams to `peer` counted as open now. */
  inUse (peer: string): number { return this.open.get(peer) ?? 0 }

  /** Opens waiting for a stream to `peer`. */
  waiting (peer: string): number { return this.queues.get(peer)?.length ?? 0 }

  /** Resolves with a release function once a stream to `peer` may be opened; call it (once is enough) when the stream has closed or was never opened. */
  async acquire (peer: string, signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted()
    const n = this.inUse(peer)
    if (n < this.limit) {
      this.open.set(peer, n + 1)
      return this.releaser(peer)
    }
    const queue = this.queues.get(peer) ?? []
    this.queues.set(peer, queue)
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
      const grant = (): void => { done(); resolve() }
      const leave = (err: unknown): void => {
        done()
        const i = queue.indexOf(grant)
        if (i >= 0) queue.splice(i, 1)
        if (queue.length === 0 && this.queues.get(peer) === queue) this.queues.delete(peer)
        reject(err)
      }
      const onAbort = (): void => { leave(signal?.reason) }
      const timer = setTimeout(() => { leave(new StreamsBusyError(`all ${this.limit} ${this.what} streams to peer ${peer} stayed busy for ${Math.round(this.waitMs / 1000)} s`)) }, this.waitMs)
      signal?.addEventListener('abort', onAbort, { once: true })
      queue.push(grant)
    })
    // the slot was handed over by a release, still counted
    return this.releaser(peer)
  }

  private releaser (peer: string): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      const queue = this.queues.get(peer)
      const next = queue?.shift()
      if (queue != null && queue.length === 0) this.queues.delete(peer)
      if (next != null) { next(); return }
      const n = this.inUse(peer) - 1
      if (n > 0) this.open.set(peer, n)
      else this.open.delete(peer)
    }
  }
}

/** Calls `release` once `stream` has closed (for libp2p, a stream is gone from its connection's count by then). */
export function releaseOnClose (stream: Stream, release: () => void): void {
  if (stream.status !== 'open' && stream.status !== 'closing') { release(); return }
  stream.addEventListener('close', () => { release() }, { once: true })
}

