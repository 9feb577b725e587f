/**
 * The fetcher's side of /blockmesh/content/1.0.0: brings a file into the local content store from the peers
 * that hold it, several at once, chunk by chunk (wire form in ./protocol.ts, the holders' side in ./service.ts).
 * This file is the course of one fetch (a shared transfer, holders, manifest, download, whole-file check, or
 * the origin); the peers it asks are chosen in ./fetch-peers.ts, the chunks downloaded in ./fetch-download.ts
 * (its bookkeeping in ./swarm.ts), callers and progress kept in ./fetch-transfer.ts, waits in ./fetch-retry.ts.
 */
import type { MeshLogger } from '../../mesh/node.ts'
import { silentLogger } from '../../mesh/node.ts'
import type { OffenceSink } from '../../mesh/rpc.ts'
import { ValidationError } from '../errors.ts'
import { ContentDigestError, ManifestError, NoSourceError, ContentTooLargeError } from './errors.ts'
import { download } from './fetch-download.ts'
import type { DownloadContext } from './fetch-download.ts'
import { FetchPeers } from './fetch-peers.ts'
import type { FetcherNode, Holder } from './fetch-peers.ts'
import { BUSY_MAX_MS, sleep } from './fetch-retry.ts'
import { emitProgress, joinTransfer, progressOf } from './fetch-transfer.ts'
import type { Transfer } from './fetch-transfer.ts'
import { openManifest } from './manifest.ts'
import { ContentAnswerError, ContentBusyError, requestManifest } from './protocol.ts'
import { Md5Hex } from './types.ts'
import type { ContentDirectory, ContentEntry, ContentFetcher, ContentStore, FetchOptions, OriginSource, SignedManifest, TransferProgress } from './types.ts'

export type { FetcherNode } from './fetch-peers.ts'

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
  /** files larger than this are refused when their manifest says so, before room is made for them (--max-model-bytes) */
  maxFileBytes?: number
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
  private readonly store: ContentStore
  private readonly log: MeshLogger
  private readonly peers: FetchPeers
  private readonly downloads: DownloadContext
  private readonly refreshMs: number
  private readonly holderWaitMs: number
  private readonly active = new Map<string, Transfer>()

  constructor (init: MeshContentFetcherInit) {
    this.init = init
    this.store = init.store
    this.log = init.log ?? silentLogger
    this.peers = new FetchPeers({ node: init.node, directory: init.directory, score: init.score ?? init.node.score, log: this.log, protocol: init.protocol })
    this.refreshMs = Math.max(10, init.haveRefreshMs ?? 500)
    this.holderWaitMs = init.holderWaitMs ?? 5000
    this.downloads = {
      peers: this.peers,
      store: this.store,
      log: this.log,
      maxInFlight: Math.max(1, init.maxInFlightPerSource ?? 4),
      refreshMs: this.refreshMs,
      holderWaitMs: this.holderWaitMs,
      chunkTimeoutMs: init.chunkTimeoutMs ?? 120_000,
      maxSources: Math.max(1, init.maxSources ?? 32)
    }
  }

  transfers (): TransferProgress[] {
    return [...this.active.values()].map(progressOf)
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
    return await joinTransfer(t, opts)
  }

  private async run (t: Transfer, name: string | undefined): Promise<ContentEntry> {
    const { md5 } = t
    const signal = t.controller.signal
    const canOrigin = (): boolean => t.origin != null && this.init.origin != null
    const held = this.store.get(md5)
    // a partial with every chunk (stopped before its check) needs no source
    const needsSource = held == null || held.have < held.chunks
    let holders = this.peers.holders(md5)
    if (holders.length === 0 && needsSource && canOrigin()) return await this.fromOrigin(t, name, signal)
    for (const deadline = Date.now() + this.holderWaitMs; holders.length === 0 && needsSource && Date.now() < deadline;) {
      await sleep(Math.min(250, this.refreshMs), signal)
      holders = this.peers.holders(md5)
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
    const max = this.init.maxFileBytes
    if (max != null && signed.manifest.size > max) throw new ContentTooLargeError(`${md5} is ${signed.manifest.size} bytes, over this agent's limit of ${max} (--max-model-bytes)`, { md5, size: signed.manifest.size, max })
    t.progress.totalBytes = signed.manifest.size
    t.progress.name = name ?? signed.manifest.name ?? null
    // a partial begun earlier keeps its manifest (the store's answer says which chunks to fetch)
    this.store.begin(signed)
    signed = this.store.manifest(md5) ?? signed
    const release = this.store.acquire(md5)
    try {
      try {
        await download(this.downloads, t, signed, holders.filter(h => !refused.has(h.peer)), refused, signal)
      } catch (err) {
        // every source gone: the origin, if there is one, has the whole file
        if (err instanceof NoSourceError && canOrigin()) return await this.fromOrigin(t, name, signal)
        throw err
      }
      try {
        const entry = await this.store.complete(md5, signal)
        emitProgress(t, true, this.log)
        return entry
      } catch (err) {
        if (err instanceof ContentDigestError) {
          const culprit = manifestSource ?? (signed.manifest.adder !== this.peers.self ? signed.manifest.adder : undefined)
          if (culprit != null) this.peers.strike(culprit, `the manifest of ${md5} describes another file: ${err.message}`, 'forged')
        }
        throw err
      }
    } finally {
      release()
    }
  }

  /** The first valid manifest the holders give; those that give an invalid one are struck and put in `refused`. */
  private async manifestFrom (md5: string, holders: Holder[], refused: Set<string>, signal: AbortSignal): Promise<{ signed: SignedManifest, peer: string } | undefined> {
    const deadline = Date.now() + this.holderWaitMs
    for (let round = 0; ; round++) {
      let retry = false
      for (const { peer } of holders) {
        if (refused.has(peer) || this.peers.banned(peer)) continue
        let bytes: Uint8Array
        try {
          bytes = await requestManifest(this.peers.node.libp2p, peer, md5, this.peers.exchangeOpts(signal, 30_000))
        } catch (err) {
          signal.throwIfAborted()
          if (err instanceof ContentAnswerError) { this.peers.strike(peer, err.message, err.offence); refused.add(peer) } else if (err instanceof ContentBusyError) retry = true
          this.log.debug({ peer, md5, err: (err as Error).message }, 'no manifest from this source')
          continue
        }
        try {
          return { signed: await openManifest(bytes, md5), peer }
        } catch (err) {
          if (!(err instanceof ManifestError)) throw err
          this.peers.strike(peer, `an invalid manifest of ${md5}: ${err.message}`, 'forged')
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
    emitProgress(t, true, this.log)
    return entry
  }
}
