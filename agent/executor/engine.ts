import { EventEmitter } from 'node:events'
import { TokenStream } from './token-stream.ts'
import { Worker } from 'node:worker_threads'
import { providerOrder } from './providers.ts'
import { PROMPT_MS_FIRST, promptBudgetProblem } from './prefill.ts'
import type { GpuPresence, ProviderPreference, ProviderReport } from './providers.ts'
import type { DecoderShape } from './feeds.ts'
import type { FinishReason, FromWorker, GenerateParams, ToWorker, TokenLogprob, WorkerInit } from './protocol.ts'

export type { GenerateParams, TokenLogprob } from './protocol.ts'

export interface EngineOptions {
  modelPath: string
  provider: ProviderPreference
  gpus: GpuPresence
  contextLength: number
  maxBatch?: number
  intraOpThreads?: number
  /** false: the worker takes the whole present.* back from every run even when it could keep the cache (for comparisons) */
  keepCache?: boolean
  /**
   * A prompt goes through in chunks of at most this many tokens, with decoding steps of the running
   * sequences between them (default PREFILL_CHUNK, prefill.ts); a positive integer.
   */
  prefillChunk?: number
  /**
   * While other sequences decode, a turn's prompt work aims to take at most this long, in ms (default
   * PROMPT_MS_FIRST: the gap a decoding stream may see for a prompt's sake); chunks are cut to fit it from
   * the measured prompt rate. Infinity: bounded by chunks and rows only.
   */
  promptMsFirst?: number
}

export interface GenerationResult {
  reason: FinishReason
  promptTokens: number
  completionTokens: number
  error?: string
  /** with reason error: an OpenAI-style error code for the client (default generation_failed) */
  code?: string
  /**
   * with reason error: the instance went away under the sequence (its worker exited, its peer or the
   * stream to it is gone), not a fault of the request, so it can be resumed elsewhere (agent/serving/migrate.ts)
   */
  lost?: boolean
}

/** One running generation: tokens as they come, the outcome when it ends, and a way to stop it. */
export interface Generation {
  readonly id: number
  readonly tokens: AsyncIterable<number>
  /** with topLogprobs: entry i is token i's, there by the time token i is handed out */
  readonly logprobs: TokenLogprob[]
  readonly done: Promise<GenerationResult>
  cancel: () => void
}

export interface StepEvent { kind: 'prefill' | 'decode', batch: number, ms: number, tokens: number }

export class EngineError extends Error {
  readonly code: string
  constructor (message: string, code = 'engine_error') {
    super(message)
    this.name = 'EngineError'
    this.code = code
  }
}

interface Pending {
  stream: TokenStream
  firstToken: boolean
}

/**
 * A model loaded in its own worker thread (see worker.ts). generate() is
 * safe to call concurrently; the worker batches running sequences.
 * Emits 'step' (StepEvent) for metrics and 'crashed' (Error) if the worker dies.
 */
export class ModelEngine extends EventEmitter {
  readonly provider: ProviderReport
  readonly shape: DecoderShape
  readonly loadMs: number
  /** whether the worker keeps the batched KV cache itself (the graph gives each step's keys and values) */
  readonly keepsCache: boolean
  readonly contextLength: number
  /** while others decode, a turn's prompt work aims to take at most this long (ms; Infinity: no time bound): prefill.ts */
  readonly promptMsFirst: number
  private readonly worker: Worker
  private readonly live = new Map<number, Pending>()
  private nextId = 1
  private closed = false
  /** vocabularies the worker has */
  private readonly vocabs = new Set<string>()

  private constructor (worker: Worker, ready: Extract<FromWorker, { type: 'ready' }>, contextLength: number, promptMsFirst: number) {
    super()
    this.worker = worker
    this.provider = ready.provider
    this.shape = ready.shape
    this.loadMs = ready.loadMs
    this.keepsCache = ready.keepsCache
    this.contextLength = contextLength
    this.promptMsFirst = promptMsFirst
    worker.on('message', (m: FromWorker) => { this.onMessage(m) })
    worker.on('error', (err) => { this.fail(err) })
    worker.on('exit', (code) => { if (!this.closed) this.fail(new EngineError(`model worker exited (${code})`, 'worker_exit')) })
  }

  static async start (opts: EngineOptions): Promise<ModelEngine> {
    const init: WorkerInit = {
      modelPath: opts.modelPath,
      order: providerOrder(opts.provider, opts.gpus),
      intraOpThreads: opts.intraOpThreads,
      maxBatch: opts.maxBatch ?? 8,
      contextLength: opts.contextLength,
      keepCache: opts.keepCache,
      prefillChunk: opts.prefillChunk,
      promptMsFirst: opts.promptMsFirst
    }
    const problem = promptBudgetProblem(init.prefillChunk, init.promptMsFirst)
    if (problem != null) throw new EngineError(problem, 'bad_request')
    const worker = new Worker(new URL('./worker.ts', import.meta.url), { workerData: init })
    const ready = await new Promise<Extract<FromWorker, { type: 'ready' }>>((resolve, reject) => {
      const onMessage = (m: FromWorker): void => {
        if (m.type === 'ready') { cleanup(); resolve(m) }
        if (m.type === 'failed') { cleanup(); void worker.terminate(); reject(new EngineError(m.error, 'load_failed')) }
      }
      const onError = (err: Error): void => { cleanup(); reject(new EngineError(err.message, 'load_failed')) }
      const onExit = (code: number): void => { cleanup(); reject(new EngineError(`model worker exited (${code}) while loading`, 'load_failed')) }
      const cleanup = (): void => { worker.off('message', onMessage); worker.off('error', onError); worker.off('exit', onExit) }
      worker.on('message', onMessage)
      worker.on('error', onError)
      worker.on('exit', onExit)
    })
    return new ModelEngine(worker, ready, opts.contextLength, init.promptMsFirst ?? PROMPT_MS_FIRST)
  }

  /** Sequences accepted and not finished. */
  get active (): number { return this.live.size }

  /** Sequences that have not produced their first token yet. */
  get waiting (): number {
    let n = 0
    for (const p of this.live.values()) if (!p.firstToken) n++
    return n
  }

  generate (params: GenerateParams): Generation {
    if (this.closed) throw new EngineError('the model is unloaded', 'closed')
    const id = this.nextId++
    const c = params.constraint
    if (c != null && !this.vocabs.has(c.vocab.key)) {
      if (c.vocab.texts == null) throw new EngineError(`vocabulary ${c.vocab.key} has no texts`, 'bad_request')
      this.post({ type: 'vocab', key: c.vocab.key, size: c.vocab.size, texts: c.vocab.texts })
      this.vocabs.add(c.vocab.key)
    }
    const p: Pending = { stream: new TokenStream(), firstToken: false }
    this.live.set(id, p)
    if (c != null) {
      this.post({ type: 'generate', id, ...params, constraint: { grammar: c.grammar, grammarKey: c.grammarKey, vocab: { key: c.vocab.key, size: c.vocab.size } } })
    } else {
      this.post({ type: 'generate', id, ...params })
    }
    return { ...p.stream.generation(() => { if (this.live.has(id)) this.post({ type: 'cancel', id }) }), id }
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    const closedMsg = new Promise<void>(resolve => {
      const t = setTimeout(resolve, 5000)
      this.worker.on('message', (m: FromWorker) => { if (m.type === 'closed') { clearTimeout(t); resolve() } })
    })
    this.post({ type: 'close' })
    await closedMsg
    await this.worker.terminate()
    this.endAll({ reason: 'cancelled', promptTokens: 0, completionTokens: 0 })
  }

  private post (m: ToWorker): void {
    this.worker.postMessage(m)
  }

  private onMessage (m: FromWorker): void {
    if (m.type === 'step') {
      if (m.logprobs != null) for (const [id, lp] of m.logprobs) this.live.get(id)?.stream.logprobs.push(lp)
      for (const [id, token] of m.tokens) {
        const p = this.live.get(id)
        if (p == null) continue
        p.firstToken = true
        p.stream.push(token)
      }
      this.emit('step', { kind: m.kind, batch: m.batch, ms: m.ms, tokens: m.tokens.length } satisfies StepEvent)
    } else if (m.type === 'done') {
      const p = this.live.get(m.id)
      if (p == null) return
      this.live.delete(m.id)
      p.stream.end({ reason: m.reason, promptTokens: m.promptTokens, completionTokens: m.completionTokens, error: m.error })
    }
  }

  private fail (err: Error): void {
    this.endAll({ reason: 'error', promptTokens: 0, completionTokens: 0, error: err.message, lost: true })
    if (!this.closed) {
      this.closed = true
      this.emit('crashed', err)
    }
  }

  private endAll (r: GenerationResult): void {
    for (const p of this.live.values()) p.stream.end(r)
    this.live.clear()
  }
}
