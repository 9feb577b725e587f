/**
 * The holder's side of /blockmesh/content/1.0.0 (wire form in ./protocol.ts): serves the manifests, bitmaps
 * and chunks of the files in this agent's content store, complete or partial, so that peers fetching a file
 * also serve the chunks they already have.
 *
 * Bounded: a request frame is at most MAX_REQUEST_BYTES and must arrive within requestTimeoutMs, an exchange
 * ends within timeoutMs; chunk exchanges in flight are limited per peer and in all (over either limit the
 * answer is busy); uploads share one token bucket (uploadBytesPerSecond) so an operator can cap the uplink
 * (booked for more than half of timeoutMs, the answer is busy too). Only chunk exchanges count against the
 * limits: manifest and have answers are small and bounded by the streams per connection.
 * A request that breaks the protocol is answered bad_request and reported as an offence of the peer.
 */
import type { Connection, Stream, StreamHandlerOptions } from '@libp2p/interface'
import { Exchange, StreamProtocolService, decodeJson, encodeJson, firstIssue, lengthPrefixed, reportOffence, requestFault } from '../../mesh/rpc.ts'
import type { ProtocolComponents, RpcOptions } from '../../mesh/rpc.ts'
import { FrameError, StreamTimeoutError, TruncatedFrameError } from '../../mesh/errors.ts'
import type { MeshLogger } from '../../mesh/node.ts'
import { ContentNotFoundError } from './errors.ts'
import type { ContentStore } from './types.ts'
import { CONTENT_MAX_STREAMS, CONTENT_PROTOCOL, ContentRequestSchema, MAX_HAVE_PEERS, MAX_REQUEST_BYTES, errorAnswer, hasBit } from './protocol.ts'
import type { ContentErrorCode, ContentRequest, HaveAnswer } from './protocol.ts'

/** A fetcher stays in a file's `have.peers` this long after its last request. */
export const FETCHER_TTL_MS = 60_000
/** Files whose fetchers are remembered, at most (least recently asked forgotten first). */
const MAX_TRACKED_FILES = 1024
/** Fetchers remembered per file, at most. */
const MAX_TRACKED_FETCHERS = 64
/** Peers and files with a served-bytes counter, at most (oldest forgotten first). */
const MAX_COUNTERS = 4096
/** A capped uplink takes chunk requests while it is booked for at most two chunks' time, and never less than this. */
const MIN_BACKLOG_MS = 250
/** A complete file served from has its lastUsed touched at most this often. */
const TOUCH_EVERY_MS = 60_000

export interface ContentServiceInit extends Pick<RpcOptions, 'onInvalid'> {
  store: ContentStore
  protocol?: string
  /** chunk exchanges one peer may have in flight; beyond it the answer is busy (default 4) */
  maxConcurrentPerPeer?: number
  /** chunk exchanges in flight in all; beyond it the answer is busy (default 16) */
  maxConcurrent?: number
  /** bytes per second all uploads share (a token bucket); 0 or undefined: unlimited */
  uploadBytesPerSecond?: number
  /** an exchange (the throttled upload included) must end within this (default 120 s) */
  timeoutMs?: number
  /** the request frame must arrive within this (default 10 s) */
  requestTimeoutMs?: number
  /** streams of the protocol per connection (default CONTENT_MAX_STREAMS) */
  maxInboundStreams?: number
  log?: MeshLogger
}

/** Bytes served, in all, per peer and per file. */
export interface ContentServiceStats {
  bytes: number
  byPeer: Record<string, number>
  byMd5: Record<string, number>
}

/**
 * A token bucket: `rate` bytes per second, at most one second's worth banked. `take` reserves at once (the
 * balance may go negative) and waits until the balance is paid back, so takers are served in order of arrival.
 */
export class TokenBucket {
  readonly rate: number
  private tokens: number
  private at: number

  constructor (bytesPerSecond: number) {
    this.rate = bytesPerSecond
    this.tokens = bytesPerSecond
    this.at = performance.now()
  }

  /** How long a take now would wait for the takes already reserved, ms. */
  backlogMs (): number {
    this.refill()
    return this.tokens >= 0 ? 0 : -this.tokens * 1000 / this.rate
  }

  async take (n: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    this.refill()
    this.tokens -= n
    if (this.tokens >= 0) return
    const waitMs = -this.tokens * 1000 / this.rate
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        clearTimeout(timer)
        this.tokens += n
        reject(signal?.reason)
      }
      const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, waitMs)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  private refill (): void {
    const now = performance.now()
    this.tokens = Math.min(this.rate, this.tokens + (now - this.at) * this.rate / 1000)
    this.at = now
  }
}

function bump (m: Map<string, number>, key: string, n: number): void {
  const v = (m.get(key) ?? 0) + n
  m.delete(key)
  m.set(key, v)
  if (m.size > MAX_COUNTERS) m.delete(m.keys().next().value as string)
}

/**
 * The content protocol as a libp2p service (`contentService(init)(components)`): start() handles
 * CONTENT_PROTOCOL, stop() unhandles it and aborts the exchanges in flight.
 */
export class ContentService extends StreamProtocolService {
  private readonly init: ContentServiceInit
  private readonly store: ContentStore
  private readonly maxPerPeer: number
  private readonly maxAll: number
  private readonly bucket: TokenBucket | undefined
  /** chunk exchanges in flight, per peer */
  private readonly serving = new Map<string, number>()
  private servingAll = 0
  /** md5 → peer → ms of its last request; map orders are recency */
  private readonly recent = new Map<string, Map<string, number>>()
  private readonly byPeer = new Map<string, number>()
  private readonly byMd5 = new Map<string, number>()
  private servedBytes = 0
  private readonly touched = new Map<string, number>()

  constructor (components: ProtocolComponents, init: ContentServiceInit) {
    super(components, init.protocol ?? CONTENT_PROTOCOL)
    this.init = init
    this.store = init.store
    this.maxPerPeer = init.maxConcurrentPerPeer ?? 4
    this.maxAll = init.maxConcurrent ?? 16
    this.bucket = init.uploadBytesPerSecond != null && init.uploadBytesPerSecond > 0 ? new TokenBucket(init.uploadBytesPerSecond) : undefined
  }

  readonly [Symbol.toStringTag] = '@blockmesh/content'

  protected streamLimits (): StreamHandlerOptions {
    return { maxInboundStreams: this.init.maxInboundStreams ?? CONTENT_MAX_STREAMS, maxOutboundStreams: CONTENT_MAX_STREAMS }
  }

  /** Bytes served since start, per peer and per file. */
  stats (): ContentServiceStats {
    return { bytes: this.servedBytes, byPeer: Object.fromEntries(this.byPeer), byMd5: Object.fromEntries(this.byMd5) }
  }

  /** Peers that asked for `md5` within FETCHER_TTL_MS, most recent first, `except` left out, at most MAX_HAVE_PEERS. */
  fetchers (md5: string, except?: string): string[] {
    const m = this.recent.get(md5)
    if (m == null) return []
    const since = Date.now() - FETCHER_TTL_MS
    const out: string[] = []
    for (const [peer, at] of [...m].reverse()) {
      if (at < since) break
      if (peer !== except) out.push(peer)
      if (out.length >= MAX_HAVE_PEERS) break
    }
    return out
  }

  /** Chunk exchanges in flight (all peers). */
  get inFlightChunks (): number { return this.servingAll }

  private noteFetcher (md5: string, peer: string): void {
    let m = this.recent.get(md5)
    if (m != null) this.recent.delete(md5)
    else m = new Map()
    this.recent.set(md5, m)
    m.delete(peer)
    m.set(peer, Date.now())
    const since = Date.now() - FETCHER_TTL_MS
    for (const [p, at] of m) {
      if (at >= since && m.size <= MAX_TRACKED_FETCHERS) break
      m.delete(p)
    }
    while (this.recent.size > MAX_TRACKED_FILES) this.recent.delete(this.recent.keys().next().value as string)
  }

  /** Marks a complete file used (if the store can), at most every TOUCH_EVERY_MS per file. */
  private touch (md5: string): void {
    const store = this.store as ContentStore & { touch?: (md5: string) => void }
    if (typeof store.touch !== 'function') return
    const now = Date.now()
    if (now - (this.touched.get(md5) ?? 0) < TOUCH_EVERY_MS) return
    this.touched.delete(md5)
    this.touched.set(md5, now)
    if (this.touched.size > MAX_COUNTERS) this.touched.delete(this.touched.keys().next().value as string)
    try { store.touch(md5) } catch (err) { this.init.log?.warn({ md5, err: (err as Error).message }, 'content touch failed') }
  }

  protected async handle (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const { protocol } = this
    const exchange = new Exchange(stream, this.init.timeoutMs ?? 120_000, `a ${protocol} exchange`)
    const untrack = this.inFlight.track(exchange)
    const { signal } = exchange
    const lp = lengthPrefixed(stream, MAX_REQUEST_BYTES)
    const reply = async (head: unknown, body?: Uint8Array): Promise<void> => {
      if (body == null) await lp.write(encodeJson(head), { signal })
      else await lp.writeV([encodeJson(head), body], { signal })
      await stream.close({ signal })
    }
    const refuse = async (code: ContentErrorCode, message: string): Promise<void> => { await reply(errorAnswer(code, message)) }
    try {
      let raw: unknown
      const requestTimer = setTimeout(() => { exchange.abort(new StreamTimeoutError(`no ${protocol} request within ${this.init.requestTimeoutMs ?? 10_000} ms`)) }, this.init.requestTimeoutMs ?? 10_000)
      requestTimer.unref()
      try {
        const bytes = await lp.readFrame({ signal })
        if (bytes == null) throw new TruncatedFrameError(`the stream ended before a ${protocol} request`)
        raw = decodeJson(bytes)
      } catch (err) {
        // a fetcher cancels the requests it no longer needs (its transfer completed from other sources, or was
        // aborted) by resetting their streams: that is no offence, unlike a frame that breaks the rules
        if (!(err instanceof FrameError) && !exchange.timedOut) throw err
        const fault = requestFault(err, exchange, `${protocol} request`)
        if (fault == null) throw err
        reportOffence(this.components, this.init, peer, `unreadable ${protocol} request: ${fault.message}`, fault.offence)
        if (signal.aborted) throw fault
        await refuse('bad_request', 'the request is not a JSON frame within the size limit')
        return
      } finally {
        clearTimeout(requestTimer)
      }
      const parsed = ContentRequestSchema.safeParse(raw)
      if (!parsed.success) {
        reportOffence(this.components, this.init, peer, `invalid ${protocol} request: ${firstIssue(parsed.error)}`, 'malformed')
        await refuse('bad_request', firstIssue(parsed.error))
        return
      }
      const req = parsed.data
      if (req.op === 'manifest') await this.serveManifest(req, peer, reply, refuse)
      else if (req.op === 'have') await this.serveHave(req, peer, reply, refuse)
      else await this.serveChunk(req, peer, signal, reply, refuse)
    } catch (err) {
      if (!signal.aborted) this.init.log?.debug({ peer, err: (err as Error).message }, 'content exchange failed')
      if (stream.status === 'open') stream.abort(err as Error)
    } finally {
      untrack()
    }
  }

  private async serveManifest (req: Extract<ContentRequest, { op: 'manifest' }>, peer: string, reply: (head: unknown, body?: Uint8Array) => Promise<void>, refuse: (code: ContentErrorCode, message: string) => Promise<void>): Promise<void> {
    const signed = this.store.manifest(req.md5)
    if (signed == null) { await refuse('not_found', `${req.md5} is not held here`); return }
    this.noteFetcher(req.md5, peer)
    await reply({ ok: true, size: signed.bytes.length }, signed.bytes)
  }

  private async serveHave (req: Extract<ContentRequest, { op: 'have' }>, peer: string, reply: (head: unknown, body?: Uint8Array) => Promise<void>, refuse: (code: ContentErrorCode, message: string) => Promise<void>): Promise<void> {
    const entry = this.store.get(req.md5)
    const bitmap = entry != null ? this.store.bitmap(req.md5) : undefined
    if (entry == null || bitmap == null) { await refuse('not_found', `${req.md5} is not held here`); return }
    this.noteFetcher(req.md5, peer)
    const answer: HaveAnswer = {
      ok: true,
      chunks: entry.chunks,
      chunkSize: entry.chunkSize,
      bitmap: Buffer.from(bitmap.buffer, bitmap.byteOffset, bitmap.byteLength).toString('base64'),
      complete: entry.state === 'complete',
      peers: this.fetchers(req.md5, peer)
    }
    await reply(answer)
  }

  private async serveChunk (req: Extract<ContentRequest, { op: 'chunk' }>, peer: string, signal: AbortSignal, reply: (head: unknown, body?: Uint8Array) => Promise<void>, refuse: (code: ContentErrorCode, message: string) => Promise<void>): Promise<void> {
    const { md5, index } = req
    const entry = this.store.get(md5)
    if (entry == null) { await refuse('not_found', `${md5} is not held here`); return }
    // the same file cut differently (another adder's manifest): its chunk i is not the fetcher's chunk i
    if (req.chunkSize != null && req.chunkSize !== entry.chunkSize) { await refuse('not_found', `${md5} is held here in chunks of ${entry.chunkSize} bytes, not ${req.chunkSize}`); return }
    if (index >= entry.chunks) { await refuse('not_found', `${md5} has ${entry.chunks} chunks`); return }
    if (entry.state !== 'complete') {
      const bitmap = this.store.bitmap(md5)
      if (bitmap == null || !hasBit(bitmap, index)) { await refuse('not_found', `chunk ${index} of ${md5} is not held here yet`); return }
    }
    this.noteFetcher(md5, peer)
    const mine = this.serving.get(peer) ?? 0
    if (mine >= this.maxPerPeer) { await refuse('busy', `${mine} chunk requests of this peer in flight (at most ${this.maxPerPeer})`); return }
    if (this.servingAll >= this.maxAll) { await refuse('busy', `${this.servingAll} chunk requests in flight (at most ${this.maxAll})`); return }
    // the uplink is booked for more than two chunks' time: busy, so the fetcher takes this chunk from a peer
    // that has it rather than queue here (queued requests made every fetcher of a file take most of it from
    // the one capped holder, instead of trading with each other)
    const backlog = this.bucket?.backlogMs() ?? 0
    const bookable = this.bucket != null ? Math.min((this.init.timeoutMs ?? 120_000) / 2, Math.max(MIN_BACKLOG_MS, 2 * entry.chunkSize * 1000 / this.bucket.rate)) : Infinity
    if (backlog > bookable) { await refuse('busy', `the upload is booked for ${Math.round(backlog)} ms`); return }
    this.serving.set(peer, mine + 1)
    this.servingAll++
    try {
      let bytes: Uint8Array
      try {
        bytes = await this.store.readChunk(md5, index, signal)
      } catch (err) {
        if (signal.aborted) throw err
        // evicted or removed since the look-up
        if (err instanceof ContentNotFoundError) { await refuse('not_found', err.message); return }
        this.init.log?.warn({ md5, index, err: (err as Error).message }, 'reading a chunk to serve failed')
        await refuse('error', 'the chunk could not be read')
        return
      }
      await this.bucket?.take(bytes.length, signal)
      await reply({ ok: true, size: bytes.length }, bytes)
      this.servedBytes += bytes.length
      bump(this.byPeer, peer, bytes.length)
      bump(this.byMd5, md5, bytes.length)
      if (entry.state === 'complete') this.touch(md5)
    } finally {
      const n = (this.serving.get(peer) ?? 1) - 1
      if (n > 0) this.serving.set(peer, n)
      else this.serving.delete(peer)
      this.servingAll--
    }
  }
}

/** The protocol as a service factory, js-libp2p style: `contentService(init)(components)`. */
export function contentService (init: ContentServiceInit): (components: ProtocolComponents) => ContentService {
  return (components) => new ContentService(components, init)
}
