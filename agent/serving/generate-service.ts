/**
 * /blockmesh/generate/1.1.0 and 1.0.0: token-level generation on a peer's block instance (or a vDAG its
 * first stage's host drives). 1.1.0 adds the failure's `code` to the done frame; clients ask for it first.
 *
 * The agent that serves a client (tokenizer, chat template, stop strings, SSE) asks the host of an
 * onnx instance to run a GenerateParams and gets token ids back, so it always knows the tokens
 * generated so far and can resume the request on another instance when this one dies
 * (agent/serving/migrate.ts). One stream per request:
 *
 *   client → host   one frame: { v: 1, op: 'generate', block, params } or { v: 1, op: 'describe', block }
 *   host → client   generate: { t: 'accepted', instance, provider }, then { t: 'tokens', ids, logprobs? }…,
 *                   then { t: 'done', reason, promptTokens, completionTokens, error?, lost?, code? (1.1.0) }
 *                   describe: { t: 'component', instance, provider, spec } (the instance's component spec,
 *                   so an agent that does not have the component can load its tokenizer)
 *                   either, instead: { t: 'error', code, message }
 *
 * Frames are length-prefixed JSON, bounded (requests 16 MiB, answers 1 MiB), and validated with zod on
 * both ends; a request that does not parse is a strike against the peer. Constrained decoding sends the
 * grammar and the size of the serving agent's vocabulary, never the token texts: the host builds its
 * vocabulary from its own copy of the tokenizer (and refuses when the sizes differ). The client closing
 * or aborting the stream cancels the sequence on the host.
 *
 * Shaped like js-libp2p's protocol services (ping): `generateService(init)` returns a factory taking the
 * components, and the service has start/stop (handle/unhandle) and the client calls.
 */
import { createHash } from 'node:crypto'
import type { Connection, PeerId, Stream, StreamHandlerOptions } from '@libp2p/interface'
import { decodeJson, encodeJson, firstIssue, isAnswerOffence, lengthPrefixed } from '../../mesh/rpc.ts'
import type { FramedStream } from '../../mesh/rpc.ts'
import { PeerStreamSlots, releaseOnClose } from '../../mesh/stream-slots.ts'
import { parsePeerId } from '../../mesh/node.ts'
import type { MeshLogger } from '../../mesh/node.ts'
import { ComponentSpecSchema } from '../registry/components.ts'
import type { ComponentSpec } from '../registry/components.ts'
import type { GenerateParams, Generation } from '../executor/engine.ts'
import type { TokenLogprob } from '../executor/sampling.ts'
import type { TextTokenizer } from '../model/tokenizer.ts'
import type { TokenizerSpec } from '../registry/components.ts'
import { tokenVocab } from '../openai/json-schema.ts'
import { AnswerSchema, GENERATE_MAX_STREAMS, GENERATE_PROTOCOL, GENERATE_PROTOCOL_CODES, GenerateError, GenerateRequestSchema, MAX_ANSWER_BYTES, MAX_GRAMMAR_DEPTH, MAX_REQUEST_BYTES, depth, wireParams } from './generate-protocol.ts'
import type { Answer, GenerateRequest } from './generate-protocol.ts'

export * from './generate-protocol.ts'

/** What a host needs of an instance running here (InstanceHost.serving narrowed). */
export type HostedEngine =
  | { kind: 'onnx', engine: { generate: (p: GenerateParams) => Generation, provider: { name: string } }, component: { spec: ComponentSpec }, instance: string }
  | { kind: 'stage' | 'external', component: { spec: ComponentSpec }, instance: string }

export interface GenerateComponents {
  /** where the protocol is handled: the libp2p node */
  registrar: { handle: (protocol: string, handler: (stream: Stream, connection: Connection) => void | Promise<void>, options?: StreamHandlerOptions) => Promise<void>, unhandle: (protocol: string) => Promise<void> }
  /** how the client side dials: the libp2p node */
  dialer: { dialProtocol: (peer: PeerId, protocols: string | string[], options?: { signal?: AbortSignal, maxOutboundStreams?: number }) => Promise<Stream> }
  /** the instance of `block` running here (throws when there is none or it is not ready) */
  serving: (block: string, opts?: { session?: string }) => HostedEngine
  tokenizers: { get: (spec: TokenizerSpec, signal?: AbortSignal) => Promise<TextTokenizer> }
  /** a banned peer is served nothing */
  isBanned?: (peer: string) => boolean
  /** told about peers that sent a request that does not parse, or answered with a frame that is not one (for strikes) */
  onInvalid?: (peer: string, reason: string) => void
  log?: MeshLogger
}

export interface GenerateServiceInit {
  protocol?: string
  /** concurrent requests from one connection */
  maxInboundStreams?: number
  maxOutboundStreams?: number
  /** the request frame must arrive within this */
  requestTimeoutMs?: number
  /** how long a dial may take */
  dialTimeoutMs?: number
}

/** A generation on a peer, as it streams in. */
export interface RemoteGeneration {
  instance: string
  provider: string
  /** tokens frames, then one done frame; throws GenerateError (lost) when the stream breaks first */
  frames: AsyncIterable<Extract<Answer, { t: 'tokens' | 'done' }>>
  /** closes the stream (the host cancels the sequence) */
  close: () => void
}

export interface GenerateService {
  readonly protocol: string
  start: () => Promise<void>
  stop: () => Promise<void>
  isStarted: () => boolean
  /** runs `params` on `block`'s instance on `peer` */
  generate: (peer: string, block: string, params: GenerateParams, options?: { signal?: AbortSignal, session?: string }) => Promise<RemoteGeneration>
  /** the component spec of `block`'s instance on `peer` */
  describe: (peer: string, block: string, options?: { signal?: AbortSignal }) => Promise<{ instance: string, provider: string, spec: ComponentSpec }>
}

class Generate implements GenerateService {
  readonly protocol: string
  /** the names dialled, newest first, and handled */
  private readonly protocols: string[]
  private readonly components: GenerateComponents
  private readonly init: GenerateServiceInit
  private started = false
  /** requests beyond the per-connection stream limit wait for a slot instead of failing */
  private readonly slots: PeerStreamSlots

  constructor (components: GenerateComponents, init: GenerateServiceInit = {}) {
    this.components = components
    this.init = init
    this.slots = new PeerStreamSlots(init.maxOutboundStreams ?? GENERATE_MAX_STREAMS, 'generate')
    this.protocol = init.protocol ?? GENERATE_PROTOCOL
    // a service under another name (tests) speaks that one alone
    this.protocols = init.protocol == null ? [GENERATE_PROTOCOL_CODES, GENERATE_PROTOCOL] : [init.protocol]
    this.handle = this.handle.bind(this)
  }

  readonly [Symbol.toStringTag] = '@blockmesh/generate'

  async start (): Promise<void> {
    for (const p of this.protocols) {
      await this.components.registrar.handle(p, this.handle, {
        maxInboundStreams: this.init.maxInboundStreams ?? GENERATE_MAX_STREAMS,
        maxOutboundStreams: this.init.maxOutboundStreams ?? GENERATE_MAX_STREAMS
      })
    }
    this.started = true
  }

  async stop (): Promise<void> {
    for (const p of this.protocols) await this.components.registrar.unhandle(p)
    this.started = false
  }

  isStarted (): boolean { return this.started }

  // ---------------------------------------------------------------- host side

  private async handle (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const { log } = this.components
    if (this.components.isBanned?.(peer) === true) { stream.abort(new Error('banned')); return }
    const abort = new AbortController()
    stream.addEventListener('close', () => { abort.abort() })
    const lp = lengthPrefixed(stream, MAX_REQUEST_BYTES)
    const send = async (a: Answer): Promise<void> => { await lp.write(encodeJson(a), { signal: abort.signal }) }
    const refuse = async (code: string, message: string): Promise<void> => {
      await send({ t: 'error', code, message: message.slice(0, 2000) })
      await stream.close({ signal: AbortSignal.timeout(5000) })
    }
    let req: GenerateRequest
    try {
      let raw: unknown
      try {
        const bytes = await lp.readFrame({ signal: AbortSignal.any([abort.signal, AbortSignal.timeout(this.init.requestTimeoutMs ?? 15_000)]) })
        if (bytes == null) throw new GenerateError('bad_request', 'the stream ended before the request', false)
        raw = decodeJson(bytes)
      } catch (err) {
        if (abort.signal.aborted) return
        throw new GenerateError('bad_request', `unreadable request: ${(err as Error).message}`, false)
      }
      if (!depth(raw, MAX_GRAMMAR_DEPTH * 3 + 8)) throw new GenerateError('bad_request', 'the request nests too deep', false)
      const parsed = GenerateRequestSchema.safeParse(raw)
      if (!parsed.success) throw new GenerateError('bad_request', firstIssue(parsed.error), false)
      req = parsed.data
    } catch (err) {
      this.components.onInvalid?.(peer, `invalid ${this.protocol} request: ${(err as Error).message}`)
      log?.warn({ peer, err: (err as Error).message }, 'bad generate request dropped')
      await refuse('bad_request', (err as Error).message).catch(() => { stream.abort(err as Error) })
      return
    }
    try {
      let hosted: HostedEngine
      try {
        hosted = this.components.serving(req.block, req.op === 'generate' && req.session != null ? { session: req.session } : undefined)
      } catch (err) {
        const e = err as Error & { code?: string }
        await refuse(e.code === 'model_not_ready' ? 'not_ready' : 'not_found', e.message)
        return
      }
      if (req.op === 'describe') {
        await send({ t: 'component', instance: hosted.instance, provider: hosted.kind === 'onnx' ? hosted.engine.provider.name : hosted.kind, spec: hosted.component.spec })
        await stream.close({ signal: AbortSignal.timeout(5000) })
        return
      }
      if (hosted.kind !== 'onnx') { await refuse('not_onnx', `block ${req.block} runs as ${hosted.kind} here; only onnx instances generate over ${this.protocol}`); return }
      const w = req.params
      const params: GenerateParams = { prompt: w.prompt, maxTokens: w.maxTokens, temperature: w.temperature, topP: w.topP, seed: w.seed, stopTokens: w.stopTokens }
      if (w.presencePenalty != null) params.presencePenalty = w.presencePenalty
      if (w.frequencyPenalty != null) params.frequencyPenalty = w.frequencyPenalty
      if (w.repetitionPenalty != null) params.repetitionPenalty = w.repetitionPenalty
      if (w.topLogprobs != null) params.topLogprobs = w.topLogprobs
      if (w.resumed != null && w.resumed > 0) params.resumed = w.resumed
      if (w.constraint != null) {
        let tokenizer: TextTokenizer
        try {
          tokenizer = await this.components.tokenizers.get(hosted.component.spec.tokenizer, abort.signal)
        } catch (err) {
          await refuse('tokenizer_failed', `the instance's tokenizer does not load here: ${(err as Error).message}`)
          return
        }
        const v = await tokenVocab(tokenizer)
        if (v.size !== w.constraint.vocabSize) { await refuse('vocab_mismatch', `the client's vocabulary has ${w.constraint.vocabSize} tokens, this instance's ${v.size}`); return }
        const grammarKey = createHash('sha256').update(JSON.stringify(w.constraint.grammar)).digest('hex').slice(0, 32)
        params.constraint = { grammar: w.constraint.grammar, grammarKey, vocab: { key: v.key, size: v.size, texts: v.texts } }
      }
      let g: Generation
      try {
        g = hosted.engine.generate(params)
      } catch (err) {
        const e = err as Error & { code?: string }
        await refuse(e.code === 'bad_request' ? 'bad_request' : 'not_ready', e.message)
        return
      }
      const onAbort = (): void => { g.cancel() }
      abort.signal.addEventListener('abort', onAbort, { once: true })
      try {
        await send({ t: 'accepted', instance: hosted.instance, provider: hosted.engine.provider.name })
        const withLogprobs = params.topLogprobs != null
        let n = 0
        for await (const token of g.tokens) {
          const lp = withLogprobs ? g.logprobs[n] : undefined
          n++
          await send(lp != null ? { t: 'tokens', ids: [token], logprobs: [lp] } : { t: 'tokens', ids: [token] })
        }
        const r = await g.done
        // the failure's code only where the client asked for the protocol that carries it
        const code = stream.protocol === GENERATE_PROTOCOL_CODES && r.reason === 'error' && r.code != null ? { code: r.code.slice(0, 64) } : {}
        await send({ t: 'done', reason: r.reason, promptTokens: r.promptTokens, completionTokens: r.completionTokens, ...(r.error != null ? { error: r.error.slice(0, 2000) } : {}), ...(r.lost === true ? { lost: true } : {}), ...code })
        await stream.close({ signal: AbortSignal.timeout(5000) })
      } finally {
        abort.signal.removeEventListener('abort', onAbort)
        if (abort.signal.aborted) g.cancel()
      }
    } catch (err) {
      if (!abort.signal.aborted) log?.warn({ peer, err: (err as Error).message }, 'generate stream failed')
      if (stream.status === 'open') stream.abort(err as Error)
    }
  }

  // ---------------------------------------------------------------- client side

  private async open (peer: string, request: GenerateRequest, signal: AbortSignal | undefined): Promise<{ stream: Stream, lp: FramedStream<Stream>, first: Answer }> {
    let stream: Stream
    let release: (() => void) | undefined
    try {
      release = await this.slots.acquire(peer, signal)
      stream = await this.components.dialer.dialProtocol(parsePeerId(peer), this.protocols, { signal: AbortSignal.any([AbortSignal.timeout(this.init.dialTimeoutMs ?? 15_000), ...(signal != null ? [signal] : [])]), maxOutboundStreams: this.init.maxOutboundStreams ?? GENERATE_MAX_STREAMS })
    } catch (err) {
      release?.()
      signal?.throwIfAborted()
      throw new GenerateError('unreachable', `cannot open ${this.protocol} to ${peer}: ${(err as Error).message}`, true, { cause: err })
    }
    releaseOnClose(stream, release)
    const lp = lengthPrefixed(stream, Math.max(MAX_ANSWER_BYTES, MAX_REQUEST_BYTES))
    try {
      // 1.0.0 requests are read strictly: the session key goes only where the host speaks 1.1.0
      const wire = request.op === 'generate' && request.session != null && stream.protocol !== GENERATE_PROTOCOL_CODES ? { ...request, session: undefined } : request
      await lp.write(encodeJson(wire), { signal })
      const first = await this.read(lp, peer, signal)
      if (first == null) throw new GenerateError('stream_broken', `${peer} closed the stream without answering`, true)
      if (first.t === 'error') throw new GenerateError(first.code, first.message, first.code !== 'bad_request')
      return { stream, lp, first }
    } catch (err) {
      stream.abort(err as Error)
      signal?.throwIfAborted()
      if (err instanceof GenerateError) throw err
      throw new GenerateError('stream_broken', `the stream to ${peer} broke: ${(err as Error).message}`, true, { cause: err })
    }
  }

  /** The next answer from `peer`; a frame that is not one (oversized, not JSON) is the peer's offence, a stream cut short is not. */
  private async read (lp: FramedStream<Stream>, peer: string, signal: AbortSignal | undefined): Promise<Answer | null> {
    try {
      return await readAnswer(lp, signal)
    } catch (err) {
      if (isAnswerOffence(err)) this.components.onInvalid?.(peer, `unreadable ${this.protocol} answer: ${err.message}`)
      throw err
    }
  }

  async describe (peer: string, block: string, options: { signal?: AbortSignal } = {}): Promise<{ instance: string, provider: string, spec: ComponentSpec }> {
    const { stream, first } = await this.open(peer, { v: 1, op: 'describe', block }, options.signal)
    await stream.close().catch(() => {})
    if (first.t !== 'component') throw new GenerateError('bad_response', `expected the component, got ${first.t}`, true)
    const spec = ComponentSpecSchema.safeParse(first.spec)
    if (!spec.success) throw new GenerateError('bad_response', `the peer's component spec does not parse: ${firstIssue(spec.error)}`, true)
    return { instance: first.instance, provider: first.provider, spec: spec.data }
  }

  async generate (peer: string, block: string, params: GenerateParams, options: { signal?: AbortSignal, session?: string } = {}): Promise<RemoteGeneration> {
    const signal = options.signal
    const { stream, lp, first } = await this.open(peer, { v: 1, op: 'generate', block, params: wireParams(params), ...(options.session != null ? { session: options.session } : {}) }, signal)
    if (first.t !== 'accepted') { stream.abort(new Error('unexpected answer')); throw new GenerateError('bad_response', `expected accepted, got ${first.t}`, true) }
    const close = (): void => { if (stream.status === 'open') stream.abort(new Error('closed by the client')) }
    const read = async (): Promise<Answer | null> => await this.read(lp, peer, signal)
    async function * frames (): AsyncGenerator<Extract<Answer, { t: 'tokens' | 'done' }>> {
      try {
        while (true) {
          let a: Answer | null
          try {
            a = await read()
          } catch (err) {
            signal?.throwIfAborted()
            throw new GenerateError('stream_broken', `the stream to ${peer} broke: ${(err as Error).message}`, true, { cause: err })
          }
          if (a == null) throw new GenerateError('stream_broken', `${peer} ended the stream before the generation was done`, true)
          if (a.t === 'error') throw new GenerateError(a.code, a.message, a.code !== 'bad_request')
          if (a.t !== 'tokens' && a.t !== 'done') throw new GenerateError('bad_response', `unexpected ${a.t} frame`, true)
          yield a
          if (a.t === 'done') { await stream.close().catch(() => {}); return }
        }
      } finally {
        close()
      }
    }
    return { instance: first.instance, provider: first.provider, frames: frames(), close }
  }
}

/** The next answer frame, validated; null when the stream ended cleanly. */
async function readAnswer (lp: FramedStream<Stream>, signal: AbortSignal | undefined): Promise<Answer | null> {
  // null: the stream ended cleanly between frames; a frame cut short or too long is a typed FrameError
  const bytes = await lp.readFrame({ signal })
  if (bytes == null) return null
  if (bytes.byteLength > MAX_ANSWER_BYTES) throw new GenerateError('bad_response', `an answer frame of ${bytes.byteLength} bytes`, true)
  const parsed = AnswerSchema.safeParse(decodeJson(bytes))
  if (!parsed.success) throw new GenerateError('bad_response', `unexpected answer: ${firstIssue(parsed.error)}`, true)
  return parsed.data
}

/** The protocol as a service factory, js-libp2p style: `generateService(init)(components)`. */
export function generateService (init: GenerateServiceInit = {}): (components: GenerateComponents) => GenerateService {
  return (components) => new Generate(components, init)
}

export type { TokenLogprob }
