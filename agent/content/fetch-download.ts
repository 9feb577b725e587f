/**
 * One transfer's download, steps 4–6 of ./fetcher.ts: asks its sources which chunks they have, asks each
 * free slot of a source for the rarest chunk it has, writes what comes back to the store, and deals with
 * the sources that are busy, gone or misbehave, until every chunk is held (or no source is left).
 */
import type { MeshLogger } from '../../mesh/node.ts'
import { parsePeerId } from '../../mesh/node.ts'
import { clearBit, fullBitmap, hasBit, setBit } from './bitmap.ts'
import { ChunkHashError, NoSourceError } from './errors.ts'
import type { FetchPeers, Holder } from './fetch-peers.ts'
import { busyBackoffMs } from './fetch-retry.ts'
import { emitProgress } from './fetch-transfer.ts'
import type { Transfer } from './fetch-transfer.ts'
import { ContentAnswerError, ContentBusyError, ContentNotHeldError, requestChunk, requestHave } from './protocol.ts'
import { Swarm } from './swarm.ts'
import type { Source } from './swarm.ts'
import type { ContentStore, SignedManifest } from './types.ts'

/** What a download needs of its fetcher. */
export interface DownloadContext {
  peers: FetchPeers
  store: ContentStore
  log: MeshLogger
  /** chunk requests in flight to one source */
  maxInFlight: number
  /** how often partial sources are asked which chunks they have, and the directory read again */
  refreshMs: number
  /** how long a transfer with no usable source waits for one to come back */
  holderWaitMs: number
  /** one chunk exchange must end within this */
  chunkTimeoutMs: number
  /** sources one transfer uses at most */
  maxSources: number
}

/** Steps 4–6: resolves when every chunk is held (not yet checked as a whole). */
export async function download (ctx: DownloadContext, t: Transfer, signed: SignedManifest, initial: Holder[], refused: Set<string>, outer: AbortSignal): Promise<void> {
  const { md5 } = t
  const m = signed.manifest
  const n = m.chunks.length
  const lengthOf = (i: number): number => i < n - 1 ? m.chunkSize : m.size - (n - 1) * m.chunkSize
  const have = ctx.store.bitmap(md5) ?? new Uint8Array(Math.ceil(n / 8))
  let missing = 0
  let heldBytes = 0
  for (let i = 0; i < n; i++) {
    if (hasBit(have, i)) heldBytes += lengthOf(i)
    else missing++
  }
  t.progress.receivedBytes = heldBytes
  if (missing === 0) return
  const board: Swarm = new Swarm(n, have, (peer): boolean => peer !== ctx.peers.self && !ctx.peers.banned(peer) && board.sources.size < ctx.maxSources, refused)
  const { requested, sources } = board
  let inFlight = 0
  let stalledSince: number | undefined
  // requests end with the transfer (done, failed, or aborted by the caller)
  const inner = new AbortController()
  const signal = AbortSignal.any([outer, inner.signal])

  const setBitmap = (s: Source, bitmap: Uint8Array | null): void => { board.setBitmap(s, bitmap) }
  const add = (peer: string, complete: boolean): void => { board.add(peer, complete) }
  const drop = (s: Source, why: string, refuse: boolean): void => {
    if (board.drop(s, refuse)) ctx.log.debug({ peer: s.peer, md5, why, refused: s.state === 'refused' }, 'content source dropped')
  }
  const offence = (s: Source, why: string, kind: 'oversized' | 'malformed' | 'forged'): void => {
    if (!s.struck) { s.struck = true; ctx.peers.strike(s.peer, why, kind) }
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
            bytes = await requestChunk(ctx.peers.node.libp2p, s.peer, md5, i, m.chunkSize, lengthOf(i), ctx.peers.exchangeOpts(signal, ctx.chunkTimeoutMs))
          } catch (err) {
            if (!finished) failed(s, i, err)
            return
          }
          try {
            await ctx.store.writeChunk(md5, i, bytes)
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
          emitProgress(t, false, ctx.log)
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
        const wait = busyBackoffMs(s.busy)
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
        if (ctx.peers.banned(s.peer)) { drop(s, 'banned', true); continue }
        while (s.inFlight < ctx.maxInFlight) {
          const i = pick(s)
          if (i < 0) break
          request(s, i)
        }
      }
    }

    const refreshHave = (s: Source): void => {
      s.haveInFlight = true
      void requestHave(ctx.peers.node.libp2p, s.peer, md5, ctx.peers.exchangeOpts(signal, Math.max(5000, ctx.refreshMs * 4))).then(h => {
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
      const listed = new Map(ctx.peers.holders(md5).map(h => [h.peer, h.complete]))
      for (const [peer, complete] of listed) add(peer, complete)
      const now = Date.now()
      for (const s of sources.values()) {
        if (s.state === 'dropped' && now >= s.retryAt && listed.has(s.peer) && !ctx.peers.banned(s.peer)) {
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
      if (now - stalledSince >= ctx.holderWaitMs) {
        finish(new NoSourceError(`no source has the ${missing} chunk(s) of ${md5} still missing`, { md5, missing, sources: [...sources.keys()] }))
      }
    }

    for (const h of initial) add(h.peer, h.complete)
    timer = setInterval(onTick, ctx.refreshMs)
    timer.unref()
    onTick()
  })
}
