/**
 * The fetcher's side of /blockmesh/content/1.0.0: brings a file into the local content store from the peers
 * that hold it, several at once, chunk by chunk (wire form in ./protocol.ts, the holders' side in ./service.ts).
 */
import type { MeshLogger, MeshNode } from '../../mesh/node.ts'
import { parsePeerId, silentLogger } from '../../mesh/node.ts'
import type { OffenceSink } from '../../mesh/rpc.ts'
import { ValidationError } from '../errors.ts'
import { ChunkHashError, ContentDigestError, ManifestError, NoSourceError } from './errors.ts'
import { openManifest } from './manifest.ts'
import { Swarm } from './swarm.ts'
import type { Source } from './swarm.ts'
import {
  CONTENT_PROTOCOL, ContentAnswerError, ContentBusyError, ContentNotHeldError, clearBit, fullBitmap, hasBit, requestChunk, requestHave,
  requestManifest, setBit
} from './protocol.ts'
import type { ContentDialer } from './protocol.ts'
import { Md5Hex } from './types.ts'
import type { ContentDirectory, ContentEntry, ContentFetcher, ContentStore, FetchOptions, OriginSource, SignedManifest, TransferProgress } from './types.ts'

/** What the fetcher needs of the mesh node: its ID, a dialer, and the one peer score (for bans). */
export type FetcherNode = Pick<MeshNode, 'peerId' | 'score'> & { libp2p: ContentDialer }

export interface MeshContentFetcherInit {
  node: FetcherNode
  store: ContentStore
  directory: ContentDirectory
  /** where offences of sources go (default: the node's score) */
  score?: OffenceSink
  log?: MeshLogger
  /** chunk requests in flight to one source (default 4) */
  maxInFlightPerSource?: number
  /** how often partial sources are asked which chunks they have, and the directory read again (default 500 ms) */
  haveRefreshMs?: number
  /** fetches a file from its original source when no peer holds it: resolves with a local path of the file */
  origin?: (origin: OriginSource, md5: string, signal: AbortSignal) => Promise<string>
  /** how long a fetch waits for a holder to appear, and a transfer with no usable source for one to come back (default 5 s) */
  holderWaitMs?: number
  /** one chunk exchange must end within this (default 120 s) */
  chunkTimeoutMs?: number
  /** sources one transfer uses at most (default 32) */
  maxSources?: number
  protocol?: string
}

/** Progress events per second, at most (the last one always goes out). */
const PROGRESS_EVERY_MS = 200
/** A busy source waits this long, doubled per busy answer in a row, at most BUSY_MAX_MS. */
const BUSY_MS = 100
const BUSY_MAX_MS = 2000

interface Transfer {
  md5: string
  progress: TransferProgress
  listeners: Set<(p: TransferProgress) => void>
  controller: AbortController
  joiners: number
  origin: OriginSource | undefined
  lastEmit: number
  promise: Promise<ContentEntry>
}

function sleep (ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    signal.throwIfAborted()
    const onAbort = (): void => { clearTimeout(timer); reject(signal.reason) }
    const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

function shuffle<T> (xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const t = xs[i]; xs[i] = xs[j]; xs[j] = t
  }
  return xs
}

/**
 * Fetches files into the store from the peers that hold them.
 *
 * 1. A file complete in the store is returned at once; concurrent fetches of one MD5 share one transfer
 *    (it is cancelled when every caller has aborted).
 * 2. Sources: the directory's complete and partial holders, less this node and banned peers. None, and the
 *    caller gave an origin (and the fetcher has an `origin` function): the file comes from there
 *    (`store.importFile(path, { pin: false })`, progress under 'origin'). None and no origin: the directory
 *    is read again for holderWaitMs, then NoSourceError.
 * 3. The manifest: the one a partial in the store was begun with (resume), else the first valid one a source
 *    gives (`openManifest(bytes, md5)`; an invalid one strikes that source 'forged' and the next is asked).
 *    `store.begin`, and `store.acquire` for the transfer (so the partial is not evicted).
 * 4. Each source has a bitmap: complete sources all chunks, partial ones (and peers learnt from a `have`
 *    answer's `peers`) what their `have` says, asked again every haveRefreshMs (complete sources every 4th
 *    time, for their `peers`); the directory is read again as often and new holders added.
 * 5. Rarest first: each free slot of a source (maxInFlightPerSource per source) takes the chunk missing
 *    here, not requested yet, that this source has and the fewest sources have (ties broken at random), so
 *    fetchers of one file diverge and can trade chunks.
 * 6. A chunk that fails its hash (ChunkHashError from writeChunk), is not the manifest's length, or an answer
 *    that breaks the protocol: the source is struck (once per transfer; 'forged' for bad bytes) and dropped
 *    for the transfer, the chunk goes back to the pool. busy: the source backs off (100 ms doubling to 2 s).
 *    not_found: the chunk is cleared from the source's bitmap (a complete source that says so is dropped).
 *    Unreachable (dial or stream failed, peer gone): dropped, retried after 1, 2, 4 s while the directory
 *    still lists it, at most 3 times. Chunks written stay written (a restart resumes from the store's bitmap).
 *    No request in flight and no source with a chunk still missing for holderWaitMs: NoSourceError.
 * 7. Every chunk held: `store.complete` checks the whole file; ContentDigestError strikes the manifest's
 *    source (else its adder) 'forged' and fails the fetch.
 * Progress (`bySource`: bytes received per peer this run; `receivedBytes` counts chunks held from an earlier
 * run too) goes to `onProgress` at most 5 times a second, and once at the end. Aborting cancels the requests;
 * the partial stays for a later resume.
 */
export class MeshContentFetcher implements ContentFetcher {
  private readonly init: MeshContentFetcherInit
  private readonly node: FetcherNode
  private readonly store: ContentStore
  private readonly score: OffenceSink
  private readonly log: MeshLogger
  private readonly self: string
  private readonly maxInFlight: number
  private readonly refreshMs: number
  private readonly holderWaitMs: number
  private readonly maxSources: number
  private readonly active = new Map<string, Transfer>()

  constructor (init: MeshContentFetcherInit) {
    this.init = init
    this.node = init.node
    this.store = init.store
    this.score = init.score ?? init.node.score
    this.log = init.log ?? silentLogger
    this.self = init.node.peerId.toString()
    this.maxInFlight = Math.max(1, init.maxInFlightPerSource ?? 4)
    this.refreshMs = Math.max(10, init.haveRefreshMs ?? 500)
    this.holderWaitMs = init.holderWaitMs ?? 5000
    this.maxSources = Math.max(1, init.maxSources ?? 32)
  }

  transfers (): TransferProgress[] {
    return [...this.active.values()].map(t => ({ ...t.progress, bySource: { ...t.progress.bySource } }))
  }

  async fetch (md5: string, opts: FetchOptions = {}): Promise<ContentEntry> {
    if (!Md5Hex.safeParse(md5).success) throw new ValidationError(`not an MD5: ${JSON.stringify(md5)}`)
    opts.signal?.throwIfAborted()
    const held = this.store.get(md5)
    if (held?.state === 'complete') return held
    let t = this.active.get(md5)
    if (t == null) {
      const now = Date.now()
      const created: Transfer = {
        md5,
        progress: { md5, name: opts.name ?? held?.name ?? null, receivedBytes: 0, totalBytes: held?.size ?? opts.origin?.sizeBytes ?? 0, bySource: {}, startedAt: now },
        listeners: new Set(),
        controller: new AbortController(),
        joiners: 0,
        origin: opts.origin,
        lastEmit: 0,
        promise: Promise.resolve(undefined as unknown as ContentEntry)
      }
      created.promise = this.run(created, opts.name)
      const forget = (): void => { if (this.active.get(md5) === created) this.active.delete(md5) }
      created.promise.then(forget, forget)
      this.active.set(md5, created)
      t = created
    } else {
      t.origin ??= opts.origin
    }
    return await this.join(t, opts)
  }

  /** Waits for `t` on behalf of one caller; the transfer is cancelled when its last caller aborts. */
  private async join (t: Transfer, opts: FetchOptions): Promise<ContentEntry> {
    const listener = opts.onProgress
    if (listener != null) t.listeners.add(listener)
    t.joiners++
    let left = false
    const leave = (): void => {
      if (left) return
      left = true
      t.joiners--
      if (listener != null) t.listeners.delete(listener)
    }
    const { signal } = opts
    try {
      if (signal == null) return await t.promise
      return await new Promise<ContentEntry>((resolve, reject) => {
        const onAbort = (): void => {
          leave()
          reject(signal.reason)
          if (t.joiners === 0) t.controller.abort(signal.reason)
        }
        signal.addEventListener('abort', onAbort, { once: true })
        t.promise.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
      })
    } finally {
      leave()
    }
  }

  private emit (t: Transfer, final: boolean): void {
    const now = Date.now()
    if (!final && now - t.lastEmit < PROGRESS_EVERY_MS) return
    t.lastEmit = now
    for (const l of t.listeners) {
      try { l({ ...t.progress, bySource: { ...t.progress.bySource } }) } catch (err) { this.log.warn({ md5: t.md5, err: (err as Error).message }, 'a progress listener failed') }
    }
  }

  private banned (peer: string): boolean {
    return this.node.score.isBanned(peer)
  }

  /** The directory's holders of `md5` usable now: complete ones first. */
  private holders (md5: string): Array<{ peer: string, complete: boolean }> {
    const h = this.init.directory.holders(md5)
    const seen = new Set<string>([this.self])
    const out: Array<{ peer: string, complete: boolean }> = []
    for (const [list, complete] of [[h.complete, true], [h.partial, false]] as const) {
      for (const peer of shuffle([...list])) {
        if (seen.has(peer) || this.banned(peer)) continue
        seen.add(peer)
        out.push({ peer, complete })
      }
    }
    return out
  }

  private strike (peer: string, reason: string, offence: 'oversized' | 'malformed' | 'forged'): void {
    this.log.warn({ peer, reason, offence }, 'content source misbehaved')
    this.score.strike(peer, reason, offence)
  }

  private exchangeOpts (signal: AbortSignal, timeoutMs?: number): { signal: AbortSignal, timeoutMs?: number, protocol: string } {
    return { signal, timeoutMs, protocol: this.init.protocol ?? CONTENT_PROTOCOL }
  }

  private async run (t: Transfer, name: string | undefined): Promise<ContentEntry> {
    const { md5 } = t
    const signal = t.controller.signal
    const canOrigin = (): boolean => t.origin != null && this.init.origin != null
    const held = this.store.get(md5)
    // a partial with every chunk (stopped before its check) needs no source
    const needsSource = held == null || held.have < held.chunks
    let holders = this.holders(md5)
    if (holders.length === 0 && needsSource && canOrigin()) return await this.fromOrigin(t, name, signal)
    for (const deadline = Date.now() + this.holderWaitMs; holders.length === 0 && needsSource && Date.now() < deadline;) {
      await sleep(Math.min(250, this.refreshMs), signal)
      holders = this.holders(md5)
    }
    if (holders.length === 0 && needsSource) {
      if (canOrigin()) return await this.fromOrigin(t, name, signal)
      throw new NoSourceError(`no peer holds ${md5}`, { md5 })
    }
    let signed = this.store.manifest(md5)
    let manifestSource: string | undefined
    const refused = new Set<string>()
    if (signed == null) {
      const got = await this.manifestFrom(md5, holders, refused, signal)
      if (got == null) {
        if (canOrigin()) return await this.fromOrigin(t, name, signal)
        throw new NoSourceError(`no peer of ${holders.length} gave a valid manifest of ${md5}`, { md5, tried: holders.map(h => h.peer) })
      }
      signed = got.signed
      manifestSource = got.peer
    }
    t.progress.totalBytes = signed.manifest.size
    t.progress.name = name ?? signed.manifest.name ?? null
    // a partial begun earlier keeps its manifest (the store's answer says which chunks to fetch)
    this.store.begin(signed)
    signed = this.store.manifest(md5) ?? signed
    const release = this.store.acquire(md5)
    try {
      try {
        await this.download(t, signed, holders.filter(h => !refused.has(h.peer)), refused, signal)
      } catch (err) {
        // every source gone: the origin, if there is one, has the whole file
        if (err instanceof NoSourceError && canOrigin()) return await this.fromOrigin(t, name, signal)
        throw err
      }
      try {
        const entry = await this.store.complete(md5, signal)
        this.emit(t, true)
        return entry
      } catch (err) {
        if (err instanceof ContentDigestError) {
          const culprit = manifestSource ?? (signed.manifest.adder !== this.self ? signed.manifest.adder : undefined)
          if (culprit != null) this.strike(culprit, `the manifest of ${md5} describes another file: ${err.message}`, 'forged')
        }
        throw err
      }
    } finally {
      release()
    }
  }

  /** The first valid manifest the holders give; those that give an invalid one are struck and put in `refused`. */
  private async manifestFrom (md5: string, holders: Array<{ peer: string, complete: boolean }>, refused: Set<string>, signal: AbortSignal): Promise<{ signed: SignedManifest, peer: string } | undefined> {
    const deadline = Date.now() + this.holderWaitMs
    for (let round = 0; ; round++) {
      let retry = false
      for (const { peer } of holders) {
        if (refused.has(peer) || this.banned(peer)) continue
        let bytes: Uint8Array
        try {
          bytes = await requestManifest(this.node.libp2p, peer, md5, this.exchangeOpts(signal, 30_000))
        } catch (err) {
          signal.throwIfAborted()
          if (err instanceof ContentAnswerError) { this.strike(peer, err.message, err.offence); refused.add(peer) } else if (err instanceof ContentBusyError) retry = true
          this.log.debug({ peer, md5, err: (err as Error).message }, 'no manifest from this source')
          continue
        }
        try {
          return { signed: await openManifest(bytes, md5), peer }
        } catch (err) {
          if (!(err instanceof ManifestError)) throw err
          this.strike(peer, `an invalid manifest of ${md5}: ${err.message}`, 'forged')
          refused.add(peer)
        }
      }
      if (!retry || Date.now() >= deadline) return undefined
      await sleep(BUSY_MAX_MS / 4 * (round + 1), signal)
    }
  }

  private async fromOrigin (t: Transfer, name: string | undefined, signal: AbortSignal): Promise<ContentEntry> {
    const origin = t.origin as OriginSource
    const fetchOrigin = this.init.origin as NonNullable<MeshContentFetcherInit['origin']>
    const path = await fetchOrigin(origin, t.md5, signal)
    const entry = await this.store.importFile(path, { pin: false, name, signal })
    if (entry.md5 !== t.md5) {
      // not what was asked for: dropped unless this agent holds it for its own reasons
      if (!entry.pinned && entry.inUse === 0) { try { this.store.remove(entry.md5) } catch {} }
      throw new ContentDigestError(`the file from ${origin.url} has MD5 ${entry.md5}, not ${t.md5}`, { md5: t.md5, got: entry.md5, origin: origin.url })
    }
    t.progress.name = entry.name
    t.progress.totalBytes = entry.size
    t.progress.receivedBytes = entry.size
    t.progress.bySource.origin = entry.size
    this.emit(t, true)
    return entry
  }

  /** Steps 4–6: resolves when every chunk is held (not yet checked as a whole). */
  private async download (t: Transfer, signed: SignedManifest, initial: Array<{ peer: string, complete: boolean }>, refused: Set<string>, outer: AbortSignal): Promise<void> {
    const { md5 } = t
    const m = signed.manifest
    const n = m.chunks.length
    const lengthOf = (i: number): number => i < n - 1 ? m.chunkSize : m.size - (n - 1) * m.chunkSize
    const have = this.store.bitmap(md5) ?? new Uint8Array(Math.ceil(n / 8))
    let missing = 0
    let heldBytes = 0
    for (let i = 0; i < n; i++) {
      if (hasBit(have, i)) heldBytes += lengthOf(i)
      else missing++
    }
    t.progress.receivedBytes = heldBytes
    if (missing === 0) return
    const board: Swarm = new Swarm(n, have, (peer): boolean => peer !== this.self && !this.banned(peer) && board.sources.size < this.maxSources, refused)
    const { requested, sources } = board
    let inFlight = 0
    let stalledSince: number | undefined
    // requests end with the transfer (done, failed, or aborted by the caller)
    const inner = new AbortController()
    const signal = AbortSignal.any([outer, inner.signal])

    const setBitmap = (s: Source, bitmap: Uint8Array | null): void => { board.setBitmap(s, bitmap) }
    const add = (peer: string, complete: boolean): void => { board.add(peer, complete) }
    const drop = (s: Source, why: string, refuse: boolean): void => {
      if (board.drop(s, refuse)) this.log.debug({ peer: s.peer, md5, why, refused: s.state === 'refused' }, 'content source dropped')
    }
    const offence = (s: Source, why: string, kind: 'oversized' | 'malformed' | 'forged'): void => {
      if (!s.struck) { s.struck = true; this.strike(s.peer, why, kind) }
      drop(s, why, true)
    }
    const pick = (s: Source): number => board.pick(s)

    await new Promise<void>((resolve, reject) => {
      let finished = false
      let timer: NodeJS.Timeout | undefined
      const finish = (err?: unknown): void => {
        if (finished) return
        finished = true
        clearInterval(timer)
        outer.removeEventListener('abort', onAbort)
        inner.abort()
        if (err === undefined) resolve()
        else reject(err)
      }
      const onAbort = (): void => { finish(outer.reason) }
      outer.addEventListener('abort', onAbort, { once: true })

      const request = (s: Source, i: number): void => {
        requested[i] = 1
        s.inFlight++
        inFlight++
        stalledSince = undefined
        void (async () => {
          try {
            let bytes: Uint8Array
            try {
              bytes = await requestChunk(this.node.libp2p, s.peer, md5, i, m.chunkSize, lengthOf(i), this.exchangeOpts(signal, this.init.chunkTimeoutMs ?? 120_000))
            } catch (err) {
              if (!finished) failed(s, i, err)
              return
            }
            try {
              await this.store.writeChunk(md5, i, bytes)
            } catch (err) {
              if (err instanceof ChunkHashError) offence(s, `chunk ${i} of ${md5} does not match its manifest`, 'forged')
              // the store failing is this agent's problem: the transfer fails (the partial stays)
              else finish(err)
              return
            }
            if (hasBit(have, i)) return
            setBit(have, i)
            missing--
            s.busy = 0
            t.progress.receivedBytes += bytes.length
            t.progress.bySource[s.peer] = (t.progress.bySource[s.peer] ?? 0) + bytes.length
            this.emit(t, false)
          } finally {
            s.inFlight--
            inFlight--
            if (!hasBit(have, i)) requested[i] = 0
            if (!finished) {
              if (missing === 0) finish()
              else pump()
            }
          }
        })()
      }

      /** A chunk request that failed: what it says about the source. */
      const failed = (s: Source, i: number, err: unknown): void => {
        if (err instanceof ContentBusyError) {
          s.busy++
          const wait = Math.min(BUSY_MAX_MS, BUSY_MS * 2 ** (s.busy - 1))
          s.backoffUntil = Date.now() + wait
          setTimeout(pump, wait).unref()
        } else if (err instanceof ContentNotHeldError) {
          if (s.complete) drop(s, err.message, false)
          else if (s.bitmap != null && hasBit(s.bitmap, i)) { const b = s.bitmap.slice(); clearBit(b, i); setBitmap(s, b) }
        } else if (err instanceof ContentAnswerError) {
          offence(s, err.message, err.offence)
        } else {
          // unreachable, refused, or a failure of its own: no fault proven
          drop(s, (err as Error).message, false)
        }
      }

      const pump = (): void => {
        if (finished) return
        const now = Date.now()
        for (const s of sources.values()) {
          if (s.state !== 'active' || s.backoffUntil > now) continue
          if (this.banned(s.peer)) { drop(s, 'banned', true); continue }
          while (s.inFlight < this.maxInFlight) {
            const i = pick(s)
            if (i < 0) break
            request(s, i)
          }
        }
      }

      const refreshHave = (s: Source): void => {
        s.haveInFlight = true
        void requestHave(this.node.libp2p, s.peer, md5, this.exchangeOpts(signal, Math.max(5000, this.refreshMs * 4))).then(h => {
          if (finished || s.state !== 'active') return
          if (h.chunks !== n || h.chunkSize !== m.chunkSize) { drop(s, `holds ${md5} cut in ${h.chunks} chunks of ${h.chunkSize} bytes`, true); return }
          if (h.complete) s.complete = true
          const before = s.bitmap
          let news = false
          for (let i = 0; i < n && !news; i++) if (!hasBit(have, i) && hasBit(h.bitmap, i) && (before == null || !hasBit(before, i))) news = true
          setBitmap(s, h.complete ? fullBitmap(n) : h.bitmap)
          for (const p of h.peers) {
            try { parsePeerId(p) } catch { continue }
            add(p, false)
          }
          if (news) { stalledSince = undefined; pump() }
        }, err => {
          if (finished) return
          if (err instanceof ContentAnswerError) offence(s, err.message, err.offence)
          else if (err instanceof ContentNotHeldError) { if (s.complete) drop(s, err.message, false); else setBitmap(s, null) } else if (!(err instanceof ContentBusyError)) drop(s, (err as Error).message, false)
        }).finally(() => { s.haveInFlight = false })
      }

      const onTick = (): void => {
        if (finished) return
        try {
          refresh()
        } catch (err) {
          finish(err)
        }
      }
      const refresh = (): void => {
        const listed = new Map(this.holders(md5).map(h => [h.peer, h.complete]))
        for (const [peer, complete] of listed) add(peer, complete)
        const now = Date.now()
        for (const s of sources.values()) {
          if (s.state === 'dropped' && now >= s.retryAt && listed.has(s.peer) && !this.banned(s.peer)) {
            s.state = 'active'
            s.complete = listed.get(s.peer) === true
            s.backoffUntil = 0
            if (s.complete) setBitmap(s, fullBitmap(n))
          }
          if (s.state !== 'active' || s.haveInFlight) continue
          s.ticks++
          // complete sources are asked now and then, for the other fetchers they know of
          if (!s.complete || s.ticks % 4 === 1) refreshHave(s)
        }
        pump()
        if (inFlight > 0) { stalledSince = undefined; return }
        stalledSince ??= now
        if (now - stalledSince >= this.holderWaitMs) {
          finish(new NoSourceError(`no source has the ${missing} chunk(s) of ${md5} still missing`, { md5, missing, sources: [...sources.keys()] }))
        }
      }

      for (const h of initial) add(h.peer, h.complete)
      timer = setInterval(onTick, this.refreshMs)
      timer.unref()
      onTick()
    })
  }
}
