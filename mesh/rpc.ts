import { InvalidDataLengthError, InvalidDataLengthLengthError, InvalidMessageLengthError, UnexpectedEOFError, lpStream } from '@libp2p/utils'
import type { LengthPrefixedStream } from '@libp2p/utils'
import type { AbortOptions, Connection, MessageStream, Startable, Stream, StreamHandler, StreamHandlerOptions } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { z } from 'zod'
import type { MeshNode } from './node.ts'
import { parsePeerId } from './node.ts'
import {
  FrameError, FrameLengthError, FrameTimeoutError, FrameTooLargeError, MalformedFrameError, RemoteError, ServiceStoppedError,
  StreamAbortedError, StreamTimeoutError, TruncatedFrameError
} from './errors.ts'
import type { Offence } from './errors.ts'

// the typed errors used to live here; callers import them from either module
export { FrameLengthError, RemoteError } from './errors.ts'

export interface RpcOptions {
  /** frames larger than this are refused (both directions) */
  maxFrameBytes?: number
  /** a whole exchange must finish within this */
  timeoutMs?: number
  /** concurrent inbound streams per connection for this protocol */
  maxInboundStreams?: number
  /**
   * told about peers that sent something unparseable, with what it costs them. Where given, offences go here
   * instead of to the components' score (the agent passes its score's strike).
   */
  onInvalid?: (peer: string, reason: string, offence: Offence) => void
}

/** Where the protocol is handled: the libp2p node (js-libp2p's registrar, narrowed). */
export interface ProtocolRegistrar {
  handle: (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions) => Promise<void>
  unhandle: (protocol: string) => Promise<void>
}

/** Where offences of peers go: the mesh node's one PeerScore (mesh/peer-score.ts). */
export interface OffenceSink {
  strike: (peer: string, reason: string, offence?: Offence) => unknown
}

/** What a protocol service is made from, js-libp2p style (`service(init)(components)`). */
export interface ProtocolComponents {
  registrar: ProtocolRegistrar
  score?: OffenceSink
}

const enc = new TextEncoder()
const dec = new TextDecoder('utf-8', { fatal: true })

export function encodeJson (v: unknown): Uint8Array {
  return enc.encode(JSON.stringify(v))
}

/** The JSON value in a frame; MalformedFrameError when the bytes are not UTF-8 JSON. */
export function decodeJson (bytes: Uint8Array): unknown {
  try {
    return JSON.parse(dec.decode(bytes))
  } catch (err) {
    throw new MalformedFrameError(`not UTF-8 JSON: ${(err as Error).message}`, { cause: err })
  }
}

/** A length-prefixed stream that also tells a clean end between frames from a broken frame. */
export interface FramedStream<T extends MessageStream> extends LengthPrefixedStream<T> {
  /**
   * The next frame's bytes, or null when the stream ended cleanly between frames. The peer's faults reject
   * with a FrameError: FrameTooLargeError, FrameLengthError, TruncatedFrameError (the stream ended inside a
   * frame). An aborted `signal` rejects with its reason, a reset stream with the reset's error: neither is a
   * frame the peer got wrong.
   */
  readFrame: (options?: AbortOptions) => Promise<Uint8Array | null>
}

/**
 * A length-prefixed view of a stream whose length prefix cannot run on. @libp2p/utils' lpStream reads
 * the varint a byte at a time and takes "cannot decode yet" for "need more bytes" even past the
 * longest prefix `maxDataLength` needs, so a peer sending bytes that all have the continuation bit
 * set was buffered, a byte at a time, until the stream's timeout (or for good where there is none).
 * This decoder fails as soon as the prefix is longer than that. `readFrame` maps lpStream's errors
 * to the mesh's typed ones by class, never by message text.
 */
export function lengthPrefixed<T extends MessageStream> (stream: T, maxDataLength: number): FramedStream<T> {
  let maxLengthLength = 1
  for (let v = maxDataLength; v >= 128; v = Math.floor(v / 128)) maxLengthLength++
  // bytes of the current frame's length prefix seen so far: 0 when the stream ends is a clean end
  let prefixBytes = 0
  const lp = lpStream(stream, {
    maxDataLength,
    maxLengthLength,
    lengthDecoder: (data: Uint8ArrayList): number => {
      prefixBytes = data.byteLength
      let value = 0
      let scale = 1
      for (let i = 0; i < data.byteLength; i++) {
        const b = data.get(i)
        value += (b & 0x7f) * scale
        if (b < 0x80) return value
        scale *= 128
      }
      if (data.byteLength >= maxLengthLength) throw new FrameLengthError(`length prefix longer than ${maxLengthLength} bytes (frames are at most ${maxDataLength} bytes)`)
      throw new RangeError('incomplete length prefix') // lpStream reads another byte
    }
  })
  return Object.assign(lp, {
    readFrame: async (options?: AbortOptions): Promise<Uint8Array | null> => {
      prefixBytes = 0
      try {
        return (await lp.read(options)).subarray()
      } catch (err) {
        if (options?.signal?.aborted === true) throw err
        if (err instanceof UnexpectedEOFError) {
          if (prefixBytes === 0) return null
          throw new TruncatedFrameError(`the stream ended inside a frame: ${err.message}`, { cause: err })
        }
        if (err instanceof InvalidDataLengthError) throw new FrameTooLargeError(`a frame over ${maxDataLength} bytes: ${err.message}`, { cause: err })
        if (err instanceof InvalidDataLengthLengthError || err instanceof InvalidMessageLengthError) throw new FrameLengthError(err.message, { cause: err })
        throw err
      }
    }
  })
}

/** Reason text of the first zod issue, for error frames. */
export function firstIssue (err: z.ZodError): string {
  const i = err.issues[0]
  return `${i.path.map(String).join('.') || '(root)'}: ${i.message}`
}

/**
 * One served exchange's lifetime: a controller aborted when the exchange times out, the stream closes, or the
 * service stops; and a cleared timer, since AbortSignal.timeout would keep every finished stream in memory
 * until it fired.
 */
export class Exchange {
  readonly signal: AbortSignal
  private readonly controller = new AbortController()
  private readonly timer: NodeJS.Timeout

  constructor (stream: Stream, timeoutMs: number, what: string) {
    this.signal = this.controller.signal
    this.timer = setTimeout(() => { this.abort(new StreamTimeoutError(`${what} ran past ${timeoutMs} ms`)) }, timeoutMs)
    this.timer.unref()
    stream.addEventListener('close', () => { this.abort(new StreamAbortedError('the stream closed')) }, { once: true })
  }

  get timedOut (): boolean { return this.signal.reason instanceof StreamTimeoutError }

  abort (reason: Error): void {
    clearTimeout(this.timer)
    if (!this.signal.aborted) this.controller.abort(reason)
  }

  done (): void {
    clearTimeout(this.timer)
  }
}

/** A service's inbound exchanges in flight, so that stop() can abort them (their handlers' signals abort). */
export class InFlightExchanges {
  private readonly exchanges = new Set<Exchange>()

  /** Tracks `e` until the returned function is called (which also clears its timer). */
  track (e: Exchange): () => void {
    this.exchanges.add(e)
    return () => { e.done(); this.exchanges.delete(e) }
  }

  stopAll (): void {
    for (const e of this.exchanges) e.abort(new ServiceStoppedError())
    this.exchanges.clear()
  }
}

/** Reports a peer's offence where the service was told to (onInvalid, else the score). */
export function reportOffence (components: ProtocolComponents, opts: Pick<RpcOptions, 'onInvalid'>, peer: string, reason: string, offence: Offence): void {
  if (opts.onInvalid != null) opts.onInvalid(peer, reason, offence)
  else components.score?.strike(peer, reason, offence)
}

/**
 * What a failed read of a peer's request is: its FrameError, or (the exchange timed out) a FrameTimeoutError;
 * undefined when the failure is ours (the service stopped), which costs the peer nothing.
 */
export function requestFault (err: unknown, exchange: Exchange, what: string): FrameError | undefined {
  if (err instanceof FrameError) return err
  if (exchange.timedOut) return new FrameTimeoutError(`no complete ${what} in time`, { cause: err })
  if (exchange.signal.reason instanceof ServiceStoppedError) return undefined
  // the peer reset or closed the stream before its request was complete
  return new TruncatedFrameError(`the stream broke before the ${what} was complete: ${(err as Error).message}`, { cause: err })
}

export type JsonHandler<S extends z.ZodType> = (req: z.output<S>, ctx: { peer: string, signal: AbortSignal }) => Promise<unknown>

export interface JsonRpcInit<S extends z.ZodType> extends RpcOptions {
  protocol: string
  /** requests are validated with it; one that fails is answered bad_request and is an offence */
  schema: S
  handler: JsonHandler<S>
}

/**
 * A protocol served one stream per exchange, as a libp2p service (js-libp2p's ping shape): start()
 * handles the protocol with the subclass's stream limits, stop() unhandles it and aborts the exchanges in
 * flight (their signals abort with ServiceStoppedError, which costs the peers nothing).
 */
export abstract class StreamProtocolService implements Startable {
  readonly protocol: string
  protected readonly components: ProtocolComponents
  protected readonly inFlight = new InFlightExchanges()
  private started = false

  constructor (components: ProtocolComponents, protocol: string) {
    this.components = components
    this.protocol = protocol
  }

  /** Serves one inbound stream. */
  protected abstract handle (stream: Stream, connection: Connection): Promise<void>
  /** The handler's inbound (and outbound) stream limits per connection. */
  protected abstract streamLimits (): StreamHandlerOptions

  async start (): Promise<void> {
    await this.components.registrar.handle(this.protocol, async (stream, connection) => { await this.handle(stream, connection) }, this.streamLimits())
    this.started = true
  }

  async stop (): Promise<void> {
    this.started = false
    await this.components.registrar.unhandle(this.protocol)
    this.inFlight.stopAll()
  }

  isStarted (): boolean { return this.started }
}

/**
 * A request/response protocol as a libp2p service: one length-prefixed JSON request frame in, one JSON
 * response frame out ({ ok: true, result } or { ok: false, error: { code, message } }). A malformed request
 * is answered bad_request, reported as an offence of the peer (oversized frames weigh less than the rest), and
 * the stream closed. Bounded in size (maxFrameBytes) and time (timeoutMs, the handler's signal aborts with the
 * exchange); stop() unhandles the protocol and aborts the exchanges in flight.
 */
export class JsonRpcService<S extends z.ZodType> extends StreamProtocolService {
  private readonly init: JsonRpcInit<S>

  constructor (components: ProtocolComponents, init: JsonRpcInit<S>) {
    super(components, init.protocol)
    this.init = init
  }

  readonly [Symbol.toStringTag] = '@blockmesh/json-rpc'

  protected streamLimits (): StreamHandlerOptions {
    return { maxInboundStreams: this.init.maxInboundStreams ?? 32 }
  }

  protected async handle (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const { protocol, schema } = this.init
    const exchange = new Exchange(stream, this.init.timeoutMs ?? 30_000, `a ${protocol} exchange`)
    const untrack = this.inFlight.track(exchange)
    const { signal } = exchange
    const lp = lengthPrefixed(stream, this.init.maxFrameBytes ?? 1024 * 1024)
    const reply = async (body: unknown): Promise<void> => {
      await lp.write(encodeJson(body), { signal })
      await stream.close({ signal })
    }
    try {
      let raw: unknown
      try {
        const bytes = await lp.readFrame({ signal })
        if (bytes == null) throw new TruncatedFrameError(`the stream ended before a ${protocol} request`)
        raw = decodeJson(bytes)
      } catch (err) {
        const fault = requestFault(err, exchange, `${protocol} request`)
        if (fault == null) throw err
        reportOffence(this.components, this.init, peer, `unreadable ${protocol} request: ${fault.message}`, fault.offence)
        if (exchange.timedOut || signal.aborted) throw fault
        await reply({ ok: false, error: { code: 'bad_request', message: 'request is not a JSON frame within the size limit' } })
        return
      }
      const parsed = schema.safeParse(raw)
      if (!parsed.success) {
        reportOffence(this.components, this.init, peer, `invalid ${protocol} request: ${firstIssue(parsed.error)}`, 'malformed')
        await reply({ ok: false, error: { code: 'bad_request', message: firstIssue(parsed.error) } })
        return
      }
      try {
        const result = await this.init.handler(parsed.data, { peer, signal })
        // past the time limit, or the service stopped: the exchange is over, whatever the handler made of it
        signal.throwIfAborted()
        await reply({ ok: true, result })
      } catch (err) {
        if (signal.aborted) throw err
        const e = err as Error & { code?: string }
        await reply({ ok: false, error: { code: typeof e.code === 'string' ? e.code : 'error', message: e.message } })
      }
    } catch (err) {
      if (stream.status === 'open') stream.abort(err as Error)
    } finally {
      untrack()
    }
  }
}

/** The protocol as a service factory, js-libp2p style: `jsonRpcService(init)(components)`. */
export function jsonRpcService<S extends z.ZodType> (init: JsonRpcInit<S>): (components: ProtocolComponents) => JsonRpcService<S> {
  return (components) => new JsonRpcService(components, init)
}

/**
 * Serves a request/response protocol on `node` (JsonRpcService, started). Kept for callers written before the
 * services; offences go to `opts.onInvalid` where given, else to the node's peer score.
 */
export async function serveJson<S extends z.ZodType> (node: MeshNode, protocol: string, schema: S, handler: JsonHandler<S>, opts: RpcOptions = {}): Promise<JsonRpcService<S>> {
  const service = jsonRpcService({ ...opts, protocol, schema, handler })({ registrar: node.libp2p, score: node.score })
  await service.start()
  return service
}

/** Whether a failure to read an answer is the responder's offence: a frame that is not one (oversized, not JSON), not one cut short (a peer may stop mid-answer). */
export function isAnswerOffence (err: unknown): err is FrameError {
  return err instanceof FrameError && !(err instanceof TruncatedFrameError)
}

/** A responder's unreadable answer costs it on the one peer score (isAnswerOffence). */
export function answerOffence (node: Pick<MeshNode, 'score'>, peer: string, protocol: string, err: FrameError): void {
  if (!isAnswerOffence(err)) return
  node.score.strike(peer, `unreadable ${protocol} answer: ${err.message}`, err.offence)
}

/** Sends one request and returns the validated result; RemoteError when the peer answers with an error or with no valid answer. */
export async function requestJson<S extends z.ZodType> (node: MeshNode, peer: string, protocol: string, request: unknown, schema: S, opts: RpcOptions & { signal?: AbortSignal } = {}): Promise<z.output<S>> {
  const maxFrame = opts.maxFrameBytes ?? 1024 * 1024
  const signal = AbortSignal.any([AbortSignal.timeout(opts.timeoutMs ?? 30_000), ...(opts.signal != null ? [opts.signal] : [])])
  const stream: Stream = await node.libp2p.dialProtocol(parsePeerId(peer), protocol, { signal })
  try {
    const lp = lengthPrefixed(stream, maxFrame)
    await lp.write(encodeJson(request), { signal })
    let raw: { ok?: boolean, result?: unknown, error?: { code?: string, message?: string } }
    try {
      const bytes = await lp.readFrame({ signal })
      if (bytes == null) throw new TruncatedFrameError(`${peer} closed the ${protocol} stream without answering`)
      raw = decodeJson(bytes) as typeof raw
    } catch (err) {
      if (!(err instanceof FrameError)) throw err
      // an answer that is not a frame (oversized, not JSON) is the responder's offence; one cut short is not
      // (a peer may stop or restart mid-answer)
      answerOffence(node, peer, protocol, err)
      throw new RemoteError('bad_response', `unreadable ${protocol} answer: ${err.message}`, { cause: err })
    }
    await stream.close({ signal }).catch(() => {})
    if (raw?.ok !== true) throw new RemoteError(raw?.error?.code ?? 'error', raw?.error?.message ?? 'the peer refused the request')
    const parsed = schema.safeParse(raw.result)
    if (!parsed.success) throw new RemoteError('bad_response', `unexpected ${protocol} answer: ${firstIssue(parsed.error)}`)
    return parsed.data
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}
